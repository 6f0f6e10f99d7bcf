"""fp32 CPU training fast path for Hiera: per-shape oneDNN linears and the MLP as one autograd function
whose big activation lives in reused memory.

Used by the models' blocks when `train_active` (CPU, fp32, grad on, no autocast, not under torch.compile
or a torch.func transform, fast paths enabled: `fast.set_enabled`, ``HIERA_VIDEO_FAST=0``). Two pieces:

* `train_linear`: ``F.linear``, or `_OneDNNLinear` (oneDNN forward and input gradient, MKL weight
  gradient) where, for this shape on this CPU, that measured at least `TRAIN_MARGIN` faster
  (`cpu_kernels.choose`; the oneDNN calls must have passed `cpu_kernels`' probe).
* `train_mlp`: ``fc2(gelu(fc1(x)))`` as `_TrainMLP`, which saves only the input and fc1's output ``h``:
  GELU's output is a per-thread scratch buffer consumed by fc2 at once and recomputed in the backward
  (0.24 ms at Hiera-B's stage 3 on warm memory), so a step keeps one activation fewer per block (Hiera-B,
  batch 4: peak memory 868 -> 709 MiB). ``h`` is written into a buffer of a pool that outlives the step
  (`take`). Why: every saved activation is a fresh buffer, and glibc hands large ones back to the OS when
  they are freed after the backward, so the next step page-faults them in again (fresh memory is written
  at ~4.8 GB/s against 22-50 GB/s warm; Intel Xeon with AMX, 2 threads: 117-430 MB faulted per
  ``hiera_base_224`` batch-4 step, depending on the heap's history). The faults removed pay for the GELU
  recompute: the step measured as fast as with autograd's MLP, capped to AVX2 or not. Same GEMMs as the
  regular path, the same math in the same order: gradients equal ``F.linear`` / ``nn.GELU`` autograd to
  float rounding (tests); a double backward (``create_graph=True``) recomputes in differentiable ops.

The pool (`take`): buffers keyed by shape; one is free when nothing but the pool references its storage
(``torch._C._storage_Use_Count``; without that private API nothing is pooled). So a second forward before
the backward, a retained graph or gradient checkpointing simply get other buffers; nothing ever writes
into memory a live graph still holds. It keeps at most `POOL_SHAPES` shapes (least recently used dropped)
and `clear_pool` / `fast.clear_cache` free it; `pool_bytes` reports its size (`tools/benchmark.py` empties
it before measuring a step's peak memory, so that the pool, which lives between steps, is counted).

The rest of a step's memory (every other activation, the gradients, the temporaries) is freed after the
backward too. So the first forward on this path also applies `hiera_video.allocator.keep_freed_memory` for
the process (glibc: freed blocks stay mapped and are reused; ~80,000 page faults per ``hiera_base_224``
batch-4 step removed, the step 4-8% faster in fresh processes; the pool keeps its use where that is off or
absent: ``HIERA_VIDEO_KEEP_FREED_MEMORY=0``, macOS, musl).
"""

from __future__ import annotations

import collections
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiera_video.allocator import keep_freed_memory
from hiera_video.models import cpu_kernels, fast

__all__ = ["POOL_SHAPES", "TRAIN_MARGIN", "clear_pool", "pool_bytes", "take", "train_active", "train_linear",
           "train_mlp"]

TRAIN_MARGIN = 1.03  # oneDNN training linears must be this much faster than F.linear to be used
_FP32 = "onednn_fp32_linear"


def train_active(x: torch.Tensor) -> bool:
    """Whether the fp32 training fast path applies to a forward on ``x`` with grad enabled.

    CPU, fp32, no autocast (autocast keeps its own bf16/fp16 casting rules), not under torch.compile
    (Inductor fuses on its own) nor inside a torch.func transform (the custom functions here write into
    preallocated buffers, which vmap / functional transforms cannot follow).

    The first time it applies in a process, it also keeps freed memory mapped
    (`hiera_video.allocator.keep_freed_memory`: the step's freed activations are reused instead of being
    page-faulted in again; ``HIERA_VIDEO_KEEP_FREED_MEMORY=0`` turns that off)."""
    active = (
        fast.is_enabled()
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not _functorch_active()
    )
    if active and not _KEPT_FREED_MEMORY:
        _keep_freed_memory()
    return active


_KEPT_FREED_MEMORY = False


def _keep_freed_memory() -> None:
    global _KEPT_FREED_MEMORY
    _KEPT_FREED_MEMORY = True  # asked once per process (a forked process keeps the parent's mallopt setting)
    keep_freed_memory()


def _functorch_active() -> bool:
    check = getattr(torch._C, "_are_functorch_transforms_active", None)  # (private; absent: assume active)
    return True if check is None else check()


# ----------------------------------------------------------------------------------------------------------
# Linears
# ----------------------------------------------------------------------------------------------------------


