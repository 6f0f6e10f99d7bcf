#!/usr/bin/env python
"""Benchmark hiera_video against the original Hiera, HF transformers and timm on the same weights and input.

What it measures, for each model / batch size / precision / compile setting:

* **infer**: one forward pass under ``torch.inference_mode()`` (the model in eval mode);
* **train**: one training step: forward, cross-entropy on fixed random labels, backward, ``AdamW.step()``
  (the same plain ``torch.optim.AdamW`` for every implementation; one extra row of ours uses the engines'
  optimizer, PyTorch's fused AdamW, as ``hiera-video train`` does),
  ``zero_grad(set_to_none=True)`` (the model in train mode, drop path 0, no gradient checkpointing).

Every implementation gets the same weights (ours are copied into the references: the original and timm by
state-dict key mapping, HF transformers through `hiera_video.models.export_hf`), the same input tensor and
the same thread count (`torch.set_num_threads`, one process). The outputs are compared against our fp32
logits (``max|Δ|``) so a mis-mapped weight cannot go unnoticed.

Timing method (a shared 2-core machine is noisy): after warm-up, every repetition runs each implementation
once, in an order rotated by one position per repetition (A/B/C, B/C/A, ...), so slow phases of the machine
hit all of them alike. Reported: median and minimum time over the repetitions, and the **speed-up of ours**
= the median over repetitions of (reference time ÷ our time) paired within the same repetition.

FLOPs are counted once per configuration on our model with `torch.utils.flop_counter.FlopCounterMode`
(regular eager path; forward, or forward + backward for a training step; the optimizer is not counted) and
the same count is used for every implementation (they do the same arithmetic). The machine's dense-matmul
peak is measured in the same run (``--peak-size`` square ``torch.mm``, best of repetitions, fp32 and bf16),
and achieved FLOP/s (from the median time) are reported as a fraction of the peak of the compute dtype.

Nothing this machine cannot run is fatal: a reference that cannot be built, a variant whose step raises
(a refused oneDNN kernel, an out-of-memory) and a matmul-peak kernel that fails become rows / entries that say
so and why; bf16 / fp16 on a CPU where that precision is not native (`hiera_video.models.cpu_kernels`:
emulated, 10-100x slower than fp32) is reported as skipped unless ``--force-precision``. Each configuration's
table is printed as soon as it is measured, and ``--json`` is rewritten (atomically) after every
configuration, so an interrupted run keeps every finished row. Peaks are measured for the precisions asked
for only. The CPU's model, flags (AVX2 / AVX-512 / AVX512-BF16 / AMX) and the probe's kernel answers are in
the machine line.

Peak memory: on CPU, the step's peak resident-set growth: ``malloc_trim(0)`` returns freed heap pages to the
OS, writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark ``VmHWM`` to the current
``VmRSS``, then one step runs and ``VmHWM - VmRSS(before)`` is reported (Linux only; it counts every
allocation the step touches — activations, gradients, temporaries — but not memory that already existed,
such as weights and the AdamW state after warm-up). On CUDA, ``torch.cuda.max_memory_allocated`` growth.

Examples::

    python tools/benchmark.py --model hiera_base_224 --batch-size 8 --precision fp32 --mode infer train
    python tools/benchmark.py --model hiera_base_16x224 --batch-size 1 --precision bf16 --mode infer
    python tools/benchmark.py --model hiera_base_224 --compile both --write BENCHMARKS.md --section compile

``--write FILE --section NAME`` replaces the block between ``<!-- BEGIN benchmark:NAME -->`` and
``<!-- END benchmark:NAME -->`` in FILE (appending it when absent), leaving the rest of the file alone.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as `python tools/benchmark.py` from a checkout
    sys.path.insert(0, str(ROOT))

import hiera_video  # noqa: E402
from hiera_video.fileio import atomic_write_text  # noqa: E402
from hiera_video.models import cpu_kernels, fast  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling report module, however this is loaded
from benchmark_report import (  # noqa: E402
    machine_info,
    markdown,
    markdown_config,
    markdown_header,
    write_section,
)

from hiera_video.models.config import HieraConfig  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------------------------------------
# Implementations
# ----------------------------------------------------------------------------------------------------------


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


def original_config_kwargs(cfg: HieraConfig) -> dict[str, Any]:
    """Constructor arguments of the original `hiera.Hiera` for one of our configs."""
    return dict(
        input_size=cfg.input_size,
        in_chans=cfg.in_chans,
        embed_dim=cfg.embed_dim,
        num_heads=cfg.num_heads,
        num_classes=cfg.num_classes,
        stages=cfg.depths,
        q_pool=cfg.q_pool,
        q_stride=cfg.q_stride,
        mask_unit_size=cfg.mask_unit_size,
        mask_unit_attn=cfg.mask_unit_attn,
        dim_mul=cfg.dim_mul,
        head_mul=cfg.head_mul,
        patch_kernel=cfg.patch_kernel,
        patch_stride=cfg.patch_stride,
        patch_padding=cfg.patch_padding,
        mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=0.0,
        sep_pos_embed=cfg.sep_pos_embed,
    )


def build_original(ours: nn.Module) -> nn.Module:
    """The original implementation (pip ``hiera-transformer``) with our weights; the head returns logits."""
    import hiera

    ref = hiera.Hiera(**original_config_kwargs(ours.config))
    ref.load_state_dict(ours.state_dict(), strict=True)  # identical parameter names
    ref.head.act_func = nn.Identity()  # the original applies softmax in eval mode; compare logits
    return ref


def timm_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our key names -> timm's: the final norm and classifier live under ``head`` in timm."""
    rename = {
        "norm.weight": "head.norm.weight",
        "norm.bias": "head.norm.bias",
        "head.projection.weight": "head.fc.weight",
        "head.projection.bias": "head.fc.bias",
    }
    return {rename.get(k, k): v for k, v in sd.items()}


