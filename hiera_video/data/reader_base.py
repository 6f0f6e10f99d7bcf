"""What every video reader backend shares: the errors, the source handling, the frame geometry (rotation,
sample aspect ratio, decode-time resize) and the :class:`VideoReader` contract.

The backends live in ``reader_pyav.py``, ``reader_decord.py`` and ``reader_torchcodec.py``;
``video_reader.py`` is the public entry point (:func:`~hiera_video.data.video_reader.open_video`).

Geometry. A decoder outputs frames as *stored*: the coded size, possibly with non-square pixels (sample
aspect ratio ``sar = pixel width / pixel height``) and a display rotation in the container (a display matrix;
phones record sideways and rotate at display time). With ``orientation="upright"`` (the default) every
backend returns what a player shows: pixels made square by resizing the width to ``round(width * sar)``
(FFmpeg's ``scale=iw*sar:ih`` convention) and the frame turned by the display rotation (counter-clockwise
quarter turns, exact: no resampling). ``orientation="stored"`` returns the coded frames untouched.

Where the square-pixel resize happens:

* with ``short_side`` the decoder's scaler produces the final size directly (one resize, as for square
  pixels; scalers differ between backends, see ``video_reader.py``);
* without it frames are decoded at full size (bitwise equal across backends) and resized by
  :func:`square_pixels` (torchvision's antialiased bilinear resize, the one our transforms use), so anamorphic
  frames are also bitwise equal across backends.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Any, BinaryIO, Union

import numpy as np
import torch

__all__ = [
    "CorruptVideoError",
    "FramePlan",
    "VideoNotFoundError",
    "VideoReadError",
    "VideoReader",
    "VideoSource",
    "plan_frames",
    "short_side_size",
    "square_pixels",
]

# A local path, an open binary file object (``read`` + ``seek``: fsspec files, tar members, BytesIO), or the
# encoded bytes themselves.
VideoSource = Union[str, "os.PathLike[str]", BinaryIO, bytes]

ORIENTATIONS = ("upright", "stored")
CORRUPT_POLICIES = ("raise", "count")


class VideoReadError(RuntimeError):
    """A video could not be opened or decoded. ``path`` names the file, ``reason`` says what went wrong."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video '{self.path}': {reason}")


class VideoNotFoundError(VideoReadError, FileNotFoundError):
    """The video file does not exist (also a :class:`FileNotFoundError`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        VideoReadError.__init__(self, path, "file not found")


class CorruptVideoError(VideoReadError):
    """The decoder flagged damaged data (``on_corrupt="raise"``). ``frame`` is the first frame index affected."""

    def __init__(self, path: str | os.PathLike[str], frame: int, detail: str) -> None:
        self.frame = frame
        super().__init__(path, f"corrupt data at frame {frame}: {detail}")


def source_name(source: VideoSource, name: str | None = None) -> str:
    """The name errors use for ``source``: ``name`` if given, else the path or the file object's ``name``."""
    if name is not None:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "path", None) or getattr(source, "name", None) or f"<{type(source).__name__}>")


def is_local_path(source: VideoSource) -> bool:
    return isinstance(source, (str, os.PathLike))


def rewound(source: VideoSource) -> Any:
    """What FFmpeg-based openers accept for ``source``, positioned at the start (file objects are reused)."""
    if is_local_path(source):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    source.seek(0)
    return source


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output ``(height, width)`` after resizing so that the short side is exactly ``short_side``.

    The long side keeps the aspect ratio, rounded to the nearest pixel.
    """
    if short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side}")
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


@dataclass(frozen=True)
class FramePlan:
    """How stored frames become output frames (sizes are ``(height, width)``).

    Attributes:
        stored: coded frame size.
        rotation: counter-clockwise degrees (0, 90, 180, 270) applied last; 0 for ``orientation="stored"``.
        decode_size: size the decoder's scaler produces, in stored orientation (``None``: full size).
        square_size: size :func:`square_pixels` resizes full-size frames to, in stored orientation
            (``None``: pixels already square, or the scaler handles it).
        output: size of the frames returned.
    """

    stored: tuple[int, int]
    rotation: int
    decode_size: tuple[int, int] | None
    square_size: tuple[int, int] | None
    output: tuple[int, int]


def plan_frames(
    height: int, width: int, rotation: int, sar: Fraction, short_side: int | None, orientation: str
) -> FramePlan:
    """Plan the geometry of a stream with coded size ``height x width`` (see the module docstring)."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    if orientation == "stored":
        rotation, sar = 0, Fraction(1)
    square = (height, max(1, int(round(width * sar)))) if sar != 1 else (height, width)
    quarter = rotation in (90, 270)
    shown = (square[1], square[0]) if quarter else square  # upright size at full resolution
    if short_side is not None:
        output = short_side_size(*shown, short_side)
        decode_size = (output[1], output[0]) if quarter else output
        return FramePlan((height, width), rotation, decode_size, None, output)
    return FramePlan((height, width), rotation, None, square if sar != 1 else None, shown)


