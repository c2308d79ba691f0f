"""The training runner every fine-tuning command shares: the run folder, resume, snapshots, interruption, the
best model's export and the curves, and the training step itself (`_train_epoch`: batch, loss, backward, update).
A task (classification, detection) supplies its model, optimizer, loss on a batch and validation; the runner owns
everything that must survive a kill.

A run folder holds ``last.pth`` (written atomically after every epoch, every N steps if asked, and on Ctrl-C),
``args.json`` (the arguments a ``--resume`` must repeat), ``metrics.jsonl``, ``curves.png``, the images that could
not be read, and the best model as a Hub-format folder. A used folder is never reused silently: ``--resume``
continues it, ``--overwrite`` deletes only what a run writes.
"""

import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from .. import distributed
from ..errors import EcaModelsError
from ..files import write_text_atomic
from ..runtime import autocast_for
from .options import FinetuneOptions
from .sampler import epoch_loader
from .state import CHECKPOINT, capture_rng, load_state, restore_rng, save_state

__all__ = [
    "RESUMABLE_CHANGES",
    "RunDirError",
    "RunInterrupted",
    "Progress",
    "StepResult",
    "Task",
    "prepare_run_dir",
    "resume_task",
    "run_in_folder",
    "run_task",
    "seed_everything",
    "unreadable_recorder",
]

T = TypeVar("T")

# what may differ on --resume: where and how fast it runs, not what it computes
RESUMABLE_CHANGES = {"resume", "overwrite", "workers", "device", "save_every_steps", "debug"}


class RunDirError(EcaModelsError, ValueError):
    """The run folder can't be used as asked: exit status 2, one line."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the position was saved: the same call with ``resume=True`` continues it."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (a fresh run's initialisation is reproducible)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_resume_args(run_dir: Path, options: FinetuneOptions) -> None:
    """Refuse a --resume whose options differ from the run's own (``args.json``) in what they compute."""
    path = run_dir / "args.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(options.to_json(), default=str))
    changed = [
        f"{k}={saved.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(now)  # the options of this version (older runs also saved the command's name)
        if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)
    ]
    if changed:
        raise RunDirError(
            f"resume=True with other arguments than the run's ({', '.join(changed)}): continue it with the arguments "
            f"in {path}, or start a new run in another output="
        )


