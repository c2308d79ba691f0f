"""MkDocs hook: lay the package out as it is installed, for mkdocstrings to read.

pyproject.toml installs the top-level ``weights/`` folder as ``eca_models.weights``; griffe reads
source trees as they lie on disk, so the API pages are built from a copy arranged the installed way.
"""

import shutil
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "build" / "api-src"


@event_priority(100)  # before mkdocstrings sets up its search paths
def on_config(config):
    shutil.rmtree(TARGET, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "eca_models", TARGET / "eca_models", ignore=ignore)
    shutil.copytree(ROOT / "weights", TARGET / "eca_models" / "weights", ignore=ignore)
    return config
