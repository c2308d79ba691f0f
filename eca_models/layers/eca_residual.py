"""The end of an ECA block, ``shortcut + eca(bn(z))``, in the passes the plain block already makes.

The naive layer reads the block output once more to pool it, writes a new tensor for ``x * gate``
and a third for the residual add, and autograd's backward materialises the mean's gradient and
the gate's product separately. Here the multiply rides on the residual add, and in training the
last BatchNorm is folded in as well, so no block-sized tensor is written that the plain ResNet does
not write too. On the CPU a fresh block-sized tensor costs more than the arithmetic on it: the OS
has to fault its pages in.

Both autograd functions compute the same values as the layer as the paper states it (within
float rounding) and are checked against it in ``tests/test_fast_paths.py``. Under ``create_graph=True``
(gradient penalties, double backward) their backward recomputes the block end with plain autograd
operations instead, so that its result is itself differentiable.
"""

from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv1d_input, conv1d_weight

from .eca import EcaLayer

__all__ = ["bn_eca_add", "can_fuse_bn", "eca_add"]

_CHUNK_BYTES = 4 << 20


def _batch_chunks(t: torch.Tensor) -> int:
    """Images per chunk so that a temporary the size of the chunk stays a few MiB (on the CPU: fresh
    memory beyond that is faulted in page by page, at ten times the cost of the math on it). The whole
    batch elsewhere, and under ``torch.compile``, whose code generator fuses the expression into one pass
    with no temporary at all (chunks would only split that pass into many)."""
    if t.device.type != "cpu" or torch.compiler.is_compiling():
        return t.shape[0]
    per_image = t[:1].numel() * t.element_size()
    return max(1, _CHUNK_BYTES // max(per_image, 1))


_KERNEL_MIN_IMAGE = 1 << 16


def _bn_kernel_takes(g: torch.Tensor, z: torch.Tensor, mean: torch.Tensor) -> bool:
    """Whether BatchNorm's CPU backward kernel forms the per-image sums below, and pays for one call per image:
    the tensors are as it takes them, and an image has at least 64K elements (below that, tensor operations
    over chunks were faster here, e.g. 0.08 against 0.57 ms for 32 images of 256 x 4 x 4). Never under
    ``torch.compile``: its code generator lowers each per-image call into code of its own, and a compiled
    ECA-ResNet-50 training step took 8.8 to 10.1 s that way against 3.2 to 3.4 s with tensor operations
    (batch 32, 224 px, channels-last, 2 CPU cores; the plain ResNet-50's: 2.9 to 3.5 s)."""
    if torch.compiler.is_compiling():
        return False
    same = g.dtype == z.dtype == mean.dtype and z.dtype in (torch.float32, torch.float64)
    return z.device.type == "cpu" and same and z[:1].numel() >= _KERNEL_MIN_IMAGE


def _bn_kernel_sums(grad_of: Callable[[int], torch.Tensor], z: torch.Tensor, mean: torch.Tensor):
    """``sum_hw g`` and ``sum_hw g * (z - mean)`` per image, (N, C) each, where ``g`` of image ``i`` is
    ``grad_of(i)``: the two sums BatchNorm's backward kernel forms for its bias and weight gradients, taken
    one image at a time (one image is one "batch" to it). One fused pass over ``g`` and ``z``, with
    ``z - mean`` formed element by element, and no temporaries."""
    ones = torch.ones_like(mean)  # as invstd: the weight "gradient" is then the plain sum of g * (z - mean)
    bwd, mask = torch.ops.aten.native_batch_norm_backward, [False, True, True]
    per_image = [bwd(grad_of(i), z[i : i + 1], None, None, None, mean, ones, True, 0.0, mask) for i in range(len(z))]
    return torch.stack([s[2] for s in per_image]), torch.stack([s[1] for s in per_image])


def _image_sums(g: torch.Tensor, z: torch.Tensor, mean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel, shaped (N, C): ``sum_hw g`` and ``sum_hw g * (z - mean)`` (``mean`` per channel).
    On the CPU through BatchNorm's kernel; elsewhere, and for the dtypes that kernel does not take as they
    are, in tensor operations over chunks of the batch."""
    if _bn_kernel_takes(g, z, mean):
        return _bn_kernel_sums(lambda i: g[i : i + 1], z, mean)
    step, m = _batch_chunks(z), mean.view(1, -1, 1, 1)
    sums, dots = [g[:0].sum(dim=(2, 3))], [z[:0].sum(dim=(2, 3))]  # so that an empty batch gives (0, C)
    for i in range(0, z.shape[0], step):
        gi = g[i : i + step]
        sums.append(gi.sum(dim=(2, 3)))
        dots.append(((z[i : i + step] - m) * gi).sum(dim=(2, 3)))
    return torch.cat(sums), torch.cat(dots)


def _deviation_sums(z: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``sum_hw (z - mean)`` per image and channel, (N, C), formed element by element: the difference of the
    sums instead loses every digit when a channel's mean is large against its spread."""
    if _bn_kernel_takes(z, z, mean):
        ones = torch.ones_like(z[:1])  # one image of ones, read for every image (an expanded one is slow)
        return _bn_kernel_sums(lambda i: ones, z, mean)[1]
    step, m = _batch_chunks(z), mean.view(1, -1, 1, 1)
    return torch.cat([z[:0].sum(dim=(2, 3))] + [(z[i : i + step] - m).sum(dim=(2, 3)) for i in range(0, len(z), step)])


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum((2, 3))``, (N, C): through BatchNorm's kernel (with a zero mean) where it takes the
    tensors, else over chunks of the batch, with no centring pass and no sum of ``a``."""
    zeros = b.new_zeros(b.shape[1])
    if _bn_kernel_takes(a, b, zeros):
        return _bn_kernel_sums(lambda i: a[i : i + 1], b, zeros)[1]
    step = _batch_chunks(b)
    return torch.cat(
        [(a[:0] * b[:0]).sum(dim=(2, 3))]
        + [(a[i : i + step] * b[i : i + step]).sum(dim=(2, 3)) for i in range(0, len(b), step)]
    )


def _add_scaled_deviation(out: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """``out += (z - mean) * scale`` in place, over chunks of the batch (per-channel ``mean`` and ``scale``)."""
    step, m, k = _batch_chunks(z), mean.view(1, -1, 1, 1), scale.view(1, -1, 1, 1)
    for i in range(0, z.shape[0], step):
        out[i : i + step].addcmul_(z[i : i + step] - m, k)


def _gate(x: torch.Tensor, weight: torch.Tensor, padding) -> torch.Tensor:
    """The ECA gate of ``x`` in plain autograd operations, for the differentiable backward."""
    n, c = x.shape[:2]
    return F.conv1d(x.mean(dim=(2, 3)).view(n, 1, c), weight, padding=padding).sigmoid().view(n, c, 1, 1)


def _differentiable_backward(fn, inputs, grad: torch.Tensor):
    """Gradients of ``fn(*inputs)`` against ``grad``, themselves differentiable (for ``create_graph=True``)."""
    leaves = [t if t.requires_grad else t.detach().requires_grad_() for t in inputs]
    return torch.autograd.grad(fn(*leaves), leaves, grad, create_graph=True)


def _gate_backward(ctx, d_gate: torch.Tensor, pooled: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor):
    """Gradients of the pooled means and of the ECA conv weight, from the gate's gradient (N, C)."""
    n, c = pooled.shape
    d_logits = (d_gate * gate * (1 - gate)).view(n, 1, c)
    pooled3 = pooled.view(n, 1, c)
    d_pooled = conv1d_input(pooled3.shape, weight, d_logits, padding=ctx.padding).view(n, c)
    return d_pooled, conv1d_weight(pooled3, weight.shape, d_logits, padding=ctx.padding)


class _EcaAdd(torch.autograd.Function):
    """``shortcut + x * gate(x)``: two passes over block-sized tensors in the backward where autograd's
    generic one makes four (it materialises the mean's gradient and accumulates it separately)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shortcut: torch.Tensor, weight: torch.Tensor, eca: EcaLayer) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        gate = eca.gate_from_pooled(pooled)  # through the module, so hooks on eca.conv still fire
        ctx.save_for_backward(x, pooled, gate, weight)
        ctx.padding = eca.conv.padding
        ctx.shortcut_dtype = shortcut.dtype
        return torch.addcmul(shortcut, x, gate)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, pooled, gate, weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            d_x, d_weight = _differentiable_backward(lambda x, w: x * _gate(x, w, ctx.padding), (x, weight), grad)
            return d_x, grad, d_weight, None
        n, c = pooled.shape
        # under autocast the forward ran in low precision, the backward does not: the small (N, C) part runs
        # in the weight's dtype, the block-sized part in the gradient's
        g = gate.view(n, c).to(weight.dtype)
        d_gate = _channel_dot(grad, x).to(weight.dtype)
        d_pooled, d_weight = _gate_backward(ctx, d_gate, pooled.to(weight.dtype), g, weight)
        d_pooled = (d_pooled / (x.shape[2] * x.shape[3])).view(n, c, 1, 1)
        d_x = torch.addcmul(d_pooled.to(grad.dtype), grad, gate.to(grad.dtype))
        return d_x.to(x.dtype), grad.to(ctx.shortcut_dtype), d_weight, None


def _bn_momentum(bn: nn.BatchNorm2d) -> float:
    """The running-average factor of this step, counted as ``nn.BatchNorm2d.forward`` counts it."""
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


class _BnEcaAdd(torch.autograd.Function):
    """``shortcut + eca(bn(z))`` with a training-mode BatchNorm. The forward writes one block-sized tensor
    (the BN output, turned into the block output in place), as the plain block's ``bn(z) + shortcut`` does;
    the backward writes one (the gradient of ``z``), as the plain block's BN backward does, from per-image
    reductions and one element-wise pass. The per-image sums of ``z - mean`` (for the gate, and for the BN
    weight's gradient through it) are taken in the forward, of ``g`` and ``g * (z - mean)`` in the backward."""

    @staticmethod
    def forward(ctx, z, shortcut, bn_weight, bn_bias, eca_weight, bn: nn.BatchNorm2d, eca: EcaLayer):
        momentum = _bn_momentum(bn)
        x, mean, invstd = torch.native_batch_norm(
            z, bn_weight, bn_bias, bn.running_mean, bn.running_var, True, momentum, bn.eps
        )
        sum_dev = _deviation_sums(z, mean)
        pooled = sum_dev * (bn_weight * invstd / (z.shape[2] * z.shape[3])) + bn_bias  # = x.mean((2, 3))
        gate = eca.gate_from_pooled(pooled)
        ctx.save_for_backward(z, sum_dev, pooled, gate, mean, invstd, bn_weight, bn_bias, eca_weight)
        ctx.padding, ctx.eps = eca.conv.padding, bn.eps
        return torch.addcmul(shortcut, x, gate, out=x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, sum_dev, pooled, gate, mean, invstd, w, b, eca_weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True

            def block_end(z, w, b, eca_weight):
                x = F.batch_norm(z, None, None, w, b, True, 0.0, ctx.eps)
                return x * _gate(x, eca_weight, ctx.padding)

            d_z, d_w, d_b, d_eca = _differentiable_backward(block_end, (z, w, b, eca_weight), grad)
            return d_z, grad, d_w, d_b, d_eca, None, None
        n, c = pooled.shape
        hw = z.shape[2] * z.shape[3]
        s = gate.view(n, c)
        sum_g, dot_g = _image_sums(grad, z, mean)  # sum_hw of g and of g * (z - mean); sum_dev: of z - mean
        scale = w * invstd  # x = (z - mean) * scale + b
        d_pooled, d_eca_weight = _gate_backward(ctx, scale * dot_g + b * sum_g, pooled, s, eca_weight)
        # the gradient of x is grad * s + d_pooled / hw; BatchNorm's backward on it, in closed form
        d_bias = (s * sum_g + d_pooled).sum(0)
        d_weight = invstd * (s * dot_g + d_pooled * sum_dev / hw).sum(0)
        k_grad = (scale * s).view(n, c, 1, 1)
        k_const = scale * (d_pooled / hw - d_bias / (n * hw))
        d_z = torch.addcmul(k_const.view(n, c, 1, 1), grad, k_grad)
        _add_scaled_deviation(d_z, z, mean, -scale * invstd * d_weight / (n * hw))
        return d_z, grad, d_weight, d_bias, d_eca_weight, None, None


def _has_hooks(module: nn.Module) -> bool:
    """Forward or backward hooks on ``module`` or on every module: they run only through its own call."""
    g = nn.modules.module
    own = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    every = (
        g._global_forward_hooks,
        g._global_forward_pre_hooks,
        g._global_backward_hooks,
        g._global_backward_pre_hooks,
    )
    return any(own) or any(every)


def can_fuse_bn(bn: nn.Module, z: torch.Tensor) -> bool:
    """Whether :func:`bn_eca_add` may stand in for ``bn(z)``: a plain training-mode ``nn.BatchNorm2d``
    (affine, tracking running stats, no hooks) on a non-empty float32 or float64 batch in the BN's own dtype.

    Anything else (eval mode, SyncBatchNorm or another subclass, autocast's mixed dtypes) takes
    :func:`eca_add` after the module's own BN.
    """
    return (
        type(bn) is nn.BatchNorm2d
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and z.dtype in (torch.float32, torch.float64)
        and z.dtype == bn.weight.dtype
        and z.numel() > 0  # an empty batch: BN's own forward handles it, the native kernel refuses it
        and not _has_hooks(bn)
    )


def eca_add(x: torch.Tensor, shortcut: torch.Tensor, eca: EcaLayer) -> torch.Tensor:
    """``shortcut + eca(x)`` for autograd, pooling ``x`` once and fusing the multiply into the add.

    Args:
        x: The block output before attention, (N, C, H, W).
        shortcut: The residual branch, same shape.
        eca: The block's ECA layer.
    """
    return _EcaAdd.apply(x, shortcut, eca.conv.weight, eca)


def bn_eca_add(z: torch.Tensor, shortcut: torch.Tensor, bn: nn.BatchNorm2d, eca: EcaLayer) -> torch.Tensor:
    """``shortcut + eca(bn(z))`` for training, with BatchNorm, ECA and the add fused (see :func:`can_fuse_bn`).

    The BN's running statistics and batch counter are updated as its own forward updates them.

    Args:
        z: The last convolution's output, (N, C, H, W).
        shortcut: The residual branch, same shape.
        bn: The block's last BatchNorm, in training mode.
        eca: The block's ECA layer.
    """
    return _BnEcaAdd.apply(z, shortcut, bn.weight, bn.bias, eca.conv.weight, bn, eca)
