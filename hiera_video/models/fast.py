"""CPU fast paths for Hiera: oneDNN GEMMs with fused epilogues and cached (pre-packed / cast) weights,
used per layer shape only where they were measured faster on this CPU.

Why: on CPU, eager ``F.linear`` is MKL ``addmm``: it first copies the broadcast bias into the output (one
extra pass over every activation), then runs the GEMM with ``beta=1``; GELU and the residual adds are more
passes. oneDNN's GEMM (``torch.ops.mkldnn._linear_pointwise``, the kernel Inductor's CPU backend emits)
applies the bias, the GELU and the residual add in its epilogue and runs bf16 through the CPU's native bf16
instructions. Whether it is also the faster fp32 GEMM depends on the CPU, on oneDNN's ISA cap, on the thread
count and on the shape (1.0-1.7x faster at Hiera's inference shapes on an Intel Xeon with AMX, 15-40% on an
AMD Zen 4; the training linears range from 0.7x to 1.23x). So nothing here is tuned to one machine:

* `cpu_kernels.kernel_status` probes, once per process, that each oneDNN call used here runs and is correct
  (fp32 and bf16 linears with the ``none`` / ``gelu`` / ``add`` epilogues, weight reorder, transposed weight,
  bf16 SDPA); a refused kernel switches the path that needs it off, never raises.
* `linear` and `fast_train.train_linear` pick, per layer shape, oneDNN or the regular ``F.linear`` by timing
  both on the first call with that shape (`cpu_kernels.choose`: rows rounded to a power of two, features, epilogue,
  dtype, threads); training keeps oneDNN only when it is >= 3% faster, so the training fast path cannot make
  a step slower than the regular path. Toy sizes need no threshold: oneDNN's per-call overhead (~30 us vs
  ~18 us for ``addmm``) loses the measurement there. `MIN_ACTIVATION` (default 0) is an optional floor on
  the first block's activation size below which the whole model keeps the regular path; `FORCE_ONEDNN`
  (None: measure; True / False) overrides the per-shape choice, e.g. for tests.

Two paths, both chosen automatically by `Hiera.forward_tokens` (so `forward`, `forward_features`,
`forward_intermediates` and `HieraBackbone` all benefit):

* **inference** (`compute_dtype` is not None: CPU, gradients off, model in eval mode): the blocks run
  `HieraBlock.forward_fast`, with weights packed once into oneDNN's blocked layout and cached.
* **fp32 training** (`fast_train.train_active`: CPU, fp32, grad on, no autocast): the linears go through
  `fast_train.train_linear` (oneDNN forward and input gradient, MKL weight gradient) where measured faster,
  else ``F.linear``, and the MLP through `fast_train.train_mlp` (its big activation in reused memory).

On both, and also in bf16 autocast training, the attention runs `cpu_attention.attention`: PyTorch's fused
kernel or the plain softmax form, per shape, whichever measured faster here (the bf16 fused backward was
3.4x slower than the plain form on an AMD Zen 4).

What inference adds beyond the kernels, each measured on an Intel Xeon (AMX, 2 threads; BENCHMARKS.md):

* qkv computed **head-major** (`head_major`, inference): mask-unit attention reads q, k and v as strided
  views and the fused attention kernel writes its output in token order, so the two copies per block are
  gone (the q/k/v copies were 77 ms of a 1.1 s hiera_base_224 batch-8 forward).
* whole blocks over **chunks of samples** (`per_sample_chunks`) and the first-stage MLP over chunks of
  rows (`mlp`), where measured faster: the big first-stage buffers stay small and cache-resident.
* on the regular (MKL) kernel, which has no epilogue: no pass over fresh memory that can be avoided -- the
  MLP hidden activation and qkv, consumed at once, live in reused per-thread buffers (`linear`'s
  ``scratch``); fc2 accumulates into the block's own residual in place, and the attention's proj into the
  block input when the model owns it (``consume_residual``; never while a choice is being measured,
  `cpu_kernels.measuring`); where measured faster, qkv's and fc1's bias is folded into the GEMM
  (`norm_linear`: the LayerNorm writes a buffer with a column of ones, the weight gets the bias as an
  extra column), so no pass writes the broadcast bias over a cold output first (AVX2-capped Xeon,
  ``hiera_base_224`` batch 8: forward 1.01-1.10x faster with these two, five A/B runs).

Both equal the regular path to float rounding (the same math in another order; tests hold them to 1e-5),
and both step aside (`supported`) when a layer has forward hooks or was replaced by another class.
Switch them off globally with ``HIERA_VIDEO_FAST=0`` or `set_enabled(False)`, or locally with `disabled()`
(the switch is process-global, not per thread).

bf16 inference: the path computes in bf16 when the input is bf16 (a ``model.to(torch.bfloat16)`` model) or
when CPU autocast to bf16 is active, if bf16 is native on this CPU (`cpu_kernels.native`); the fp32 weights
are then cast once and cached instead of on every call as autocast does. Where bf16 is not native (AVX2-only
CPUs, or oneDNN capped to AVX2: bf16 GEMMs 10-100x slower than fp32), it warns once and computes in fp32
instead (a bf16 model's weights cast once to fp32 and cached; outputs returned in the input's dtype), unless
``HIERA_VIDEO_FORCE_PRECISION=1``. GEMMs, LayerNorm and softmax accumulate in fp32 inside the kernels.

Memory: the cache holds one converted copy of every linear weight used on the fast path (fp32: the packed
copy, ~4 bytes per parameter; bf16: ~2 bytes), plus a ``[W | b]`` copy of the qkv / fc1 weights whose
bias is folded, kept while the parameter lives, and each thread's scratch buffers (one per MLP-hidden /
qkv / LayerNorm-output shape: tens of MB at Hiera-B sizes); `clear_cache()` drops them all.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiera_video.allocator import release_freed_memory
from hiera_video.models import cpu_kernels

__all__ = [
    "FORCE_ONEDNN",
    "MIN_ACTIVATION",
    "RowOrder",
    "active",
    "clear_cache",
    "compute_dtype",
    "disabled",
    "enabled",
    "head_major",
    "is_enabled",
    "layer_norm",
    "linear",
    "mlp",
    "norm_linear",
    "per_sample_chunks",
    "set_enabled",
    "supported",
    "weight",
]

_ENABLED = os.environ.get("HIERA_VIDEO_FAST", "1").lower() not in ("0", "false", "no", "off")

# Optional floor (first block's activations, batch x tokens x channels) below which a model keeps the
# regular path. 0: none; the per-shape measurement already keeps oneDNN away from sizes where it loses.
MIN_ACTIVATION = 0
# None: oneDNN vs F.linear measured per shape (see the module docstring); True / False: always / never
# oneDNN (where the kernel probe passed), e.g. to test both kernels on any CPU.
FORCE_ONEDNN: bool | None = None
INFER_MARGIN = 1.0  # inference: oneDNN is used wherever it measures faster at all
_FP32 = "onednn_fp32_linear"

# Per-parameter cache of weights converted for the fast path. It lives here, not on the module, so that
# state_dict, deepcopy and pickling are unaffected. Keyed on id(param) with a weak reference to check identity
# (a WeakKeyDictionary would compare tensors with ==); a finalizer drops the entry with its parameter. Each
# entry remembers the parameter's storage pointer and version counter: any in-place update (optimizer step,
# load_state_dict's copy_) or re-assignment of .data invalidates it.
_CACHE: dict[int, tuple[weakref.ref, dict]] = {}
CLEAR_HOOKS: list = []  # more caches `clear_cache` empties (`fast_train` registers its activation pool)


def clear_cache() -> None:
    """Drop every cached packed / cast weight (they are rebuilt on the next fast-path call), this thread's
    scratch buffers and the caches in `CLEAR_HOOKS` (the training path's activation pool), then hand the
    heap's free pages back to the kernel (`hiera_video.allocator.release_freed_memory`: the training path keeps
    freed memory mapped otherwise)."""
    _SCRATCH.__dict__.pop("bufs", None)
    for clear in CLEAR_HOOKS:
        clear()
    for _, entry in list(_CACHE.values()):
        entry.clear()
        entry["stamp"] = None
    release_freed_memory()


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


def _bf16_fast_ok() -> bool:
    return cpu_kernels.kernel_ok("onednn_bf16_linear") and cpu_kernels.kernel_ok("bf16_sdpa")


def compute_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype the fast path would compute in for input ``x``, or None when it does not apply.

    Applies on CPU with gradients disabled, outside ``torch.compile`` tracing (Inductor fuses on its own),
    for fp32 or bf16 requests (fp16 GEMMs have no fast CPU kernel on most machines). A bf16 request (bf16
    input or CPU bf16 autocast) computes in bf16 where bf16 is native here (`cpu_kernels.native`) or forced
    (``HIERA_VIDEO_FORCE_PRECISION=1``), else in fp32 after one warning (`cpu_kernels.resolve_precision`).
    """
    if not _ENABLED or torch.is_grad_enabled() or x.device.type != "cpu":
        return None
    if torch.compiler.is_compiling():
        return None
    dt = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dt == torch.bfloat16:
        if cpu_kernels.resolve_precision("bf16", "cpu") == "bf16":  # native, or forced by the env
            return dt if _bf16_fast_ok() else None
        dt = torch.float32  # bf16 is emulated here: fp32 is much faster and more accurate
    if dt == torch.float32 and cpu_kernels.kernel_ok(_FP32):
        return dt
    return None


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


