"""Weights: the manifest of released checkpoints, and getting their files safely.

``manifest.json`` (beside this module; no other copy exists) is the single source of every
checkpoint's figures; `fetch` is the one path to a checkpoint's weights (a local folder, the cache, the
Hub, the authors' file through `release`); `loading` reads and checks files; `folders` writes model folders and `publish` uploads them
(the authors' files are converted by `eca_models.conversion`).
"""

from .fetch import Fetched, download_checkpoints, fetch_from_hub, fetch_weights, load_pretrained_weights
from .loading import (
    WEIGHTS_DIR_ENV,
    WeightsError,
    WeightsNotPublished,
    read_weights_file,
    weights_location,
)
from .manifest import (
    CLASSIFICATION,
    Checkpoint,
    binary_units,
    find_checkpoint,
    get_checkpoint,
    list_checkpoints,
    load_manifest,
)

__all__ = [
    "CLASSIFICATION",
    "WEIGHTS_DIR_ENV",
    "Checkpoint",
    "Fetched",
    "WeightsError",
    "WeightsNotPublished",
    "binary_units",
    "download_checkpoints",
    "fetch_from_hub",
    "fetch_weights",
    "find_checkpoint",
    "get_checkpoint",
    "list_checkpoints",
    "load_manifest",
    "load_pretrained_weights",
    "read_weights_file",
    "weights_location",
]
