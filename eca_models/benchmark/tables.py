"""The benchmark's reports as the text tables the command prints: `classifier_table` for `benchmark`'s report,
`detector_table` for `benchmark_detector`'s."""

from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .classification import RUNTIMES

__all__ = ["classifier_table", "detector_table"]

PAPER = {"infer": "paper_infer_ratio", "train": "paper_train_ratio"}
COLUMNS = {"infer": "infer", "train": "train", "ort": "ORT", "ov": "OpenVINO"}


def classifier_table(models: Sequence[Dict[str, Any]], train: bool, runtimes: Sequence[str]) -> str:
    """The models of a `benchmark` report (``report["models"]``), one row each, a group of columns per mode timed,
    and what the columns mean."""
    modes = [m for r in runtimes for m in RUNTIMES[r] if train or m != "train"]
    header = ["model", "params", "/2^20", "GMACs"]
    for mode in modes:
        header += [f"{COLUMNS[mode]} img/s", "spread", "ratio", "95% interval"] + (["paper"] if mode in PAPER else [])
    rows = [header]
    for r in (SimpleNamespace(**m) for m in models):
        row = [r.name, f"{r.params:,}", f"{r.params / 2**20:.2f}M", f"{r.gmacs:.3f}"]
        for mode in modes:
            row += [f"{getattr(r, mode + '_img_s'):.1f}", f"{getattr(r, mode + '_spread'):.1f}%"]
            row += [f"{getattr(r, mode + '_ratio'):.3f}", _interval(getattr(r, mode + "_ratio_interval"))]
            if mode in PAPER:
                paper = getattr(r, PAPER[mode])
                row += [f"{paper:.3f}" if paper else "-"]
        rows.append(row)
    notes = [
        "ratio: images/s relative to the plain model (first row), the median over repetitions of the ratio within one;"
        " paper: the same ratio in the paper's Table 3 (2080Ti GPUs).",
        "95% interval: of that median, from the order statistics of the ratios (no assumption on their distribution);"
        " '-' below 6 repetitions. Where it spans a difference, this run does not resolve it.",
        "spread: (max - min) / median over the timed repetitions. GMACs: torch.utils.flop_counter, 1e9 MACs per image.",
    ]
    if set(runtimes) - {"torch"}:
        notes.append(
            "ORT, OpenVINO: inference of each model exported to ONNX by the same command (eca-models export's form), "
            "in ONNX Runtime's CPU provider and OpenVINO's CPU plugin."
        )
    return _aligned(rows) + "\n" + "\n".join(notes)


def detector_table(detectors: Sequence[Dict[str, Any]]) -> str:
    """The detectors of a `benchmark_detector` report, one row per detector and runtime, and what the columns mean."""
    rows = [
        ["detector", "runtime", "params", "release count", "GMACs@1280x800", "infer img/s", "ratio", "95% interval"]
    ]
    for r in (SimpleNamespace(**d) for d in detectors):  # a plain one's ratio is 1: no interval
        rows.append([r.name, r.runtime, f"{r.params:,}", f"{r.release_params / 1e6:.3f}M", f"{r.gmacs:.2f}",
                     f"{r.img_s:.3f}", f"{r.ratio:.3f}", _interval(r.ratio_interval) if "_eca_" in r.name else "-"])  # fmt: skip
    return (
        _aligned(rows)
        + "\n"
        + (
            "release count: every parameter and frozen BatchNorm affine less the stem and layer1 (the release's Param). "
            "GMACs: torch.utils.flop_counter on the release's dummy forward at 1280x800 (the paper's GFLOPs are mmcv's "
            "count of the same, with more layer types). ratio: images/s against the plain detector in the same runtime, the "
            "median of the per-repetition ratios; its 95% interval needs 6 repetitions or more. onnxruntime, openvino: the "
            "detector exported to ONNX as eca-models export writes it (one image per call)."
        )
    )


def _interval(interval: Optional[Tuple[float, float]]) -> str:
    return f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "-"


def _aligned(rows: List[List[str]]) -> str:
    """A table after a blank line: the first column left-aligned, the figures right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n" + "\n".join(lines)
