"""How progress bars meet their stream, for every part of the package that shows one (the engines'
training / evaluation / extraction bars and dataset preparation): neutral ground, so that `data` and
`engine` share it without importing each other."""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["LOG_BAR_INTERVAL_S", "bar_options"]

LOG_BAR_INTERVAL_S = 30.0  # seconds between progress updates written to a file (not a terminal)


def bar_options(stream: Any = None) -> dict[str, Any]:
    """tqdm settings for a bar on ``stream`` (default stderr): on a terminal, a live bar; into a file or
    pipe, one update every `LOG_BAR_INTERVAL_S` instead of every 0.1 s, because each update is appended
    there (a day of training would write ~860k of them). tqdm's own ``TQDM_MININTERVAL``, when set, wins."""
    stream = sys.stderr if stream is None else stream
    opts: dict[str, Any] = {"dynamic_ncols": True, "smoothing": 0.1, "file": stream}
    isatty = getattr(stream, "isatty", None)
    if "TQDM_MININTERVAL" not in os.environ and not (callable(isatty) and isatty()):
        opts["mininterval"] = LOG_BAR_INTERVAL_S
    return opts
