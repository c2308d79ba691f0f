"""CI's end-to-end check of the release's weights path on all twelve checkpoints (too slow for the test command).

Writes every file of the release in the authors' formats (random weights in the right shapes and kernel codes;
torch's legacy serialization, as the release's PyTorch 1.0/1.1 wrote them; mmdetection v1's dicts for the
detectors), serves them as Google Drive does on loopback (tests/helpers.py's LoopbackDrive, reached through
ECA_MODELS_DRIVE_ENDPOINT), and runs `eca-models download --all` into an empty cache. Then, with the server
stopped and HF_HUB_OFFLINE=1, it loads every checkpoint through each entry point: timm.create_model and
torch.hub.load (classifiers, against the reference network the file was written from), create_detector
(detectors), and `eca-models list` must show all twelve cached. Exits non-zero on any failure.

    python3 tools/release_e2e.py [--keep DIR]
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

DETECTORS = {  # checkpoint: (kind, depth, kernel sizes), as the release's file names say
    "fasterrcnn_eca_resnet50_fpn.coco": ("fasterrcnn", 50, (5, 5, 5, 5)),
    "fasterrcnn_eca_resnet101_fpn.coco": ("fasterrcnn", 101, (3, 3, 5, 7)),
    "maskrcnn_eca_resnet50_fpn.coco": ("maskrcnn", 50, (3, 3, 7, 7)),
    "maskrcnn_eca_resnet101_fpn.coco": ("maskrcnn", 101, (3, 3, 5, 7)),
    "retinanet_eca_resnet50_fpn.coco": ("retinanet", 50, (3, 3, 7, 7)),
    "retinanet_eca_resnet101_fpn.coco": ("retinanet", 101, (3, 3, 5, 7)),
}


def _legacy_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def _serve_release(drive, work: Path) -> dict:
    """Every release file on the loopback Drive; returns the classifiers' reference networks by checkpoint."""
    from detection_helpers import coco_names, mmdet_state_dict
    from helpers import ARCHS, randomize, reference_model

    from eca_models.weights import list_checkpoints

    references = {}
    for ckpt in list_checkpoints():
        if ckpt.is_classifier:
            assert ckpt.model_name in ARCHS, ckpt.model_name
            ref = randomize(reference_model(ckpt.model_name), seed=len(references)).eval()
            state = {f"module.{k}": v for k, v in ref.state_dict().items()}
            data = _legacy_bytes({"epoch": 100, "arch": ckpt.architecture, "state_dict": state})
            references[ckpt.name] = ref
        else:
            kind, depth, sizes = DETECTORS[ckpt.name]
            state = mmdet_state_dict(kind, depth=depth, kernel_sizes=sizes, seed=depth)
            meta = {"mmdet_version": "1.0rc0", "CLASSES": tuple(coco_names())}
            data = _legacy_bytes({"meta": meta, "state_dict": state})
        drive.files[ckpt.release["drive_id"]] = data
        print(f"serving {ckpt.release['file_name']} ({len(data) / 2**20:.1f} MiB)", flush=True)
    return references


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "eca_models.cli", *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): eca-models {' '.join(args)}\n{result.stderr[-3000:]}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="eca-release-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # about 2 GB of files and cache


def _run(work: Path) -> int:
    from helpers import LoopbackDrive

    drive = LoopbackDrive()
    env = {**os.environ, "HF_HOME": str(work / "hf"), "ECA_MODELS_DRIVE_ENDPOINT": drive.endpoint}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("ECA_MODELS_SOURCES", None)
    try:
        references = _serve_release(drive, work)
        torch_path = work / "references.pt"
        import torch

        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.save({"x": x, **{name: ref(x) for name, ref in references.items()}}, torch_path)
        result = _cli("download", "--all", env=env)
        print(result.stdout, end="", flush=True)
        if result.stdout.count(": fetched ") != 12:
            sys.exit("download --all did not fetch all twelve checkpoints")
    finally:
        drive.stop()

    offline = {**env, "HF_HUB_OFFLINE": "1", "ECA_MODELS_DRIVE_ENDPOINT": "http://127.0.0.1:9"}
    again = _cli("download", "--all", env=offline)
    if again.stdout.count(": cached ") != 12:
        sys.exit("the second download --all did not find all twelve in the cache")
    rows = json.loads(_cli("list", "--json", env=offline).stdout)
    names = {r["checkpoint"] or r["model"]: r["weights"] for r in rows}
    if sorted(set(names.values())) != ["cached"]:
        sys.exit(f"eca-models list does not show every checkpoint cached: {names}")
    check = f"""
import torch, timm, eca_models
from eca_models.detection import create_detector
from eca_models.weights import list_checkpoints
saved = torch.load({str(torch_path)!r})
for ckpt in list_checkpoints():
    if ckpt.is_classifier:
        for model in (timm.create_model(ckpt.architecture, pretrained=True),
                      torch.hub.load({str(ROOT)!r}, ckpt.model_name, source="local", pretrained=True)):
            with torch.no_grad():
                diff = (model.eval()(saved["x"]) - saved[ckpt.name]).abs().max().item()
            assert diff < 1e-4, (ckpt.name, diff)
    else:
        model = create_detector(ckpt.architecture, pretrained=True)
        assert model.detector_cfg["kernel_code"] == ckpt.kernel_code, ckpt.name
    print("loaded", ckpt.name, flush=True)
"""
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=offline)
    print(result.stdout, end="")
    if result.returncode != 0:
        sys.exit(f"loading from the cache failed:\n{result.stderr[-3000:]}")
    print(f"release e2e: all twelve checkpoints fetched, verified, cached and loaded offline ({work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
