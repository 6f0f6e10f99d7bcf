#!/usr/bin/env python
"""Verify / re-encode a video dataset and write a verified list file (see datasets/README.md).

Thin wrapper around :mod:`hiera_video.data.prepare` so it runs from a checkout without installing:
``python datasets/prepare.py --help``.
"""

import sys
from pathlib import Path

try:
    from hiera_video.data.prepare import main
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from hiera_video.data.prepare import main

if __name__ == "__main__":
    raise SystemExit(main())