class _OneDNNLinear(torch.autograd.Function):
    """fp32 linear for training: oneDNN GEMM forward and input gradient, MKL weight gradient.

    Measured per layer on an AMD EPYC (Zen 4, 1 thread): oneDNN is ~20% faster than ``addmm`` (which also
    copies the broadcast bias into the output first) for the forward and for ``grad @ W``; ``grad.T @ x``
    is faster with ``torch.mm``. Other CPUs differ, hence `use_onednn`'s per-shape choice. Saves the same
    tensors as ``F.linear`` (input and weight).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the same formulas in differentiable ops
            return _differentiable_linear_grads(ctx.needs_input_grad, g, x, w, ctx.has_bias)
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


def _differentiable_linear_grads(need: tuple[bool, ...], g: torch.Tensor, x: torch.Tensor, w: torch.Tensor,
                                 has_bias: bool) -> tuple[torch.Tensor | None, ...]:
    """``F.linear``'s input / weight / bias gradients in plain autograd ops (for a double backward)."""
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    return (g.matmul(w) if need[0] else None, g2.t().mm(x2) if need[1] else None,
            g2.sum(0) if has_bias and need[2] else None)


def use_onednn(x: torch.Tensor, lin: nn.Linear) -> bool:
    """Whether ``lin`` on the rows of ``x`` (``[..., any]``: only its row count and dtype matter) runs oneDNN
    in training: `fast.FORCE_ONEDNN` if set, else measured once per shape (forward + grad-input GEMMs of
    both kernels; oneDNN only where the probe passed and it is `TRAIN_MARGIN` faster), then cached."""
    if not cpu_kernels.kernel_ok(_FP32):
        return False
    if fast.FORCE_ONEDNN is not None:
        return fast.FORCE_ONEDNN
    key = cpu_kernels.shape_key("train", x, lin.in_features, lin.out_features)
    use = cpu_kernels.cached_choice(key)
    if use is None:
        w, b = lin.weight, lin.bias
        with torch.no_grad():  # time the two kernels' forward + grad-input GEMMs on this shape
            # A private generator: measuring must not move the global RNG (drop path, exact resume).
            gen = torch.Generator().manual_seed(0)
            xd = x.detach()
            if x.shape[-1] != lin.in_features:  # another layer's input shape (`train_mlp`'s fc2)
                xd = torch.randn(*x.shape[:-1], lin.in_features, dtype=x.dtype, generator=gen)
            g = torch.randn(*x.shape[:-1], lin.out_features, dtype=x.dtype, generator=gen)
            lp = torch.ops.mkldnn._linear_pointwise

            def regular() -> None:
                F.linear(xd, w, b)
                g.matmul(w)

            def onednn() -> None:
                lp(xd, w, b, "none", [], "")
                lp(g, w.t(), None, "none", [], "")

            use, _ = cpu_kernels.choose(key, regular, onednn, TRAIN_MARGIN, budget=0.1)
    return bool(use)


