"""Suite-wide fixtures."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _library_logs_reach_caplog():
    """The CLI's logger setup stops "hiera_video" records from propagating (it prints them itself); tests that
    ran it earlier in the same process must not hide later tests' log records from ``caplog``."""
    logger = logging.getLogger("hiera_video")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old
