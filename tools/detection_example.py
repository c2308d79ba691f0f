"""Make the detection page's drawn example again: a synthetic COCO-format dataset of two kinds of boxes, a Faster R-CNN
(ECA-ResNet-50, the release's k5) fine-tuned on it with eca-models finetune, then eca-models predict --out-dir on three
val images, side by side in docs/assets/detection-example.png, and the run's metrics in
docs/assets/detection-example-metrics.jsonl. About 10 minutes on two CPU cores.

    python3 tools/detection_example.py WORKDIR
"""

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
CATEGORIES = ((1, "red box"), (2, "orange box"))
SIZE = ["--min-size", "128", "--max-size", "160"]
SHOWN = ("000000000100.jpg", "000000000101.jpg", "000000000103.jpg")


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "eca_models.cli", *args], check=True)


def main() -> int:
    from detection_helpers import write_coco_dataset

    work = Path(sys.argv[1] if len(sys.argv) > 1 else "detection-example")
    data, run, drawn = work / "shapes", work / "run", work / "drawn"
    write_coco_dataset(data, "train2017", n_images=160, size=(160, 128), seed=11, empty_images=8, categories=CATEGORIES)
    write_coco_dataset(data, "val2017", n_images=16, size=(160, 128), seed=12, empty_images=1, categories=CATEGORIES)
    # from scratch, the random trunk frozen: the FPN and heads learn the boxes
    _cli("finetune", "--model", "fasterrcnn_eca_resnet50_fpn", "--no-pretrained", "--data", str(data),
         "--output", str(run), "--overwrite", "--epochs", "6", "-b", "4", "--lr", "0.02", "--warmup-iters", "20",
         "--trainable-backbone-layers", "0", "-j", "0", *SIZE)  # fmt: skip
    _cli("predict", *(str(data / "val2017" / n) for n in SHOWN), "--model", str(run), *SIZE,
         "--out-dir", str(drawn), "--score-thr", "0.5")  # fmt: skip
    images = [Image.open(drawn / n).convert("RGB") for n in SHOWN]
    w, h = images[0].size
    sheet = Image.new("RGB", (3 * 2 * w + 16, 2 * h), "white")
    for i, image in enumerate(images):
        sheet.paste(image.resize((2 * w, 2 * h), Image.NEAREST), (i * (2 * w + 8), 0))
    sheet.save(ROOT / "docs" / "assets" / "detection-example.png")
    shutil.copy(run / "metrics.jsonl", ROOT / "docs" / "assets" / "detection-example-metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
