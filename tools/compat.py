"""CI's check that eca-models works where users install it, not only in CI's own environment.

Each leg makes a fresh virtual environment under ``build/compat/LEG``, installs this checkout into it, and runs the
tests that touch each dependency there (``TESTS``; anything after ``--`` goes to pytest instead):

    python3 tools/compat.py oldest   # Python 3.10 and the lowest version pyproject.toml allows of every direct
                                     # dependency, torch and torchvision included (uv's --resolution lowest-direct)
    python3 tools/compat.py newest   # Python 3.13 and the newest version of everything
    python3 tools/compat.py upgrade  # an environment that already holds gdown 5.2 and timm 1.0.20, as notebook
                                     # images do: plain pip must leave versions that work (a true lower bound makes it
                                     # upgrade what is too old), then the release's Drive path runs there

``oldest`` and ``newest`` install with uv (it downloads what it needs from the package index); ``upgrade`` uses pip,
since what pip keeps is the question, with CI's own torch (``--system-site-packages``). The interpreters come from
pyenv (``~/.pyenv/versions/3.10.*``) or ``PATH``. The environment (several GB with torch) is removed after its
tests unless ``--keep``. Exits with pytest's status.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEGS = {"oldest": "3.10", "newest": "3.13", "upgrade": f"{sys.version_info.major}.{sys.version_info.minor}"}
PREINSTALLED = ["gdown==5.2.0", "timm==1.0.20"]  # what a notebook image may already hold
UPGRADE_TESTS = ["tests/test_release.py", "tests/test_packaging.py"]
# every job once (test_api: fine-tuning, validation with pycocotools, predict, convert, export, benchmarks, the
# attention figure with matplotlib), the models against timm and torch (fx, export, TorchScript, compile), add_eca on
# timm's and torchvision's own blocks and torchvision's detectors, the weights paths (huggingface_hub, safetensors, gdown, the authors' legacy
# files), ONNX, torch.hub and packaging; the whole suite twice more would not fit CI's time
TESTS = [
    f"tests/test_{name}.py"
    for name in (
        "api", "models", "registry", "layer", "kernel_codes", "tracing", "export", "hubconf", "packaging", "files",
        "manifest", "authors_files", "convert_publish", "hub", "release", "detection_models", "attention",
        "insertion", "torchvision_detectors",
    )
]  # fmt: skip


def _python(version: str) -> str:
    """An interpreter of ``version``: pyenv's, else one on PATH."""
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}")) or [shutil.which(f"python{version}")]
    if not found[-1]:
        sys.exit(f"compat: no Python {version} (pyenv or python{version} on PATH); install it or skip this leg")
    return found[-1]


def _run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def _versions(python: str) -> None:
    code = (
        "import importlib.metadata as m, sys; print('Python ' + sys.version.split()[0], *("
        "f'{n} {m.version(n)}' for n in ('torch', 'torchvision', 'timm', 'huggingface_hub', 'safetensors', 'gdown',"
        " 'numpy', 'tqdm', 'matplotlib', 'pycocotools', 'onnx', 'onnxruntime', 'onnxscript')), sep=', ')"
    )
    _run(python, "-c", code)


def make_env(leg: str) -> str:
    """The leg's environment, made anew; returns its interpreter."""
    env_dir = ROOT / "build" / "compat" / leg
    shutil.rmtree(env_dir, ignore_errors=True)
    base = _python(LEGS[leg])
    python = str(env_dir / "bin" / "python")
    if leg == "upgrade":
        _run(base, "-m", "venv", "--system-site-packages", str(env_dir))
        _run(python, "-m", "pip", "install", "-q", *PREINSTALLED)
        _run(python, "-m", "pip", "install", "-q", "-e", ".")  # as a user would: pip decides what to upgrade
        return python
    _run("uv", "venv", "-q", "--seed", "--python", base, str(env_dir))  # with pip: the wheel test builds one
    resolution = ["--resolution", "lowest-direct"] if leg == "oldest" else []
    _run("uv", "pip", "install", "-q", "--python", python, *resolution, "-e", ".[dev]")
    _run("uv", "pip", "install", "-q", "--python", python, "setuptools")  # torch.compile's C++ builds import it
    return python


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("leg", choices=sorted(LEGS))
    parser.add_argument("--keep", action="store_true", help="keep build/compat/LEG after the tests")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments (default: every test)")
    args = parser.parse_args(argv)
    python = make_env(args.leg)
    try:
        _versions(python)
        tests = args.pytest_args or (UPGRADE_TESTS if args.leg == "upgrade" else TESTS)
        return subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", *tests], cwd=ROOT).returncode
    finally:
        if not args.keep:
            shutil.rmtree(ROOT / "build" / "compat" / args.leg, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
