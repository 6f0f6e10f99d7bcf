"""hiera_video.allocator: the data-loading and training-step allocation patterns stop page-faulting once
`keep_freed_memory` is applied; `release_freed_memory` hands the pages back; the training fast path applies it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are a glibc feature")

SCRIPT = r"""
import resource, sys
import numpy as np
import torch
from hiera_video.allocator import keep_freed_memory, release_freed_memory

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def sample():  # per-sample buffers freed before the next sample; 48 MB is above glibc's largest default
    # mmap threshold (32 MB), so without the setting every sample maps (and faults in) fresh pages
    views = torch.empty(48 << 20, dtype=torch.uint8).fill_(1)
    temporary = np.ones(3 << 20, np.uint8)
    del views, temporary

def step():  # a training step: 384 MB of activations, all freed after the backward. More at once than the
    # old 256 MB trim threshold, so a trimming heap returns the top and faults it in again; each block is
    # above glibc's largest default mmap threshold (32 MB), so without the setting every step maps (and
    # faults in) fresh pages whatever the heap's layout (16 MB blocks came from the heap or not, by luck)
    acts = [torch.ones(12 << 20) for _ in range(8)]
    del acts

applied = keep_freed_memory()
assert keep_freed_memory() is applied  # idempotent
out = [applied]
for pattern, reps in ((sample, 20), (step, 5)):
    for _ in range(3):
        pattern()
    before = faults()
    for _ in range(reps):
        pattern()
    out.append((faults() - before) / reps)
released = release_freed_memory()  # the kept pages go back: the next step faults them in again
before = faults()
step()
out += [released, faults() - before]
print(*out)
"""


def _run(enabled: bool) -> tuple[bool, float, float, bool, float]:
    env = dict(os.environ, HIERA_VIDEO_KEEP_FREED_MEMORY="1" if enabled else "0")
    completed = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    applied, sample, step, released, after_release = completed.stdout.split()
    return applied == "True", float(sample), float(step), released == "True", float(after_release)


@glibc_only
def test_keep_freed_memory_removes_per_sample_and_per_step_page_faults() -> None:
    applied, sample_on, step_on, released, after_release = _run(enabled=True)
    assert applied and released
    off_applied, sample_off, step_off, _, _ = _run(enabled=False)
    assert not off_applied and sample_off > 10000  # glibc's default: the 48 MB buffer is mapped afresh every sample
    assert sample_on < 0.25 * sample_off  # kept mapped and reused (0 to ~1/10 of the pages, by heap layout)
    pages = 8 * (48 << 20) // 4096  # 98,304 pages per step
    assert step_off > 0.5 * pages  # trimmed (or unmapped) after every step, faulted in again
    assert step_on < 0.05 * pages  # never trimmed: reused
    assert after_release > 0.5 * pages  # release_freed_memory really returned them


def test_training_fast_path_keeps_freed_memory_once(monkeypatch) -> None:
    import hiera_video
    from hiera_video.models import fast, fast_train

    calls = []
    monkeypatch.setattr(fast_train, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(fast_train, "_KEPT_FREED_MEMORY", False)
    model = hiera_video.create_model("hiera_tiny_224", input_size=(32, 32), num_classes=3).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))  # inference: not the training path
    with fast.disabled():
        model.train()(torch.randn(1, 3, 32, 32)).sum().backward()  # training path switched off
    assert calls == []
    for _ in range(2):
        model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert calls == [1]  # on the first fp32 training forward, once per process
