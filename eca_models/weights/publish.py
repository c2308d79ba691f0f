"""Upload a converted folder to the Hugging Face Hub and record the commit and checksum in the manifest."""

import dataclasses
import json
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

from safetensors import safe_open

from ..errors import first_line
from ..files import sha256_file
from .loading import WEIGHTS_FILE, WeightsError
from .manifest import find_checkpoint, get_checkpoint, list_checkpoints, update_manifest
from .release import list_cached

__all__ = ["PublishPlan", "plan_publish", "publish_cached", "publish_folder", "upload_folder"]

REQUIRED = (WEIGHTS_FILE, "config.json", "README.md")  # a Hub model repo's files: all that is uploaded


@dataclasses.dataclass
class PublishPlan:
    """What a publish would upload and record."""

    folder: Path
    repo_id: str
    files: List[Tuple[str, int]]
    sha256: str
    file_size: int
    checkpoint: Optional[str]


def plan_publish(folder: Union[str, Path], repo_id: str) -> PublishPlan:
    """Check a converted folder and work out what publishing it means.

    Raises:
        WeightsError: The folder is missing, incomplete, or its files are not what convert writes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder} is not a folder; publish takes a folder written by `eca-models convert`")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise WeightsError(
            f"{folder} lacks {', '.join(missing)}; publish takes a folder written by `eca-models convert`"
        )
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise WeightsError(f"repo={repo_id!r}: must look like ORG/NAME")
    try:
        with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:
            meta = f.metadata() or {}
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - any parse failure means the folder is not usable
        raise WeightsError(f"{folder} holds an unreadable {WEIGHTS_FILE} or config.json: {first_line(e)}") from None
    name = meta.get("checkpoint")
    if name is None:
        found = find_checkpoint(hf_hub_id=repo_id)
        name = found.name if found else None
    # what a Hub model repo holds: never a run folder's optimizer state (last.pth), arguments or logs
    files = sorted((name, (folder / name).stat().st_size) for name in REQUIRED)
    weights = folder / WEIGHTS_FILE
    return PublishPlan(folder, repo_id, files, sha256_file(weights), weights.stat().st_size, name)


def upload_folder(folder: Path, repo_id: str, message: str) -> str:
    """Create the repo if needed and upload the folder in one commit; returns the commit hash."""
    from huggingface_hub import HfApi  # its client module is large: loaded only to publish (start-up time)

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, commit_message=message, allow_patterns=list(REQUIRED)
        )
    except Exception as e:  # noqa: BLE001 - network, auth and HTTP errors of several libraries; --debug shows it
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsError(
            f"uploading to {repo_id} failed ({type(e).__name__}{': ' + reason if reason else ''}); "
            "check the network and your Hub token (`hf auth login`), then run publish again: nothing was recorded"
        ) from e
    return info.oid


def publish_folder(
    folder: Union[str, Path],
    repo_id: str,
    dry_run: bool = False,
    manifest_path: Optional[Union[str, Path]] = None,
    upload: Callable[[Path, str, str], str] = upload_folder,
    log: Callable[[str], None] = print,
) -> Optional[str]:
    """Upload ``folder`` to ``repo_id`` and pin the commit and sha256 in the manifest.

    Args:
        folder: A folder written by ``eca-models convert`` (or ``finetune``).
        repo_id: ``ORG/NAME`` on the Hub.
        dry_run: Only say what would be uploaded and recorded.
        manifest_path: The manifest to update; defaults to the package's.
        upload: The upload step (``upload_folder``: a thin call to huggingface_hub).
        log: Where progress lines go.

    Returns:
        The commit hash, or None for a dry run.
    """
    plan = plan_publish(folder, repo_id)
    log(f"{'would upload' if dry_run else 'uploading'} {plan.folder} to {plan.repo_id}:")
    for name, size in plan.files:
        log(f"  {name}  {size:,} bytes")
    log(f"  {WEIGHTS_FILE} sha256 {plan.sha256}")
    target = f"manifest entry {plan.checkpoint}" if plan.checkpoint else "no manifest entry (not a released checkpoint)"
    if dry_run:
        log(f"would record revision, sha256 and size in {target}")
        return None
    commit = upload(plan.folder, plan.repo_id, f"Upload {plan.checkpoint or plan.folder.name} with eca-models")
    log(f"uploaded: commit {commit}")
    if plan.checkpoint:
        get_checkpoint(plan.checkpoint)
        update_manifest(
            plan.checkpoint,
            path=manifest_path,
            hf_hub_id=plan.repo_id,
            revision=commit,
            sha256=plan.sha256,
            file_size=plan.file_size,
        )
        log(f"recorded revision {commit[:12]}, sha256 and size in {target}")
    return commit


def publish_cached(
    dry_run: bool = False,
    manifest_path: Optional[Union[str, Path]] = None,
    upload: Callable[[Path, str, str], str] = upload_folder,
    log: Callable[[str], None] = print,
) -> List[str]:
    """Publish every converted release file in the cache to its manifest Hub repo (``eca-models publish
    --all-cached``), and record beside each Hub pin the sha256 and size of the authors' original it came from.

    After this, the Hub is the first source for everyone, and a Drive file that ever differs from the recorded one
    is refused.

    Returns:
        The names of the checkpoints published (or that would be, with ``dry_run``).

    Raises:
        WeightsError: Nothing is cached; or a folder or upload fails (those before it stay published and recorded).
    """
    cached = list_cached(list_checkpoints())
    if not cached:
        raise WeightsError("no converted release file is cached: fetch them first with `eca-models download --all`")
    for ckpt, conversion in cached:
        publish_folder(conversion.folder, ckpt.hf_hub_id, dry_run, manifest_path, upload, log)
        original = {k: conversion.provenance.get(k) for k in ("sha256", "size")}
        if dry_run:
            log(f"would record the original's sha256 {original['sha256']} and size {original['size']:,} in {ckpt.name}")
            continue
        update_manifest(ckpt.name, path=manifest_path, release={**(ckpt.release or {}), **original})
        log(f"recorded the original's sha256 and size in {ckpt.name}")
    return [ckpt.name for ckpt, _ in cached]
