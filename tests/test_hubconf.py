import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_python

NAMES = ["eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenetv2"]
NAMES += ["eca_resnet18_k3577", "eca_resnet34_k3357", "eca_resnet50_k3557", "eca_resnet101_k3357"]
NAMES += ["eca_resnet152_k3357", "eca_mobilenetv2_k13"]
DETECTORS = [f"{d}_eca_resnet{n}_fpn" for d in ("fasterrcnn", "maskrcnn", "retinanet") for n in (50, 101)]


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entrypoints_as_torch_hub_list_and_help_see_them():
    hub = _hubconf()
    assert hub.dependencies == ["torch", "torchvision", "timm", "huggingface_hub", "safetensors", "tqdm", "gdown"]
    listed = sorted(f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_"))  # as torch.hub.list
    assert listed == sorted(NAMES + DETECTORS)
    for name in NAMES + DETECTORS:
        doc = getattr(hub, name).__doc__
        assert doc and "ECA-" in doc and "pretrained" in doc


@pytest.mark.parametrize("name", ["maskrcnn_eca_resnet50_fpn", "retinanet_eca_resnet101_fpn"])
def test_torch_hub_load_detector(name):
    from torchvision.models.detection import MaskRCNN, RetinaNet

    with torch.device("meta"):
        model = torch.hub.load(str(ROOT), name, source="local", categories=[{"id": 7, "name": "kite"}], trust_repo=True)
    assert isinstance(model, MaskRCNN if name.startswith("mask") else RetinaNet)
    assert model.label_map.names == ("kite",) and model.label_map.category_id(model.label_map.label(7)) == 7


@pytest.mark.parametrize("name", NAMES)
def test_torch_hub_load_local(name):
    with torch.device("meta"):
        model = torch.hub.load(str(ROOT), name, source="local", num_classes=3, trust_repo=True)
    assert model.num_classes == 3 and model.kernel_code.startswith("k")


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def zipball(tmp_path_factory) -> Path:
    """The repository as GitHub serves ``ORG/eca-models:main`` to torch.hub: ``git archive --format=zip`` of HEAD
    (with this checkout's uncommitted edits to tracked files, so a developer tests what they will push) under one
    ``eca-models-main/`` folder."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tree = _git("stash", "create") or "HEAD"
    out = tmp_path_factory.mktemp("github") / "main.zip"
    _git("archive", "--format=zip", "--prefix=eca-models-main/", "-o", str(out), tree)
    return out


# torch.hub's own download, extraction and import, with only the transfer served from the zipball above; run where
# the installed eca_models would be found if torch.hub's extracted folder were not first on sys.path
HUB_SCRIPT = """
import json, shutil, sys
import torch, torch.hub

def transfer(url, dst, hash_prefix=None, progress=True):
    assert url == "https://github.com/ORG/eca-models/zipball/main", url
    shutil.copyfile(ZIP, dst)

torch.hub.download_url_to_file = transfer
repo = "ORG/eca-models:main"
names = torch.hub.list(repo, trust_repo=True, skip_validation=True)
out = {"names": names}
with torch.device("meta"):
    for name in names:
        model = torch.hub.load(repo, name, trust_repo=True, skip_validation=True)
        out[name] = type(model).__name__
real = torch.hub.load(repo, "eca_mobilenetv2", num_classes=3, trust_repo=True, skip_validation=True)
out["logits"] = list(real.eval()(torch.zeros(1, 3, 64, 64)).shape)
try:
    torch.hub.load(repo, "eca_resnet18", pretrained=True, trust_repo=True, skip_validation=True)
except Exception as e:
    import eca_models.errors
    out["offline"] = [isinstance(e, eca_models.errors.EcaModelsError), str(e)]
out["package"] = sys.modules["eca_models"].__file__
out["hub_dir"] = torch.hub.get_dir()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_torch_hub_from_github_builds_every_entrypoint(zipball, tmp_path):
    """torch.hub.load('ORG/eca-models:main', ...) as a user runs it: torch.hub extracts GitHub's zipball with
    zipfile (which writes a symbolic link as a text file), imports hubconf.py from it, and every entrypoint builds;
    offline, with nothing cached, pretrained=True is the package's one-line error."""
    env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_python(f"ZIP = {str(zipball)!r}\n{HUB_SCRIPT}", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(out["names"]) == sorted(NAMES + DETECTORS)
    assert {out[n] for n in NAMES} == {"EcaResNet", "EcaMobileNetV2"}
    assert {out[n] for n in DETECTORS} == {"FasterRCNN", "MaskRCNN", "RetinaNet"}
    assert out["logits"] == [1, 3]
    assert Path(out["package"]).is_relative_to(out["hub_dir"])  # the extracted code, not the installed package
    is_ours, message = out["offline"]
    assert is_ours and len(message.splitlines()) == 1 and "HF_HUB_OFFLINE" in message


@pytest.mark.slow
def test_a_checkout_without_symbolic_links_imports_and_lists(tmp_path):
    """git for Windows' default (core.symlinks=false) writes links as text files: such a clone imports, lists the
    models and reads the manifest."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "eca-models"
    _git("clone", "-q", "-c", "core.symlinks=false", str(ROOT), str(clone), cwd=tmp_path)
    code = (
        "import eca_models; from eca_models.weights import list_checkpoints;"
        "print(len(eca_models.list_models()), len(list_checkpoints()), eca_models.__file__)"
    )
    result = run_python(code, env={"PYTHONPATH": str(clone)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    models, checkpoints, where = result.stdout.split()
    assert int(models) > 0 and int(checkpoints) == 12 and Path(where).is_relative_to(clone)
