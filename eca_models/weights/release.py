"""The authors' own release files as a weights source: fetched from Google Drive, checked, converted, cached.

Until a checkpoint is published on the Hugging Face Hub, its weights come from the file the authors put on Google
Drive (its id is in the manifest): the last source of `fetch`'s order, whose converted cache
(``$HF_HOME/eca-models/<checkpoint>/<sha256 of the original>/``) is its second. The file is downloaded with gdown
(it follows Drive's confirmation pages), its sha256 taken on the way and held against the manifest's where pinned,
read with ``weights_only=True`` (never running pickled code), checked strictly (every tensor used, the kernel code
read from its ECA tensors, the class count), converted by exactly the code of ``eca-models convert``, its outputs
checked against the source's, and renamed into the cache only then, with its provenance in ``config.json``. The
pickle is deleted unless kept.

``ECA_MODELS_SOURCES=hub`` restricts fetching to pinned Hub files; ``HF_HUB_OFFLINE=1`` fetches nothing. The Baidu
copy is never fetched: its link and extract code are shown when nothing else works.
"""

import dataclasses
import datetime
import errno
import hashlib
import json
import math
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from filelock import FileLock
from huggingface_hub import constants as hf_constants
from tqdm import tqdm

from ..errors import first_line
from ..files import replace_folder, scratch_folder, write_text_atomic
from ..version import __version__
from .loading import WEIGHTS_FILE, WeightsError, intact_safetensors, sniff_format, ways_to_supply
from .manifest import Checkpoint

__all__ = [
    "DRIVE_ENDPOINT_ENV",
    "SOURCES",
    "SOURCES_ENV",
    "CachedConversion",
    "ReleaseFetchError",
    "allowed_sources",
    "cache_root",
    "cached_conversion",
    "drive_url",
    "fetch_release",
    "hub_offline",
    "hub_unreachable",
    "list_cached",
]

DRIVE_ENDPOINT_ENV = "ECA_MODELS_DRIVE_ENDPOINT"
DRIVE_TIMEOUT_ENV = "ECA_MODELS_DRIVE_TIMEOUT"
SOURCES_ENV = "ECA_MODELS_SOURCES"
DEFAULT_DRIVE_ENDPOINT = "https://drive.google.com"
SOURCES = ("hub", "release")
PROVENANCE_KEY = "provenance"
QUOTA_TEXT = "too many users have viewed or downloaded this file recently"


class ReleaseFetchError(WeightsError):
    """The authors' file could not be fetched, trusted or converted; nothing was cached. One line."""


@dataclasses.dataclass(frozen=True)
class CachedConversion:
    """A converted release file in the cache: its folder and where it came from."""

    folder: Path
    provenance: Dict[str, Any]

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_FILE


def cache_root() -> Path:
    """``$HF_HOME/eca-models``: the converted release files, beside huggingface_hub's own cache (``HF_HOME`` is read
    at each call, so a test or a script may move it)."""
    home = os.environ.get("HF_HOME") or hf_constants.HF_HOME
    return Path(home).expanduser() / "eca-models"


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids every download (read at each call, like the cache root)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in ("1", "on", "yes", "true")
    return bool(hf_constants.HF_HUB_OFFLINE)


