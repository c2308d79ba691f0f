"""The loss and accuracy curves of a run, as a PNG."""

import io
from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .._files import write_bytes_atomic  # noqa: E402

__all__ = ["plot_curves"]


def plot_curves(history: List[Dict[str, float]], path: Path, title: str) -> Path:
    """Two panels, loss (train and val) and val Top-1/Top-5 per epoch, written atomically."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [h["val_top1"] for h in history], marker="o", label="val Top-1")
    ax_acc.plot(epochs, [h["val_top5"] for h in history], marker="o", label="val Top-5")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)
