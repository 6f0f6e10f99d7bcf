"""PyAV (FFmpeg) backend: the reference decoder, and the damage check the other backends borrow."""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from hiera_video.data.reader_base import (
    CorruptVideoError,
    VideoReader,
    VideoReadError,
    VideoSource,
    is_local_path,
    plan_frames,
    rewound,
)
from hiera_video.data.reader_probe import (
    DecodeErrorLog,
    demux_index,
    discard_other_streams,
    first_frame_rotation,
    frame_rotation,
    stream_info,
)

__all__ = ["PyAVVideoReader"]

# Re-seek instead of decoding forward when the key frame before the next wanted frame is more than this many
# frames ahead of the decoder position. Decoding a small 4:2:0 frame costs about as much as a seek + decoder
# flush, so only larger gaps are worth a seek.
_SEEK_GAIN = 8
# How many earlier key frames to try when a seek lands after the wanted frame (open GOPs, demuxers that seek
# by DTS) before decoding from the very start.
_MAX_SEEK_BACKOFF = 3


# Per-process memo of the display rotation of local files, keyed by (path, size, mtime).
_ROTATIONS: dict[tuple[str, int, int], int] = {}
_ROTATIONS_MAX = 200_000


def _geometry_key(source: VideoSource) -> tuple[str, int, int] | None:
    if not is_local_path(source):
        return None
    stat = os.stat(source)
    return (str(source), stat.st_size, stat.st_mtime_ns)