def prepare_run_dir(run_dir: Path, args: FinetuneOptions, run_files: Sequence[str]) -> Path:
    """Check ``run_dir`` against ``--resume`` / ``--overwrite`` and make it.

    Args:
        run_dir: The ``--output`` folder.
        args: The run's options (``resume``, ``overwrite``; all of them are compared on resume).
        run_files: What a run writes there: all that ``--overwrite`` removes (never anything else).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a folder: output= names the folder the run is written into")
    used = run_dir.is_dir() and any(run_dir.iterdir())
    if args.resume and not (run_dir / CHECKPOINT).is_file():
        if not (run_dir / "args.json").is_file():
            raise RunDirError(f"nothing to resume: {run_dir} holds no run (no {CHECKPOINT}, no args.json)")
        # a run stopped before its first checkpoint: resuming it is starting it again, with the same arguments
        check_resume_args(run_dir, args)
        if distributed.is_main_env():
            print(
                f"{run_dir} holds no {CHECKPOINT} yet (the run stopped before its first): starting it from the beginning"
            )
        args.resume = False
        return _clear_run_files(run_dir, run_files)
    if args.resume:
        check_resume_args(run_dir, args)
    if used and not (args.resume or args.overwrite):
        raise RunDirError(
            f"{run_dir} is not empty: pass resume=True to continue that run or overwrite=True to start over"
        )
    if args.overwrite:
        return _clear_run_files(run_dir, run_files)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _clear_run_files(run_dir: Path, run_files: Sequence[str]) -> Path:
    if distributed.is_main_env():
        for name in run_files:
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


# what a task's loss returns for one batch: the loss (None: nothing to learn from, e.g. every image unreadable),
# how many images it saw, and the paths of the images it could not read
StepResult = Tuple[Optional[torch.Tensor], int, List[str]]


@dataclasses.dataclass
class Task:
    """What a fine-tuning task hands the runner.

    Attributes:
        model: The model (unwrapped: its state is what is saved).
        optimizer: Its optimizer.
        scheduler: A timm scheduler (``step(epoch)`` at each epoch's start, ``step_update`` per update: a no-op
            for per-epoch schedules).
        scaler: A GradScaler (float16 AMP on CUDA), or None.
        device: Where the model is.
        identity: What a checkpoint must hold to be resumed by this task (model name, classes); saved with it.
        epochs: How many epochs the run has.
        train_set: The training items (``epoch_loader`` draws each epoch's batches from it).
        train_mode: Puts the model in training mode for an epoch.
        loss: A batch -> `StepResult` (run under autocast when asked): the task's whole forward.
        unreadable: Called with paths of images that could not be read (the task records them).
        validate: ``epoch -> metrics``: the entries the history records besides epoch, train loss and lr.
        best_key: The metric (higher is better) that picks the model to export.
        export: ``best -> None``: write the best model so far (rank 0 only).
        describe: ``(history entry, best) -> str``: the epoch's line.
        curves: ``history -> None``: draw the curves at the end.
        finished: ``best -> str``: the closing line.
        collate: How the loader makes a batch of items (None: PyTorch's default).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[torch.amp.GradScaler]
    device: torch.device
    identity: Dict[str, Any]
    epochs: int
    train_set: torch.utils.data.Dataset
    train_mode: Callable[[], None]
    loss: Callable[[Any], StepResult]
    unreadable: Callable[[List[str]], None]
    validate: Callable[[int], Dict[str, float]]
    best_key: str
    export: Callable[[Dict[str, Any]], None]
    describe: Callable[[Dict[str, Any], Dict[str, Any]], str]
    curves: Callable[[List[Dict[str, Any]]], None]
    finished: Callable[[Dict[str, Any]], str]
    collate: Optional[Callable] = None


@dataclasses.dataclass
class Progress:
    """Where a run is: the next epoch and step, the loss carried within the epoch, the best epoch so far, the
    history, and the random generators' state at that point (what a checkpoint holds besides the weights)."""

    epoch: int = 0
    step: int = 0
    carried: Tuple[float, int] = (0.0, 0)
    best: Dict[str, Any] = dataclasses.field(default_factory=dict)
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    rng: Any = None

    def snapshot(self, task: Task) -> Dict[str, Any]:
        """The checkpoint of ``task`` at this point."""
        return {
            **task.identity,
            "model": task.model.state_dict(),
            "optimizer": task.optimizer.state_dict(),
            "scheduler": task.scheduler.state_dict(),
            "scaler": task.scaler.state_dict() if task.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "carried": list(self.carried),
            "best": self.best,
            "history": self.history,
            "rng": self.rng,
        }


def resume_task(task: Task, run_dir: Path) -> Progress:
    """Load the run's ``last.pth`` into ``task`` (refused for another model or classes) and return its position."""
    state = load_state(run_dir)
    for key, value in task.identity.items():
        if state.get(key) != value:
            raise RunDirError(
                f"{run_dir} holds a run of {state.get('model_name')} on other {key.replace('_', ' ')}; "
                "use another output="
            )
    task.model.load_state_dict(state["model"])
    task.optimizer.load_state_dict(state["optimizer"])
    task.scheduler.load_state_dict(state["scheduler"])
    if task.scaler is not None and state.get("scaler"):
        task.scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])
    progress = Progress(state["epoch"], state["step"], tuple(state["carried"]), state["best"], state["history"])
    if distributed.is_main():
        print(f"resuming {run_dir} at epoch {progress.epoch + 1}, step {progress.step}")
    return progress


def run_task(task: Task, run_dir: Path, options: FinetuneOptions) -> Progress:
    """Train ``task`` in ``run_dir`` from the start or, with ``options.resume``, exactly where it stopped.

    Returns:
        The finished run's progress: its best epoch's metrics and its history.

    Raises:
        RunInterrupted: On Ctrl-C, after saving the position (the same call with ``resume=True`` continues it).
    """
    if options.resume:
        progress = resume_task(task, run_dir)
    else:
        progress = Progress(best={task.best_key: -1.0, "epoch": -1})
        if distributed.is_main():
            write_text_atomic(run_dir / "args.json", json.dumps(options.to_json(), indent=2, default=str) + "\n")
    position = dataclasses.replace(progress, rng=capture_rng())  # what Ctrl-C saves: updated at every step
    try:
        while progress.epoch < task.epochs:
            _train_epoch(task, run_dir, options, progress, position)
            position = dataclasses.replace(progress, rng=capture_rng())
            if distributed.is_main():
                save_state(run_dir, position.snapshot(task))
                write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in progress.history))
                print(task.describe(progress.history[-1], progress.best))
    except KeyboardInterrupt:
        if distributed.is_main():
            save_state(run_dir, position.snapshot(task))
            print(
                f"\ninterrupted: saved epoch {position.epoch + 1} step {position.step} to {run_dir / CHECKPOINT}; "
                "continue it with the same options and resume=True",
                file=sys.stderr,
            )
        raise RunInterrupted() from None
    if distributed.is_main():
        task.curves(progress.history)
        print(task.finished(progress.best))
    return progress


