"""Weights: the manifest of released checkpoints, and getting their files safely.

Installed as ``eca_models.weights``. ``manifest.json`` is the single source of every checkpoint's
figures; :mod:`.loading` fetches and checks the files; :mod:`.convert` and :mod:`.publish` turn
the authors' ``.pth.tar`` files into Hub repos.
"""

from .loading import (
    WEIGHTS_DIR_ENV,
    WeightsError,
    WeightsNotPublished,
    fetch_from_hub,
    load_pretrained_weights,
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
    "WeightsError",
    "WeightsNotPublished",
    "binary_units",
    "fetch_from_hub",
    "find_checkpoint",
    "get_checkpoint",
    "list_checkpoints",
    "load_manifest",
    "load_pretrained_weights",
    "read_weights_file",
    "weights_location",
]