def build_timm(ours: nn.Module) -> nn.Module:
    from timm.models.hiera import Hiera as TimmHiera

    cfg = ours.config
    kw = original_config_kwargs(cfg)
    kw["img_size"] = kw.pop("input_size")
    kw["stages"] = kw.pop("stages")
    ref = TimmHiera(**kw)
    ref.load_state_dict(timm_state_dict(ours.state_dict()), strict=True)
    return ref


def build_hf(ours: nn.Module) -> nn.Module:
    from transformers import HieraForImageClassification

    from hiera_video.models import export_hf

    with tempfile.TemporaryDirectory() as d:
        export_hf(ours, d)
        ref = HieraForImageClassification.from_pretrained(d)
    return _HFLogits(ref)


class _HFLogits(nn.Module):
    """HF models return a ModelOutput; the benchmark wants the logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


BUILDERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "original": build_original,
    "hf": build_hf,
    "timm": build_timm,
}


def _reason(e: BaseException) -> str:
    """One line naming an exception, for a row that says why something could not run."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def available_refs(requested: list[str], is_video: bool) -> tuple[list[str], list[str]]:
    """Split requested references into usable ones and skipped ones (with the reason)."""
    use, skipped = [], []
    for r in requested:
        if r in ("hf", "timm") and is_video:
            skipped.append(f"{r}: image models only")
            continue
        mod = {"original": "hiera", "hf": "transformers", "timm": "timm"}[r]
        try:
            __import__(mod)
        except ImportError:
            skipped.append(f"{r}: `{mod}` not installed")
            continue
        use.append(r)
    return use, skipped


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
            out[name] = f"failed: {_reason(e)}"
    return out