class PyAVVideoReader(VideoReader):
    """PyAV (FFmpeg) backend: seeks to the key frame before the first wanted frame and decodes forward.

    On open the packets are demuxed once (no decoding, a few ms) to build an exact map from presentation
    timestamp to frame index and the list of key frames. This gives a reliable frame count even when the
    container stores none (WebM/MKV) and makes seeking correct with B-frames: decoded frames are identified by
    their timestamp, never by counting after a seek; a seek that lands after the wanted frame is retried from
    an earlier key frame. Files with missing or duplicated timestamps are decoded sequentially instead. Wanted
    frames close together are decoded through; a seek is used only to skip more than a few frames.

    Damage: every frame decoded on the way (wanted or decoded through as a reference) is checked for
    ``frame.is_corrupt`` and for errors FFmpeg logged while producing it (see ``reader_probe.py``).

    Args:
        source: video file, binary file object or bytes.
        short_side: if given, frames are resized (bilinear, by libswscale) so the short side has this length.
        num_threads: decoder threads (default 1; the DataLoader workers are the parallelism).
        orientation, on_corrupt, name: see :class:`~hiera_video.data.reader_base.VideoReader`.
        convert: ``False`` makes a checker: reads decode and check the frames but return no pixels
            (used by the decord and torchcodec readers to detect damage).
    """

    backend = "pyav"

    def __init__(
        self,
        source: VideoSource,
        short_side: int | None = None,
        num_threads: int = 1,
        orientation: str = "upright",
        on_corrupt: str = "raise",
        name: str | None = None,
        convert: bool = True,
    ) -> None:
        super().__init__(source, name, orientation, on_corrupt)
        import av

        self._av = av
        self._container: Any = None
        self._num_threads = num_threads
        self._convert = convert
        # Decoder state kept between get_frames calls so that consecutive reads continue without a seek.
        self._frames_iterator: Iterator[Any] | None = None
        self._position: int | None = None  # index of the next frame the decoder outputs, None if unknown
        self._decode_order: dict[int, int] = {}  # pts -> position in decode order since the last seek
        self._damage: tuple[int, int | None, str] | None = None  # first damaged packet since the last seek
        self._short_side = short_side
        self._errors = DecodeErrorLog()
        try:
            self._open_container()
            self._info = stream_info(self._container, self._stream, self.path)
            self.fps = self._frame_rate(self._stream)
            self._build_index()
        except av.FFmpegError as error:
            self.close()
            raise VideoReadError(self.path, f"{type(error).__name__}: {error}") from error
        except VideoReadError:
            self.close()
            raise
        # The display rotation is known from the first decoded frame (FFmpeg attaches the display matrix to
        # frames; PyAV 18 has no stream-level getter), so the geometry is planned at the first read, or on
        # first access to height/width (one extra open + first-frame decode, memoised for local files).
        key = _geometry_key(source)
        if key is not None and key in _ROTATIONS:
            self._plan_from(_ROTATIONS[key])

    def _plan_from(self, rotation: int) -> None:
        info = self._info
        self._set_plan(plan_frames(info.height, info.width, rotation, info.sar, self._short_side, self.orientation))

    def _plan_geometry(self, frame: Any = None) -> None:
        if frame is not None:
            rotation = frame_rotation(frame, self._info)[0]
        else:
            # Before any read (the plan is set by the first one): the next read seeks or reopens anyway, so a
            # file object shared with our container may be moved here.
            rotation = first_frame_rotation(self._source, self._info, self.path)[0]
        key = _geometry_key(self._source)
        if key is not None:
            if len(_ROTATIONS) >= _ROTATIONS_MAX:
                _ROTATIONS.clear()
            _ROTATIONS[key] = rotation
        self._plan_from(rotation)

    # -- container handling -------------------------------------------------------------------------------
    def _open_container(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._av.open(rewound(self._source))
        if not self._container.streams.video:
            raise VideoReadError(self.path, "no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = self._num_threads
        discard_other_streams(self._container, self._stream)
        self._frames_iterator, self._position = None, 0

    @staticmethod
    def _frame_rate(stream: Any) -> float:
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate is not None and rate > 0:
                return float(rate)
        return 0.0  # estimated from the timestamps in _build_index

    def _build_index(self) -> None:
        """Demux every packet once: timestamps → frame indices, key frame positions, frame count."""
        index = demux_index(self._container, self._stream)
        self._sequential_only = not index.usable
        if self._sequential_only:
            # No usable timestamps: the only exact frame numbering is the decode output order; count it once.
            self._open_container()
            with self._av.logging.Capture(local=False):
                self._num_frames = sum(1 for _ in self._container.decode(self._stream))
            self._errors.new_error()  # damage is reported by the reads that meet it
            self._pts_to_index: dict[int, int] = {}
            self._index_to_pts: list[int] = []
            self._keyframe_indices: list[int] = [0]
        else:
            self._num_frames = len(index.pts)
            self._index_to_pts = index.pts
            self._pts_to_index = {pts: position for position, pts in enumerate(index.pts)}
            self._keyframe_indices = index.keyframes
            if self.fps <= 0 and len(index.pts) > 1:
                span = (index.pts[-1] - index.pts[0]) * self._stream.time_base
                self.fps = float((len(index.pts) - 1) / span) if span else 0.0
        if self._num_frames == 0:
            raise VideoReadError(self.path, "no decodable video frames")
        self._position = None  # the demux pass moved the file position: the next read seeks or reopens

    # -- decoding -----------------------------------------------------------------------------------------
    def _decode_stream(self) -> Iterator[Any]:
        """``container.decode(stream)``, packet by packet, so that an error FFmpeg logs is tied to the packet
        (the frame) whose data caused it, not to whichever frame the reordering delay outputs next."""
        self._decode_order, self._damage = {}, None  # a new decoder state: nothing decoded, nothing damaged
        for sequence, packet in enumerate(self._container.demux(self._stream)):
            frames = packet.decode()
            if packet.pts is not None:
                self._decode_order[packet.pts] = sequence
            message = self._errors.new_error()
            if message is not None and self._damage is None:
                damaged = self._pts_to_index.get(packet.pts) if packet.pts is not None else None
                self._damage = (sequence, damaged, message)
            yield from frames

    def _check(self, frame: Any, index: int) -> None:
        """Report damage that frame ``index`` may carry: its own corrupt flag, or damaged data decoded before
        it in decode order (it may be a reference of this frame; frames decoded earlier cannot depend on it)."""
        self._last_decoded = index
        if self._damage is not None:
            sequence, damaged, message = self._damage
            own = self._decode_order.get(frame.pts)
            if own is None or own >= sequence:
                where = damaged if damaged is not None else index
                self._note_corrupt(where, f"FFmpeg reported '{message}' (decoding frame {where})")
        if frame.is_corrupt:
            self._note_corrupt(index, "the decoder flagged the frame as corrupt (concealed damage)")

    def _to_rgb(self, frame: Any) -> np.ndarray:
        decode_size = self._plan.decode_size
        if decode_size is not None:
            height, width = decode_size
            frame = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR")
            return frame.to_ndarray()
        return frame.to_ndarray(format="rgb24")

    def _frame_index(self, frame: Any) -> int:
        index = self._pts_to_index.get(frame.pts) if frame.pts is not None else None
        if index is None:
            raise VideoReadError(self.path, f"decoded a frame with unknown timestamp {frame.pts}")
        return index

    def _decode_from_start(self) -> Iterator[Any]:
        if self._position != 0:
            self._open_container()
        yield from self._decode_stream()

    def _seek_and_decode(self, keyframe: int, target: int) -> Iterator[Any] | None:
        """Seek to ``keyframe`` and return the decoded frames if they start at or before ``target``."""
        self._container.seek(self._index_to_pts[keyframe], stream=self._stream, backward=True, any_frame=False)
        frames = self._decode_stream()
        first = next(frames, None)
        if first is None or self._frame_index(first) > target:
            return None  # landed after the wanted frame (open GOP, or a demuxer that seeks by DTS)
        return itertools.chain([first], frames)

    def _frames_from_keyframe(self, keyframe_position: int, target: int) -> Iterator[Any]:
        """Decoded frames starting at or before ``target``, from a seek to a key frame at or before it."""
        earlier = [k for k in self._keyframe_indices if k <= keyframe_position][::-1][:_MAX_SEEK_BACKOFF]
        for keyframe in earlier:
            if keyframe == 0 and self._position == 0:
                break  # the decoder is already at the start
            frames = self._seek_and_decode(keyframe, target)
            if frames is not None:
                return frames
        return self._decode_from_start()

    def check_frames(self, indices: np.ndarray) -> list[int]:
        """Decode (without converting) what reading ``indices`` decodes; returns the corrupt frame indices
        recorded (``on_corrupt="count"``) or raises :class:`CorruptVideoError`."""
        self._read_sorted_unique(indices)
        return list(self.corrupt_frames)

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        av = self._av
        if self._container is None:
            raise VideoReadError(self.path, "reader is closed")
        output: list[np.ndarray] = []  # one array, allocated at the first frame (when the geometry is known)
        self._wanted = indices.size
        self._errors.new_error()  # errors logged before this read are not this read's
        self._last_decoded: int | None = None
        try:
            with av.logging.Capture(local=False):  # FFmpeg's messages become our errors, not stderr noise
                if self._sequential_only:
                    self._read_sequential(indices, output)
                else:
                    self._read_seeking(indices, output)
        except (av.FFmpegError, VideoReadError) as error:
            self._position, self._frames_iterator = None, None
            if isinstance(error, VideoReadError):
                raise
            # Data the decoder rejects outright: no frame can be handed out, whatever the policy.
            frame = self._last_decoded + 1 if self._last_decoded is not None else int(indices[0])
            raise CorruptVideoError(
                self.path, frame, f"decode failed after frame {frame - 1}: {type(error).__name__}: {error}"
            ) from error
        return torch.from_numpy(output[0] if output else np.empty((0,), dtype=np.uint8))

    def _store(self, output: list[np.ndarray], slot: int, frame: Any) -> None:
        if not self._convert:
            return
        if self._plan is None:
            self._plan_geometry(frame)
        if not output:
            size = self._plan.decode_size or self._plan.stored
            output.append(np.empty((self._wanted, *size, 3), dtype=np.uint8))
        output[0][slot] = self._to_rgb(frame)

    def _read_sequential(self, indices: np.ndarray, output: list[np.ndarray]) -> None:
        wanted = {int(index): slot for slot, index in enumerate(indices)}
        last = int(indices[-1])
        found = 0
        for position, frame in enumerate(self._decode_from_start()):
            self._check(frame, position)
            slot = wanted.get(position)
            if slot is not None:
                self._store(output, slot, frame)
                found += 1
            if position >= last:
                break
        self._position, self._frames_iterator = None, None
        if found != indices.size:
            raise VideoReadError(self.path, f"stream ended after {found} of {indices.size} wanted frames")

    def _keyframe_before(self, index: int) -> int:
        return self._keyframe_indices[bisect.bisect_right(self._keyframe_indices, index) - 1]

    def _read_seeking(self, indices: np.ndarray, output: list[np.ndarray]) -> None:
        # Continue from where the previous read stopped unless that is past the first wanted frame.
        position, frames = self._position, self._frames_iterator
        if position is None or position > int(indices[0]):
            position, frames = None, None
        elif frames is None and position == 0:
            frames = self._decode_stream()
        self._position, self._frames_iterator = None, None  # unknown until this read succeeds
        slot = 0
        while slot < indices.size:
            target = int(indices[slot])
            if frames is None or position is None or self._keyframe_before(target) > position + _SEEK_GAIN:
                frames = self._frames_from_keyframe(self._keyframe_before(target), target)
            for frame in frames:
                index = self._frame_index(frame)
                position = index + 1
                self._check(frame, index)  # decoded-through frames too: damage propagates to later frames
                if index < target:
                    continue
                if index > target:
                    raise VideoReadError(self.path, f"frame {target} missing from the decoded stream")
                self._store(output, slot, frame)
                slot += 1
                if slot == indices.size:
                    break
                target = int(indices[slot])
                if self._keyframe_before(target) > position + _SEEK_GAIN:
                    break  # cheaper to seek than to decode through the gap
            else:
                raise VideoReadError(
                    self.path, f"stream ended before frame {target} (the index lists {self._num_frames})"
                )
        self._position, self._frames_iterator = position, frames

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            self._container = None
            self._frames_iterator = None
            container.close()
        self._release_source()


class PyAVCrossCheck:
    """Damage detection for backends that expose no corruption flags (decord, torchcodec).

    With ``check_corruption`` every read is repeated by a `PyAVVideoReader` without RGB conversion (about one
    extra decode), whose corrupt-frame flags and FFmpeg error log name the damaged frames; they are raised or
    counted under the reader's ``on_corrupt`` policy. Mixed into a `VideoReader` that sets
    ``_check_corruption`` and ``_source``.
    """

    _checker: PyAVVideoReader | None = None
    _check_corruption: bool = True

    def _pyav_checker(self) -> PyAVVideoReader:
        if self._checker is None:
            self._checker = PyAVVideoReader(self._source, on_corrupt=self.on_corrupt, name=self.path, convert=False)
        return self._checker

    def _cross_check(self, indices: np.ndarray) -> None:
        if self._check_corruption:
            for frame in self._pyav_checker().check_frames(indices):
                self._note_corrupt(frame, "see the PyAV check")

    def _close_checker(self) -> None:
        checker, self._checker = self._checker, None
        if checker is not None:
            checker.close()
