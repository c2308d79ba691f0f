"""Figures: a run's loss and accuracy curves, the benchmark's bar chart, the attention panels."""

import io
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .files import write_bytes_atomic  # noqa: E402

__all__ = ["plot_attention", "plot_benchmark", "plot_curves"]


def _save(fig, path: Path) -> Path:
    """Render ``fig`` to PNG in memory, close it, and write the file atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def plot_curves(
    history: List[Dict[str, float]],
    path: Path,
    title: str,
    metrics: Sequence[Tuple[str, str]] = (("val_top1", "val Top-1"), ("val_top5", "val Top-5")),
    ylabel: str = "accuracy (%)",
) -> Path:
    """Two panels, loss (train, and val where the history has it) and the validation ``metrics`` per epoch,
    written atomically.

    Args:
        history: One entry per epoch (``epoch``, ``train_loss``, maybe ``val_loss``, the metrics).
        path: The PNG to write.
        title: The figure's title.
        metrics: ``(history key, legend label)`` of each metric drawn in the second panel (0-100).
        ylabel: That panel's axis label.
    """
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if all("val_loss" in h for h in history):
        ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    for key, label in metrics:
        ax_acc.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel=ylabel, title="validation", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_benchmark(results, path: Path, title: str) -> Path:
    """Bars of each model's inference and training images/s relative to the plain model, with the 95%
    interval of each ratio as an error bar and the paper's Table 3 ratios as markers where it has them;
    written atomically."""
    names = [r.name for r in results]
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.38
    modes = [("infer", "inference", -width / 2)]
    if any(r.train_ratio for r in results):
        modes.append(("train", "training", width / 2))
    for mode, label, shift in modes:
        ratios = [getattr(r, f"{mode}_ratio") for r in results]
        intervals = [getattr(r, f"{mode}_ratio_interval") or (ratio, ratio) for r, ratio in zip(results, ratios)]
        errors = [[ratio - low for ratio, (low, _) in zip(ratios, intervals)]]
        errors.append([high - ratio for ratio, (_, high) in zip(ratios, intervals)])
        ax.bar([x + shift for x in xs], ratios, width, yerr=errors, capsize=3, ecolor="0.3", label=label)
    paper = [(x, r.paper_infer_ratio, r.paper_train_ratio) for x, r in zip(xs, results) if r.paper_infer_ratio]
    if paper:
        ax.scatter(
            [x - width / 2 for x, _, _ in paper],
            [p for _, p, _ in paper],
            marker="_",
            s=400,
            c="tab:red",
            label="paper Table 3",
        )
        ax.scatter([x + width / 2 for x, _, _ in paper], [p for _, _, p in paper], marker="_", s=400, c="tab:red")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(list(xs), names, rotation=15)
    ax.set_ylabel("images/s relative to the plain model")
    ax.set_xlabel("bars: median of the ratios within a repetition; whiskers: 95% interval of that median")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncols=3, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_attention(out: Path, panels, blocks, display, title: str) -> Path:
    """One panel per block and attention kind (ECA, SE): a line per class and a dashed one for all
    images, the average weight of each channel (the layout of the paper's Figure 6); written atomically."""
    kinds = list(panels)
    fig, axes = plt.subplots(len(blocks), len(kinds), figsize=(7 * len(kinds), 2.4 * len(blocks)), squeeze=False)
    for col, kind in enumerate(kinds):
        for row, block in enumerate(blocks):
            ax = axes[row][col]
            data = panels[kind][block]
            for i, label in enumerate(display + ["all images"]):
                style = dict(color="k", lw=1.2, ls="--") if label == "all images" else dict(lw=0.9)
                ax.plot(data[i], label=label, **style)
            ax.set_title(f"{kind}: {block}", fontsize=9)
            ax.set_xlim(0, data.shape[1] - 1)
            ax.set_ylabel("weight")
            if row == len(blocks) - 1:
                ax.set_xlabel("channel")
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)