def count_flops(model: nn.Module, x: torch.Tensor, train: bool) -> int:
    """FLOPs of one forward (or forward + backward) of our model, eager regular path."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
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


_LIBC = None


def _read_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory(step: Callable[[], Any], device: torch.device) -> int | None:
    """Peak memory growth of one call of ``step`` in bytes (see the module docstring), or None."""
    global _LIBC
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
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
            v.error = _reason(e)
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
                v.error = _reason(e)


# ----------------------------------------------------------------------------------------------------------
# One configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Config:
    model: str
    batch_size: int
    precision: str
    mode: str  # "infer" | "train"
    compiled: str  # "off", "on" (every variant compiled) or "both" (eager and compiled side by side)
    overrides: dict[str, Any]
    freezing: bool = False


def build_variants(
    cfg: Config, ours_fp32: nn.Module, refs: dict[str, nn.Module], x: torch.Tensor, args: argparse.Namespace
) -> list[Variant]:
    """The variants to time for one configuration (fresh copies of the models where dtypes change)."""
    import copy

    prec = cfg.precision
    dt = DTYPES[prec]
    device_type = x.device.type
    impls = {"ours": ours_fp32, **refs}
    out: list[Variant] = []
    settings: list[tuple[str, torch.dtype | None, bool]] = []  # (setting, autocast dtype, cast weights)
    if prec == "fp32":
        settings = [("fp32", None, False)]
    else:
        modes = args.low_precision if cfg.mode == "infer" else ["autocast"]
        for m in modes:
            settings.append((f"{prec} {m}", dt if m == "autocast" else None, m == "weights"))
    for setting, ac, cast in settings:
        for name, m in impls.items():
            model = copy.deepcopy(m).to(dt) if cast else m
            xin = x.to(dt) if cast else x
            variants = [Variant(name, setting, model, xin, ac)]
            # The fast paths apply to inference (fp32 / bf16) and to fp32 training without autocast.
            fast_applies = cfg.mode == "infer" or (prec == "fp32" and device_type == "cpu")
            if name == "ours" and args.ablate and fast_applies and cfg.compiled != "on":
                variants.append(Variant(name, setting, model, xin, ac, fast_path=False))
            if name == "ours" and args.grad_ckpt and cfg.mode == "train" and cfg.compiled != "on":
                variants.append(Variant(name, setting, model, xin, ac, grad_ckpt=True))
            if name == "ours" and cfg.mode == "train" and cfg.compiled != "on":  # what `hiera-video train` runs
                variants.append(Variant(name, setting, model, xin, ac, engine_optim=True))
            out += variants
    if cfg.compiled != "off":
        if cfg.freezing:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
        kw = {"mode": args.compile_mode} if args.compile_mode else {}
        eager = [v for v in out if v.fast_path and not v.grad_ckpt]  # ablation rows stay eager
        compiled = [copy.copy(v) for v in eager]
        for v in compiled:
            v.model, v.compiled, v.times = torch.compile(v.model, **kw), True, []
        out = compiled if cfg.compiled == "on" else out + compiled
    return out


def _status_row(impl: str, setting: str, status: str, reason: str) -> dict[str, Any]:
    """A row for something that did not run here: ``status`` "skipped" or "failed", and why."""
    return {"impl": impl, "setting": setting, "label": f"{impl} ({setting})", "status": status,
            "reason": reason}


def low_precision_skip(prec: str, device: torch.device, forced: bool) -> str | None:
    """Why ``prec`` is not benchmarked on this device (None: it is): bf16 / fp16 where not native."""
    if prec == "fp32" or device.type != "cpu" or forced:
        return None
    dt = DTYPES[prec]
    if cpu_kernels.native(dt):
        return None
    s = cpu_kernels.low_precision_speedup(dt)
    slow = "its matmul failed" if s is None else f"a {prec} matmul runs {1 / s:.0f}x slower than fp32"
    return (f"{prec} is not native on this CPU ({slow}; see hiera_video.models.cpu_kernels); "
            f"pass --force-precision to time it anyway")


def run_config(
    cfg: Config, args: argparse.Namespace, peaks: dict[str, float], device: torch.device
) -> dict[str, Any]:
    """Time one configuration; whatever cannot run here becomes a row that says why (never an exception)."""
    result: dict[str, Any] = {"config": dict(cfg.__dict__), "flops": None, "primary": None, "skipped_refs": [],
                              "input_shape": None, "rows": []}
    skip = low_precision_skip(cfg.precision, device, args.force_precision)
    if skip is not None:
        result["rows"] = [_status_row(impl, cfg.precision, "skipped", skip) for impl in ["ours", *args.refs]]
        return result
    try:
        return _run_config(cfg, args, peaks, device, result)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory building the model: report, go on
        result["rows"].append(_status_row("all", cfg.precision, "failed", _reason(e)))
        return result
    finally:
        gc.collect()


def _run_config(
    cfg: Config, args: argparse.Namespace, peaks: dict[str, float], device: torch.device, result: dict[str, Any]
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    ours = hiera_video.create_model(cfg.model, drop_path_rate=0.0, **cfg.overrides).to(device)
    mcfg = ours.config
    refs_wanted, skipped = available_refs(args.refs, mcfg.is_video)
    refs = {}
    for r in refs_wanted:
        try:
            refs[r] = BUILDERS[r](ours).to(device)
        except Exception as e:  # noqa: BLE001 - a reference that rejects this config is skipped, not fatal
            skipped.append(f"{r}: {_reason(e)}")
    result["skipped_refs"] = skipped
    x = torch.randn(cfg.batch_size, mcfg.in_chans, *mcfg.input_size, device=device)
    result["input_shape"] = list(x.shape)
    labels = torch.randint(0, max(mcfg.num_classes, 1), (cfg.batch_size,), device=device)
    train = cfg.mode == "train"
    flops = count_flops(ours, x, train)
    result["flops"] = flops

    # Reference logits: our model, fp32, regular path, eval mode.
    ours.eval()
    with torch.inference_mode(), fast.disabled():
        ref_logits = ours(x).float()

    variants = build_variants(cfg, ours, refs, x, args)
    for v in variants:
        v.model.train(train)
        v.step = make_train_step(v, labels) if train else make_infer_step(v)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    time_interleaved(variants, args.reps, args.warmup, device, clock)
    ran = [v for v in variants if v.error is None and v.times]
    if args.memory:
        for v in ran:
            try:
                v.mem_bytes = peak_memory(v.step, device)
            except Exception:  # noqa: BLE001 - memory is a column, not a reason to lose the row
                v.mem_bytes = None

    primary = pick_primary(ran) if ran else None
    rows = [_status_row(s.split(":")[0], cfg.precision, "skipped", s) for s in skipped]
    for v in variants:
        if v not in ran:
            rows.append({**_status_row(v.impl, v.setting, "failed", v.error or "no timing"), "label": v.label})
            continue
        med = statistics.median(v.times)
        paired = [t / p for t, p in zip(v.times, primary.times)]
        peak_key = "bf16" if ("bf16" in v.setting) else ("fp16" if "fp16" in v.setting else "fp32")
        row = {
            "impl": v.impl,
            "setting": v.setting,
            "label": v.label,
            "status": "ok",
            "fast_path": v.fast_path,
            "compiled": v.compiled,
            "median_s": med,
            "min_s": min(v.times),
            "times_s": v.times,
            "items_per_s": cfg.batch_size / med,
            "speedup_of_ours": statistics.median(paired),  # this time / our time, paired per repetition
            "gflops": flops / med / 1e9,
            "peak_fraction": (flops / med) / peaks[peak_key] if peaks.get(peak_key) else None,
            "peak_key": peak_key,
            "mem_bytes": v.mem_bytes,
            "compile_s": v.compile_s,
        }
        if not train and v.out is not None:
            o = v.out.float()
            row["max_abs_diff"] = float((o - ref_logits).abs().max())
            # Relative to the logit range: the original's head init (x0.001) makes raw logits tiny.
            row["max_rel_diff"] = row["max_abs_diff"] / max(float(ref_logits.abs().max()), 1e-30)
            row["top1_agree"] = float((o.argmax(-1) == ref_logits.argmax(-1)).float().mean())
        rows.append(row)
        v.out = None
    result["primary"] = None if primary is None else primary.label
    result["rows"] = rows
    del variants, refs, ours, ran
    return result


def pick_primary(variants: list[Variant]) -> Variant:
    """The row the speed-ups are relative to: ours, fast path, preferring bf16 weights over autocast."""
    ours = [v for v in variants if v.impl == "ours" and v.fast_path]
    ours.sort(key=lambda v: 0 if "weights" in v.setting else 1)
    return (ours or variants)[0]


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def _without_json(argv: list[str]) -> list[str]:
    """The command line as shown in the report: ``--json PATH`` does not change the tables, drop it."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not a.startswith("--json="):
            out.append(a)
    return out


