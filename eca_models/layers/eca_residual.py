"""The end of an ECA block, ``shortcut + eca(bn(z))``, in the passes the plain block already makes.

The naive layer reads the block output once more to pool it, writes a new tensor for ``x * gate``
and a third for the residual add, and autograd's backward materialises the mean's gradient and
the gate's product separately. Here the multiply rides on the residual add, and in training the
last BatchNorm is folded in as well, so no block-sized tensor is written that the plain ResNet does
not write too. On the CPU a fresh block-sized tensor costs more than the arithmetic on it: the OS
has to fault its pages in.

`eca_block_end` is the one entry point. It is a leaf of ``torch.fx`` traces (``torch.fx.wrap``
in the model modules, and timm's ``register_notrace_function``), so a traced model takes the same
path as eager: the path is chosen when it runs, from the tensors it gets (grad mode, dtypes, sizes),
never from Python control flow on proxies. Only tensors and numbers reach ``autograd.Function.apply``.
Under ``torch.jit.trace``, the legacy ONNX exporter and ``torch.func``'s transforms (``vmap``, ``grad``,
``jacrev``, ...) it computes the block end in plain operations, which those tracers record and those
transforms take.

The fused training backward, per channel, for ``x = (z - mean) * s + b`` with ``s = w * invstd``,
``p = mean_hw(x)`` per image, ``a = sigmoid(conv1d(p))`` and ``out = shortcut + x * a``, given the
output gradient ``g``:

- ``dL/da = sum_hw(g * x) = s * sum_hw(g * (z - mean)) + b * sum_hw(g)``, which the gate's backward
  (sigmoid, then the 1D convolution's input and weight gradients) turns into ``dL/dp``;
- ``dL/dx = g * a + dL/dp / HW``, so BatchNorm's bias and weight gradients are
  ``d_b = sum_n(a * sum_hw(g) + dL/dp)`` and
  ``d_w = invstd * sum_n(a * sum_hw(g * (z - mean)) + dL/dp * sum_hw(z - mean) / HW)``;
- BatchNorm's input gradient ``d_z = s * (dL/dx - d_b / NHW) - s * invstd * (z - mean) * d_w / NHW``,
  formed as ``g * (s * a) + s * (dL/dp / HW - d_b / NHW)`` plus the ``(z - mean)`` term in place.

So the backward needs, per image and channel, only ``sum_hw(g)`` and ``sum_hw(g * (z - mean))``
(one pass over ``g`` and ``z``) and ``sum_hw(z - mean)`` (taken in the forward), then writes ``d_z``
once. Both autograd functions compute the same values as the layer as the paper states it (within
float rounding) and are checked against it in ``tests/test_fast_paths.py``. Under
``create_graph=True`` (gradient penalties, double backward) their backward recomputes the block end
with plain autograd operations instead, so that its result is itself differentiable.
"""

from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv1d_input, conv1d_weight
from torchvision.ops import FrozenBatchNorm2d

__all__ = [
    "BnState",
    "add_scaled_deviation",
    "bn_state",
    "eca_block_end",
    "gate_from_pooled",
    "has_hooks",
    "image_sums",
    "pooled_before_conv3",
]

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


