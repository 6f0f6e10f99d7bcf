"""``python -m hiera_video``: the same as the ``hiera-video`` command."""

import sys

from hiera_video.cli import main

if __name__ == "__main__":
    sys.exit(main())