def _override(s: str) -> tuple[str, Any]:
    k, _, v = s.partition("=")
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", nargs="+", default=["hiera_base_224"], help="registry names")
    p.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=None,
        help="one per model or one for all (default 8 for images, 1 for video)",
    )
    p.add_argument(
        "--override",
        type=_override,
        nargs="*",
        default=[],
        metavar="FIELD=JSON",
        help="config overrides for every model, e.g. depths=[1,1,1,1] input_size=[64,64]",
    )
    p.add_argument("--precision", nargs="+", choices=list(DTYPES), default=["fp32"])
    p.add_argument(
        "--low-precision",
        nargs="+",
        choices=["autocast", "weights"],
        default=["autocast", "weights"],
        help="bf16/fp16 inference: autocast on fp32 weights and/or model.to(dtype) weights",
    )
    p.add_argument("--mode", nargs="+", choices=["infer", "train"], default=["infer"])
    p.add_argument("--compile", choices=["off", "on", "both"], default="off")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: its default)")
    p.add_argument(
        "--freezing",
        action="store_true",
        help="torch._inductor.config.freezing = True for compiled inference (constant-folds and pre-packs "
        "the weights; Inductor's recommended CPU inference setting)",
    )
    p.add_argument(
        "--refs",
        nargs="*",
        choices=list(BUILDERS),
        default=list(BUILDERS),
        help="references (hf and timm are skipped for video models)",
    )
    p.add_argument(
        "--grad-ckpt",
        action="store_true",
        help="training: also time ours with gradient checkpointing (less memory, ~1 more forward)",
    )
    p.add_argument(
        "--no-ablate",
        dest="ablate",
        action="store_false",
        help="skip the row of ours with the CPU inference fast path disabled",
    )
    p.add_argument(
        "--force-precision",
        action="store_true",
        help="time bf16 / fp16 on a CPU where that precision is not native (emulated: 10-100x slower)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    p.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="wall: time.perf_counter; thread: CPU time of the calling thread (time.thread_time), "
        "immune to other processes on the machine but only meaningful with --threads 1 "
        "(all work then runs on the calling thread)",
    )
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--peak-reps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument("--write", type=Path, default=None, help="Markdown file to update (e.g. BENCHMARKS.md)")
    p.add_argument("--section", default=None, help="section name in --write (default: derived from the run)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and (torch.get_num_threads() != 1 or device.type != "cpu"):
        raise SystemExit("--clock thread measures the calling thread only: use it with --threads 1 on CPU")
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.force_precision:  # our model computes a forced non-native bf16 in bf16, as the references do
        os.environ["HIERA_VIDEO_FORCE_PRECISION"] = "1"
    if device.type == "cpu" and "fp16" in args.precision:
        print(
            "note: most CPUs have no fp16 GEMM kernels; fp16 on CPU can be orders of magnitude slower",
            file=sys.stderr,
        )
    overrides = dict(args.override)
    bs = args.batch_size or [None]
    if len(bs) not in (1, len(args.model)):
        raise SystemExit("--batch-size takes one value or one per --model")
    info = machine_info(device)

    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    # Peaks for the precisions asked for only, and not for one that is skipped here (an emulated bf16
    # 2048² matmul takes about a minute); a forced non-native precision is measured at 512², once.
    peak_names = [p for p in args.precision if low_precision_skip(p, device, args.force_precision) is None]
    peak_detail: dict[str, dict[str, float | str]] = {}

    def measure_peaks() -> dict[str, float]:
        for name in peak_names:
            slow = device.type == "cpu" and not cpu_kernels.native(DTYPES[name])
            n, reps = (min(args.peak_size, 512), 1) if slow else (args.peak_size, args.peak_reps)
            for kernel, v in matmul_peak(DTYPES[name], n, reps, device, clock).items():
                d = peak_detail.setdefault(name, {})
                old = d.get(kernel)
                d[kernel] = v if not isinstance(old, float) else max(old, v) if isinstance(v, float) else old
        return {
            name: max(v for v in d.values() if isinstance(v, float))
            for name, d in peak_detail.items()
            if any(isinstance(v, float) for v in d.values())
        }

    def detail() -> str:
        return "; ".join(
            f"{n}: " + ", ".join(f"{k} {v / 1e9:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())
            for n, d in peak_detail.items()
        ) or "none"

    peaks = measure_peaks()
    info["peak_size"] = str(args.peak_size)
    info["peak_detail"] = detail()
    caps = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k)]
    argv_full = [*caps, "python", "tools/benchmark.py"] + _without_json(sys.argv[1:] if argv is None else list(argv))
    print(markdown_header(peaks, info, argv_full), flush=True)

    results: list[dict[str, Any]] = []

    def dump(complete: bool) -> None:
        if args.json:  # rewritten after every configuration: an interrupted run keeps its finished rows
            data = {"machine": info, "peaks": peaks, "peak_detail": peak_detail, "results": results,
                    "complete": complete}
            atomic_write_text(args.json, json.dumps(data, indent=1))

    for i, model in enumerate(args.model):
        b = bs[i] if len(bs) > 1 else bs[0]
        if b is None:
            b = 1 if hiera_video.get_config(model, **overrides).is_video else 8
        for mode in args.mode:
            for prec in args.precision:
                frz = args.freezing and args.compile != "off" and mode == "infer"
                cfg = Config(model, b, prec, mode, args.compile, overrides, frz)
                print(f"running {cfg}", file=sys.stderr, flush=True)
                results.append(run_config(cfg, args, peaks, device))
                print(markdown_config(results[-1]), flush=True)
                dump(complete=False)
    # Re-measure the peak at the end, keep the best: a busy phase at the start must not deflate it.
    peaks = measure_peaks()
    info["peak_detail"] = detail()
    for res in results:
        for r in res["rows"]:
            if r.get("status", "ok") == "ok":
                pk = peaks.get(r["peak_key"])
                r["peak_fraction"] = (r["gflops"] * 1e9 / pk) if pk else None
    info["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    with contextlib.suppress(Exception):
        info["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    md = markdown(results, peaks, info, argv_full)
    print("\n--- final report (peak fractions against the best peak of the run) ---\n", flush=True)
    print(md, flush=True)
    dump(complete=True)
    if args.write:
        section = args.section or "-".join([device.type, *args.model, *args.precision, *args.mode])
        write_section(args.write, section, md)
    return results


if __name__ == "__main__":
    main()
