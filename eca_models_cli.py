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
    from eca_models.cli import main as run

    return run(args)