def hub_unreachable(connect_timeout: float = 5.0) -> Optional[str]:
    """Why the Hub cannot be asked now (``HF_HUB_OFFLINE``, or no connection to ``HF_ENDPOINT`` within
    ``connect_timeout`` seconds), or None: checked at once, where huggingface_hub would retry for half a minute."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(hf_constants.ENDPOINT)
    try:
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        socket.create_connection((endpoint.hostname, port), connect_timeout).close()
    except OSError:
        return "no connection"
    return None


def allowed_sources(source: Optional[str] = None) -> Tuple[str, ...]:
    """The sources weights may be fetched from: ``source`` (``hub`` or ``release``) where given, else
    ``ECA_MODELS_SOURCES`` (comma-separated), else both.

    Raises:
        WeightsError: An unknown source name.
    """
    text = source or os.environ.get(SOURCES_ENV) or ",".join(SOURCES)
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise WeightsError(f"unknown weights source {text!r} ({SOURCES_ENV} / source=): use hub, release or both")
    return names


def drive_url(file_id: str) -> str:
    """Where a Drive file is asked for: ``{endpoint}/uc?id=<id>`` (``ECA_MODELS_DRIVE_ENDPOINT``, default Drive's)."""
    endpoint = (os.environ.get(DRIVE_ENDPOINT_ENV) or DEFAULT_DRIVE_ENDPOINT).rstrip("/")
    if not re.match(r"https?://[^/]", endpoint):
        raise WeightsError(f"{DRIVE_ENDPOINT_ENV}={endpoint!r}: expected an http:// or https:// address")
    return f"{endpoint}/uc?id={file_id}"


def _read_provenance(folder: Path) -> Optional[Dict[str, Any]]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    provenance = config.get(PROVENANCE_KEY) if isinstance(config, dict) else None
    return provenance if isinstance(provenance, dict) else None


def cached_conversion(ckpt: Checkpoint) -> Optional[CachedConversion]:
    """The converted release file of ``ckpt`` in the cache, if any: the one whose original matches the manifest's
    pinned sha256 where it pins one, else the latest fetched."""
    root = cache_root() / ckpt.name
    if not root.is_dir():
        return None
    pinned = (ckpt.release or {}).get("sha256")
    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not intact_safetensors(folder / WEIGHTS_FILE):
            continue  # a damaged entry is not cached: the next fetch replaces it
        provenance = _read_provenance(folder)
        if provenance is None or (pinned and provenance.get("sha256") != pinned):
            continue
        found.append(CachedConversion(folder, provenance))
    return max(found, key=lambda c: c.provenance.get("fetched", "")) if found else None


def fetch_release(
    ckpt: Checkpoint,
    keep_original: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> CachedConversion:
    """Download the authors' file of ``ckpt`` from Google Drive, check and convert it, and cache the result.

    Args:
        ckpt: A manifest entry with a ``release`` source.
        keep_original: Keep the downloaded file beside the conversion (``<cache>/<checkpoint>/<file name>``).
        log: Where progress lines go (stderr by default; a progress bar goes there too).

    Raises:
        ReleaseFetchError: One line: offline, Drive's refusal (quota, a removed or private file, a web page), a cut
            or stalled download, a file of another checkpoint, pickled code, a full disk or a cache that cannot be
            written. Nothing is cached.

    Processes fetching one checkpoint take turns (a lock file in ``$HF_HOME/.locks/eca-models/``, which the system
    releases when its holder dies, however it dies): the later finds the earlier's conversion and downloads nothing.
    """
    release = ckpt.release or {}
    if not release.get("drive_id"):
        raise ReleaseFetchError(f"{ckpt.name} has no release file in the manifest; {ways_to_supply(ckpt)}")
    if hub_offline():
        raise ReleaseFetchError(
            f"{ckpt.name} is not in the cache and HF_HUB_OFFLINE forbids downloading it; {ways_to_supply(ckpt)}"
        )
    lock_file = cache_root().parent / ".locks" / "eca-models" / f"{ckpt.name}.lock"  # beside huggingface_hub's
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_file))
        lock.acquire()
    except OSError as e:
        raise ReleaseFetchError(_unwritable(ckpt, lock_file.parent, e)) from None
    try:
        cached = cached_conversion(ckpt)
        if cached is not None and not keep_original:
            log(f"{ckpt.name} was cached by another process meanwhile: {cached.folder}")
            return cached
        return _fetch_and_convert(ckpt, release, keep_original, log)
    finally:
        lock.release()


def _unwritable(ckpt: Checkpoint, where: Path, e: OSError) -> str:
    """The one line for a cache that cannot be written: a read-only or foreign folder, or a full disk."""
    reason = e.strerror or str(e)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "set HF_HOME to a folder you can write"
    else:
        fix = "free some space or set HF_HOME to a larger disk"
    return f"could not write {ckpt.name} into the cache {where} ({reason}): {fix}, then run again; nothing was cached"


