"""Where a model's time goes in ONNX Runtime, operation type by operation type: the plain ResNet-50 and
ECA-ResNet-50 (or any two registered models) exported by `eca_models.export.write_onnx` in each ONNX form, run in
ONNX Runtime's CPU provider with its profiler on, the kernel time of each operation type summed over the graph.

    python benchmarks/ort_profile.py [--models resnet50 eca_resnet50] [--batch-size 16] [--runs 4]

Printed per model and form: milliseconds per run by operation type after ONNX Runtime's own rewrites (the blocked
layout's ``Conv``, ``ReorderInput`` / ``ReorderOutput``, ``Upsample``, ...), largest first, and their total. What an
ECA model spends beyond the plain one's operation types is what its ONNX form costs.
"""

import argparse
import collections
import json
import tempfile
from pathlib import Path
from typing import Dict

import onnxruntime
import timm
import torch
from timm.layers import set_layer_config

import eca_models  # noqa: F401  (registers the models)
from eca_models.cli.common import positive_int
from eca_models.export import write_onnx
from eca_models.layers import ONNX_FORMS


def profile(path: Path, batch_size: int, img_size: int, runs: int) -> Dict[str, float]:
    """Milliseconds per run of each operation type of the ONNX file at ``path`` (after one untimed run)."""
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the package opens its files
    options.enable_profiling, options.profile_file_prefix = True, str(path.with_suffix(""))
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = {"images": torch.randn(batch_size, 3, img_size, img_size).numpy()}
    session.run(None, images)
    for _ in range(runs):
        session.run(None, images)
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_op: Dict[str, float] = collections.defaultdict(float)
    for event in kernels[len(kernels) // (runs + 1) :]:  # the timed runs, not the first
        per_op[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return dict(sorted(per_op.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "eca_resnet50"])
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--img-size", type=positive_int, default=224)
    parser.add_argument("--runs", type=positive_int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            with set_layer_config(exportable=True):
                model = timm.create_model(name).eval()
            for form in ONNX_FORMS:
                path = Path(folder) / f"{name}-{form}.onnx"
                with torch.no_grad():
                    write_onnx(model, torch.randn(2, 3, args.img_size, args.img_size), path, form=form)
                ms = profile(path, args.batch_size, args.img_size, args.runs)
                shown = ", ".join(f"{op} {t:.1f}" for op, t in ms.items() if t >= 0.1)
                print(f"{name} [{form}]: total {sum(ms.values()):.1f} ms; {shown}", flush=True)


if __name__ == "__main__":
    main()
