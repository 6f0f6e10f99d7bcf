"""keep_freed_memory: the data-loading allocation pattern stops page-faulting once it is applied."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, sys
import numpy as np
import torch
from hiera_video.data.allocator import keep_freed_memory

applied = keep_freed_memory()
assert keep_freed_memory() is applied  # idempotent

def sample():  # per-sample buffers freed before the next sample; 48 MB is above glibc's largest default
    # mmap threshold (32 MB), so without the setting every sample maps (and faults in) fresh pages
    views = torch.empty(48 << 20, dtype=torch.uint8).fill_(1)
    temporary = np.ones(3 << 20, np.uint8)
    del views, temporary

for _ in range(3):
    sample()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    sample()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _run(enabled: bool) -> tuple[bool, float]:
    env = dict(os.environ, HIERA_VIDEO_KEEP_FREED_MEMORY="1" if enabled else "0")
    completed = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    applied, faults = completed.stdout.split()
    return applied == "True", float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are a glibc feature")
def test_keep_freed_memory_removes_per_sample_page_faults() -> None:
    applied, faults_on = _run(enabled=True)
    assert applied
    applied, faults_off = _run(enabled=False)
    assert not applied and faults_off > 10000  # glibc's default: the 48 MB buffer is mapped afresh every sample
    assert faults_on < 0.25 * faults_off  # kept mapped and reused (0 to ~1/10 of the pages, by heap layout)
