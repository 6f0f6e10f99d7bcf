"""What this CPU can really do: a once-per-process probe of the kernels the CPU fast paths rely on, the
precision rule the engines follow, and per-shape kernel choices measured at first use.

Why probe instead of reading flags: the same PyTorch build runs on CPUs with very different instruction
sets (Intel with AMX, AMD Zen 4 with AVX512-BF16, AMD Zen 2/3 with AVX2 only), and oneDNN can be capped
below what the CPU has (``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``, and for MKL's GEMMs
``MKL_ENABLE_INSTRUCTIONS=AVX2``: how CI exercises the AVX2 paths on a bigger machine).
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` reads the CPU flags, not what oneDNN will accept.
Measured with torch 2.14.1: on an AVX2-only AMD EPYC, oneDNN refuses bf16 linears ("could not create a
primitive descriptor") and a bf16 2048² matmul runs at 0.27 GFLOP/s against 91 in fp32; on an Intel Xeon with
AMX a bf16 1024² matmul takes 8 ms against 39 ms in fp32, and 1755 ms (vs 25 ms) under the AVX2 caps, while
the flag check still said True uncapped and False capped.

So every answer here comes from running the kernel, inside ``try``/``except``, on a tiny input, once per
process (``functools.cache``): a kernel that raises, is absent or returns a wrong result is reported as
unavailable with the reason, and callers take the regular PyTorch path. Nothing here raises.

* `kernel_status()`: for each kernel the fast paths use (oneDNN fp32 / bf16 ``_linear_pointwise`` with the
  ``none``, ``gelu`` and binary ``add`` epilogues, the weight reorder, a transposed-weight GEMM for the input
  gradient, bf16 ``scaled_dot_product_attention``): ``None`` when it runs and matches ``F.linear`` /
  fp32 attention, else why not.
* `low_precision_speedup(dtype)`: fp32 time / ``dtype`` time of a 256² ``torch.mm`` on one thread (best of
  5 alternating calls each; stops early when the low-precision one is clearly slow). **Native** bf16 (or
  fp16) = that ratio is above `NATIVE_SPEEDUP` (1.0: the low-precision GEMM is faster than fp32). Emulated
  bf16 is 10-100x slower, native bf16 1.5-5x faster, so a 1.0 threshold separates the two with a wide
  margin. bf16 instructions that lose to this CPU's fp32 GEMM (Intel Xeon, oneDNN capped at AVX512_CORE_BF16:
  0.5-0.6x; `hiera_base_224` b2 forward 216 vs 170 ms) are not native either: bf16 would only be slower.
* `resolve_precision(requested, device, force)`: the precision a run should actually use (below).
* `choose(key, regular, candidate, margin)`: a per-shape kernel choice, measured once (below).
* `summary()`: the CPU model and the features that matter (`cpu_features.cpu_info`: x86's avx2, avx512f,
  avx512_bf16, amx_bf16; Arm's asimd, sve, sve2, bf16) plus the probe's answers, for logs and reports.

**Precision rule** (`resolve_precision`): on CUDA the request is used as is. On CPU, ``fp32`` / ``none``
run fp32; ``bf16`` / ``fp16`` run in that precision when it is native here (measured, see above) and the
request is honoured; where it is not native, ONE warning per process and precision names what is missing
(the CPU flags and the measured matmul slowdown) and the run uses fp32, unless ``force=True`` (for the
engines: ``train.force_precision: true``; anywhere: ``HIERA_VIDEO_FORCE_PRECISION=1``), in
which case it warns once and runs the slow precision as asked.

**Per-shape kernel choice** (`choose`, used by `fast.linear`, `fast.mlp` and `fast_train.train_linear`): the fast
paths have two exact ways to compute each linear (oneDNN with fused epilogues, or PyTorch's regular
``F.linear`` = MKL ``addmm`` in fp32), and which one is faster depends on the CPU, on the caps, on the thread
count and on the shape (measured on the Intel AMX machine: oneDNN fp32 inference 1.0-1.7x faster than
``addmm``; oneDNN training linears 0.91-1.23x uncapped and 0.7-1.07x under the AVX2 caps; on an AVX2 AMD
the training linears cost ~10% in total). The first time a shape is seen (key: kind, dtype, rows rounded up
to a power of two, in / out features, epilogue, thread count), both run on the real input: one warm-up call
each, then alternating timed calls (2 to 5 each, within 20 ms; 100 ms for training), minimum. The candidate
(oneDNN, the chunked MLP or blocks over sample chunks) is kept only when faster by ``margin`` (1.0 for
inference; 1.03 for training, so that a tie on a noisy machine falls to the regular path and the fast
path's choice does not make training slower). The answer is cached for the process. Small sizes need no
separate threshold: where oneDNN's per-call overhead loses, it loses the measurement. The timing never
touches the global RNG.

**Keeping choices across processes** (`export_choices` / `import_choices`, `save_choices` / `load_choices`):
two kernels give the same result only to float rounding (~1e-7), and a choice measured on a noisy machine
can fall either way, so two processes may compute the same model slightly differently. Where that matters,
the choices travel with the work: a training checkpoint carries them and a resumed run adopts them (so a
run resumed in a new process uses the kernels the interrupted one used), a feature extraction keeps them
in its output folder for the same reason, and ``HIERA_VIDEO_KERNEL_CHOICES=<file.json>`` makes every
process that sets it read its choices from that file at first use and add the new ones at exit (also no
measuring on the first calls). Choices only apply where they were made: an export names the CPU, its flags,
the ISA caps, the PyTorch version and the kernels the probe accepted (`fingerprint`); any difference and
nothing is adopted (one warning says what differs), so a file copied to another machine is measured anew
rather than trusted.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from .cpu_features import cpu_info, missing_support

__all__ = [
    "NATIVE_SPEEDUP",
    "cached_choice",
    "choose",
    "choices",
    "clear_choices",
    "export_choices",
    "fingerprint",
    "force_requested",
    "import_choices",
    "kernel_ok",
    "kernel_status",
    "load_choices",
    "low_precision_speedup",
    "measuring",
    "native",
    "resolve_precision",
    "run_faster",
    "save_choices",
    "shape_key",
    "summary",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

NATIVE_SPEEDUP = 1.0  # low-precision matmul must beat fp32 by this factor to count as native
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _has_onednn_ops() -> str | None:
    if not torch.backends.mkldnn.is_available():
        return "PyTorch built without oneDNN (mkldnn)"
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this PyTorch has no torch.ops.mkldnn._linear_pointwise"
    return None


def _try(fn: Callable[[], None]) -> str | None:
    try:
        fn()
        return None
    except Exception as e:  # noqa: BLE001 - any refusal means "use the regular path"
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        return f"{type(e).__name__}: {lines[0][:200]}"


def _check_linears(dtype: torch.dtype) -> None:
    """The oneDNN calls of `fast.linear` / `fast_train.train_linear` on a tiny input, checked against F.linear."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, generator=g).to(dtype)
    w = torch.randn(48, 32, generator=g).to(dtype)
    b = torch.randn(48, generator=g).to(dtype)
    r = torch.randn(8, 48, generator=g).to(dtype)
    ref = F.linear(x.float(), w.float(), b.float())
    tol = 1e-4 if dtype == torch.float32 else 0.1
    lp = torch.ops.mkldnn._linear_pointwise
    packed = torch.ops.mkldnn._reorder_linear_weight(w, 1024)
    outs = {
        "none": (lp(x, packed, b, "none", [], ""), ref),
        "gelu": (lp(x, packed, b, "gelu", [], "none"), F.gelu(ref)),
        "add": (lp.binary(x, r, packed, b, "add"), ref + r.float()),
        "unpacked": (lp(x, w, b, "none", [], ""), ref),
        "transposed": (lp(r, w.t(), None, "none", [], ""), r.float() @ w.float()),
    }
    for name, (got, want) in outs.items():
        err = float((got.float() - want).abs().max())
        if not err <= tol * (1 + float(want.abs().max())):
            raise RuntimeError(f"{name} epilogue gave a wrong result (max error {err:.3g})")


