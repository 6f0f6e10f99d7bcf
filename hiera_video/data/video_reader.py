"""Frame-exact video readers (PyAV, torchcodec and decord backends): the public entry point.

``open_video(source)`` returns a :class:`VideoReader`; ``reader.get_frames(indices)`` returns the RGB frames
at the given *presentation-order* indices as a ``uint8 [T, H, W, C]`` tensor. The contract for every backend
is the same: frame ``i`` is bitwise the ``i``-th frame that a full sequential PyAV decode converted with
``frame.to_ndarray(format="rgb24")`` produces (then turned upright and made square-pixel, see below). The
tests check this for all three backends on H.264 (GOP 1/5/12/250, B-frames, open GOP), VP9, MPEG-4 Part 2,
files with audio and videos shorter than a clip, rotated and anamorphic files.

The backends: ``reader_pyav.py`` (the reference), ``reader_torchcodec.py``, ``reader_decord.py``; what they
share is in ``reader_base.py`` (errors, geometry, the contract) and ``reader_probe.py`` (demux index,
rotation, FFmpeg's error log).

Design decisions (each one removes a known failure mode of video loaders):

* A reader belongs to the process that opened it. Datasets open a reader per item, read, and close it; a
  reader used from another process (e.g. inherited through ``fork`` by a DataLoader worker) raises instead
  of deadlocking in a decoder's threads.
* Indices are read sorted and unique, then scattered back to the order asked, so duplicates (repeated last
  frame for short videos, overlapping repeated-augmentation clips) cost nothing and the decoder only moves
  forward.
* decord is only trusted where it is exact: it locates frames by counting after a key frame, which is wrong
  on files whose key frames are out of place in decode order; such files are detected on open and read
  sequentially (or refused with ``unsafe="raise"``). It also cannot decode 90°-rotated files (refused).
* One decode thread per reader by default: DataLoader workers are the parallelism.
* Damage is never silent. Corrupt or truncated files raise :class:`VideoReadError` naming the file; data
  FFmpeg conceals (it logs an error or flags the frame, then hands out a plausible frame) raises
  :class:`CorruptVideoError` naming the file and the frame, or with ``on_corrupt="count"`` the concealed
  frames are returned and listed in ``reader.corrupt_frames`` (the datasets count such videos like unreadable
  ones). PyAV sees FFmpeg's flags and log directly; decord and torchcodec expose neither, so their reads are
  repeated by a PyAV decoder without RGB conversion (``check_corruption=False`` turns that off, e.g. for
  files ``datasets/prepare.py`` verified). Damage that decodes to valid syntax is invisible to any decoder
  (about half of random 64-byte damages on a test file; see ``reader_probe.py``).
* Rotation (display matrix or ``rotate`` tag) and the sample aspect ratio are honoured by every backend:
  frames come back upright with square pixels; ``orientation="stored"`` returns them as coded.

``backend="auto"`` picks, in order, **pyav, torchcodec, decord** (the first installed). Measured on the test
corpus and the benchmark videos (BENCHMARKS_DATA.md, CPU time per 16x4 clip): without damage checking
torchcodec is 10-14% cheaper than PyAV on 340x256 files and 5% at 720p, decord the most expensive; with the
damage check every default read needs, torchcodec and decord pay a second (PyAV) decode and PyAV is
1.65-2.2x cheaper than both. PyAV also has no exactness caveat (it is the reference) and no extra system dependency.
``device="cuda"`` prefers torchcodec (NVDEC) when a GPU and torchcodec are available and falls back to the
CPU order otherwise.

Short-side resize at decode time (``short_side=``) is done by the decoder's scaler (PyAV's ``frame.reformat``
with bilinear libswscale, torchcodec's in-decoder ``Resize``, decord's ``width/height`` filter graph). The
scalers differ, so *resized* frames are never bitwise equal between backends; full-resolution frames are.
torchcodec's is antialiased and close to our transforms' resize (torchvision antialiased bilinear: mean
absolute difference 0.2 levels, max 1-4); PyAV's and decord's alias when downscaling (mean 4, max > 100 on
textured frames). On the CPU measured it saves no time except with decord.

Sources: a local path, an fsspec URL (``s3://``, ``gs://``, ``memory://``..., opened with ``fsspec.open``),
a binary file object (``read`` + ``seek``) or the encoded bytes. PyAV streams from file objects;
torchcodec and decord read them into memory (decord takes only a byte buffer).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch

from hiera_video.data.reader_base import (
    CorruptVideoError,
    VideoNotFoundError,
    VideoReader,
    VideoReadError,
    VideoSource,
    short_side_size,
    square_pixels,
)
from hiera_video.data.reader_decord import DecordVideoReader
from hiera_video.data.reader_pyav import PyAVVideoReader
from hiera_video.data.reader_torchcodec import TorchCodecVideoReader, cuda_decoding_available, torchcodec_installed

__all__ = [
    "AUTO_ORDER",
    "CorruptVideoError",
    "DecordVideoReader",
    "PyAVVideoReader",
    "TorchCodecVideoReader",
    "VideoNotFoundError",
    "VideoReadError",
    "VideoReader",
    "VideoSource",
    "available_backends",
    "open_video",
    "short_side_size",
    "square_pixels",
]

logger = logging.getLogger(__name__)

BACKENDS = ("pyav", "torchcodec", "decord")
AUTO_ORDER = ("pyav", "torchcodec", "decord")  # see the module docstring for the measurements behind it


def _decord_installed() -> bool:
    return importlib.util.find_spec("decord") is not None


def _pyav_installed() -> bool:
    return importlib.util.find_spec("av") is not None


def _installed(backend: str) -> bool:
    return {"pyav": _pyav_installed, "torchcodec": torchcodec_installed, "decord": _decord_installed}[backend]()


def available_backends() -> list[str]:
    """Names of the backends usable in this environment, in ``"auto"`` preference order."""
    return [name for name in AUTO_ORDER if _installed(name)]


def is_url(source: Any) -> bool:
    """``source`` is a string with a protocol (``memory://x.mp4``, ``s3://bucket/x.mp4``), not a local file."""
    return isinstance(source, str) and "://" in source and not source.startswith("file://")


def open_video(
    source: VideoSource,
    backend: str = "auto",
    short_side: int | None = None,
    num_threads: int = 1,
    *,
    device: str | torch.device = "cpu",
    orientation: str = "upright",
    on_corrupt: str = "raise",
    check_corruption: bool = True,
    name: str | None = None,
) -> VideoReader:
    """Open a video for frame-exact random access.

    Args:
        source: a video file (any container/codec FFmpeg reads: MP4, WebM, MKV, AVI...), an fsspec URL, a
            binary file object or the encoded bytes.
        backend: ``"auto"`` (see the module docstring), ``"pyav"``, ``"torchcodec"`` or ``"decord"``.
        short_side: resize frames at decode time so their short side has this many pixels (``None``: keep).
        num_threads: decoder threads per reader.
        device: ``"cuda"`` decodes with torchcodec on the GPU (NVDEC) when it can, else on the CPU.
        orientation: ``"upright"`` (display rotation and square pixels applied) or ``"stored"``.
        on_corrupt: ``"raise"`` (:class:`CorruptVideoError`) or ``"count"`` (concealed frames returned and
            listed in ``reader.corrupt_frames``; data no frame can be decoded from still raises).
        check_corruption: torchcodec/decord: repeat reads with PyAV to detect damage (PyAV: always on).
        name: how errors name the video (default: the path, URL or file object's name).

    Returns:
        A :class:`VideoReader`; use it as a context manager or call ``close()`` when done.

    Raises:
        VideoNotFoundError: ``source`` is a path that does not exist.
        VideoReadError: the backend cannot open the file.
        ValueError: unknown backend name.
        ImportError: the backend asked for is not installed.
    """
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown video backend {backend!r}; expected 'auto', 'pyav', 'torchcodec' or 'decord'")
    wants_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        backend = _auto_backend(wants_cuda)
    elif not _installed(backend):
        hint = {"torchcodec": 'pip install "hiera-video[torchcodec]" and Debian\'s ffmpeg package',
                "decord": "pip install decord", "pyav": "pip install av"}[backend]
        raise ImportError(f"backend={backend!r} is not installed or cannot load ({hint})")
    if wants_cuda and backend != "torchcodec":
        logger.info("%s decodes on the CPU (device=%s asks for GPU decoding, which only torchcodec does)",
                    backend, device)
    owned = None
    if is_url(source):
        from hiera_video.data.remote import open_url

        name = name or source
        owned = source = open_url(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(str(source)[7:] if str(source).startswith("file://") else source)
        if not path.is_file():
            raise VideoNotFoundError(path)
        source = path
    common = {"orientation": orientation, "on_corrupt": on_corrupt, "name": name}
    try:
        if backend == "pyav":
            reader: VideoReader = PyAVVideoReader(source, short_side, num_threads, **common)
        elif backend == "decord":
            reader = DecordVideoReader(source, short_side, num_threads, check_corruption=check_corruption, **common)
        else:
            reader = TorchCodecVideoReader(source, short_side, num_threads, device=device if wants_cuda else "cpu",
                                           check_corruption=check_corruption, **common)
    except BaseException:
        if owned is not None:
            owned.close()
        raise
    reader._owned_file = owned
    return reader


def _auto_backend(wants_cuda: bool) -> str:
    if wants_cuda:
        if cuda_decoding_available():
            return "torchcodec"
        logger.info("device='cuda' asked for, but %s; decoding on the CPU",
                    "torchcodec is not installed" if torch.cuda.is_available() else "CUDA is not available")
    for name in AUTO_ORDER:
        if _installed(name):
            return name
    raise ImportError("no video backend installed: pip install av (or torchcodec / decord)")
