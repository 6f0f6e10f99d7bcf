"""Small layers shared by the Hiera family (`hiera`, `hieradet`): stochastic depth, the MLP (with its fp32
CPU training path, see `fast_train`), timm's LayerScale, and the two reshapes whose autograd backward was
slow: max-pooling's reduction (`max_over`) and the attention's q/k/v split (`split_qkv`)."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import fast_train

__all__ = ["DropPath", "LayerScale", "Mlp", "drop_path", "max_over", "split_qkv"]


class _MaxOverDim(torch.autograd.Function):
    """``x.max(dim)`` as max-pooling needs it: the values, the gradient all to the first maximum.

    ``torch.max(dim)``'s CPU kernel computes values and int64 indices in one slow pass over a non-innermost
    dim: 15-20x the time of ``amax`` (`hiera_base_224` b4, stage-3 query pooling ``[4, 4, 784, 192]``: 4.3
    vs 0.28 ms; Xeon AMX, 2 threads). Here the values are ``amax`` and the first maximum's index comes from
    a count: ``idx = sum_j [x_0, ..., x_j all below the max]`` (``S - 1`` compare-and-multiply passes over
    the output, in uint8, which is also what is saved for the backward instead of int64). Forward 3x
    faster, backward (one scatter, as ``max``'s) the same. With a NaN in the result, ``max`` itself runs
    (its index is the first NaN's; ``!=`` cannot find it)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, d: int):
        S = x.shape[d]
        if S > 255:  # more than a uint8 index holds
            return tuple(x.max(dim=d))
        m = x.amax(dim=d)
        if bool(torch.isnan(m).any()):  # see the docstring
            return tuple(x.max(dim=d))
        idx = (x.select(d, 0) != m).to(torch.uint8)  # 1 where the maximum is not at 0
        if S > 2:
            below = idx.clone()  # 1 where x_0 .. x_j are all below the maximum
            for j in range(1, S - 1):
                below.mul_(x.select(d, j) != m)
                idx.add_(below)
        return m, idx

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple) -> None:
        ctx.d, ctx.shape = inputs[1], inputs[0].shape
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, g: torch.Tensor, _):
        (idx,) = ctx.saved_tensors
        index = idx.unsqueeze(ctx.d).long()
        return g.new_zeros(ctx.shape).scatter_(ctx.d, index, g.unsqueeze(ctx.d)), None


def max_over(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Max-pooling's reduction: the maximum of ``x`` over ``dim`` (one dim or several).

    With autograd recording, dim by dim (last first), the gradient routed to the first maximum, as the
    original Hiera's ``.max(dim).values`` and SAM 2's ``MaxPool2d`` do (`_MaxOverDim`: the same result,
    faster). ``amax``'s backward instead splits ties evenly, which takes an eq / count / divide pass over
    the whole input: ~126 ms of a 1354 ms `hiera_base_224` b4 CPU training step under torch.compile, ~1.5%
    of an eager one (Xeon AMX, 2 threads). Without autograd, ``amax`` (no indices to compute). The values
    are identical; timm's port uses ``amax``, so its gradients differ from these (and the original's) at
    exact ties only.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.amax(dim=dim)
    compiling = torch.compiler.is_compiling()  # Inductor generates its own reduction for max(dim)
    for d in sorted({d % x.ndim for d in ((dim,) if isinstance(dim, int) else dim)}, reverse=True):
        x = x.max(dim=d).values if compiling else _MaxOverDim.apply(x, d)[0]
    return x


def _qkv_split_copy(qkv: torch.Tensor, B: int, L: int, nw: int, h: int, hd: int) -> torch.Tensor:
    """``[B, L * nw, 3 * h * hd]`` -> ``[3, B, nw * h, L, hd]`` (a copy: ``(nw, h)`` do not merge as views)."""
    return qkv.view(B, L, nw, 3, h, hd).permute(3, 0, 2, 4, 1, 5).reshape(3, B, nw * h, L, hd)


class _SplitQKV(torch.autograd.Function):
    """`split_qkv` with a one-pass backward: dq, dk and dv are written straight into the qkv gradient's
    layout. Autograd's own backward of the permute-reshape-unbind stacks them into a new tensor and then
    copies that into the layout: two passes (a `hiera_base_224` b4 CPU training step is 1.03-1.07x faster
    with this one; Xeon AMX, 2 threads, A/B)."""

    generate_vmap_rule = True  # forward / setup_context apart: torch.func transforms (vmap, grad) work too

    @staticmethod
    def forward(qkv: torch.Tensor, B: int, L: int, nw: int, h: int, hd: int):
        t = _qkv_split_copy(qkv, B, L, nw, h, hd)
        return t[0], t[1], t[2]

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple) -> None:
        ctx.dims = inputs[1:]
        ctx.set_materialize_grads(False)  # an unused q, k or v: zero its slice, no zero tensor to copy

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        B, L, nw, h, hd = ctx.dims
        given = [d for d in grads if d is not None]
        if not given:
            return None, None, None, None, None, None
        g = given[0].new_empty(B, L, nw, 3, h, hd)
        for i, d in enumerate(grads):
            if d is None:
                g[:, :, :, i].zero_()
            else:
                g[:, :, :, i].copy_(d.reshape(B, nw, h, L, hd).permute(0, 3, 1, 2, 4))
        return g.view(B, L * nw, 3 * h * hd), None, None, None, None, None


def split_qkv(qkv: torch.Tensor, L: int, nw: int, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An attention's ``qkv`` ``[B, L * nw, 3 * heads * hd]`` (token ``l * nw + w``, features ``(3, heads,
    hd)``) -> q, k, v, each ``[B, nw * heads, L, hd]`` and contiguous (one copy, as the fused kernels want)."""
    B, N, C = qkv.shape
    hd = C // (3 * heads)
    if N != L * nw or C != 3 * heads * hd:
        raise ValueError(f"qkv {tuple(qkv.shape)} is not [B, {L} * {nw} tokens, 3 * {heads} heads * head_dim]")
    if torch.compiler.is_compiling():  # Inductor fuses autograd's stack and copy into one kernel itself
        return _qkv_split_copy(qkv, B, L, nw, heads, hd).unbind(0)
    return _SplitQKV.apply(qkv, B, L, nw, heads, hd)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch per sample with probability p, rescale the survivors."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep.div_(1 - p)


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, train_fast: bool = False) -> torch.Tensor:
        if train_fast:  # fp32 CPU training (see `fast_train`)
            return fast_train.train_mlp(x, self)
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (CaiT); ``gamma`` as timm names it."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
