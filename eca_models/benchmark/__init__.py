"""Speed and size against the paper's Table 3: classifiers (`classification`: plain, SE, CBAM and ECA
models side by side) and detectors (`detection`: each against its plain ResNet twin), timed interleaved
on the user's hardware."""

from .classification import (
    BACKBONES,
    PAPER_TABLE3,
    Result,
    benchmark,
    build_models,
    interleaved_orders,
    keep_freed_memory,
    machine,
    median_interval,
    run_benchmark,
    time_loading,
)
from .detection import DetectorResult, benchmark_detector, run_detector_benchmark
from .tables import classifier_table, detector_table

__all__ = [
    "BACKBONES",
    "PAPER_TABLE3",
    "DetectorResult",
    "Result",
    "benchmark",
    "benchmark_detector",
    "build_models",
    "classifier_table",
    "detector_table",
    "interleaved_orders",
    "keep_freed_memory",
    "machine",
    "median_interval",
    "run_benchmark",
    "run_detector_benchmark",
    "time_loading",
]
