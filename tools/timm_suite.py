"""Run timm's own model tests (``tests/test_models.py`` of the installed timm's sdist) on our model names.

    python3 tools/timm_suite.py                 # every registered eca-models name
    python3 tools/timm_suite.py --smallest      # one name per family (eca_resnet18, eca_mobilenetv2)
    python3 tools/timm_suite.py -- -x -k fx     # anything after -- goes to pytest

The sdist comes from the package index (``pip download timm==<installed> --no-binary :all:``) and is kept
in ``--cache``. Only the test items whose ``model_name`` is one of ours are run; timm's own models and
the tests that name none are deselected, so the exit status is pytest's on our names alone.

No checkpoint of ours is on the Hub yet, so the tests that load pretrained weights
(``test_model_load_pretrained``, ``test_model_features_pretrained``) get stand-in files: each released
checkpoint's architecture, randomly initialised, saved as ``model.safetensors`` in a folder that
``ECA_MODELS_WEIGHTS_DIR`` points to. They test the loading path (local weights, classifier and input
adaptation, ``features_only``), not the weights.
"""

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PLUGIN = """
import pytest
import timm

import eca_models

NAMES = set({names!r})
OUR_MODULES = ("eca_resnet", "eca_mobilenetv2")
MARKS = ("base", "cfg", "cfg_nonstd", "forward", "backward", "torchscript", "features", "fxforward", "fxbackward", "timeout")


def pytest_configure(config):
    for mark in MARKS:  # registered by timm's own setup, which is not installed with the tests
        config.addinivalue_line("markers", mark)
    timm.list_models = _with_ours(timm.list_models)


def _with_ours(list_models):
    # timm runs its feature-API tests (forward_intermediates, pruning) on the model modules it lists by name;
    # ours have that API too, so they are listed wherever timm's ResNet module is
    def listed(filter="", module="", *args, **kwargs):
        names = list_models(filter, module, *args, **kwargs)
        if module and "resnet" in ([module] if isinstance(module, str) else module):
            names = sorted(set(names) | set(list_models(filter, list(OUR_MODULES), *args, **kwargs)))
        return names

    return listed


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {{}})
        name = str(params.get("model_name", "")).split(".")[0]  # 'eca_resnet50.in1k': a pretrained tag
        (keep if name in NAMES else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
"""


def fetch_tests(cache: Path) -> Path:
    """The ``tests/`` folder of the installed timm's sdist, downloaded once into ``cache``."""
    import timm

    version = timm.__version__
    target = cache / f"timm-{version}"
    if (target / "tests" / "test_models.py").is_file():
        return target / "tests"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*cmd, "-d", tmp, "-q"], check=True)
        (sdist,) = Path(tmp).glob("timm-*.tar.gz")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"timm-{version}/tests/")]
            tar.extractall(tmp, members=members, filter="data")
        os.replace(Path(tmp) / f"timm-{version}", target)  # whole or not at all
    return target / "tests"


def write_stand_in_weights(folder: Path) -> None:
    """A randomly initialised ``<checkpoint>/model.safetensors`` for every released checkpoint, in ``folder``."""
    import timm
    from safetensors.torch import save_file

    from eca_models.weights import CLASSIFICATION, list_checkpoints

    for ckpt in list_checkpoints(CLASSIFICATION):
        target = folder / ckpt.name
        target.mkdir(parents=True)
        state = timm.create_model(ckpt.model_name).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(target / "model.safetensors"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "eca-models" / "timm-sdist")
    parser.add_argument("--smallest", action="store_true", help="only the smallest model of each family")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    import eca_models

    names = ["eca_resnet18", "eca_mobilenetv2"] if args.smallest else list(eca_models.MODEL_NAMES)
    tests = fetch_tests(args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "_eca_models_only.py").write_text(PLUGIN.format(names=sorted(names)), encoding="utf-8")
        write_stand_in_weights(Path(tmp) / "weights")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")])))
        env["ECA_MODELS_WEIGHTS_DIR"] = str(Path(tmp) / "weights")
        cmd = [sys.executable, "-m", "pytest", str(tests / "test_models.py"), "-p", "_eca_models_only"]
        cmd += ["-p", "no:cacheprovider", "--rootdir", str(tests), *args.pytest_args]
        return subprocess.run(cmd, env=env, cwd=tests).returncode


if __name__ == "__main__":
    sys.exit(main())