class RowOrder(NamedTuple):
    """A fixed reordering of a linear's output features: output ``j`` is the checkpoint's ``index[j]``.

    ``name`` identifies the order in the weight cache (one name, one index)."""

    name: str
    index: torch.Tensor


@functools.cache
def head_major(heads: int, head_dim: int) -> RowOrder:
    """An attention qkv's output features reordered from ``(3, heads, head_dim)`` (the checkpoints' order)
    to ``(heads, 3, head_dim)``.

    Why: with that order the ``[windows, heads]`` pair of every q, k and v has one common stride, so
    mask-unit attention is a plain 4-D strided view with ``windows * heads`` heads (no copy of q, k and v;
    `hiera.MaskUnitAttention._attend`). The weight and bias rows are permuted once (cached with the
    parameter), never in the state dict.
    """
    with torch.inference_mode(False):  # a normal tensor, usable in and outside inference mode
        idx = torch.arange(3 * heads * head_dim).view(3, heads, head_dim).transpose(0, 1).flatten()
    return RowOrder(f"head_major{heads}x{head_dim}", idx)


def weight(p: torch.Tensor, dtype: torch.dtype, rows: RowOrder | None = None) -> torch.Tensor:
    """``p`` (a weight or bias) in ``dtype`` with its rows in ``rows`` order: the parameter itself when
    nothing changes, else a cached cast / reordered copy."""
    if rows is not None:
        return _cached(p, ("rows", rows.name, dtype), lambda: p.detach().to(dtype)[rows.index].contiguous())
    if p.dtype == dtype:
        return p
    return _cached(p, ("cast", dtype), lambda: p.detach().to(dtype))


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """Inference ``norm(x)`` in ``x``'s dtype (the compute dtype), with the affine parameters cast once."""
    return F.layer_norm(x, norm.normalized_shape, weight(norm.weight, x.dtype), weight(norm.bias, x.dtype), norm.eps)