def image_sums(g: torch.Tensor, z: torch.Tensor, mean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
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


def add_scaled_deviation(out: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """``out += (z - mean) * scale`` in place, over chunks of the batch (per-channel ``mean`` and ``scale``)."""
    step, m, k = _batch_chunks(z), mean.view(1, -1, 1, 1), scale.view(1, -1, 1, 1)
    for i in range(0, z.shape[0], step):
        out[i : i + step].addcmul_(z[i : i + step] - m, k)


def gate_from_pooled(pooled: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ECA's channel weights (N, C, 1, 1) from the per-channel means ``pooled`` (N, C) and the 1D conv's
    ``weight`` (1, 1, k), zero-padded to keep C: what `EcaLayer` computes."""
    padding = (weight.shape[-1] - 1) // 2
    return F.conv1d(pooled.unsqueeze(1), weight, padding=padding).sigmoid()[:, 0, :, None, None]


def _gate(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The ECA gate of ``x`` in plain autograd operations."""
    return gate_from_pooled(x.mean(dim=(2, 3)), weight)


def _differentiable_backward(fn, inputs, grad: torch.Tensor):
    """Gradients of ``fn(*inputs)`` against ``grad``, themselves differentiable (for ``create_graph=True``)."""
    leaves = [t if t.requires_grad else t.detach().requires_grad_() for t in inputs]
    return torch.autograd.grad(fn(*leaves), leaves, grad, create_graph=True)


def _gate_backward(d_gate: torch.Tensor, pooled: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor):
    """Gradients of the pooled means and of the ECA conv weight, from the gate's gradient (N, C)."""
    n, c = pooled.shape
    padding = (weight.shape[-1] - 1) // 2
    d_logits = (d_gate * gate * (1 - gate)).view(n, 1, c)
    pooled3 = pooled.view(n, 1, c)
    d_pooled = conv1d_input(pooled3.shape, weight, d_logits, padding=padding).view(n, c)
    return d_pooled, conv1d_weight(pooled3, weight.shape, d_logits, padding=padding)


class _EcaAdd(torch.autograd.Function):
    """``shortcut + x * gate(x)``: two passes over block-sized tensors in the backward where autograd's
    generic one makes four (it materialises the mean's gradient and accumulates it separately)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shortcut: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        gate = gate_from_pooled(pooled, weight)
        ctx.save_for_backward(x, pooled, gate, weight)
        ctx.shortcut_dtype = shortcut.dtype
        return torch.addcmul(shortcut, x, gate)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, pooled, gate, weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            d_x, d_weight = _differentiable_backward(lambda x, w: x * _gate(x, w), (x, weight), grad)
            return d_x, grad, d_weight
        n, c = pooled.shape
        # under autocast the forward ran in low precision, the backward does not: the small (N, C) part runs
        # in the weight's dtype, the block-sized part in the gradient's
        g = gate.view(n, c).to(weight.dtype)
        d_gate = _channel_dot(grad, x).to(weight.dtype)
        d_pooled, d_weight = _gate_backward(d_gate, pooled.to(weight.dtype), g, weight)
        d_pooled = (d_pooled / (x.shape[2] * x.shape[3])).view(n, c, 1, 1)
        d_x = torch.addcmul(d_pooled.to(grad.dtype), grad, gate.to(grad.dtype))
        return d_x.to(x.dtype), grad.to(ctx.shortcut_dtype), d_weight


class BnState(NamedTuple):
    """A plain ``nn.BatchNorm2d`` as tensors and numbers (torch.fx passes a named tuple into a leaf as it is);
    ``num_batches_tracked`` is None for a frozen one (torchvision's ``FrozenBatchNorm2d``)."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: Optional[torch.Tensor]
    momentum: Optional[float]
    eps: float
    training: bool


def bn_state(bn: nn.Module) -> Optional[BnState]:
    """``bn`` as a `BnState`, for `eca_block_end` to apply itself; None where only the module's own
    call is right: another class (SyncBatchNorm, a subclass with its own forward), no affine or running
    statistics, or hooks on it (they run only through its call). torchvision's ``FrozenBatchNorm2d`` (the
    detectors' norm layer) is an eval-mode BatchNorm whose affine is fixed: its state says so (never training)."""
    if _is_frozen_bn(bn) and not has_hooks(bn):
        return BnState(bn.weight, bn.bias, bn.running_mean, bn.running_var, None, 0.0, bn.eps, False)
    plain = type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats and not has_hooks(bn)
    if not plain:
        return None
    return BnState(
        bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.momentum, bn.eps, bn.training
    )


def _is_frozen_bn(bn: nn.Module) -> bool:
    return isinstance(bn, FrozenBatchNorm2d) and type(bn).forward is FrozenBatchNorm2d.forward


def _bn_momentum(num_batches_tracked: Optional[torch.Tensor], momentum: Optional[float]) -> float:
    """The running-average factor of this training step, counted as ``nn.BatchNorm2d.forward`` counts it."""
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    if momentum is None:
        return 1.0 / float(num_batches_tracked)
    return momentum


class _BnEcaAdd(torch.autograd.Function):
    """``shortcut + eca(bn(z))`` with a training-mode BatchNorm. The forward writes one block-sized tensor
    (the BN output, turned into the block output in place), as the plain block's ``bn(z) + shortcut`` does;
    the backward writes one (the gradient of ``z``), as the plain block's BN backward does, from per-image
    reductions and one element-wise pass. The per-image sums of ``z - mean`` (for the gate, and for the BN
    weight's gradient through it) are taken in the forward, of ``g`` and ``g * (z - mean)`` in the backward."""

    @staticmethod
    def forward(ctx, z, shortcut, bn_weight, bn_bias, eca_weight, running_mean, running_var, momentum, eps):
        x, mean, invstd = torch.native_batch_norm(z, bn_weight, bn_bias, running_mean, running_var, True, momentum, eps)
        sum_dev = _deviation_sums(z, mean)
        pooled = sum_dev * (bn_weight * invstd / (z.shape[2] * z.shape[3])) + bn_bias  # = x.mean((2, 3))
        gate = gate_from_pooled(pooled, eca_weight)
        ctx.save_for_backward(z, sum_dev, pooled, gate, mean, invstd, bn_weight, bn_bias, eca_weight)
        ctx.eps = eps
        return torch.addcmul(shortcut, x, gate, out=x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, sum_dev, pooled, gate, mean, invstd, w, b, eca_weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True

            def block_end(z, w, b, eca_weight):
                x = F.batch_norm(z, None, None, w, b, True, 0.0, ctx.eps)
                return x * _gate(x, eca_weight)

            d_z, d_w, d_b, d_eca = _differentiable_backward(block_end, (z, w, b, eca_weight), grad)
            return d_z, grad, d_w, d_b, d_eca, None, None, None, None
        n, c = pooled.shape
        hw = z.shape[2] * z.shape[3]
        s = gate.view(n, c)
        sum_g, dot_g = image_sums(grad, z, mean)  # sum_hw of g and of g * (z - mean); sum_dev: of z - mean
        scale = w * invstd  # x = (z - mean) * scale + b
        d_pooled, d_eca_weight = _gate_backward(scale * dot_g + b * sum_g, pooled, s, eca_weight)
        # the gradient of x is grad * s + d_pooled / hw; BatchNorm's backward on it, in closed form
        d_bias = (s * sum_g + d_pooled).sum(0)
        d_weight = invstd * (s * dot_g + d_pooled * sum_dev / hw).sum(0)
        k_grad = (scale * s).view(n, c, 1, 1)
        k_const = scale * (d_pooled / hw - d_bias / (n * hw))
        d_z = torch.addcmul(k_const.view(n, c, 1, 1), grad, k_grad)
        add_scaled_deviation(d_z, z, mean, -scale * invstd * d_weight / (n * hw))
        return d_z, grad, d_weight, d_bias, d_eca_weight, None, None, None, None


def has_hooks(module: nn.Module) -> bool:
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


def _batch_norm(z: torch.Tensor, bn: BnState) -> torch.Tensor:
    """``nn.BatchNorm2d.forward`` for a plain BN given as a `BnState` (its statistics updated alike); a frozen one's
    as ``FrozenBatchNorm2d.forward`` computes it (the same values; any epsilon, the 0 of torchvision's first COCO
    weights included, which ``F.batch_norm`` refuses in some torch releases)."""
    if bn.num_batches_tracked is None:
        shape = (1, -1) + (1,) * (z.dim() - 2)
        scale = bn.weight.reshape(shape) * (bn.running_var.reshape(shape) + bn.eps).rsqrt()
        return z * scale + (bn.bias.reshape(shape) - bn.running_mean.reshape(shape) * scale)
    factor = _bn_momentum(bn.num_batches_tracked, bn.momentum) if bn.training else 0.0
    return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.training, factor, bn.eps)


def pooled_before_conv3(h: torch.Tensor, conv3_weight: torch.Tensor, bn: BnState) -> Optional[torch.Tensor]:
    """In inference, the means (N, C) of ``bn(conv3(h))`` from ``h``, where that is cheaper than pooling the
    block output: conv3 is a 1x1 linear map and an eval-mode BN is affine, so ``mean(bn(W h)) = bn(W mean(h))``
    exactly. It costs a (N, C_in) x (C_in, C) product against reading N * C * H * W values, and pays on a CPU
    up to C_in = 4 * H * W (stages 1 to 3 of ResNet-50, not 4). None where it does not pay."""
    if conv3_weight.shape[1] > 4 * h.shape[2] * h.shape[3]:
        return None
    return _batch_norm(F.linear(h.mean(dim=(2, 3)), conv3_weight.flatten(1)), bn)


def _fusable(z: torch.Tensor, bn: BnState) -> bool:
    """Whether the fused training function takes ``z``: float32 or float64 in the BN's own dtype (not
    autocast's mixed ones), and not empty (BatchNorm's own forward handles an empty batch)."""
    return z.dtype in (torch.float32, torch.float64) and z.dtype == bn.weight.dtype and z.numel() > 0


def _needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _transformed(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether ``torch.func`` transforms any of ``tensors`` (their wrappers are what ``debug_unwrap`` removes):
    the transforms have no rule for an ``out=`` write, nor for an autograd function without ``setup_context``.
    Not asked under ``torch.compile``, which cannot trace the question."""
    if torch.compiler.is_compiling():
        return False
    return any(t is not None and torch.func.debug_unwrap(t, recurse=False) is not t for t in tensors)


def eca_block_end(
    x: torch.Tensor,
    shortcut: torch.Tensor,
    eca_weight: torch.Tensor,
    bn: Optional[BnState] = None,
    conv3: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """``shortcut + eca(bn(x))`` (or ``shortcut + eca(x)`` without ``bn``) by the cheapest exact path.

    - autograd needs a gradient and ``bn`` trains: BatchNorm, ECA and the add in one autograd function;
    - autograd needs a gradient otherwise: ``bn`` as its module would, then ECA and the add in one;
    - no gradient: the result is written into the BN output, so no new block-sized tensor is allocated (as
      with the plain ResNet's in-place add), and an eval-mode bottleneck pools before conv3 where cheaper.

    Args:
        x: The last convolution's output (N, C, H, W) when ``bn`` is given, else the block's BN output (which
            may be overwritten).
        shortcut: The residual branch, same shape.
        eca_weight: The ECA layer's 1D convolution weight, (1, 1, k).
        bn: The block's last BatchNorm as `bn_state` gives it, to be applied here; None where the
            block applied its BN itself.
        conv3: ``(h, weight)``: conv3's input and weight, where ``x = conv3(h)`` is a bias-free 1x1
            convolution, so inference may pool ``h`` instead of the block output.
    """
    bn_params = (None, None) if bn is None else (bn.weight, bn.bias)
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or _transformed(x, shortcut, eca_weight, *bn_params):
        x = x if bn is None else _batch_norm(x, bn)
        return shortcut + x * _gate(x, eca_weight)
    grad = _needs_grad(x, shortcut, eca_weight, *bn_params)
    pooled = None
    if bn is not None:
        if grad and bn.training and _fusable(x, bn):
            momentum = _bn_momentum(bn.num_batches_tracked, bn.momentum)
            args = (bn.weight, bn.bias, eca_weight, bn.running_mean, bn.running_var, momentum, bn.eps)
            return _BnEcaAdd.apply(x, shortcut, *args)
        if conv3 is not None and not grad and not bn.training:
            pooled = pooled_before_conv3(conv3[0], conv3[1], bn)
        x = _batch_norm(x, bn)
    if grad:
        return _EcaAdd.apply(x, shortcut, eca_weight)
    gate = gate_from_pooled(x.mean(dim=(2, 3)) if pooled is None else pooled, eca_weight)
    return torch.addcmul(shortcut, x, gate, out=x)
