"""Videos beyond one disk: any fsspec URL (``s3://``, ``gs://``, ``https://``, ``memory://``...) as a file object.

``open_video("s3://bucket/k400/abc.mp4")`` opens the URL with :func:`fsspec.open` and hands the readers a
seekable binary file object. PyAV streams from it (reading only what it decodes, through fsspec's read-ahead
cache); torchcodec and decord read it into memory. fsspec is an optional dependency (``pip install fsspec``
plus the filesystem's package, e.g. ``s3fs``).
"""

from __future__ import annotations

from typing import Any

from hiera_video.data.reader_base import VideoNotFoundError, VideoReadError

__all__ = ["open_url"]


def open_url(url: str) -> Any:
    """Open ``url`` for binary reading → a seekable file object (close it when done).

    Raises:
        VideoNotFoundError: nothing at ``url``.
        VideoReadError: fsspec (or the filesystem's package) is missing, or the URL cannot be opened.
    """
    try:
        import fsspec
    except ImportError as error:
        raise VideoReadError(url, "reading URLs needs fsspec (pip install fsspec)") from error
    try:
        handle = fsspec.open(url, "rb").open()
    except FileNotFoundError as error:
        raise VideoNotFoundError(url) from error
    except (ImportError, ValueError) as error:  # unknown protocol or its package missing
        raise VideoReadError(url, f"fsspec cannot open this URL: {error}") from error
    except OSError as error:
        raise VideoReadError(url, f"cannot open: {error}") from error
    if not handle.seekable():
        handle.close()
        raise VideoReadError(url, "the file object is not seekable (video demuxers need to seek)")
    return handle
