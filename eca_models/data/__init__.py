"""Data: image lists that survive bad files, ImageNet val in its common layouts, class folders."""

from .imagenet import imagenet_class_names, imagenet_samples, imagenet_wnids
from .images import IMAGE_EXTENSIONS, ImageListDataset, is_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageListDataset",
    "imagenet_class_names",
    "imagenet_samples",
    "imagenet_wnids",
    "is_image",
]