def _packed(lin: nn.Linear, dtype: torch.dtype, rows: RowOrder | None = None) -> torch.Tensor:
    """The linear's weight reordered once into oneDNN's blocked GEMM layout (as Inductor's freezing does).

    The blocked layout does not depend on the batch size in practice; the hint only picks the first
    primitive, so a fixed one is used and the packed weight serves every input shape.
    """
    w = lin.weight
    key = ("packed", dtype) if rows is None else ("packed", dtype, rows.name)

    def make() -> torch.Tensor:  # from a transient copy: only the packed weight is kept
        src = w.detach().to(dtype)
        return torch.ops.mkldnn._reorder_linear_weight(src if rows is None else src[rows.index], 1024)

    return _cached(w, key, make)


_SCRATCH = threading.local()


SCRATCH_SHAPES = 32  # per thread, most recently used first: a model needs ~2 per stage and batch size


def _scratch(shape: tuple[int, ...], dtype: torch.dtype, ones_column: bool = False) -> torch.Tensor:
    """A per-thread buffer of ``shape`` reused by every call that asks for it (see `linear`'s ``scratch``).
    At most `SCRATCH_SHAPES` are kept, so inputs of ever-changing sizes cannot grow them without bound.
    ``ones_column``: a separate buffer whose last column is 1, set once (`norm_linear` never writes it)."""
    bufs = _SCRATCH.__dict__.setdefault("bufs", collections.OrderedDict())
    key = (shape, dtype, ones_column)
    if key in bufs:
        bufs.move_to_end(key)
    else:
        with torch.inference_mode(False):  # a normal tensor: usable both in and outside inference mode
            bufs[key] = torch.ones(shape, dtype=dtype) if ones_column else torch.empty(shape, dtype=dtype)
        while len(bufs) > SCRATCH_SHAPES:
            bufs.popitem(last=False)
    return bufs[key]