def train_linear(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """``lin(x)`` for fp32 CPU training (see `train_active`): `_OneDNNLinear` where `use_onednn`, else
    ``F.linear``."""
    if use_onednn(x, lin):
        return _OneDNNLinear.apply(x, lin.weight, lin.bias)
    return F.linear(x, lin.weight, lin.bias)


# ----------------------------------------------------------------------------------------------------------
# Activation pool
# ----------------------------------------------------------------------------------------------------------

POOL_SHAPES = 16  # shapes kept (a Hiera needs ~one per stage and batch size), least recently used dropped
_POOL: collections.OrderedDict[tuple, list[torch.Tensor]] = collections.OrderedDict()
_POOL_LOCK = threading.Lock()
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def _refs(t: torch.Tensor) -> int:
    return _USE_COUNT(t.untyped_storage()._cdata)


def take(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised ``shape`` tensor from the pool: a view of a buffer nothing else references (reused
    across steps, so its pages are not faulted in again), or a new pooled buffer. Valid for as long as
    anything holds the returned tensor or a view of it."""
    if _USE_COUNT is None:
        return torch.empty(shape, dtype=dtype)
    key = (tuple(shape), dtype)
    with _POOL_LOCK:
        bufs = _POOL.setdefault(key, [])
        _POOL.move_to_end(key)
        for buf in bufs:
            if _refs(buf) <= _BASE_REFS:
                return buf.view(buf.shape)  # a new tensor on the storage: counted while it lives
        with torch.inference_mode(False):
            buf = torch.empty(shape, dtype=dtype)
        bufs.append(buf)
        while len(_POOL) > POOL_SHAPES:
            _POOL.popitem(last=False)  # buffers still in use live on through their views
        return buf.view(buf.shape)


def pool_bytes() -> int:
    """Bytes held by the pool (in use or free)."""
    with _POOL_LOCK:
        return sum(b.nbytes for bufs in _POOL.values() for b in bufs)


def clear_pool() -> None:
    """Drop the pool's buffers (those still in use stay alive through their views until released)."""
    with _POOL_LOCK:
        _POOL.clear()


_BASE_REFS = _refs(torch.empty(1)) if _USE_COUNT is not None else 0  # a buffer held by the pool alone
fast.CLEAR_HOOKS.append(clear_pool)


# ----------------------------------------------------------------------------------------------------------
# MLP
# ----------------------------------------------------------------------------------------------------------


class _TrainMLP(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` (erf GELU) saving ``x`` and a pooled ``h = fc1(x)``; see the module docstring.

    fc1 and fc2 run oneDNN where `use_onednn` (then ``h`` / the grad buffer are oneDNN's own outputs)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                dnn1: bool, dnn2: bool) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        M, H = x2.shape[0], w1.shape[0]
        lp = torch.ops.mkldnn._linear_pointwise
        if dnn1:
            h = lp(x2, w1, b1, "none", [], "")
        else:
            h = torch.addmm(b1, x2, w1.t(), out=take((M, H), x.dtype))
        a = torch.ops.aten.gelu.out(h, out=fast._scratch((M, H), x.dtype))
        y = lp(a, w2, b2, "none", [], "") if dnn2 else torch.addmm(b2, a, w2.t())
        ctx.save_for_backward(x, h, w1, b1, w2)  # (b1 only for a double backward's recompute)
        ctx.dnn = (dnn1, dnn2)
        return y.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, h, w1, b1, w2 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: recomputed in differentiable ops (``h`` is not)
            return _differentiable_mlp_grads(ctx.needs_input_grad, gy, x, w1, b1, w2)
        x2 = x.reshape(-1, x.shape[-1])
        dnn1, dnn2 = ctx.dnn
        M, H = h.shape
        gy2 = gy.reshape(M, -1)
        lp = torch.ops.mkldnn._linear_pointwise
        need = ctx.needs_input_grad
        buf = fast._scratch((M, H), h.dtype)  # gelu(h), then the gradient at its output: one warm buffer
        gw2 = gb2 = None
        if need[3]:
            gw2 = torch.mm(gy2.t(), torch.ops.aten.gelu.out(h, out=buf))
        if need[4]:
            gb2 = gy2.sum(0)
        if not (need[0] or need[1] or need[2]):
            return None, None, None, gw2, gb2, None, None
        ga = lp(gy2, w2.t(), None, "none", [], "") if dnn2 else torch.mm(gy2, w2, out=buf)
        # A new tensor: the out= variant (into ``ga`` or any given buffer) measured 2.3-2.7x slower (1.4-1.8
        # vs 0.55-0.65 ms at 784 x 1536; Xeon, 2 threads, capped or not).
        gh = torch.ops.aten.gelu_backward(ga, h)
        gx = gw1 = gb1 = None
        if need[0]:
            gx = (lp(gh, w1.t(), None, "none", [], "") if dnn1 else torch.mm(gh, w1)).view(x.shape)
        if need[1]:
            gw1 = torch.mm(gh.t(), x2)
        if need[2]:
            gb1 = gh.sum(0)
        return gx, gw1, gb1, gw2, gb2, None, None


def _differentiable_mlp_grads(need: tuple[bool, ...], gy: torch.Tensor, x: torch.Tensor, w1: torch.Tensor,
                              b1: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """`_TrainMLP`'s gradients in plain autograd ops, so that a double backward (``create_graph=True``:
    gradient penalties, meta-learning) differentiates them: ``h`` is recomputed from the saved inputs."""
    x2 = x.reshape(-1, x.shape[-1])
    h = F.linear(x2, w1, b1)
    gy2 = gy.reshape(x2.shape[0], -1)
    gh = torch.ops.aten.gelu_backward(gy2.matmul(w2), h)
    return (gh.matmul(w1).view(x.shape) if need[0] else None, gh.t().mm(x2) if need[1] else None,
            gh.sum(0) if need[2] else None, gy2.t().mm(F.gelu(h)) if need[3] else None,
            gy2.sum(0) if need[4] else None, None, None)


def train_mlp(x: torch.Tensor, mlp: nn.Module) -> torch.Tensor:
    """``mlp(x)`` (a `layers.Mlp`: fc1, erf GELU, fc2) for fp32 CPU training (`train_active`): `_TrainMLP`,
    or the module's own layers where it does not apply (no bias, another activation). ``x``: ``[..., dim]``;
    returns ``[..., dim]``."""
    fc1, fc2 = mlp.fc1, mlp.fc2
    if (fc1.bias is None or fc2.bias is None or type(mlp.act) is not nn.GELU or mlp.act.approximate != "none"
            or x.numel() == 0):
        return fc2(mlp.act(fc1(x)))
    dnn1, dnn2 = use_onednn(x, fc1), use_onednn(x, fc2)  # (fc2: same rows, its own features)
    return _TrainMLP.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, dnn1, dnn2)
