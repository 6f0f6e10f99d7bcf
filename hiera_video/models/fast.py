"""CPU fast paths for Hiera: oneDNN GEMMs with fused epilogues and cached (pre-packed / cast) weights.

Why: on CPU, eager ``F.linear`` is MKL ``addmm``: it first copies the broadcast bias into the output (one
extra pass over every activation), then runs the GEMM with ``beta=1``; GELU and the residual adds are more
passes. oneDNN's GEMM (``torch.ops.mkldnn._linear_pointwise``, the kernel Inductor's CPU backend emits)
applies the bias, the GELU and the residual add in its epilogue, runs bf16 through the CPU's native bf16
dot-product instructions, and on the AMD EPYC (Zen 4) this was tuned on it is also the faster fp32 GEMM
(about 98 vs 85 GFLOP/s per core for 2048², 15-40% faster on Hiera's layer shapes than ``addmm``).

Two paths, both chosen automatically by `Hiera.forward_tokens` (so `forward`, `forward_features`,
`forward_intermediates` and `HieraBackbone` all benefit):

* **inference** (`compute_dtype` is not None: CPU, gradients off, model in eval mode): the blocks run
  `HieraBlock.forward_fast`, with weights packed once into oneDNN's blocked layout and cached.
* **fp32 training** (`train_active`: CPU, fp32, grad on, no autocast): the linears go through
  `train_linear`, a custom autograd function (oneDNN forward and input gradient, MKL weight gradient).

Both equal the regular path to float rounding (the same math in another order; tests hold them to 1e-5),
and both step aside (`supported`) when a layer has forward hooks or was replaced by another class.
Switch them off globally with ``HIERA_VIDEO_FAST=0`` or `set_enabled(False)`, or locally with `disabled()`
(the switch is process-global, not per thread).

bf16 inference: the path computes in bf16 when the input is bf16 (a ``model.to(torch.bfloat16)`` model) or
when CPU autocast to bf16 is active; then the fp32 weights are cast once and cached instead of on every call
as autocast does. GEMMs, LayerNorm and softmax accumulate in fp32 inside the kernels either way.

Memory: the cache holds one converted copy of every linear weight used on the fast path (fp32: the packed
copy, ~4 bytes per parameter; bf16: ~2 bytes), kept while the parameter lives; `clear_cache()` drops it.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator

import torch
import torch.nn as nn

__all__ = [
    "active",
    "clear_cache",
    "compute_dtype",
    "disabled",
    "enabled",
    "is_enabled",
    "linear",
    "set_enabled",
    "supported",
    "train_active",
    "train_linear",
    "weight",
]

_ENABLED = os.environ.get("HIERA_VIDEO_FAST", "1").lower() not in ("0", "false", "no", "off")

# Below this many elements in the first block's activations (batch x tokens x channels) the regular path is
# used: oneDNN's per-call overhead (~30 us vs ~18 us for addmm) outweighs its gains on toy sizes (a 64x64,
# 16-channel model runs 1.5x slower on the fast path; hiera_tiny_224 at batch 1, 301k elements, 1.2x faster).
MIN_ACTIVATION = 1 << 16
_HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_HAS_BF16 = _HAS_ONEDNN and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())

# Per-parameter cache of weights converted for the fast path. It lives here, not on the module, so that
# state_dict, deepcopy and pickling are unaffected. Keyed on id(param) with a weak reference to check identity
# (a WeakKeyDictionary would compare tensors with ==); a finalizer drops the entry with its parameter. Each
# entry remembers the parameter's storage pointer and version counter: any in-place update (optimizer step,
# load_state_dict's copy_) or re-assignment of .data invalidates it.
_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def clear_cache() -> None:
    """Drop every cached packed / cast weight (they are rebuilt on the next fast-path call)."""
    for _, entry in list(_CACHE.values()):
        entry.clear()
        entry["stamp"] = None


def set_enabled(flag: bool) -> None:
    """Globally enable / disable the CPU inference fast path (default: enabled unless HIERA_VIDEO_FAST=0)."""
    global _ENABLED
    _ENABLED = bool(flag)


def is_enabled() -> bool:
    return _ENABLED


@contextlib.contextmanager
def _switched(flag: bool) -> Iterator[None]:
    global _ENABLED
    old, _ENABLED = _ENABLED, flag
    try:
        yield
    finally:
        _ENABLED = old


def disabled() -> contextlib.AbstractContextManager[None]:
    """Run the regular (eager module) path inside this block, e.g. to compare against the fast path."""
    return _switched(False)


def enabled() -> contextlib.AbstractContextManager[None]:
    """Force the fast path on inside this block (it is still taken only where it applies)."""
    return _switched(True)


def compute_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype the fast path would compute in for input ``x``, or None when it does not apply.

    Applies on CPU with gradients disabled, outside ``torch.compile`` tracing (Inductor fuses on its own),
    for fp32 or bf16 compute (fp16 GEMMs have no fast CPU kernel on most machines).
    """
    if not (_ENABLED and _HAS_ONEDNN) or torch.is_grad_enabled() or x.device.type != "cpu":
        return None
    if torch.compiler.is_compiling():
        return None
    if torch.is_autocast_enabled("cpu"):
        dt = torch.get_autocast_dtype("cpu")
    else:
        dt = x.dtype
    if dt == torch.float32 or (dt == torch.bfloat16 and _HAS_BF16):
        return dt
    return None


