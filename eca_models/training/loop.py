"""One epoch of training: forward, loss, backward, optimizer step, with AMP, mixup and checkpoints."""

import time
from contextlib import nullcontext
from typing import Callable, List, Optional, Tuple

import torch
from tqdm import tqdm

from .. import distributed
from ..data.images import unreadable

__all__ = ["autocast_for", "train_one_epoch"]


def autocast_for(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def train_one_epoch(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable,
    device: torch.device,
    scaler: Optional[torch.amp.GradScaler],
    amp: bool,
    channels_last: bool,
    mixup: Optional[Callable],
    on_step: Callable[[int, float, int], None],
    on_unreadable: Callable[[List[str]], None],
    start_step: int,
    carried: Tuple[float, int],
    desc: str,
) -> float:
    """Train over ``loader``; returns the mean training loss of the steps taken (over all processes).

    Args:
        model: The (possibly DDP-wrapped) model, in train mode.
        loader: Yields ``(images, labels, indices, ok)`` batches, already positioned at ``start_step``.
        optimizer: The optimizer.
        loss_fn: ``loss_fn(logits, targets)``.
        device: Where to run.
        scaler: A GradScaler for float16 AMP on CUDA, else None.
        amp: Use autocast.
        channels_last: Feed channels-last tensors.
        mixup: timm's Mixup/CutMix, or None.
        on_step: Called after every step with (step in epoch, loss sum, steps with a loss): the
            checkpoint hook.
        on_unreadable: Called with the paths of images a batch could not read.
        start_step: Steps of this epoch already done (a resumed run).
        carried: (loss sum, steps) of those steps, so the epoch's mean loss stays exact.
        desc: Progress bar label.
    """
    samples = loader.dataset.samples
    total = start_step + len(loader)
    bar = tqdm(
        total=total, initial=start_step, desc=desc, unit="step", disable=not distributed.is_main(), dynamic_ncols=True
    )
    (loss_sum, steps), seen, start = carried, 0, time.perf_counter()
    step = start_step
    for x, y, index, ok in loader:
        bad = unreadable(ok, index, samples)
        if bad:
            on_unreadable(bad)
        x, y = x[ok].to(device, non_blocking=True), y[ok].to(device, non_blocking=True)
        step += 1
        if mixup is not None and len(y) % 2:  # mixup pairs images: drop one to keep the batch even
            x, y = x[:-1], y[:-1]
        if len(y) >= 2:
            if mixup is not None:
                x, y = mixup(x, y)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, amp):
                loss = loss_fn(model(x), y)
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
            seen += len(y)
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
