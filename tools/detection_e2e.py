"""CI's end-to-end check of the detection half under torchrun (too slow for the test command).

Builds a tiny COCO-format dataset and a release-format Mask R-CNN file (tests/detection_helpers.py), converts it,
validates it on one process and on two under torchrun (the two must score every image once and give the same
metrics), and fine-tunes it for one epoch on two processes. Exits non-zero on any difference or failure.

    python3 tools/detection_e2e.py [--keep DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SMALL = ["--min-size", "96", "--max-size", "128", "--workers", "0", "--batch-size", "1"]


def _cli(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "eca_models.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
        cmd += ["-m", "eca_models.cli", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(args)}\n{result.stderr[-3000:]}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    from detection_helpers import write_coco_dataset, write_mmdet_checkpoint

    work = Path(args.keep or tempfile.mkdtemp(prefix="eca-detection-e2e-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        coco = work / "coco"
        write_coco_dataset(coco, "train2017", n_images=4, size=(128, 96), seed=1)
        write_coco_dataset(coco, "val2017", n_images=5, size=(128, 96), seed=2)
        src, _ = write_mmdet_checkpoint(work / "mask_rcnn_ecanet50_k3377_bs8_lr0.01.pth", "maskrcnn", confident_class=2)
        _cli("convert", str(src), "--model", "maskrcnn_eca_resnet50_fpn", "--out", str(work / "mask"), "--overwrite")
        rows = {}
        for nproc in (1, 2):
            out = work / f"val-{nproc}.json"
            _cli(
                "validate",
                "--model",
                str(work / "mask"),
                "--data",
                str(coco),
                *SMALL,
                "--results-file",
                str(out),
                nproc=nproc,
            )
            rows[nproc] = json.loads(out.read_text())[0]
        one, two = rows[1], rows[2]
        if one["images"] != 5 or two["images"] != 5 or one["metrics"] != two["metrics"]:
            sys.exit(
                f"torchrun validation differs: {one['images']} vs {two['images']} images, {one['metrics']} vs {two['metrics']}"
            )
        print(f"validate: one and two processes agree on all 5 images (box AP {one['metrics']['box']['map']})")
        run = work / "run"
        result = _cli("finetune", "--model", str(work / "mask"), "--data", str(coco), "--output", str(run), "--overwrite",
                      "--epochs", "1", "--warmup-iters", "1", *SMALL, nproc=2)  # fmt: skip
        if result.stdout.count("epoch 1: train loss") != 1 or not (run / "model.safetensors").is_file():
            sys.exit(f"torchrun fine-tuning did not report once and export:\n{result.stdout[-2000:]}")
        print("finetune: two processes trained one epoch and exported the model")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # the files, models and runs: about 1 GB


if __name__ == "__main__":
    sys.exit(main())
