"""Where ECA-ResNet-50's inference time goes, in the whole network: the plain ResNet-50, a second copy
of it (the noise floor: the same network, timed the same way), our ECA-ResNet-50 with the same
convolution and BN weights, and that ECA-ResNet-50 with every gate a constant 0.5 (its blocks then
make the same passes, the multiply riding on the add, but compute no gate: no pooling, no product,
no 1D convolution, no sigmoid).

    python benchmarks/gate_cost.py [--batch-size 32] [--reps 24] [--channels-last] [--keep-memory] [--results-file F]

Every repetition runs each variant once, in an order shuffled afresh (seeded), as `eca-models benchmark`
does. Printed: the median and fastest time of
a forward pass, and the median over repetitions of the plain network's time divided by each
variant's in the same repetition (its speed relative to the plain ResNet-50).
"""

import argparse
import json
import statistics
import time
import types
from typing import Dict, List

import timm
import torch
from torch import nn

import eca_models  # noqa: F401  (registers the models)
from eca_models.benchmark import interleaved_orders, keep_freed_memory, machine
from eca_models.cli.common import positive_int
from eca_models.files import write_text_atomic
from eca_models.models.eca_resnet import EcaBottleneck


def _constant_gate_end(block: EcaBottleneck, z: torch.Tensor, shortcut: torch.Tensor, bn: nn.Module, h=None):
    """Stands in for a block's end in inference: ``shortcut + bn(z) * 0.5``, the multiply riding on the add and
    the result written into the BN output as the ECA block's inference path does, but no gate computed."""
    x = bn(z)
    return torch.add(shortcut, x, alpha=0.5, out=x)


def variants(plain: nn.Module, fmt: torch.memory_format = torch.contiguous_format) -> Dict[str, nn.Module]:
    """The four networks, in eval mode, all carrying the weights of ``plain`` (a timm ResNet-50)."""
    plain = plain.eval()
    copy = timm.create_model("resnet50").eval()
    eca = timm.create_model("eca_resnet50").eval()
    constant = timm.create_model("eca_resnet50").eval()
    copy.load_state_dict(plain.state_dict())
    for model in (eca, constant):
        missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
        assert not unexpected and all(".eca." in k for k in missing), (missing, unexpected)
    for block in constant.modules():
        if isinstance(block, EcaBottleneck):
            block._end = types.MethodType(_constant_gate_end, block)
            del block.eca
    models = {"resnet50": plain, "resnet50 (copy)": copy, "eca_resnet50": eca, "eca_resnet50, constant gate": constant}
    return {name: m.to(memory_format=fmt) for name, m in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--img-size", type=positive_int, default=224)
    parser.add_argument("--reps", type=positive_int, default=24)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--keep-memory", action="store_true", help="reuse freed memory (see eca-models benchmark)")
    parser.add_argument("--results-file", help="write the settings and every repetition's time here (JSON)")
    args = parser.parse_args()
    if args.keep_memory and not keep_freed_memory():
        parser.error("--keep-memory works with glibc on Linux only")
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    models = variants(timm.create_model("resnet50"), fmt)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size).contiguous(memory_format=fmt)
    names = list(models)
    runs: Dict[str, List[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(x)
            model(x)
        for order in interleaved_orders(names, args.reps):
            for name in order:
                start = time.perf_counter()
                models[name](x)
                runs[name].append(1000 * (time.perf_counter() - start))
    base = runs[names[0]]
    rows = []
    print(f"batch {args.batch_size}, {args.img_size} px, {'channels-last' if args.channels_last else 'NCHW'}, ", end="")
    print(f"{torch.get_num_threads()} threads{', freed memory kept' if args.keep_memory else ''}, {args.reps} reps")
    print("| model | median ms | fastest ms | speed vs resnet50 |\n|---|---|---|---|")
    for name in names:
        ratio = statistics.median(b / t for b, t in zip(base, runs[name]))
        rows.append({"name": name, "ms_runs": runs[name], "speed_ratio": ratio})
        print(f"| {name} | {statistics.median(runs[name]):.1f} | {min(runs[name]):.1f} | {ratio:.3f} |")
    if args.results_file:
        settings = {k: v for k, v in vars(args).items() if k != "results_file"}
        write_text_atomic(
            args.results_file, json.dumps({"settings": settings, "machine": machine(), "models": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
