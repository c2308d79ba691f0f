"""One epoch of training: a task's forward and loss, backward, optimizer step, with AMP and checkpoint hooks."""

import dataclasses
import time
from typing import Any, Callable, List, Optional, Tuple

import torch
from tqdm import tqdm

from .. import distributed
from ..runtime import autocast_for

__all__ = ["StepResult", "Stepper", "train_one_epoch"]

# what a task's forward returns for one batch: the loss (None: nothing to learn from, e.g. every image unreadable),
# how many images it saw, and the paths of the images it could not read
StepResult = Tuple[Optional[torch.Tensor], int, List[str]]


@dataclasses.dataclass
class Stepper:
    """What a task trains with, for every epoch: its forward (a batch -> `StepResult`, run under autocast when
    ``amp``), the optimizer, a GradScaler for float16 AMP on CUDA (else None), a timm scheduler stepped per update
    (``step_update``; None, or a no-op for per-epoch schedules), and where unreadable images are reported."""

    forward: Callable[[Any], StepResult]
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp: bool = False
    scaler: Optional[torch.amp.GradScaler] = None
    scheduler: Any = None
    on_unreadable: Callable[[List[str]], None] = lambda paths: None

    def step(self, batch: Any, update: int) -> Tuple[Optional[float], int]:
        """One update on ``batch`` (the run's update number ``update``): its loss (None when the batch had nothing
        to learn from) and how many images it saw."""
        if self.scheduler is not None:
            self.scheduler.step_update(update)
        with autocast_for(self.device, self.amp):
            loss, images, bad = self.forward(batch)
        if bad:
            self.on_unreadable(bad)
        if loss is None:
            return None, images
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach()), images


def train_one_epoch(
    loader: torch.utils.data.DataLoader,
    stepper: Stepper,
    on_step: Callable[[int, float, int], None],
    start_step: int,
    carried: Tuple[float, int],
    desc: str,
    first_update: int = 0,
) -> float:
    """Train over ``loader``; returns the mean training loss of the steps taken (over all processes).

    Args:
        loader: The task's batches, already positioned at ``start_step``.
        stepper: The task's forward, optimizer, AMP and scheduler.
        on_step: Called after every step with (step in epoch, loss sum, steps with a loss): the
            checkpoint hook.
        start_step: Steps of this epoch already done (a resumed run).
        carried: (loss sum, steps) of those steps, so the epoch's mean loss stays exact.
        desc: Progress bar label.
        first_update: The run's update count at ``start_step`` (for per-update schedules such as a warm-up).
    """
    total = start_step + len(loader)
    bar = tqdm(
        total=total, initial=start_step, desc=desc, unit="step", disable=not distributed.is_main(), dynamic_ncols=True
    )
    (loss_sum, steps), seen, start = carried, 0, time.perf_counter()
    step = start_step
    for batch in loader:
        loss, images = stepper.step(batch, first_update + step - start_step)
        step += 1
        if loss is not None:
            loss_sum += loss
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
    loss_sum, steps = distributed.all_reduce_sum([loss_sum, steps], device=stepper.device)
    return loss_sum / steps if steps else float("nan")
