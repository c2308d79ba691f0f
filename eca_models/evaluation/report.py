"""A validation as text: the lines ``eca-models validate`` prints for each model (measured against reported, the
95% interval, complexity beside the published figures, the verdict)."""

from typing import Any, Dict, List, Optional

from ..detection.model_card import METRIC_NAMES
from ..weights import binary_units
from .detection import SUMMARY_KEYS
from .validate import Validation

__all__ = ["format_report"]


def format_report(
    validation: Validation, results_file: Optional[str] = None, predictions_file: Optional[str] = None
) -> str:
    """The report of one model's validation, as ``eca-models validate`` prints it.

    Args:
        validation: What `validate` returned for the model.
        results_file: Where the rows were written (then only five unreadable images are listed here).
        predictions_file: Where a detector's predictions were written.
    """
    notes = [f"  {note}" for note in validation.notes]
    if validation.is_detector:
        lines = _detector_lines(validation.row, predictions_file)
    else:
        lines = _classifier_lines(validation.row, results_file)
    return "\n".join(notes + lines)


def _classifier_lines(row: Dict[str, Any], results_file: Optional[str]) -> List[str]:
    failed = row["unreadable_images"]
    lines = [f"\n{row['model']}  (kernel code {row['kernel_code']}; weights {row['checkpoint'] or 'none'})"]
    resize = round(row["img_size"] / row["crop_pct"])
    lines.append(f"  protocol  resize {resize} {row['interpolation']}, center crop {row['img_size']}")
    where = f"listed in {results_file}" if results_file else "listed below"
    extra = f", {row['unreadable']} unreadable (not scored, {where})" if row["unreadable"] else ""
    lines.append(f"  images    {row['images']:,} scored{extra}")
    lines.append(f"  {'':8}  {'measured':>8}  {'reported':>8}  {'diff':>6}  {'95% interval':>16}  {'paper':>6}")
    shown_metrics = (("top1", "Top-1"), ("top5", "Top-5")) if row["num_classes"] > 5 else (("top1", "Top-1"),)
    for key, label in shown_metrics:  # Top-5 of five classes or fewer is 100% by definition
        rep, paper, value = row[f"reported_{key}"], row[f"paper_{key}"], row[key]
        diff = f"{value - rep:+.2f}" if rep is not None and value is not None else "-"
        low, high = row[f"{key}_ci95"]
        interval = f"[{low:.2f}, {high:.2f}]" if value is not None else "-"
        lines.append(
            f"  {label:8}  {f'{value:.2f}' if value is not None else '-':>8}  {rep if rep is not None else '-':>8}  "
            f"{diff:>6}  {interval:>16}  {paper if paper is not None else '-':>6}"
        )
    lines += _complexity_lines(row)
    lines += [f"  unreadable: {path}" for path in (failed[:5] if results_file else failed)]
    lines.append(f"  verdict   {row['verdict']}: {row['verdict_reason']}")
    return lines


def _complexity_lines(row: Dict[str, Any]) -> List[str]:
    params, macs = row["params"], row["gmacs"] * 1e9
    pub_p = f"published {row['published_params']} (params / 2^20)" if row["published_params"] else ""
    pub_f = f"published {row['published_flops']} (thop MACs / 2^30)" if row["published_flops"] else ""
    lines = [f"  params    {params:,} exact = {params / 2**20:.2f}M in 2^20 units   {pub_p}"]
    if pub_f and row["img_size"] != 224:
        pub_f += " at 224"  # not comparable with this run's size
    lines.append(
        f"  MACs      {macs / 1e9:.3f}e9 at {row['img_size']} (flop_counter) = {macs / 2**30:.2f}G in 2^30 units   {pub_f}"
    )
    if row["published_flops"] and row["img_size"] == 224:
        gap = 100 * (binary_units(row["published_flops"]) / macs - 1)
        lines.append(f"  {'':8}  (the published count is {gap:+.1f}% against flop_counter's: thop counts other layers)")
    return lines


def _detector_lines(row: Dict[str, Any], predictions_file: Optional[str]) -> List[str]:
    lines = [
        f"\n{row['model']}  ({row['architecture']}, kernel code {row['kernel_code']}; weights {row['checkpoint'] or 'none'})"
    ]
    extra = f", {row['unreadable']} unreadable (not scored)" if row["unreadable"] else ""
    dropped = row["boxes_without_area_dropped"]
    dropped = f"; {dropped} boxes with no area dropped" if dropped else ""
    lines.append(f"  images    {row['images']:,} scored{extra}{dropped}; {row['detections']:,} detections")
    reported = row["reported"] or {}
    for kind, values in row["metrics"].items():
        lines.append(f"  {kind:<5} {'':5}  {'measured':>8}  {'reported':>8}  {'diff':>6}")
        for key in SUMMARY_KEYS:
            rep, value = reported.get(f"{kind}_{key}"), values[key]
            shown = f"{value:8.2f}" if value >= 0 else f"{'n/a':>8}"  # COCOeval's -1: no objects of that size
            diff = f"{value - rep:+.2f}" if rep is not None and value >= 0 else "-"
            lines.append(f"  {'':5} {METRIC_NAMES[key]:<5}  {shown}  {rep if rep is not None else '-':>8}  {diff:>6}")
    if predictions_file:
        lines.append(f"  predictions written to {predictions_file} (COCO results format)")
    lines += [f"  unreadable: {path}" for path in row["unreadable_images"][:5]]
    lines.append(f"  verdict   {row['verdict']}: {row['verdict_reason']}")
    return lines