def square_pixels(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 frames ``[N, H, W, 3]`` to ``size`` (torchvision antialiased bilinear) → ``[N, h, w, 3]``.

    The channels-last view of ``[N, H, W, C]`` is what torch's fast uint8 resize kernel takes.
    """
    from torchvision.transforms.v2.functional import resize

    resized = resize(frames.permute(0, 3, 1, 2), list(size), antialias=True)
    return resized.permute(0, 2, 3, 1).contiguous()


def as_index_array(indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    array = np.asarray(indices)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"frame indices must be one-dimensional, got shape {tuple(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise TypeError(f"frame indices must be integers, got {array.dtype}")
    return array.astype(np.int64, copy=False)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def check_policy(on_corrupt: str) -> str:
    if on_corrupt not in CORRUPT_POLICIES:
        raise ValueError(f"on_corrupt must be one of {CORRUPT_POLICIES}, got {on_corrupt!r}")
    return on_corrupt


class VideoReader(ABC):
    """Random access to the frames of one video.

    Attributes:
        path: the video's name in errors (file path, URL, or the name given for a file object).
        fps: average frame rate (frames per second).
        height, width: size of the frames returned (upright and square-pixel unless ``orientation="stored"``,
            after ``short_side`` resizing).
        backend: ``"pyav"``, ``"decord"`` or ``"torchcodec"``.
        on_corrupt: ``"raise"`` (damaged data raises :class:`CorruptVideoError`) or ``"count"`` (the decoder's
            concealed frames are returned and their indices recorded in ``corrupt_frames``). Data the decoder
            rejects outright (no frame comes out) raises :class:`CorruptVideoError` under either policy.
        corrupt_frames: sorted indices at which damage was detected (``on_corrupt="count"``).

    ``len(reader)`` is the number of frames, ``reader.duration`` is ``len(reader) / fps`` seconds (the span
    the frames cover, which is what clip samplers need; container durations include audio and edit lists).

    Not thread-safe, not shareable across processes: open one reader per item, inside the worker.
    """

    backend: str = ""
    _owned_file: Any = None  # a file object open_video opened for this reader (fsspec URL), closed with it

    def __init__(
        self, source: VideoSource, name: str | None = None, orientation: str = "upright", on_corrupt: str = "raise"
    ) -> None:
        self.path = source_name(source, name)
        if is_local_path(source) and not os.path.isfile(source):
            raise VideoNotFoundError(self.path)
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        self._source = source
        self._owner_pid = os.getpid()
        self.orientation = orientation
        self.on_corrupt = check_policy(on_corrupt)
        self.corrupt_frames: list[int] = []
        self.fps: float = 0.0
        self._num_frames: int = 0
        self._plan: FramePlan | None = None
        self._native_rotation = 0  # what the backend's decoder already turned (counter-clockwise degrees)

    def __len__(self) -> int:
        return self._num_frames

    @property
    def duration(self) -> float:
        """Seconds covered by the frames: ``len(self) / self.fps``."""
        return self._num_frames / self.fps if self.fps > 0 else 0.0

    @property
    def device(self) -> torch.device:
        """Where the returned frames live (CUDA only for torchcodec's GPU decoding)."""
        return torch.device("cpu")

    @property
    def height(self) -> int:
        """Height of the frames returned."""
        return self._frame_plan().output[0]

    @property
    def width(self) -> int:
        """Width of the frames returned."""
        return self._frame_plan().output[1]

    def _frame_plan(self) -> FramePlan:
        if self._plan is None:
            self._plan_geometry()
        assert self._plan is not None
        return self._plan

    def _plan_geometry(self) -> None:
        """Set the plan when it is first needed (backends that learn the rotation only from decoded frames)."""
        raise VideoReadError(self.path, "frame geometry unknown")

    def _set_plan(self, plan: FramePlan, native_rotation: int = 0) -> None:
        self._plan = plan
        self._native_rotation = native_rotation % 360

    def _note_corrupt(self, frame: int, detail: str) -> None:
        """Damage detected at ``frame``: raise (``on_corrupt="raise"``) or record it (``"count"``)."""
        if self.on_corrupt == "raise":
            raise CorruptVideoError(self.path, frame, detail)
        if frame not in self.corrupt_frames:
            self.corrupt_frames.append(frame)
            self.corrupt_frames.sort()

    def get_frames(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Decode the frames at ``indices`` (any order, duplicates allowed).

        Args:
            indices: ``N`` presentation-order frame indices in ``[0, len(self))``.

        Returns:
            uint8 tensor ``[N, H, W, 3]`` (RGB), row ``n`` is frame ``indices[n]``.

        Raises:
            IndexError: an index is outside ``[0, len(self))``.
            CorruptVideoError: the decoder flagged damaged data on the way to these frames
                (``on_corrupt="raise"``).
            VideoReadError: the file cannot be decoded (corrupt, truncated) or the reader was closed / is used
                from a process other than the one that opened it.
        """
        if os.getpid() != self._owner_pid:
            raise VideoReadError(
                self.path,
                "reader was opened in another process (e.g. inherited through fork); open readers inside "
                "DataLoader workers, per item",
            )
        array = as_index_array(indices)
        if array.size == 0:
            return torch.empty((0, self.height, self.width, 3), dtype=torch.uint8, device=self.device)
        bad = array[(array < 0) | (array >= self._num_frames)]
        if bad.size:
            raise IndexError(f"frame indices {bad[:8].tolist()} out of range [0, {self._num_frames}) for '{self.path}'")
        # Read every distinct frame once, in increasing order (cheap for any decoder), then scatter back.
        unique, inverse = np.unique(array, return_inverse=True)
        frames = self._orient(self._read_sorted_unique(unique))
        if frames.shape[0] != unique.size:
            raise VideoReadError(self.path, f"decoder returned {frames.shape[0]} frames, expected {unique.size}")
        if tuple(frames.shape[1:3]) != (self.height, self.width):
            raise VideoReadError(self.path, f"decoder returned frames of size {tuple(frames.shape[1:3])}, "
                                 f"expected {(self.height, self.width)}")
        if unique.size == array.size and np.array_equal(unique, array):
            return frames
        return frames[torch.from_numpy(inverse.reshape(-1)).to(frames.device)]

    def _orient(self, frames: torch.Tensor) -> torch.Tensor:
        """Backend output (decoder size, turned by ``_native_rotation``) → output frames (see the module doc)."""
        plan = self._plan
        if plan is None:
            return frames
        if plan.square_size is not None:
            if self._native_rotation:  # back to stored orientation, where square_size is defined
                frames = torch.rot90(frames, -self._native_rotation // 90, dims=(1, 2))
            frames = square_pixels(frames, plan.square_size)
            turns = plan.rotation // 90
        else:
            turns = ((plan.rotation - self._native_rotation) // 90) % 4
        if turns:
            frames = torch.rot90(frames, turns, dims=(1, 2)).contiguous()  # counter-clockwise, exact
        return frames

    def get_clips(self, clip_indices: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
        """Decode several clips in one read of the union of their frames.

        Args:
            clip_indices: int ``[K, T]`` frame indices (rows may overlap, repeat frames or be identical).

        Returns:
            ``K`` uint8 tensors ``[T, H, W, 3]``. A clip whose frames are evenly spaced in the decoded union
            (the usual case: a fixed sampling rate, or a frame repeated at the end of a short video) is a
            strided view into it, so no frame is copied; other clips are gathered.
        """
        if isinstance(clip_indices, torch.Tensor):
            clip_indices = clip_indices.detach().cpu().numpy()
        raw = np.asarray(clip_indices)
        if raw.ndim != 2:
            raise ValueError(f"clip_indices must be [K, T], got shape {tuple(raw.shape)}")
        indices = as_index_array(raw.reshape(-1)).reshape(raw.shape)
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = self.get_frames(unique)
        positions = inverse.reshape(indices.shape)
        clips = []
        for row in positions:
            steps = np.diff(row)
            if row.size > 0 and (steps.size == 0 or ((steps == steps[0]).all() and steps[0] >= 0)):
                step = int(steps[0]) if steps.size else 0
                stride = (step * frames.stride(0), *frames.stride()[1:])
                offset = frames.storage_offset() + int(row[0]) * frames.stride(0)
                clips.append(frames.as_strided((row.size, *frames.shape[1:]), stride, offset))
            else:
                clips.append(frames[torch.from_numpy(row).to(frames.device)])
        return clips

    @abstractmethod
    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        """Decode frames at strictly increasing, in-range ``indices`` → uint8 ``[N, H, W, 3]`` at the plan's
        decode size, turned by ``_native_rotation``."""

    @abstractmethod
    def close(self) -> None:
        """Release the decoder and the file. Safe to call twice."""

    def _release_source(self) -> None:
        owned, self._owned_file = self._owned_file, None
        if owned is not None:
            owned.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Only close in the owning process: finalising a fork-inherited decoder handle can hang.
        try:
            if os.getpid() == self._owner_pid:
                self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} cannot be pickled: open the video inside the worker process instead")

    def __repr__(self) -> str:
        size = f"{self._plan.output[0]}x{self._plan.output[1]}" if self._plan is not None else "not probed yet"
        return f"{type(self).__name__}('{self.path}', frames={self._num_frames}, fps={self.fps:.3f}, size={size})"