def linear(
    x: torch.Tensor, lin: nn.Linear, act: str = "none", residual: torch.Tensor | None = None,
    rows: RowOrder | None = None, scratch: bool = False, consume_residual: bool = False,
) -> torch.Tensor:
    """``act(lin(x))`` or ``lin(x) + residual``: one oneDNN GEMM with the bias/act/add in its epilogue, or
    the regular MKL GEMM (``addmm``, + GELU / add) where that was measured faster for this shape on this CPU.

    ``x`` must already be in the compute dtype; ``act`` is ``"none"`` or ``"gelu"`` (erf GELU, as nn.GELU);
    ``residual`` (same shape as the output, contiguous) is added after the bias; ``rows`` reorders the
    output features (weights and bias permuted once and cached, see `RowOrder`).

    Two promises from the caller let the regular path skip a pass over fresh memory (the MKL GEMM has no
    epilogue: ``F.linear`` first copies the bias into a newly allocated output, and a new buffer's pages
    are faulted in on first touch): ``scratch`` -- the result is consumed before the next ``scratch`` call
    of this thread (an MLP's hidden activation), so it may live in a reused per-thread buffer;
    ``consume_residual`` -- the caller gives ``residual`` up, so the GEMM may accumulate into it in place.
    """
    dt = x.dtype
    b = None if lin.bias is None else weight(lin.bias, dt, rows)

    def onednn() -> torch.Tensor:
        w = _packed(lin, dt, rows)
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, b, "add")
        if act == "gelu":
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    def regular(in_place: bool = False) -> torch.Tensor:
        w = weight(lin.weight, dt, rows)
        if residual is not None and consume_residual:  # residual + x @ W^T, then + b
            r2, x2 = residual.view(-1, residual.shape[-1]), x.reshape(-1, x.shape[-1])
            # In place once measured; while measuring (several calls on one residual) into a new buffer,
            # with the same arithmetic, so the measuring call's output equals every later one bitwise.
            out = r2.addmm_(x2, w.t()) if in_place else torch.addmm(r2, x2, w.t())
            return (out if b is None else out.add_(b)).view(residual.shape)
        if scratch:
            x2 = x.reshape(-1, x.shape[-1])
            out = _scratch((x2.shape[0], w.shape[0]), dt)
            y = (torch.mm(x2, w.t(), out=out) if b is None else torch.addmm(b, x2, w.t(), out=out))
            y = y.view(*x.shape[:-1], w.shape[0])
        else:
            y = F.linear(x, w, b)
        if residual is not None:
            return y.add_(residual)  # = residual + y (the regular path's sum), one pass, no new buffer
        return torch.ops.aten.gelu_(y) if act == "gelu" else y  # in place: y is ours, no new buffer

    def regular_later() -> torch.Tensor:
        # In place only once measured, and never while an enclosing choice measures (it repeats calls on
        # one input).
        return regular(in_place=not cpu_kernels.measuring())

    if FORCE_ONEDNN is not None:
        return onednn() if FORCE_ONEDNN else regular_later()
    key = cpu_kernels.shape_key("infer", x, lin.in_features, lin.out_features, act, residual is not None)
    # The first call with this shape measures both (never in place) and keeps the faster.
    return cpu_kernels.run_faster(key, regular, onednn, INFER_MARGIN, regular_later=regular_later)