def _check_sdpa(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8, generator=g) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v)
    got = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype)).float()
    err = float((got - want).abs().max())
    if not err <= 0.05:
        raise RuntimeError(f"wrong result (max error {err:.3g})")


@functools.cache
def kernel_status() -> dict[str, str | None]:
    """Each fast-path kernel -> None when it runs correctly here, else the reason it cannot be used."""
    base = _has_onednn_ops()
    out: dict[str, str | None] = {}
    for name, dt in (("onednn_fp32_linear", torch.float32), ("onednn_bf16_linear", torch.bfloat16)):
        out[name] = base or _try(lambda dt=dt: _check_linears(dt))
    out["bf16_sdpa"] = _try(lambda: _check_sdpa(torch.bfloat16))
    return out


def kernel_ok(name: str) -> bool:
    """Whether the named kernel of `kernel_status` runs correctly on this machine."""
    return kernel_status().get(name, "unknown kernel") is None


@functools.cache
def _speedup(dtype: torch.dtype) -> tuple[float | None, str | None]:
    n = 256
    threads = torch.get_num_threads()
    # One thread: the instruction set is what is measured, and a multi-threaded call on a busy machine
    # stalls whenever one of its threads is preempted (observed: 40x swings of a 0.2 ms matmul).
    torch.set_num_threads(1)
    try:
        a32 = torch.randn(n, n, generator=torch.Generator().manual_seed(0))  # never the global RNG
        a = a32.to(dtype)
        torch.mm(a32, a32), torch.mm(a, a)  # warm-up (first-call dispatch, primitive creation)
        best32 = best = float("inf")
        for _ in range(5):  # alternating, best of each: a busy moment of the machine hits both alike
            t0 = time.perf_counter()
            torch.mm(a32, a32)
            best32 = min(best32, time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch.mm(a, a)
            best = min(best, time.perf_counter() - t0)
            if best > 10 * best32:  # clearly emulated: no need for more slow calls
                break
        return best32 / max(best, 1e-9), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {str(e).strip()[:200]}"
    finally:
        torch.set_num_threads(threads)


def low_precision_speedup(dtype: torch.dtype) -> float | None:
    """fp32 time ÷ ``dtype`` time of a 256² CPU matmul, one thread (None: it failed)."""
    return _speedup(dtype)[0]


def native(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` (bf16 / fp16) GEMMs are faster than fp32 on this CPU (measured, see the module doc)."""
    if dtype == torch.float32:
        return True
    s = low_precision_speedup(dtype)
    return s is not None and s > NATIVE_SPEEDUP


def force_requested() -> bool:
    """``HIERA_VIDEO_FORCE_PRECISION=1``: run a requested bf16 / fp16 in that precision even where slow (any
    engine or a bf16 model's forward; the engines also take ``train.force_precision``)."""
    return os.environ.get("HIERA_VIDEO_FORCE_PRECISION", "0").lower() in ("1", "true", "yes", "on")


def _slowness(dtype: torch.dtype) -> str:
    s = low_precision_speedup(dtype)
    if s is None:
        return "its matmul failed to run here"
    if s >= 1:
        return f"a {dtype_name(dtype)} matmul measured {s:.1f}x faster than fp32, below the native threshold"
    slow = 1 / s
    cls = ("more than 10x slower: emulated" if slow > 10 else "2-10x slower: emulated or without fast bf16 "
           "instructions" if slow > 2 else "slower: no gain over fp32 here")
    return f"a {dtype_name(dtype)} matmul measured {slow:.0f}x slower than fp32 here ({cls})"


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


_WARNED: set[tuple[str, bool]] = set()


def _warn_once(key: tuple[str, bool], msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(msg)


def resolve_precision(requested: str, device: torch.device | str, force: bool = False) -> str:
    """The precision to run: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see the module docstring's rule).

    ``requested``: ``"auto"`` (bf16 on a GPU, fp32 on a CPU), ``"fp32"``, ``"none"`` (= fp32), ``"bf16"`` or
    ``"fp16"``. On CPU a low precision that
    is not native here becomes ``"fp32"`` with one warning, unless ``force`` or
    ``HIERA_VIDEO_FORCE_PRECISION=1``.
    """
    dev = torch.device(device)
    if requested == "auto":  # the default: bf16 where it always pays (GPUs), fp32 on any CPU
        return "bf16" if dev.type == "cuda" else "fp32"
    req = "fp32" if requested in ("none", "fp32", None) else str(requested)
    if req not in ("bf16", "fp16"):
        if req != "fp32":
            raise ValueError(f"unknown precision {requested!r}: use auto, fp32, bf16 or fp16")
        return "fp32"
    if dev.type != "cpu":
        return req
    dtype = _DTYPES[req]
    if native(dtype):
        return req
    force = force or force_requested()
    info = cpu_info()
    why = f"{req} is not native on this CPU, {info.describe()}: {missing_support(req, info)}; {_slowness(dtype)}"
    if force:
        _warn_once((req, True), f"{why}. Running {req} anyway because it was forced; expect a much slower run.")
        return req
    _warn_once(
        (req, False),
        f"{why}. Running fp32 instead (same results to rounding, much faster here). To force {req}, set "
        f"train.force_precision=true (train / pretrain) or HIERA_VIDEO_FORCE_PRECISION=1.",
    )
    return "fp32"


# ---------------------------------------------------------------------------------------------------------
# Per-shape kernel choices
# ---------------------------------------------------------------------------------------------------------

_CHOICES: dict[tuple, bool] = {}
_MEASURING = threading.local()
_MAX_TIMED = 5
_MIN_TIMED = 2
_TIME_BUDGET_S = 0.02  # per variant: fewer timed calls for slow (large) shapes


def shape_key(kind: str, x: torch.Tensor, *rest: Any) -> tuple:
    """Key of a per-shape choice: the row count of ``x`` (all but the last dim) rounded up to a power of
    two, its dtype, the thread count, and whatever else shapes the kernel (features, epilogue)."""
    rows = max(1, x.numel() // max(1, x.shape[-1]))
    return (kind, x.dtype, 1 << (rows - 1).bit_length(), torch.get_num_threads(), *rest)


def choose(key: tuple, regular: Callable[[], T], candidate: Callable[[], T], margin: float = 1.0,
           budget: float = _TIME_BUDGET_S) -> tuple[bool, T | None]:
    """Whether ``candidate`` is the faster kernel for ``key``, and (on the measuring call) its result.

    Cached per key: later calls return ``(choice, None)`` without running anything. On the first call both
    run: a warm-up call each, then alternating timed calls, at least `_MIN_TIMED` and at most `_MAX_TIMED`
    each, as many as ``budget`` (seconds per variant) allows, stopping early once every time of one variant
    is below every time of the other. The candidate wins when ``min(regular) >= margin * min(candidate)``:
    the minimum, because on a shared machine noise only ever adds time (measured on a 2-core Xeon: three
    calls of the same first-stage GEMM took 8.35, 3.55 and 3.3 ms). The winner's last output is returned so the
    measurement's work is not thrown away. A candidate that raises loses (and the regular result is used).
    """
    got = cached_choice(key)
    if got is not None:
        return got, None
    _MEASURING.depth = getattr(_MEASURING, "depth", 0) + 1
    try:
        return _measure(key, regular, candidate, margin, budget)
    finally:
        _MEASURING.depth -= 1


def measuring() -> bool:
    """Whether this thread is inside `choose`'s measurement: it calls each variant several times on one
    input, so nothing may consume (write into) that input meanwhile (`fast.linear`'s in-place residual)."""
    return getattr(_MEASURING, "depth", 0) > 0


def _measure(key: tuple, regular: Callable[[], T], candidate: Callable[[], T], margin: float,
             budget: float) -> tuple[bool, T | None]:
    try:
        t0 = time.perf_counter()
        candidate()
        t_cand = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - a refused kernel means the regular path
        logger.debug("candidate kernel for %s refused: %s", key, e)
        _CHOICES[key] = False
        return False, regular()
    t0 = time.perf_counter()
    out_reg = regular()
    t_reg = time.perf_counter() - t0
    reps = int(max(_MIN_TIMED, min(_MAX_TIMED, budget / max(t_cand, t_reg, 1e-6))))
    times_c: list[float] = []
    times_r: list[float] = []
    out_cand = None
    for i in range(reps):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            if which == 0:
                out_cand = candidate()
                times_c.append(time.perf_counter() - t0)
            else:
                out_reg = regular()
                times_r.append(time.perf_counter() - t0)
        if i + 1 >= _MIN_TIMED and (max(times_c) < min(times_r) or max(times_r) < min(times_c)):
            break  # clearly separated: more calls would not change the answer
    win = min(times_r) >= margin * min(times_c)
    logger.debug("kernel choice %s: regular %s ms, candidate %s ms -> %s", key,
                 [round(t * 1e3, 2) for t in times_r], [round(t * 1e3, 2) for t in times_c],
                 "candidate" if win else "regular")
    _CHOICES[key] = win
    return win, (out_cand if win else out_reg)


def run_faster(key: tuple, regular: Callable[[], T], candidate: Callable[[], T], margin: float = 1.0,
               budget: float = _TIME_BUDGET_S, regular_later: Callable[[], T] | None = None) -> T:
    """The result of whichever of ``regular`` / ``candidate`` is faster for ``key``: measured by `choose`
    on the first call (its winner's output is returned), the cached choice after. ``regular_later``: what
    runs for a regular choice once measured (e.g. an in-place variant that the repeated measuring calls must
    not use), by default ``regular``."""
    use = cached_choice(key)
    if use is None:
        return choose(key, regular, candidate, margin, budget)[1]
    if use:
        return candidate()
    return (regular_later or regular)()


def cached_choice(key: tuple) -> bool | None:
    """The choice already made for ``key``, or None when it has not been measured yet."""
    if not _FILE_LOADED:
        _load_env_file()
    return _CHOICES.get(key)


def choices() -> dict[tuple, bool]:
    """The per-shape choices made so far in this process (key -> candidate kept); for logs and tests."""
    return dict(_CHOICES)


def clear_choices() -> None:
    """Forget the per-shape choices (they are re-measured on next use)."""
    _CHOICES.clear()


# ---------------------------------------------------------------------------------------------------------
# Keeping choices across processes (see the module docstring)
# ---------------------------------------------------------------------------------------------------------

CHOICES_FORMAT = 1
CHOICES_ENV = "HIERA_VIDEO_KERNEL_CHOICES"
_FILE_LOADED = False


def fingerprint() -> dict[str, Any]:
    """What a set of choices is valid for: the CPU model and flags, PyTorch's ISA, oneDNN's and MKL's caps,
    the PyTorch version and the kernels the probe accepted (runs the probe if it has not run yet)."""
    info = cpu_info()
    return {"cpu": info.model_name, "flags": list(info.flags), "aten_isa": info.aten_isa,
            "onednn_cap": info.onednn_cap, "mkl_cap": info.mkl_cap,
            "torch": str(torch.__version__),  # (a str subclass: not for pickles)
            "kernels": sorted(k for k, v in kernel_status().items() if v is None)}


def _encode(item: Any) -> Any:
    if isinstance(item, torch.dtype):
        return {"dtype": str(item).removeprefix("torch.")}
    if isinstance(item, tuple):
        return [_encode(i) for i in item]
    if item is None or isinstance(item, (bool, int, float, str)):
        return item
    raise TypeError(f"cannot store a kernel-choice key element {item!r}")


def _decode(item: Any) -> Any:
    if isinstance(item, dict):
        dt = getattr(torch, str(item.get("dtype")), None) if set(item) == {"dtype"} else None
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"not a dtype: {item!r}")
        return dt
    if isinstance(item, list):
        return tuple(_decode(i) for i in item)
    if item is None or isinstance(item, (bool, int, float, str)):
        return item
    raise ValueError(f"not a key element: {item!r}")


def export_choices() -> dict[str, Any]:
    """This process's choices with their `fingerprint`, as plain JSON-able data (for `import_choices`)."""
    pairs = []
    for k, v in _CHOICES.items():
        try:
            pairs.append([_encode(k), v])
        except TypeError:  # a key element JSON cannot hold (none today): that choice is measured anew
            logger.debug("kernel choice %s not exported", k)
    return {"format": CHOICES_FORMAT, "fingerprint": fingerprint(), "choices": pairs}


def import_choices(data: Any, source: str = "kernel choices") -> int:
    """Adopt the choices of `export_choices` ``data`` (they replace this process's for the same keys);
    returns how many. ``data`` from another CPU, cap, PyTorch or probe result, or malformed, adopts nothing:
    one warning names ``source`` and what differs, and the shapes are measured here as usual."""
    try:
        if not isinstance(data, dict) or data.get("format") != CHOICES_FORMAT:
            raise ValueError(f"not kernel choices of format {CHOICES_FORMAT}")
        theirs, ours = data.get("fingerprint"), fingerprint()
        if not isinstance(theirs, dict):
            raise ValueError("no fingerprint")
        differ = [k for k in ours if theirs.get(k) != ours[k]]
        if differ:
            logger.warning("%s not used: made for another %s (%s); measuring here instead", source,
                           " / ".join(differ), "; ".join(f"{k}: {theirs.get(k)!r} vs {ours[k]!r} here" for k in differ))
            return 0
        got = {}
        for pair in data.get("choices", []):
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], bool)):
                raise ValueError(f"not a [key, choice] pair: {pair!r}")
            key = _decode(pair[0])
            if not isinstance(key, tuple):
                raise ValueError(f"not a key: {pair[0]!r}")
            got[key] = pair[1]
    except (ValueError, TypeError, AttributeError) as e:
        logger.warning("%s not used: %s; measuring here instead", source, e)
        return 0
    _CHOICES.update(got)
    return len(got)


_SAVED: dict[str, dict[tuple, bool]] = {}  # path -> the choices `save_choices` last wrote there


def save_choices(path: str | os.PathLike[str], if_changed: bool = False) -> Path | None:
    """Write `export_choices` to ``path`` as JSON, atomically (the package's one writer). ``if_changed``:
    only when the choices differ from what this process last saved to ``path`` (returns None otherwise)."""
    import json

    from hiera_video.fileio import atomic_write_text

    if if_changed and _SAVED.get(str(path)) == _CHOICES:
        return None
    snapshot = dict(_CHOICES)
    written = atomic_write_text(path, json.dumps(export_choices(), indent=1) + "\n")
    _SAVED[str(path)] = snapshot
    return written


def load_choices(path: str | os.PathLike[str]) -> int:
    """`import_choices` from a JSON file of `save_choices`; a missing or unreadable file adopts nothing
    (with a warning when it exists but cannot be used)."""
    import json

    path = Path(path)
    if not path.is_file():
        return 0
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        logger.warning("kernel choices %s not used: cannot read it (%s); measuring here instead", path, e)
        return 0
    return import_choices(data, source=f"kernel choices {path}")


def _load_env_file() -> None:
    """Once per process, at the first choice: `HIERA_VIDEO_KERNEL_CHOICES`'s file, and a save at exit."""
    global _FILE_LOADED
    _FILE_LOADED = True
    path = os.environ.get(CHOICES_ENV)
    if not path:
        return
    load_choices(path)
    import atexit

    def save() -> None:
        try:
            save_choices(path)
        except OSError as e:  # a read-only place: the choices are simply not kept
            logger.warning("kernel choices not saved to %s: %s", path, e)

    atexit.register(save)


def summary() -> dict[str, Any]:
    """The probe's answers, for logs and benchmark reports (runs the probe if it has not run yet)."""
    info = cpu_info()
    out: dict[str, Any] = {
        "cpu": info.model_name,
        "flags": list(info.flags),
        "aten_isa": info.aten_isa,
        "onednn_cap": info.onednn_cap, "mkl_cap": info.mkl_cap,
        "kernels": {k: ("ok" if v is None else v) for k, v in kernel_status().items()},
    }
    for name, dt in _DTYPES.items():
        s = low_precision_speedup(dt)
        out[f"{name}_matmul_speedup"] = None if s is None else round(s, 2)
        out[f"{name}_native"] = native(dt)
    return out
