"""A dataset over a list of (image path, label) that reports unreadable images instead of dying.

Each item is ``(image, label, index, ok)``: a corrupt or unreadable file gives a zero image and
``ok=False``, so the loop that consumes the batch can drop it, count it and name it, even when
the file was read in a DataLoader worker process.
"""

import glob
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from ..errors import local_path

__all__ = [
    "IMAGE_ERRORS",
    "IMAGE_EXTENSIONS",
    "ImageListDataset",
    "ShardSampler",
    "find_images",
    "is_image",
    "open_rgb",
]

IMAGE_EXTENSIONS = tuple(".jpg .jpeg .jfif .jpe .png .bmp .webp .avif .tif .tiff .gif .ppm .pgm".split())
# what reading an image can raise for a bad file: damaged, not an image, or a decompression bomb (PIL refuses
# images of over twice Image.MAX_IMAGE_PIXELS before decoding them)
IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
_HIGH_DEPTH_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_rgb(path: Union[str, Path], size: Optional[Tuple[int, int]] = None, upright: bool = True) -> Image.Image:
    """An image file as an 8-bit RGB PIL image, upright: turned as its EXIF orientation says (a phone's photo is
    stored sideways with a tag to turn it); grayscale, palette, CMYK and alpha converted; 16-bit grayscale (medical
    and scientific PNGs and TIFFs) scaled to 8 bits rather than clipped to white.

    Args:
        path: The image file.
        size: The (width, height) its annotations were drawn at, where known: an image stored sideways at that size
            stays as stored (the annotation tool did not turn it; turning it would move every box).
        upright: False: the pixels as stored, the EXIF orientation ignored, as torchvision's and timm's loaders read
            ImageNet for the published figures.

    Raises:
        One of `IMAGE_ERRORS` for a file that cannot be read.
    """
    with Image.open(path) as opened:
        img = ImageOps.exif_transpose(opened) if upright else opened
        if size is not None and img.size != opened.size and opened.size == tuple(size):
            img = opened
        if img.mode in _HIGH_DEPTH_GRAY:
            pixels = np.asarray(img, dtype=np.float64)
            return Image.fromarray(np.clip(np.rint(pixels * (255.0 / 65535.0)), 0, 255).astype(np.uint8)).convert("RGB")
        return img.convert("RGB")


def find_images(paths: Sequence[Union[str, Path]]) -> List[Path]:
    """Files as given, and for a folder every image under it (recursively, sorted); a wildcard pattern that names
    no file itself (``photos/*.jpg``, which Windows' shells pass on as typed) stands for what it matches, sorted; a
    path that does not exist is kept, so that reading it reports it.

    Raises:
        UsageError: A URL.
    """
    found: List[Path] = []
    for given in map(str, paths):
        local_path(given, "image")
        wildcard = any(c in given for c in "*?[") and not Path(given).exists()
        matches = sorted(glob.glob(given, recursive=True)) if wildcard else []
        for path in map(Path, matches or [given]):
            if path.is_dir():
                found += list_images(path)
            else:
                found.append(path)
    return found


def is_image(path: Path) -> bool:
    """True for a file whose extension is an image format's (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class ImageListDataset(Dataset):
    """Images from a list of ``(path, label)``; unreadable ones are flagged, not raised."""

    def __init__(
        self,
        samples: Sequence[Tuple[Path, int]],
        transform: Callable,
        image_size: Tuple[int, int, int],
        upright: bool = True,
    ) -> None:
        """
        Args:
            samples: ``(path, label)`` pairs.
            transform: PIL image -> tensor.
            image_size: ``(C, H, W)`` of the transform's output, for the placeholder of a bad image.
            upright: Turn images as their EXIF orientation says (`open_rgb`).
        """
        self.samples = list(samples)
        self.transform = transform
        self.image_size = image_size
        self.upright = upright

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, int, bool]:
        path, label = self.samples[index]
        try:
            image = self.transform(open_rgb(path, upright=self.upright))
        except IMAGE_ERRORS:
            return torch.zeros(self.image_size), label, index, False
        return image, label, index, True


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` takes indices ``r, r + w, r + 2w, ...``: every index exactly once, no padding.

    torch's DistributedSampler pads the last shard by repeating images, which would count them
    twice in an evaluation; this sampler never does.
    """

    def __init__(self, indices: Sequence[int], rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(indices)[rank::world_size]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def list_images(folder: Path) -> List[Path]:
    """Image files under ``folder``, its sub-folders too (as torchvision's ImageFolder reads a class folder), sorted;
    hidden files and folders left out."""
    return sorted(p for p in folder.rglob("*") if is_image(p) and not _hidden(p.relative_to(folder)))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def unreadable(batch_ok: torch.Tensor, batch_index: torch.Tensor, samples: Sequence[Tuple[Path, int]]) -> List[str]:
    """Paths of the images of a batch that could not be read."""
    return [str(samples[int(i)][0]) for i, ok in zip(batch_index, batch_ok) if not ok]


def subset(n_total: int, limit: Optional[int]) -> List[int]:
    """``limit`` indices spread evenly over ``range(n_total)`` (all of them when no limit), so a
    subset of a class-sorted folder still covers every class."""
    if not limit or limit >= n_total:
        return list(range(n_total))
    step = n_total / limit
    return [int(i * step) for i in range(limit)]
