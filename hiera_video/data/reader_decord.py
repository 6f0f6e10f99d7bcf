"""decord backend, guarded: used only where its seeking is exact, checked for damage through PyAV."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from hiera_video.data.reader_base import VideoReader, VideoReadError, VideoSource, first_line, plan_frames, rewound
from hiera_video.data.reader_probe import probe_stream
from hiera_video.data.reader_pyav import PyAVCrossCheck

__all__ = ["DecordVideoReader"]

# Frames per decord call when a file must be read sequentially (bounds memory).
_SEQUENTIAL_CHUNK = 32


class DecordVideoReader(PyAVCrossCheck, VideoReader):
    """decord backend (``decord.VideoReader`` with one decode thread).

    decord numbers frames by counting them after a seek to a key frame, and takes key frame positions from
    decode order. On files where a key frame's decode-order position differs from its presentation position
    (open GOPs, some MPEG-4 Part 2 with B-frames) that returns the wrong frames. So on open a PyAV probe
    (a demux pass and the first frame, memoised per process) checks the file, and also that decord's frame
    count is the real one:

    * ``unsafe="raise"``: raise :class:`VideoReadError`;
    * ``unsafe="sequential"``: read such files with decord from frame 0 without seeking (exact but slower).

    decord turns frames by a 180° rotation (display matrix or ``rotate`` tag) itself and returns mis-sized
    buffers for 90°/270° ones (measured with decord 0.6), so those files raise :class:`VideoReadError` (use
    PyAV or torchcodec; ``backend="auto"`` never picks decord while PyAV is installed).

    decord conceals damaged data silently (it has no corruption flags). With ``check_corruption`` (default)
    every read is repeated by a PyAV decoder without RGB conversion (:meth:`PyAVVideoReader.check_frames`),
    which reports what FFmpeg detects; this roughly doubles the decode cost (BENCHMARKS_DATA.md).

    File objects are read into memory by decord (it takes a byte buffer, not a stream).

    Args:
        source: video file, binary file object or bytes.
        short_side: if given, decord's scaler resizes frames so the short side has this length.
        num_threads: decode threads (default 1: more make decord read ahead and multiply memory per worker).
        unsafe: what to do on a file decord cannot seek exactly, see above.
        orientation, on_corrupt, name: see :class:`~hiera_video.data.reader_base.VideoReader`.
        check_corruption: cross-check every read with PyAV (see above).
    """

    backend = "decord"

    def __init__(
        self,
        source: VideoSource,
        short_side: int | None = None,
        num_threads: int = 1,
        unsafe: str = "sequential",
        orientation: str = "upright",
        on_corrupt: str = "raise",
        name: str | None = None,
        check_corruption: bool = True,
    ) -> None:
        super().__init__(source, name, orientation, on_corrupt)
        import decord

        if unsafe not in ("raise", "sequential"):
            raise ValueError(f"unsafe must be 'raise' or 'sequential', got {unsafe!r}")
        self._decord_reader: Any = None
        self._check_corruption = check_corruption
        self._short_side, self._num_threads = short_side, num_threads
        probe = probe_stream(source, self.path)
        if probe.rotation in (90, 270):
            raise VideoReadError(self.path, f"decord cannot decode videos rotated by {probe.rotation} degrees "
                                 "(it returns mis-sized frames); use backend='pyav' or 'torchcodec'")
        if not probe.counting_seek_exact and unsafe == "raise":
            raise VideoReadError(self.path, "decord cannot seek exactly in this file (key frames out of order)")
        self._sequential_only = not probe.counting_seek_exact
        plan = plan_frames(probe.height, probe.width, probe.rotation, probe.sar, short_side, orientation)
        if plan.decode_size is not None and probe.sar != 1 and orientation == "upright":
            # decord's scaler cannot change the aspect ratio (it allocates frames for the stored one):
            # decode at full size and make the pixels square with the shared resize instead.
            plan = dataclasses.replace(plan, decode_size=None, square_size=plan.decode_size)
        height, width = plan.decode_size or (-1, -1)
        try:
            self._decord_reader = decord.VideoReader(
                rewound(source), ctx=decord.cpu(0), width=width, height=height, num_threads=num_threads
            )
            self._num_frames = len(self._decord_reader)
            self.fps = float(self._decord_reader.get_avg_fps())
        except (RuntimeError, decord.DECORDError, AssertionError) as error:
            self._decord_reader = None
            raise VideoReadError(self.path, f"decord: {first_line(error)}") from error
        if self._num_frames != probe.num_frames and probe.num_frames > 0:
            self.close()
            raise VideoReadError(self.path, f"decord reports {self._num_frames} frames but the stream has "
                                 f"{probe.num_frames}")
        if self._num_frames <= 0:
            self.close()
            raise VideoReadError(self.path, "decord found no frames")
        self._set_plan(plan, native_rotation=probe.rotation)  # decord turns by 180 degrees itself
        self._frame_shape = (*(plan.decode_size or plan.stored), 3)

    def _get_batch(self, indices: list[int]) -> np.ndarray:
        import decord

        try:
            batch = self._decord_reader.get_batch(indices).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoReadError(self.path, f"decord: {first_line(error)}") from error
        if batch.shape != (len(indices), *self._frame_shape):
            raise VideoReadError(self.path, f"decord returned frames of shape {batch.shape}")
        return batch

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        if self._decord_reader is None:
            raise VideoReadError(self.path, "reader is closed")
        self._cross_check(indices)
        if not self._sequential_only:
            return torch.from_numpy(self._get_batch(indices.tolist()))
        # Exact on any file: decode consecutive chunks from frame 0 (decord never seeks between consecutive
        # indices) and keep the wanted frames; chunks bound the memory to _SEQUENTIAL_CHUNK frames.
        output = np.empty((indices.size, *self._frame_shape), dtype=np.uint8)
        self._decord_reader.seek(0)
        last = int(indices[-1])
        slot = 0
        for chunk_start in range(0, last + 1, _SEQUENTIAL_CHUNK):
            chunk = list(range(chunk_start, min(chunk_start + _SEQUENTIAL_CHUNK, last + 1)))
            batch = self._get_batch(chunk)
            while slot < indices.size and indices[slot] < chunk_start + len(chunk):
                output[slot] = batch[indices[slot] - chunk_start]
                slot += 1
        return torch.from_numpy(output)

    def close(self) -> None:
        reader = getattr(self, "_decord_reader", None)
        if reader is not None:
            self._decord_reader = None
            del reader  # frees the native decoder and its read-ahead buffers now
        self._close_checker()
        self._release_source()