def _fetch_and_convert(
    ckpt: Checkpoint, release: Dict[str, Any], keep_original: bool, log: Callable[[str], None]
) -> CachedConversion:
    """`fetch_release`'s work, under its lock."""
    root = cache_root() / ckpt.name
    file_name = release.get("file_name") or ckpt.source_file
    try:
        with scratch_folder(root, "fetch") as scratch:
            original = scratch / file_name
            sha256, size = _download(ckpt, release, original, log)
            _check_pins(ckpt, release, sha256, size)
            converted = scratch / "converted"
            _convert(ckpt, original, converted, lambda line: None if line.startswith("wrote ") else log(line))
            provenance = {
                "source": "google-drive",
                "file_id": release["drive_id"],
                "file_name": file_name,
                "sha256": sha256,
                "size": size,
                "converter": f"eca-models {__version__}",
                "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            _add_provenance(converted, provenance)
            final = root / sha256
            replace_folder(converted, final)  # whole, verified, in one step
            if keep_original:
                original.rename(root / file_name)
                log(f"kept the original file at {root / file_name}")
    except WeightsError as e:  # the file's own problem, named by its name, not the scratch path it was read from
        _remove_if_empty(root)  # nothing half-made stays in the cache, not even an empty folder
        if isinstance(e, ReleaseFetchError):
            raise
        text = re.sub(r"\S*\.eca-tmp\.\S*/", "", str(e))
        raise ReleaseFetchError(f"the authors' file for {ckpt.name}: {text}; nothing was cached") from None
    except BaseException as e:
        _remove_if_empty(root)
        if not isinstance(e, OSError):
            raise
        raise ReleaseFetchError(_unwritable(ckpt, root, e)) from None
    log(f"cached {ckpt.name} in {final} (from the authors' Google Drive file, sha256 {sha256[:12]}...)")
    return CachedConversion(final, provenance)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only an empty one
    except OSError:
        pass


def _timeout() -> Tuple[float, float]:
    """(connect, read) seconds: ``ECA_MODELS_DRIVE_TIMEOUT`` sets the read timeout (default 60)."""
    given = os.environ.get(DRIVE_TIMEOUT_ENV, "60")
    try:
        read = float(given)
    except ValueError:
        read = math.nan
    if not (math.isfinite(read) and read > 0):  # 0 or less: requests' ValueError; nan or inf: no timeout at all
        raise WeightsError(f"{DRIVE_TIMEOUT_ENV}={given!r}: expected a number of seconds above 0")
    return (min(10.0, read), read)


def _download(ckpt: Checkpoint, release: Dict[str, Any], path: Path, log: Callable[[str], None]) -> Tuple[str, int]:
    """Fetch the Drive file into ``path`` with gdown and a progress bar; returns its sha256 and size."""
    # gdown and requests: loaded only when a file is fetched (start-up time)
    import gdown
    import requests
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    url = drive_url(release["drive_id"])
    hasher = hashlib.sha256()
    progress = _DriveProgress(f"{path.name} (Google Drive)")
    baidu = _baidu(release)
    try:
        gdown.download(
            url, str(path), quiet=True, progress=progress, hasher=hasher, timeout=_timeout(), use_cookies=False
        )
    except FileURLRetrievalError as e:
        raise _refusal(ckpt, str(e), baidu) from None
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        what = "removed, or not public" if status in (403, 404) else "refused"
        raise ReleaseFetchError(
            f"Google Drive answered HTTP {status} for {ckpt.name}'s file (id {release['drive_id']}): {what}; "
            f"{ways_to_supply(ckpt, drive=status not in (403, 404))}"
        ) from None
    except (requests.Timeout, requests.ConnectionError) as e:
        if not isinstance(e, requests.Timeout) and "timed out" not in str(e).lower():
            raise ReleaseFetchError(
                f"cannot reach Google Drive for {ckpt.name} (no connection to {url.split('/uc?')[0]}): connect and "
                f"run again, or {ways_to_supply(ckpt)}"
            ) from None
        raise ReleaseFetchError(
            f"the download of {path.name} stalled (no data for {_timeout()[1]:g} s): run again; nothing was cached"
        ) from None
    except (requests.RequestException, DownloadError) as e:
        raise ReleaseFetchError(
            f"the download of {path.name} failed ({first_line(e)[:200]}): run again; nothing was cached"
        ) from None
    finally:
        progress.close()
    return _downloaded(ckpt, path, url, baidu, hasher, log)


class _DriveProgress:
    """gdown's progress callback as a tqdm bar on stderr, made at the first bytes (a refused connection prints
    nothing but its one line)."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: Optional[int]) -> None:
        if self.bar is None:
            self.bar = tqdm(
                desc=self.desc, total=total, unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr
            )
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _downloaded(ckpt: Checkpoint, path: Path, url: str, baidu: str, hasher, log: Callable[[str], None]):
    """The downloaded file checked to be a PyTorch file (not a web page, an LFS pointer, ...): its sha256 and size."""
    if not path.is_file():
        raise ReleaseFetchError(f"the download of {path.name} wrote no file; run again")
    kind = sniff_format(path)
    if kind != "pytorch":
        _refuse_content(ckpt, path, kind, baidu)
    size = path.stat().st_size
    log(f"fetched {path.name} ({size / 2**20:.1f} MiB) for {ckpt.name} from the authors' Google Drive ({url})")
    return hasher.hexdigest(), size


def _baidu(release: Dict[str, Any]) -> str:
    if not release.get("baidu_url"):
        return "the authors' other mirror"
    return f"Baidu {release['baidu_url']} (extract code {release.get('baidu_code', '?')})"


def _refusal(ckpt: Checkpoint, text: str, baidu: str) -> ReleaseFetchError:
    """Drive's own words, as one line that says what to do."""
    lowered = " ".join(text.split()).lower()
    if QUOTA_TEXT in lowered or "quota" in lowered:
        return ReleaseFetchError(
            f"Google Drive refuses {ckpt.name}'s file for now: too many users have downloaded it recently (Drive lifts "
            f"this within about a day): try again in a few hours, or get it from {baidu} and pass checkpoint=FILE"
        )
    if "does not exist" in lowered or "not found" in lowered or "permission" in lowered or "public link" in lowered:
        return ReleaseFetchError(
            f"Google Drive has no public file for {ckpt.name} (removed, or made private); get it from {baidu}, or "
            f"{ways_to_supply(ckpt)}"
        )
    first = " ".join(text.split())[:160]
    return ReleaseFetchError(f"Google Drive did not give {ckpt.name}'s file ({first}); get it from {baidu}")


def _refuse_content(ckpt: Checkpoint, path: Path, kind: str, baidu: str) -> None:
    """A download that is not a PyTorch file: Drive's quota or error page, or something else; one line."""
    head = path.read_bytes()[: 1 << 16].decode("utf-8", errors="replace")
    if "html" in kind.lower():
        text = re.sub(r"<[^>]+>", " ", head)
        error = _refusal(ckpt, text, baidu)
        if QUOTA_TEXT in " ".join(text.split()).lower() or "does not exist" in text.lower():
            raise error
        raise ReleaseFetchError(
            f"Google Drive answered {ckpt.name}'s download with a web page, not the checkpoint (a sign-in, "
            f"virus-scan or error page); run again later, update gdown (pip install -U gdown), or get it from {baidu}"
        )
    raise ReleaseFetchError(f"the downloaded {path.name} {kind}; nothing was cached. Run again, or get it from {baidu}")


def _check_pins(ckpt: Checkpoint, release: Dict[str, Any], sha256: str, size: int) -> None:
    pinned_sha, pinned_size = release.get("sha256"), release.get("size")
    if pinned_size is not None and size != pinned_size:
        raise ReleaseFetchError(
            f"the downloaded file of {ckpt.name} is {size:,} bytes, the manifest pins {pinned_size:,}: refused, nothing "
            "was cached (a cut download or another file; run again, and report it if it repeats)"
        )
    if pinned_sha and sha256 != pinned_sha:
        raise ReleaseFetchError(
            f"the downloaded file of {ckpt.name} has sha256 {sha256[:12]}..., the manifest pins {pinned_sha[:12]}...: "
            "refused, nothing was cached (report it: the file on Drive is not the one recorded)"
        )


def _convert(ckpt: Checkpoint, original: Path, out: Path, log: Callable[[str], None]) -> None:
    """Exactly ``eca-models convert``: read, check, remap, write, reload and compare; then the release's class count."""
    # the converters sit above this package (they build models, which fetch their weights through it): imported
    # here, where a fetched file is converted, and not when the package is
    if ckpt.is_classifier:
        from ..conversion.imagenet import convert_checkpoint

        convert_checkpoint(original, ckpt.model_name, out, log=log)  # 1000 classes and its kernel code, strictly
        return
    from ..conversion.mmdet_v1 import convert_mmdet_checkpoint
    from ..detection.labels import LabelMap

    convert_mmdet_checkpoint(original, ckpt.architecture, out, kernel_code=ckpt.kernel_code, log=log)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    label_map = LabelMap.from_json(config["label_map"])
    if label_map != LabelMap.coco(label_map.background):
        count = len(label_map.names)
        raise ReleaseFetchError(
            f"{original.name} holds a detector of {count} classes, not COCO's 80: not the release's {ckpt.name}"
        )


def _add_provenance(folder: Path, provenance: Dict[str, Any]) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config[PROVENANCE_KEY] = provenance
    write_text_atomic(folder / "config.json", json.dumps(config, indent=2) + "\n")


def list_cached(checkpoints: Sequence[Checkpoint]) -> List[Tuple[Checkpoint, CachedConversion]]:
    """The cached conversions of ``checkpoints``, in their order."""
    found = []
    for ckpt in checkpoints:
        cached = cached_conversion(ckpt)
        if cached is not None:
            found.append((ckpt, cached))
    return found
