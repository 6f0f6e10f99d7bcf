"""What `tools/benchmark.py` times and measures: a variant's step, the matmul peak, FLOPs, peak memory and
the interleaved timing loop (the method is in benchmark.py's docstring)."""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiera_video.allocator import release_freed_memory
from hiera_video.models import cpu_kernels, fast


@dataclass
class Variant:
    """One thing to time: an implementation in one numeric setting, wrapped as a zero-argument step."""

    impl: str  # "ours", "original", "hf", "timm"
    setting: str  # "fp32", "bf16 autocast", "bf16 weights", ...
    model: nn.Module
    x: torch.Tensor
    autocast: torch.dtype | None
    compiled: bool = False
    fast_path: bool = True  # ours only: whether the CPU inference fast path may run
    grad_ckpt: bool = False  # ours only, training: gradient checkpointing on
    engine_optim: bool = False  # ours only, training: the engines' optimizer (fused AdamW) instead of AdamW()
    step: Callable[[], Any] | None = None
    out: torch.Tensor | None = None  # last inference output (logits), for the accuracy check
    times: list[float] = field(default_factory=list)
    compile_s: float | None = None
    mem_bytes: int | None = None
    error: str | None = None  # why this variant could not run here (its row says so)

    @property
    def label(self) -> str:
        s = f"{self.impl} ({self.setting}"
        if self.impl == "ours" and not self.fast_path:
            s += ", regular path"
        if self.grad_ckpt:
            s += ", gradient checkpointing"
        if self.engine_optim:
            s += ", engine optimizer: fused AdamW"
        if self.compiled:
            s += ", compiled"
        return s + ")"


def reason(e: BaseException) -> str:
    """One line naming an exception, for a row that says why something could not run."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__



# ----------------------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_infer_step(v: Variant) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        ctx = fast.enabled() if v.fast_path else fast.disabled()
        ac = torch.autocast(v.x.device.type, dtype=v.autocast) if v.autocast else contextlib.nullcontext()
        with torch.inference_mode(), ctx, ac:
            v.out = v.model(v.x)
        return v.out

    return step


def make_train_step(v: Variant, labels: torch.Tensor) -> Callable[[], torch.Tensor]:
    params = [p for p in v.model.parameters() if p.requires_grad]
    if v.engine_optim:  # the optimizer the training engines build (PyTorch's fused AdamW where it applies)
        from hiera_video.engine.optim import build_optimizer

        opt = build_optimizer(v.model, lr=1e-6, weight_decay=0.05)
    else:  # the same plain AdamW for every implementation: the model comparison
        opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.05)

    def step() -> torch.Tensor:
        ctx = fast.enabled() if v.fast_path else fast.disabled()
        ac = torch.autocast(v.x.device.type, dtype=v.autocast) if v.autocast else contextlib.nullcontext()
        if v.impl == "ours" and not v.compiled:  # the model object is shared by several variants
            v.model.set_grad_checkpointing(v.grad_ckpt)
        with ctx, ac:
            loss = F.cross_entropy(v.model(v.x).float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


# ----------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------


def matmul_peak(
    dtype: torch.dtype,
    n: int,
    reps: int,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Dense ``n x n`` matmul FLOP/s per kernel, best of ``reps``: the physical limit the model can approach.

    Measured with ``torch.mm`` (MKL / cuBLAS) and, on CPU, with oneDNN's GEMM (``mkldnn._linear_pointwise``,
    what the fast path and Inductor use): on some CPUs (e.g. AMD with MKL) the two differ by 10-20%, and
    the faster one is the machine's limit. A kernel that the probe found refused, or that raises here,
    maps to a string saying why (e.g. oneDNN bf16 on an AVX2-only CPU) instead of a number.
    """
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    kernels: dict[str, Callable[[], Any]] = {"torch.mm": lambda: torch.mm(a, b)}
    out: dict[str, float | str] = {}
    if device.type == "cpu" and dtype != torch.float16:
        probe = {torch.float32: "onednn_fp32_linear", torch.bfloat16: "onednn_bf16_linear"}.get(dtype)
        why = cpu_kernels.kernel_status().get(probe) if probe else "no oneDNN probe for this dtype"
        if why is None:
            kernels["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        else:
            out["oneDNN"] = f"not run: {why}"
    for name, f in kernels.items():
        best = math.inf
        try:
            for i in range(reps + 2):
                _sync(device)
                t = clock()
                f()
                _sync(device)
                if i >= 2:  # two warm-up calls
                    best = min(best, clock() - t)
            out[name] = 2 * n**3 / best
        except Exception as e:  # noqa: BLE001 - a kernel this machine refuses is reported, not fatal
            out[name] = f"failed: {reason(e)}"
    return out


def _attention_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """Forward FLOPs of ``softmax(q k^T) v`` for ``[B, H, Lq, D]`` q and ``[B, H, Lk, D]`` k, v: its two
    batched matmuls, as FlopCounterMode counts them for the CUDA attention kernels."""
    b, h, lq, d = q_shape
    return 2 * b * h * lq * k_shape[2] * (d + v_shape[3])


def _attention_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """Backward FLOPs: twice the forward (dV, dP, dQ, dK: four matmuls). Model FLOPs, as for every other
    layer: the flash kernel's recomputation of the scores is work an exact implementation need not do
    (the original's math attention does not), so it is not counted."""
    return 2 * _attention_flops(q_shape, k_shape, v_shape)


def count_flops(model: nn.Module, x: torch.Tensor, train: bool) -> int:
    """FLOPs of one forward (or forward + backward) of our model, eager regular path: the GEMMs, the
    convolution and the attention's matmuls.

    FlopCounterMode (torch 2.14) has no formula for the CPU flash-attention ops that our attention runs
    on the CPU, so without these two entries it counted their FLOPs as zero: the attention (6% of
    `hiera_base_224`'s FLOPs, 30% of `hiera_base_16x224`'s) was missing from every GFLOP/s and % of peak."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", _attention_flops),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", _attention_backward_flops)):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    was = model.training
    model.train(train)
    try:
        with fast.disabled(), counter:
            if train:
                model(x).float().sum().backward()
            else:
                with torch.no_grad():
                    model(x)
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _read_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory(step: Callable[[], Any], device: torch.device) -> int | None:
    """Peak memory growth of one call of ``step`` in bytes (see the module docstring), or None."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        if not release_freed_memory():  # (no malloc_trim: the growth would not start from a trimmed heap)
            return None
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _read_status("VmRSS")
        step()
        return _read_status("VmHWM") - base
    except (OSError, KeyError, AttributeError):
        return None


def time_interleaved(
    variants: list[Variant],
    reps: int,
    warmup: int,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Warm up every variant, then ``reps`` rounds, each timing every variant once in rotated order.

    A variant whose step raises gets ``error`` set (and is left out of the later rounds); the others go on.
    """
    for v in variants:
        try:
            for i in range(max(warmup, 1)):
                _sync(device)
                t = time.perf_counter()
                v.step()
                _sync(device)
                if i == 0 and v.compiled:
                    v.compile_s = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - e.g. a kernel this CPU refuses: a row says so
            v.error = reason(e)
    for r in range(reps):
        alive = [v for v in variants if v.error is None]
        for j in range(len(alive)):
            v = alive[(r + j) % len(alive)]
            try:
                _sync(device)
                t = clock()
                v.step()
                _sync(device)
                v.times.append(clock() - t)
            except Exception as e:  # noqa: BLE001
                v.error = reason(e)