def train_active(x: torch.Tensor) -> bool:
    """Whether the fp32 training linears (`train_linear`) apply to a forward on ``x`` with grad enabled.

    CPU, fp32, no autocast (autocast keeps its own bf16/fp16 casting rules), not under torch.compile.
    """
    return (
        _ENABLED
        and _HAS_ONEDNN
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def supported(model: nn.Module, plain: dict[str, tuple[type, ...]]) -> bool:
    """Whether the fast path may bypass the submodules' ``forward``: no forward (pre-)hooks anywhere (module
    or global) and every submodule whose forward it re-implements is exactly of the expected class, so a
    wrapped, parametrized or replaced layer (LoRA, weight norm, quantized ...) keeps its own behaviour."""
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks:
        return False
    for name, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        kinds = plain.get(name.rsplit(".", 1)[-1])
        if kinds is not None and type(m) not in kinds:
            return False
    return True


def active(x: torch.Tensor) -> bool:
    """Whether a forward on ``x`` takes the fast path right now."""
    return compute_dtype(x) is not None


def _cached(p: torch.Tensor, key: tuple, make) -> torch.Tensor:
    slot = _CACHE.get(id(p))
    stamp = (p.data_ptr(), p._version)
    if slot is None or slot[0]() is not p:
        slot = (weakref.ref(p), {"stamp": stamp})
        _CACHE[id(p)] = slot
        weakref.finalize(p, _CACHE.pop, id(p), None)
    entry = slot[1]
    if entry["stamp"] != stamp:
        entry.clear()
        entry["stamp"] = stamp
    if key not in entry:
        with torch.no_grad():
            entry[key] = make()
    return entry[key]


def weight(p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``p`` (a weight or bias) in ``dtype``: the parameter itself when it already is, else a cached cast."""
    if p.dtype == dtype:
        return p
    return _cached(p, ("cast", dtype), lambda: p.detach().to(dtype))


def _packed(lin: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    """The linear's weight reordered once into oneDNN's blocked GEMM layout (as Inductor's freezing does).

    The blocked layout does not depend on the batch size in practice; the hint only picks the first
    primitive, so a fixed one is used and the packed weight serves every input shape.
    """
    w = lin.weight
    return _cached(
        w, ("packed", dtype), lambda: torch.ops.mkldnn._reorder_linear_weight(w.detach().to(dtype), 1024)
    )


def linear(
    x: torch.Tensor, lin: nn.Linear, act: str = "none", residual: torch.Tensor | None = None
) -> torch.Tensor:
    """``act(lin(x))`` or ``lin(x) + residual`` as one oneDNN GEMM with the bias/act/add in its epilogue.

    ``x`` must already be in the compute dtype; ``act`` is ``"none"`` or ``"gelu"`` (erf GELU, as nn.GELU);
    ``residual`` (same shape as the output, contiguous) is added after the bias.
    """
    dt = x.dtype
    w = _packed(lin, dt)
    b = None if lin.bias is None else weight(lin.bias, dt)
    if residual is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, b, "add")
    if act == "gelu":
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """fp32 linear for training: oneDNN GEMM forward and input gradient, MKL weight gradient.

    Measured per layer on an AMD EPYC (Zen 4, 1 thread): oneDNN is ~20% faster than ``addmm`` (which also
    copies the broadcast bias into the output first) for the forward and for ``grad @ W``; ``grad.T @ x``
    is faster with ``torch.mm``. Saves the same tensors as ``F.linear`` (input and weight).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            # x @ W^T with W^T = w.t(): oneDNN reads the transposed weight through its strides, no copy.
            gx = torch.ops.mkldnn._linear_pointwise(g, w.t(), None, "none", [], "")
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            g2 = g.reshape(-1, g.shape[-1])
            if ctx.needs_input_grad[1]:
                gw = torch.mm(g2.t(), x.reshape(-1, x.shape[-1]))
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = g2.sum(0)
        return gx, gw, gb


def train_linear(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """``lin(x)`` for fp32 CPU training through `_OneDNNLinear` (see `train_active`)."""
    return _OneDNNLinear.apply(x, lin.weight, lin.bias)
