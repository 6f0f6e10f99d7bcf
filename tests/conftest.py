"""Suite-wide fixtures."""

from __future__ import annotations

import logging
import os

import pytest

# A developer's kernel-choice file must neither steer the tests nor receive their choices (cpu_kernels);
# the tests that exercise it set it for a subprocess of their own.
os.environ.pop("HIERA_VIDEO_KERNEL_CHOICES", None)

from model_helpers import KERNELS  # noqa: E402 - after the environment is cleaned

from hiera_video.models import fast  # noqa: E402


@pytest.fixture(params=list(KERNELS))
def kernel(request, monkeypatch):
    """The CPU fast paths' linears always oneDNN (where the probe passed), never, or measured per shape."""
    monkeypatch.setattr(fast, "FORCE_ONEDNN", KERNELS[request.param])
    return request.param


@pytest.fixture(autouse=True)
def _library_logs_reach_caplog():
    """The CLI's logger setup stops "hiera_video" records from propagating (it prints them itself); tests that
    ran it earlier in the same process must not hide later tests' log records from ``caplog``."""
    logger = logging.getLogger("hiera_video")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old
