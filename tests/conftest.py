import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# hermetic weights: the caches live in a folder of this run (never the user's), and the authors' Google Drive is
# never reached: a Drive file is asked of a closed loopback port unless a test serves one (LoopbackDrive)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="eca-models-tests-hf-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("ECA_MODELS_SOURCES", None)
os.environ.pop("ECA_MODELS_MANIFEST", None)
os.environ["ECA_MODELS_DRIVE_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="eca-models-tests-torch-")  # torchvision's downloads, likewise
atexit.register(shutil.rmtree, os.environ["TORCH_HOME"], True)

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from detection_helpers import write_coco_dataset  # noqa: E402
from helpers import RANKED, ranking_checkpoint, save_authors_checkpoint, write_image  # noqa: E402

import eca_models  # noqa: E402, F401  (registers the models)
from eca_models.cli import main  # noqa: E402
from eca_models.data.imagenet import imagenet_wnids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory):
    """train2017 (4 images, one without objects, one crowd box) and val2017 (3 images) of categories 3 'car' and
    18 'dog', 128x96 pixels."""
    root = tmp_path_factory.mktemp("coco")
    write_coco_dataset(root, "train2017", n_images=4, size=(128, 96), seed=1)
    write_coco_dataset(root, "val2017", n_images=3, size=(128, 96), seed=2)
    path = root / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"].append({**data["annotations"][0], "id": 999, "iscrowd": 1})
    path.write_text(json.dumps(data))
    return root


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def x64() -> torch.Tensor:
    """Two fixed 64x64 images: small enough for ResNet-152 on two CPU cores."""
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def run_python(code: str, env: dict = None, cwd: Path = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (env vars that libraries read at import time apply)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def run_cli(*args: str, env: dict = None, cwd: Path = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the installed ``eca-models`` command."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "eca_models.cli", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Three release-format detector files (one per kind, ResNet-50 trunks, 'car' made confident so the models
    detect something), converted once for the session: ``{kind: (src, state_dict, folder, report, log lines)}``."""
    from detection_helpers import write_mmdet_checkpoint

    from eca_models.conversion.mmdet_v1 import convert_mmdet_checkpoint

    root = tmp_path_factory.mktemp("mmdet")
    out = {}
    for kind, sizes, name in (
        ("fasterrcnn", (5, 5, 5, 5), "faster_rcnn_ecanet50_k5_bs8_lr0.01.pth"),
        ("maskrcnn", (3, 3, 7, 7), "mask_rcnn_ecanet50_k3377_bs8_lr0.01.pth"),
        ("retinanet", (3, 3, 7, 7), "RetinaNet_ecanet50_k3377_bs8_lr0.01.pth"),
    ):
        src, state = write_mmdet_checkpoint(root / name, kind, kernel_sizes=sizes, seed=len(out), confident_class=2)
        folder = root / f"{kind}-converted"
        lines = []
        report = convert_mmdet_checkpoint(src, f"{kind}_eca_resnet50_fpn", folder, log=lines.append)
        out[kind] = (src, state, folder, report, lines)
    return out


@pytest.fixture(scope="session")
def val(tmp_path_factory):
    """An ImageNet-style val folder (8 images of classes 500, 250, 900) and a checkpoint ranking 500 first."""
    root = tmp_path_factory.mktemp("val")
    wnids = imagenet_wnids()
    n = 0
    for cls, count in {500: 5, 250: 2, 900: 1}.items():
        for _ in range(count):
            n += 1
            write_image(root / "folders" / wnids[cls] / f"ILSVRC2012_val_{n:08d}.JPEG", seed=n)
    ckpt = ranking_checkpoint(root / "eca_resnet18_k3577.pth.tar", RANKED)
    model10 = timm.create_model("eca_resnet18_k3577", num_classes=10)
    r10 = save_authors_checkpoint(model10.state_dict(), root / "r18_10cls.pth.tar")
    return dict(root=root, folder=root / "folders", ckpt=ckpt, r10=r10, model10=model10.eval())


@pytest.fixture(scope="session")
def two_class_run(tmp_path_factory):
    """A 2-class fine-tuned run folder at 32 px (tiny, from scratch) and its data."""
    root = tmp_path_factory.mktemp("pets")
    for split, count in (("train", 8), ("val", 3)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(count):
                write_image(root / "data" / split / name / f"{i}.png", seed=100 * c + i + (50 if split == "val" else 0))

    def argv(run_dir):
        return ["finetune", "--model", "eca_resnet18", "--data", str(root / "data"), "--output", str(run_dir),
                "--epochs", "1", "--img-size", "32", "--batch-size", "4", "--workers", "0", "--no-pretrained"]  # fmt: skip

    assert main(argv(root / "run")) == 0
    return dict(data=root / "data", run=root / "run", argv=argv)