def _folded_holder(lin: nn.Linear, dtype: torch.dtype, rows: RowOrder | None) -> dict:
    """The weight-cache entry holding `_folded_weight`'s copy (cleared where the copy is not used)."""
    return _cached(lin.weight, ("folded", dtype, None if rows is None else rows.name), dict)


def _folded_weight(lin: nn.Linear, dtype: torch.dtype, rows: RowOrder | None) -> torch.Tensor:
    """``[W | b]`` (``[out, in + 1]``, rows in ``rows`` order) for `norm_linear`: cached with the weight and
    rebuilt when the bias changes (the cache entry follows the weight's version, this the bias's)."""
    b = lin.bias
    holder = _folded_holder(lin, dtype, rows)
    stamp = (b.data_ptr(), b._version)
    if holder.get("stamp") != stamp:
        with torch.no_grad(), torch.inference_mode(False):
            holder["w"] = torch.cat([weight(lin.weight, dtype, rows), weight(b, dtype, rows)[:, None]], 1)
        holder["stamp"] = stamp
    return holder["w"]


def norm_linear(x: torch.Tensor, norm: nn.LayerNorm, lin: nn.Linear, act: str = "none",
                rows: RowOrder | None = None, scratch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference ``(linear(x_norm, lin, act, rows=rows, scratch=scratch), x_norm)`` with
    ``x_norm = layer_norm(x, norm)``, or the same with the bias folded into the GEMM where that measured
    faster for this shape (fp32). ``x_norm`` is then a view of a reused buffer (like ``scratch``: valid
    until the next call with this shape on this thread).

    Why: the MKL GEMM has no epilogue, so ``addmm`` first writes the broadcast bias over its whole output, a
    pass over cold memory that costs a quarter to a half of a first-stage GEMM (K = 96; measured on an Intel
    Xeon, 2 threads: 10 vs 7 ms for 25088 x 96 -> 288). Folded: the LayerNorm writes its output into a reused
    ``[rows, in + 1]`` buffer whose last column is 1, and one ``torch.mm`` with ``[W | b]`` gives
    ``x W^T + b`` with the bias inside the dot products (same values to float rounding). The weight copy is
    kept only while some shape of the layer uses it.
    """
    def plain() -> tuple[torch.Tensor, torch.Tensor]:
        x_norm = layer_norm(x, norm)
        return linear(x_norm, lin, act, rows=rows, scratch=scratch), x_norm

    if lin.bias is None or x.dtype != torch.float32 or FORCE_ONEDNN:  # (folded is an MKL GEMM)
        return plain()
    K, N = x.shape[-1], lin.out_features

    def folded() -> tuple[torch.Tensor, torch.Tensor]:
        x2 = x.reshape(-1, K)
        buf = _scratch((x2.shape[0], K + 1), x.dtype, ones_column=True)
        torch.ops.aten.native_layer_norm.out(
            x2, [K], weight(norm.weight, x.dtype), weight(norm.bias, x.dtype), norm.eps,
            out0=buf[:, :K], out1=x.new_empty(0), out2=x.new_empty(0))  # (mean and rstd: not kept)
        out = _scratch((x2.shape[0], N), x.dtype) if scratch else x.new_empty(x2.shape[0], N)
        y = torch.mm(buf, _folded_weight(lin, x.dtype, rows).t(), out=out)
        y = torch.ops.aten.gelu_(y) if act == "gelu" else y
        return y.view(*x.shape[:-1], N), buf[:, :K].view(*x.shape)

    key = cpu_kernels.shape_key("folded", x, K, N, act)
    use = cpu_kernels.cached_choice(key)
    if use is None:
        # Both variants may write the same scratch output, so the measurement's own result is not used.
        use, _ = cpu_kernels.choose(key, plain, folded)
        if not use:  # no copy of the weight for a layer that does not use it
            _folded_holder(lin, x.dtype, rows).clear()
    return folded() if use else plain()


MLP_CHUNK_ROWS = 2048  # rows per chunk of `mlp`: the chunk's hidden activation (rows x 4C) stays in cache


def mlp(h: torch.Tensor, m: nn.Module, residual: torch.Tensor, consume_residual: bool = False,
        norm: nn.LayerNorm | None = None) -> torch.Tensor:
    """Inference ``m.fc2(gelu(m.fc1(h))) + residual`` (`linear` twice), or the same over row chunks; with
    ``norm``, ``m.fc1`` takes ``norm(h)`` (`norm_linear`).

    The hidden activation is `linear`'s ``scratch`` (consumed by fc2 at once); ``consume_residual``: the
    caller gives ``residual`` up (`linear`), so the result may be written into it.

    Why chunks: at Hiera's first stage the MLP's hidden activation is large (hiera_base_224 batch 8: 25088 x
    384 floats, 38 MB) and each of its elements costs only 2 x 96 FLOPs in each GEMM, so writing it out and
    reading it back is memory-bound; computed ``MLP_CHUNK_ROWS`` rows at a time it stays in cache (measured on
    an Intel Xeon, 1 thread: 49 -> 36 ms for that MLP; no gain at later stages). Rows are independent, so the
    result is the same to float rounding. Whether to chunk is decided per shape by measurement, like
    `linear`'s kernel (only for more than 4 chunks' worth of rows).
    """

    def two(h_: torch.Tensor, r_: torch.Tensor, consume: bool) -> torch.Tensor:
        hidden = (linear(h_, m.fc1, act="gelu", scratch=True) if norm is None
                  else norm_linear(h_, norm, m.fc1, act="gelu", scratch=True)[0])
        return linear(hidden, m.fc2, residual=r_, consume_residual=consume)

    rows = h.numel() // h.shape[-1]
    if rows <= 4 * MLP_CHUNK_ROWS:
        return two(h, residual, consume_residual)

    def full() -> torch.Tensor:
        return two(h, residual, False)  # not in place: the measurement runs both variants on one residual

    def chunked() -> torch.Tensor:
        h2, r2 = h.reshape(rows, -1), residual.reshape(rows, -1)
        out = torch.empty_like(r2)
        for s in range(0, rows, MLP_CHUNK_ROWS):
            e = s + MLP_CHUNK_ROWS
            out[s:e] = two(h2[s:e], r2[s:e], False)
        return out.view_as(residual)

    return cpu_kernels.run_faster(cpu_kernels.shape_key("mlp", h, m.fc1.in_features, m.fc1.out_features),
                                  full, chunked)


SAMPLE_CHUNK_ROWS = 8192  # rows (samples x tokens) per chunk of `per_sample_chunks`


def per_sample_chunks(fn, x: torch.Tensor, key: tuple) -> torch.Tensor:
    """Inference ``fn(x)`` for a function that treats each sample of ``x`` ``[B, N, C]`` on its own (a
    Hiera block: LayerNorm, attention within a sample, MLP), or the same over chunks of samples.

    Why: at Hiera's first stages one block's intermediates are tens of MB for a batch (hiera_base_224 batch
    8, first stage: qkv 29 MB, 58 MB at the stage transition). Such buffers are above glibc's mmap
    threshold, so each is freshly mapped and every page is faulted in on first touch (~0.6 ms per MB,
    several times the cost of writing it), then evicted from cache before the next op reads it. Run on
    ``SAMPLE_CHUNK_ROWS`` rows at a time, they are small, reused by the allocator and cache-resident
    (measured on an Intel Xeon with AMX, 2 threads: the stage-transition block 81 -> 57 ms). Samples are
    independent, so the result is the same to float rounding. Whether to chunk is decided per ``key`` by
    measurement (`cpu_kernels.choose`), like `linear`'s kernel.
    """
    B = x.shape[0]
    per = max(1, SAMPLE_CHUNK_ROWS // max(1, x.numel() // (B * x.shape[-1])))
    if B <= per:
        return fn(x)

    def chunked() -> torch.Tensor:
        first = fn(x[:per])
        out = first.new_empty((B, *first.shape[1:]))
        out[:per] = first
        for s in range(per, B, per):
            out[s:s + per] = fn(x[s:s + per])
        return out

    # A whole block is 10-100 ms here: a larger budget than a GEMM's gives up to 5 timed calls each.
    return cpu_kernels.run_faster(cpu_kernels.shape_key("samples", x, *key), lambda: fn(x), chunked, budget=0.25)
