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
Our fp32 CPU training path keeps freed memory mapped for the rest of its process from its first forward on
(`hiera_video.allocator`): in one process every step timed after our first training step (warm-up
included) runs with that setting, whichever implementation it times; with ``--isolate`` only our processes
have it, as for users.

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
such as weights and the AdamW state after warm-up; our training path's activation pool, which outlives the
step, is emptied first so that it is counted). On CUDA, ``torch.cuda.max_memory_allocated`` growth.

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
import datetime
import gc
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as `python tools/benchmark.py` from a checkout
    sys.path.insert(0, str(ROOT))

import hiera_video  # noqa: E402
from hiera_video.fileio import atomic_write_text  # noqa: E402
from hiera_video.models import cpu_features, cpu_kernels, fast, fast_train, get_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling report module, however this is loaded
from benchmark_isolate import child_report, time_isolated  # noqa: E402
from benchmark_measure import (  # noqa: E402
    Variant,
    count_flops,
    make_infer_step,
    make_train_step,
    matmul_peak,
    peak_memory,
    reason,
    time_interleaved,
)
from benchmark_refs import BUILDERS, available_refs  # noqa: E402
from benchmark_report import (  # noqa: E402
    machine_info,
    markdown,
    markdown_config,
    markdown_header,
    write_section,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        result["rows"].append(_status_row("all", cfg.precision, "failed", reason(e)))
        return result
    finally:
        gc.collect()


def _run_config(
    cfg: Config, args: argparse.Namespace, peaks: dict[str, float], device: torch.device, result: dict[str, Any]
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    ours = hiera_video.create_model(cfg.model, drop_path_rate=0.0, **cfg.overrides).to(device)
    mcfg = ours.config
    only_impl = args.only.split(" (")[0] if args.only else None  # an --isolate child: that one variant
    refs_wanted, skipped = available_refs(
        args.refs if only_impl is None else [r for r in args.refs if r == only_impl], mcfg.is_video)
    refs = {}
    for r in refs_wanted:
        try:
            refs[r] = BUILDERS[r](ours).to(device)
        except Exception as e:  # noqa: BLE001 - a reference that rejects this config is skipped, not fatal
            skipped.append(f"{r}: {reason(e)}")
    result["skipped_refs"] = skipped
    x = torch.randn(cfg.batch_size, mcfg.in_chans, *mcfg.input_size, device=device)
    result["input_shape"] = list(x.shape)
    labels = torch.randint(0, max(mcfg.num_classes, 1), (cfg.batch_size,), device=device)
    train = cfg.mode == "train"
    flops = 0.0 if args.only else count_flops(ours, x, train)  # (a child's times are all the parent needs)
    result["flops"] = flops

    # Reference logits: our model, fp32, regular path, eval mode.
    ours.eval()
    ref_logits = None
    if not args.only:
        with torch.inference_mode(), fast.disabled():
            ref_logits = ours(x).float()

    variants = build_variants(cfg, ours, refs, x, args)
    if args.only:
        variants = [v for v in variants if v.label == args.only]
    for v in variants:
        v.model.train(train)
        v.step = make_train_step(v, labels) if train else make_infer_step(v)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    if args.isolate and not args.only:
        result["isolated"] = {"rounds": args.isolate, "steps_per_process": args.reps,
                              "pids": time_isolated(variants, cfg, args.isolate, args.argv)}
        # Warmed up here too (no timed steps): the memory measurement and the output check below need a
        # warm step (optimizer state allocated, kernels chosen), as without --isolate.
        time_interleaved([v for v in variants if v.error is None], 0, args.warmup, device, clock)
    else:
        time_interleaved(variants, args.reps, args.warmup, device, clock)
    ran = [v for v in variants if v.error is None and v.times]
    if args.memory:
        for v in ran:
            try:
                fast_train.clear_pool()  # counted: our training path keeps its pool between steps
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
        if not train and v.out is not None and ref_logits is not None:
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
    p.add_argument(
        "--isolate",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="time every implementation in its own fresh process, ROUNDS rounds of --reps steps each "
        "(tools/benchmark_isolate.py: sharing one process changes the other models' times)",
    )
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)  # an --isolate child: time one variant
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


def make_config(args: argparse.Namespace, model: str, batch: int | None, mode: str, prec: str) -> Config:
    """One configuration of the run (a ``None`` batch: `default_batch`); Inductor freezing applies to
    compiled inference only."""
    overrides = dict(args.override)
    batch = default_batch(model, overrides) if batch is None else batch
    freezing = args.freezing and args.compile != "off" and mode == "infer"
    return Config(model, batch, prec, mode, args.compile, overrides, freezing)


def default_batch(model: str, overrides: dict[str, Any]) -> int:
    """The batch size a run uses when ``--batch-size`` is not given: 1 for video models, 8 for images (the
    issue-14 goals' sizes)."""
    return 1 if get_config(model, **overrides).is_video else 8


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what an --isolate child is started with
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
    bs = args.batch_size or [None]
    if len(bs) not in (1, len(args.model)):
        raise SystemExit("--batch-size takes one value or one per --model")
    if args.only:  # an --isolate child: one variant of one configuration, one JSON line, nothing written
        cfg = make_config(args, args.model[0], bs[0], args.mode[0], args.precision[0])
        result = run_config(cfg, args, {}, device)
        print(child_report(args.only, result["rows"]), flush=True)
        return [result]
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
    caps = [f"{k}={os.environ[k]}" for k in cpu_features.CAP_VARIABLES if os.environ.get(k)]
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
        for mode in args.mode:
            for prec in args.precision:
                cfg = make_config(args, model, b, mode, prec)
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