def _train_epoch(task: Task, run_dir: Path, options: FinetuneOptions, progress: Progress, position: Progress) -> None:
    """One epoch from ``progress``'s step: each batch's loss, backward and update; ``position`` follows every step
    (snapshotted every ``save_every_steps``); then validation, and ``progress`` moves to the next epoch."""
    epoch, start = progress.epoch, progress.step
    task.scheduler.step(epoch)
    task.train_mode()
    loader = epoch_loader(
        task.train_set, options.batch_size, options.seed, epoch, start, distributed.rank(), distributed.world_size(),
        options.workers, pin_memory=task.device.type == "cuda", collate_fn=task.collate,
    )  # fmt: skip
    per_epoch = start + len(loader)  # full batches only: the same count in every epoch
    bar = tqdm(
        total=per_epoch, initial=start, desc=f"epoch {epoch + 1}/{task.epochs}", unit="step",
        disable=not distributed.is_main(), dynamic_ncols=True,
    )  # fmt: skip
    (loss_sum, steps), seen, began = progress.carried, 0, time.perf_counter()
    for step, batch in enumerate(loader, start + 1):
        task.scheduler.step_update(epoch * per_epoch + step - 1)
        with autocast_for(task.device, options.amp):
            loss, images, unreadable = task.loss(batch)
        task.unreadable(unreadable)
        if loss is not None:
            task.optimizer.zero_grad(set_to_none=True)
            if task.scaler is not None:
                task.scaler.scale(loss).backward()
                task.scaler.step(task.optimizer)
                task.scaler.update()
            else:
                loss.backward()
                task.optimizer.step()
            loss_sum, steps, seen = loss_sum + float(loss.detach()), steps + 1, seen + images
        rate = seen * distributed.world_size() / max(time.perf_counter() - began, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / max(steps, 1):.4f}", img_s=f"{rate:.1f}", refresh=False)
        position.epoch, position.step, position.carried, position.rng = epoch, step, (loss_sum, steps), capture_rng()
        if options.save_every_steps and step % options.save_every_steps == 0 and distributed.is_main():
            save_state(run_dir, position.snapshot(task))
    bar.close()
    loss_sum, steps = distributed.all_reduce_sum([loss_sum, steps], device=task.device)
    _end_epoch(task, progress, epoch, loss_sum / steps if steps else float("nan"))


def _end_epoch(task: Task, progress: Progress, epoch: int, mean_loss: float) -> None:
    """Validate, record the epoch in ``progress`` (moved to the next epoch) and export a new best model."""
    metrics = task.validate(epoch)
    progress.epoch, progress.step, progress.carried = epoch + 1, 0, (0.0, 0)
    entry = dict(epoch=epoch + 1, train_loss=mean_loss, **metrics, lr=task.optimizer.param_groups[0]["lr"])
    progress.history.append(entry)
    if metrics[task.best_key] > progress.best[task.best_key]:
        progress.best = {**metrics, "epoch": epoch + 1}
        if distributed.is_main():
            task.export(progress.best)


def run_in_folder(args: FinetuneOptions, run_files: Sequence[str], main: Callable[[Path, torch.device], T]) -> T:
    """Prepare the ``--output`` folder, join torchrun's process group, call ``main(run_dir, device)``; a start that
    fails leaves no empty run folder behind."""
    made = _missing_folders(Path(args.output))  # the folders this run makes: removed again if it fails to start
    run_dir = prepare_run_dir(Path(args.output), args, run_files)
    device = distributed.setup(args.device)
    try:
        return main(run_dir, device)
    except BaseException:
        if distributed.is_main_env():
            for folder in made:  # innermost first; only while empty
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
    finally:
        distributed.cleanup()


def _missing_folders(path: Path) -> List[Path]:
    """``path`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    path = path.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def unreadable_recorder(run_dir: Path, command: str) -> Callable[[List[str]], None]:
    """A callback that warns once per unreadable image and appends it to ``run_dir/skipped_images.txt``."""
    skipped: set = set()

    def note(paths: List[str]) -> None:
        new = [p for p in paths if p not in skipped]
        skipped.update(new)
        for path in new:
            print(f"eca-models {command}: warning: skipping unreadable image {path}", file=sys.stderr)
        if new:
            with open(run_dir / "skipped_images.txt", "a", encoding="utf-8") as f:
                f.writelines(p + "\n" for p in new)

    return note
