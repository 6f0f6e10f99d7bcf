"""Keep freed memory in the process: data loading and CPU training allocate and free the same large buffers
again and again.

A training sample allocates a few large buffers (decoded frames, the uint8 crop, RandAugment outputs, the
9.6 MB float clip) and frees them before the next one; a CPU training step frees its activations and
gradients after the backward. glibc returns such blocks to the kernel (``munmap`` above its mmap threshold,
heap trimming when more than its trim threshold is free at the top of the heap), so the next sample or step
takes a page fault on every 4 KiB page it touches again. Fresh pages are written at ~4.8 GB/s against 22-50
GB/s for warm ones (Intel Xeon with AMX, 2 threads), so the faults cost:

* ~1,500 faults and 3-5 ms of kernel time per 16x224x224 training clip, about a quarter of the whole
  augmentation cost (``tools/bench_data.py``);
* ~80,000 faults (~330 MB) per ``hiera_base_224`` batch-4 training step. The earlier setting (trim above
  256 MB) left all of them: a step frees more than that at once. Never trimming removes them: the step ran
  4-8% faster (four pairs of fresh processes, medians 1342 -> 1247 ms, plain AdamW; BENCHMARKS.md).

:func:`keep_freed_memory` serves blocks below ``threshold_bytes`` from the heap and turns heap trimming off,
so freed blocks stay mapped and are reused. The process's resident memory then stays at its peak instead of
dropping between samples or steps; its peak is unchanged (every step reaches it anyway).
:func:`release_freed_memory` hands the free pages back on demand (``malloc_trim``; ``fast.clear_cache`` calls
it).

Who applies it, once per process: the datasets (the main process with ``num_workers=0``, or each worker),
the clip streams of feature extraction, the training loop on CPU, and the models' fp32 CPU training fast path
(``models/fast_train.py``) on its first training forward, so a user's own training loop gets it too.
``HIERA_VIDEO_KEEP_FREED_MEMORY=0`` turns it off everywhere. Only glibc (Linux) is affected; elsewhere both
functions do nothing. Neutral ground: the data layer, the models and the engines all use it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["keep_freed_memory", "release_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_NEVER = -1  # M_TRIM_THRESHOLD -1: "disables trimming completely" (mallopt(3))
_APPLIED_PID: int | None = None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library (looked up once), or None where there is none to call."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def keep_freed_memory(threshold_bytes: int = 256 << 20) -> bool:
    """Serve blocks below ``threshold_bytes`` from the heap and never trim the heap (glibc).

    Idempotent per process (a forked worker applies it again: the flag is per process id). Returns True when
    the setting is in effect in this process, False where it is switched off
    (``HIERA_VIDEO_KEEP_FREED_MEMORY=0``) or the C library has no ``mallopt`` (macOS, Windows, musl).
    """
    global _APPLIED_PID
    if _APPLIED_PID == os.getpid():
        return True
    if os.environ.get("HIERA_VIDEO_KEEP_FREED_MEMORY", "1").lower() in ("0", "false", "no", "off"):
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, threshold_bytes) and mallopt(_M_TRIM_THRESHOLD, _NEVER)):
        return False
    _APPLIED_PID = os.getpid()
    return True


def release_freed_memory() -> bool:
    """Return the heap's free pages to the kernel now (glibc ``malloc_trim(0)``). True where it could run."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
