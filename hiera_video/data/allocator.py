"""Keep freed memory in the process: data loading allocates and frees the same large buffers every sample.

A training sample allocates a few large buffers (decoded frames, the uint8 crop, RandAugment outputs, the
9.6 MB float clip) and frees them before the next one. glibc returns such blocks to the kernel (``munmap``
above its mmap threshold, heap trimming above its trim threshold), so the next sample takes a page fault on
every 4 KiB page it touches again: ~1,500 faults and 3-5 ms of kernel time per 16x224x224 training clip,
about a quarter of the whole augmentation cost (measured in ``tools/bench_data.py``). Raising both
thresholds keeps the blocks mapped and reused; the process's resident memory then stays at its per-sample
peak instead of dropping between samples, which is what a DataLoader worker reaches every sample anyway.

The datasets call :func:`keep_freed_memory` once per process (the main process with ``num_workers=0``, or
each worker), and the training loop calls it on CPU, whose steps free and re-fault their activations the
same way (hiera_base_224 batch 4: ~400 MB per step; the step 4-7% faster with it, `engine/loop.py`).
``HIERA_VIDEO_KEEP_FREED_MEMORY=0`` turns it off. Only glibc (Linux) is affected; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_APPLIED_PID: int | None = None


def keep_freed_memory(threshold_bytes: int = 256 << 20) -> bool:
    """Serve blocks below ``threshold_bytes`` from the heap and never trim less than that from it (glibc).

    Idempotent per process. Returns True when the setting is in effect in this process.
    """
    global _APPLIED_PID
    if _APPLIED_PID == os.getpid():
        return True
    if os.environ.get("HIERA_VIDEO_KEEP_FREED_MEMORY", "1").lower() in ("0", "false", "no", "off"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:  # not glibc (macOS, Windows, musl without mallopt)
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, threshold_bytes) and mallopt(_M_TRIM_THRESHOLD, threshold_bytes)):
        return False
    _APPLIED_PID = os.getpid()
    return True
