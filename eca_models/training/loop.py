"""One epoch of training: a task's forward and loss, backward, optimizer step, with AMP and checkpoint hooks."""

import time
from contextlib import nullcontext
from typing import Any, Callable, List, Optional, Tuple

import torch
from tqdm import tqdm

from .. import distributed

__all__ = ["StepResult", "autocast_for", "train_one_epoch"]

# what a task's forward returns for one batch: the loss (None: nothing to learn from, e.g. every image unreadable),
# how many images it saw, and the paths of the images it could not read
StepResult = Tuple[Optional[torch.Tensor], int, List[str]]


def autocast_for(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def train_one_epoch(
    loader: torch.utils.data.DataLoader,
    forward: Callable[[Any], StepResult],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scaler: Optional[torch.amp.GradScaler],
    amp: bool,
    on_step: Callable[[int, float, int], None],
    on_unreadable: Callable[[List[str]], None],
    start_step: int,
    carried: Tuple[float, int],
    desc: str,
    scheduler: Any = None,
    first_update: int = 0,
) -> float:
    """Train over ``loader``; returns the mean training loss of the steps taken (over all processes).

    Args:
        loader: The task's batches, already positioned at ``start_step``.
        forward: The task's step: a batch -> :data:`StepResult` (run under autocast when ``amp``).
        optimizer: The optimizer.
        device: Where to run.
        scaler: A GradScaler for float16 AMP on CUDA, else None.
        amp: Use autocast.
        on_step: Called after every step with (step in epoch, loss sum, steps with a loss): the
            checkpoint hook.
        on_unreadable: Called with the paths of images a batch could not read.
        start_step: Steps of this epoch already done (a resumed run).
        carried: (loss sum, steps) of those steps, so the epoch's mean loss stays exact.
        desc: Progress bar label.
        scheduler: A timm scheduler stepped per update (``step_update``; a no-op for per-epoch schedules).
        first_update: The run's update count at ``start_step`` (for per-update schedules such as a warm-up).
    """
    total = start_step + len(loader)
    bar = tqdm(
        total=total, initial=start_step, desc=desc, unit="step", disable=not distributed.is_main(), dynamic_ncols=True
    )
    (loss_sum, steps), seen, start = carried, 0, time.perf_counter()
    step = start_step
    for batch in loader:
        if scheduler is not None:
            scheduler.step_update(first_update + step - start_step)
        with autocast_for(device, amp):
            loss, images, bad = forward(batch)
        if bad:
            on_unreadable(bad)
        step += 1
        if loss is not None:
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            loss_sum += float(loss.detach())
            steps += 1
            seen += images
        bar.update(1)
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(
            loss=f"{loss_sum / max(steps, 1):.4f}",
            img_s=f"{seen * distributed.world_size() / elapsed:.1f}",
            refresh=False,
        )
        on_step(step, loss_sum, steps)
    bar.close()
    loss_sum, steps = distributed.all_reduce_sum([loss_sum, steps], device)
    return loss_sum / steps if steps else float("nan")
