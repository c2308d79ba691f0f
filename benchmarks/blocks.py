"""Time one ResNet-50 block of every stage, timm's plain Bottleneck against our EcaBottleneck with the
same weights, in inference and in training (forward and backward); ECA's own work in inference (pooling
and gate: the multiply rides on the add the plain block makes anyway); and BatchNorm's backward alone,
PyTorch's native kernel against the closed form the fused training path computes in its stead.

    python benchmarks/blocks.py [--batch-size 32] [--reps 25] [--channels-last] [--keep-memory]

Whole-network timings on a shared machine swing by tens of percent, mostly with how many fresh pages
the OS has to fault in; one block is small enough to repeat many times. Every repetition runs each
variant once, in turn. Printed: the median and the fastest repetition (the one least disturbed), in ms.
"""

import argparse
import statistics
import time
from typing import Callable, Dict

import torch
from timm.models.resnet import Bottleneck

from eca_models.benchmark import keep_freed_memory
from eca_models.layers import bn_state, gate_from_pooled
from eca_models.layers.eca_residual import add_scaled_deviation, image_sums, pooled_before_conv3
from eca_models.models import EcaBottleneck

# stage: (block input/output channels, feature map side, ECA kernel size of k3557)
STAGES = {"layer1": (256, 56, 3), "layer2": (512, 28, 5), "layer3": (1024, 14, 5), "layer4": (2048, 7, 7)}


def _variants(n: int, channels: int, side: int, k: int, fmt: torch.memory_format) -> Dict[str, Callable[[], None]]:
    plain = Bottleneck(channels, channels // 4).to(memory_format=fmt)
    eca = EcaBottleneck(channels, channels // 4, eca_kernel_size=k).to(memory_format=fmt)
    eca.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(n, channels, side, side).contiguous(memory_format=fmt)
    grad = torch.randn_like(x)
    z = torch.randn_like(x)
    _, mean, invstd = torch.native_batch_norm(z, plain.bn3.weight, plain.bn3.bias, None, None, True, 0.1, 1e-5)
    k_nc, k_c = torch.rand(n, channels, 1, 1), torch.rand(channels)

    def infer(block):
        def run():
            block.eval()
            with torch.inference_mode():
                block(x)

        return run

    def train(block):
        def run():
            block.train()
            block.zero_grad(set_to_none=True)
            block(x.detach().requires_grad_(True)).backward(grad)

        return run

    h = torch.randn(n, channels // 4, side, side).contiguous(memory_format=fmt)

    def eca_gate():  # ECA's own work in inference, as the block does it; the rest of the block is the plain one's
        eca.eval()
        with torch.inference_mode():
            pooled = pooled_before_conv3(h, eca.conv3.weight, bn_state(eca.bn3))
            gate_from_pooled(x.mean(dim=(2, 3)) if pooled is None else pooled, eca.eca.conv.weight)

    def native_bn_backward():
        args = (grad, z, plain.bn3.weight, None, None, mean, invstd, True, 1e-5, [True, True, True])
        torch.ops.aten.native_batch_norm_backward(*args)

    def closed_form_bn_backward():  # the block-sized passes of the fused backward: per-image sums, two writes
        image_sums(grad, z, mean)
        add_scaled_deviation(torch.addcmul(k_nc, grad, k_nc), z, mean, k_c)

    return {
        "plain infer": infer(plain),
        "ECA infer": infer(eca),
        "plain train": train(plain),
        "ECA train": train(eca),
        "ECA gate infer": eca_gate,
        "BN bwd native": native_bn_backward,
        "BN bwd closed form": closed_form_bn_backward,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--keep-memory", action="store_true", help="reuse freed memory (see eca-models benchmark)")
    args = parser.parse_args()
    if args.keep_memory and not keep_freed_memory():
        parser.error("--keep-memory works with glibc on Linux only")
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    layout = "channels-last" if args.channels_last else "NCHW"
    memory = ", freed memory kept" if args.keep_memory else ""
    print(f"batch {args.batch_size}, {layout}, {torch.get_num_threads()} threads{memory}; median / fastest, ms")
    header = None
    for stage, (channels, side, k) in STAGES.items():
        variants = _variants(args.batch_size, channels, side, k, fmt)
        if header is None:
            header = list(variants)
            print("| stage | " + " | ".join(header) + " |\n" + "|---" * (len(header) + 1) + "|")
        runs = {name: [] for name in variants}
        for fn in variants.values():
            fn()
        for _ in range(args.reps):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                runs[name].append(1000 * (time.perf_counter() - start))
        cells = " | ".join(f"{statistics.median(r):.1f} / {min(r):.1f}" for r in runs.values())
        print(f"| {stage} ({channels}x{side}x{side}) | {cells} |")


if __name__ == "__main__":
    main()
