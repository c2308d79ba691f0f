"""The ``eca-models`` console script's entry: ``--version`` answered from the installed metadata, without
importing torch (``import eca_models`` registers the models with timm, which loads it); everything else handed
to `eca_models.cli.main`."""

import sys
from importlib import metadata
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``eca-models``: ``--version`` here, every command in `eca_models.cli`."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        print(f"eca-models {metadata.version('eca-models')}")
        return 0
    try:
        from eca_models.cli import main as run
    except Exception as e:  # the package's own error at import (a manifest ECA_MODELS_MANIFEST names that is bad)
        errors = sys.modules.get("eca_models.errors")
        if errors is None or not isinstance(e, errors.EcaModelsError):
            raise
        print(f"eca-models: error: {e}", file=sys.stderr)
        return 2
    return run(args)
