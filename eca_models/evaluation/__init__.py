"""Measuring models and judging them: Top-1/Top-5 on ImageNet val (`classification`), COCO AP
(`detection`), and `validate`, the one call for both (`validate`)."""

from .classification import IMAGENET_VAL_SIZE, NOT_SCORED, Counts, UnreadableImage, evaluate, verdict, wilson_interval
from .detection import coco_evaluate, detection_verdict, predict_coco
from .validate import ValidateOptions, Validation, ValidationRun, validate, write_results

__all__ = [
    "IMAGENET_VAL_SIZE",
    "NOT_SCORED",
    "Counts",
    "UnreadableImage",
    "ValidateOptions",
    "Validation",
    "ValidationRun",
    "coco_evaluate",
    "detection_verdict",
    "evaluate",
    "predict_coco",
    "validate",
    "verdict",
    "wilson_interval",
    "write_results",
]
