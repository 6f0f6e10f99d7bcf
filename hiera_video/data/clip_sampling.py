"""Temporal clip samplers: which frame indices make up the clips of one video.

A clip is ``T`` frames (``num_frames``) taken every ``τ`` frames (``sampling_rate``); Hiera's Kinetics recipe
is 16×4. With ``target_fps`` set (default 30), ``τ`` is counted in frames *of a video at target_fps*: the
step in source frames is ``τ · fps / target_fps``, so a clip spans the same time on 25, 30 and 60 fps videos
(SlowFast / MAE-ST convention). Fractional steps are floored per frame: spacings are ``floor(step)`` or
``ceil(step)``.

Samplers only compute indices; they never open a video. ``sampler(num_video_frames, fps, rng)`` returns an
int64 array ``[num_clips, T]`` whose rows are clips; every index is in ``[0, num_video_frames)``.

* :class:`RandomClipSampler` (training): ``num_clips`` independent uniformly random clip starts. With
  ``num_clips > 1`` (repeated augmentation) the dataset reads the union of the clips' frames in one decode.
* :class:`UniformClipSampler` (testing): ``num_clips`` clips with evenly spaced starts, the first starting at
  frame 0 and the last ending at the last frame (a single clip is centred).
* :class:`SegmentClipSampler` (TSN / Something-Something v2 style): one frame from each of ``T`` equal
  segments of the whole video, random in training, centred (or shifted per view) in testing.
* :class:`SlidingClipSampler` (feature extraction): clips at a fixed stride over the whole video, as many as
  the video holds, with a policy for the frames after the last full clip.

Videos shorter than one clip (``(T - 1)·step + 1 > num_video_frames``), ``short_video=``:

* ``"clamp"`` (default): the clip starts at frame 0 and indices past the end repeat the last frame;
* ``"loop"``: the clip starts at frame 0 and wraps around to the start of the video;
* ``"error"``: raise :class:`VideoTooShortError` (the dataset treats it like an unreadable video).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SHORT_VIDEO_MODES",
    "TAIL_MODES",
    "ClipSampler",
    "RandomClipSampler",
    "SegmentClipSampler",
    "SlidingClipSampler",
    "UniformClipSampler",
    "VideoTooShortError",
    "clip_step",
]

SHORT_VIDEO_MODES = ("clamp", "loop", "error")
TAIL_MODES = ("drop", "pad", "align")
# Guards floor() against float error, e.g. 3 * (10 / 3) = 9.999999999999998.
_EPS = 1e-6


class VideoTooShortError(ValueError):
    """A video has fewer frames than one clip spans and ``short_video="error"``."""


def clip_step(sampling_rate: float, fps: float | None, target_fps: float | None) -> float:
    """Distance in source frames between consecutive frames of a clip.

    ``sampling_rate`` when ``target_fps`` is ``None`` or the video's fps is unknown (``None`` / ``<= 0``),
    otherwise ``sampling_rate * fps / target_fps``.
    """
    if target_fps is None or fps is None or fps <= 0:
        return float(sampling_rate)
    return float(sampling_rate) * float(fps) / float(target_fps)


@dataclass
class ClipSampler:
    """Base class: clip geometry and short-video policy shared by all samplers.

    Args:
        num_frames: frames per clip ``T``.
        sampling_rate: ``τ``, the stride between clip frames (at ``target_fps``).
        target_fps: frame rate at which ``τ`` is measured; ``None`` uses source frames as they are.
        num_clips: clips per video (training: repeated augmentation ``K``; testing: temporal views).
        short_video: ``"clamp"``, ``"loop"`` or ``"error"`` (see the module docstring).
    """

    num_frames: int = 16
    sampling_rate: float = 4
    target_fps: float | None = 30.0
    num_clips: int = 1
    short_video: str = "clamp"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if not self.sampling_rate > 0:
            raise ValueError(f"sampling_rate must be > 0, got {self.sampling_rate}")
        if self.target_fps is not None and not self.target_fps > 0:
            raise ValueError(f"target_fps must be > 0 or None, got {self.target_fps}")
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {self.num_clips}")
        if self.short_video not in SHORT_VIDEO_MODES:
            raise ValueError(f"short_video must be one of {SHORT_VIDEO_MODES}, got {self.short_video!r}")

    def step(self, fps: float | None) -> float:
        """Source-frame stride for a video at ``fps``."""
        return clip_step(self.sampling_rate, fps, self.target_fps)

    def span(self, fps: float | None) -> float:
        """Source frames covered by one clip, from its first to its last frame inclusive."""
        return (self.num_frames - 1) * self.step(fps) + 1

    def _offsets(self, step: float) -> np.ndarray:
        """Frame offsets of a clip relative to its start: ``floor(i · step)``, int64 ``[T]``."""
        return np.floor(np.arange(self.num_frames) * step + _EPS).astype(np.int64)

    def _short_clip(self, num_video_frames: int, step: float) -> np.ndarray:
        if self.short_video == "error":
            raise VideoTooShortError(
                f"video has {num_video_frames} frames, one clip of {self.num_frames} frames every "
                f"{step:g} spans {(self.num_frames - 1) * step + 1:g}"
            )
        offsets = self._offsets(step)
        if self.short_video == "loop":
            return offsets % num_video_frames
        return np.minimum(offsets, num_video_frames - 1)

    def __call__(
        self, num_video_frames: int, fps: float | None = None, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Frame indices of this video's clips.

        Args:
            num_video_frames: frames in the video (``len(reader)``), at least 1.
            fps: the video's frame rate (needed when ``target_fps`` is set).
            rng: random generator for random samplers (seed it per sample for reproducibility).

        Returns:
            int64 array ``[num_clips, T]``, all values in ``[0, num_video_frames)``.
        """
        if num_video_frames < 1:
            raise ValueError(f"a video needs at least one frame, got num_video_frames={num_video_frames}")
        step = self.step(fps)
        max_start = (num_video_frames - 1) - (self.num_frames - 1) * step
        if max_start < -_EPS:
            clip = self._short_clip(num_video_frames, step)
            return np.tile(clip, (self.num_clips, 1))
        starts = self._starts(max(max_start, 0.0), rng)
        indices = np.floor(starts[:, None] + np.arange(self.num_frames)[None, :] * step + _EPS).astype(np.int64)
        # floor() with the epsilon can only overshoot by float error; keep the [0, n) contract exact.
        return np.clip(indices, 0, num_video_frames - 1)

    def _starts(self, max_start: float, rng: np.random.Generator | None) -> np.ndarray:
        raise NotImplementedError


@dataclass
class RandomClipSampler(ClipSampler):
    """Training sampler: ``num_clips`` clips with independent uniformly random integer start frames.

    ``same_start=True`` gives all ``num_clips`` clips one random start (repeated augmentation in the sense of
    Hoffer et al. / DeiT: the same frames, augmented independently), so the video is decoded for one clip
    only; the default draws a start per clip (MAE-ST's repeated sampling: different moments of the video).
    """

    same_start: bool = False

    def _starts(self, max_start: float, rng: np.random.Generator | None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        count = 1 if self.same_start else self.num_clips
        starts = rng.integers(0, math.floor(max_start + _EPS) + 1, size=count).astype(np.float64)
        return np.repeat(starts, self.num_clips) if self.same_start else starts


@dataclass
class UniformClipSampler(ClipSampler):
    """Test sampler: ``num_clips`` evenly spaced clips covering the first and the last frame.

    With one clip, the clip is centred. ``UniformClipSampler(num_clips=5)`` gives Hiera's 5 temporal views
    (combine with a 3-crop spatial transform for 5×3 views).
    """

    num_clips: int = 5

    def _starts(self, max_start: float, rng: np.random.Generator | None) -> np.ndarray:
        if self.num_clips == 1:
            return np.array([max_start / 2.0])
        return np.linspace(0.0, max_start, self.num_clips)


@dataclass
class SegmentClipSampler:
    """TSN-style sampling over the whole video (Something-Something v2 recipes): the video is cut into
    ``num_frames`` equal segments and one frame is taken from each.

    Training (``random=True``): a uniformly random frame per segment, independently for each of the
    ``num_clips`` clips. Testing: ``num_clips`` views, view ``v`` takes the frame at relative position
    ``(v + 0.5) / num_clips`` of every segment (one view: the segment centres). Works for any length: videos
    with fewer frames than segments repeat frames. Same call signature as :class:`ClipSampler` (``fps`` is
    ignored: segments follow the video's length, not time).
    """

    num_frames: int = 16
    random: bool = True
    num_clips: int = 1

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {self.num_clips}")

    def __call__(
        self, num_video_frames: int, fps: float | None = None, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """int64 ``[num_clips, num_frames]`` frame indices in ``[0, num_video_frames)``."""
        if num_video_frames < 1:
            raise ValueError(f"a video needs at least one frame, got num_video_frames={num_video_frames}")
        segment = num_video_frames / self.num_frames
        starts = np.arange(self.num_frames) * segment  # [T]
        if self.random:
            rng = rng if rng is not None else np.random.default_rng()
            positions = rng.random((self.num_clips, self.num_frames))
        else:
            positions = ((np.arange(self.num_clips) + 0.5) / self.num_clips)[:, None].repeat(self.num_frames, 1)
        indices = np.floor(starts[None, :] + positions * segment + _EPS).astype(np.int64)
        return np.clip(indices, 0, num_video_frames - 1)


@dataclass
class SlidingClipSampler(ClipSampler):
    """Every clip of a video at a fixed stride, in time order (feature extraction).

    Clip ``k`` starts at ``k · stride`` source frames: ``stride`` in source frames, or ``stride_seconds · fps``
    when ``stride_seconds`` is given (it needs the video's fps), default ``num_frames · step`` so that
    consecutive clips tile the time axis. Frame ``j`` of a clip starting at ``s`` is ``floor(s + j · step)``
    (the other samplers' convention). The number of clips follows the video's length (``num_clips`` is not
    used). ``tail`` decides what happens to the frames after the last clip that fits:

    * ``"drop"``: nothing, only clips that fit are returned;
    * ``"pad"``: clips keep starting every ``stride`` frames until every frame is covered; indices past the
      end repeat the last frame;
    * ``"align"``: one more clip, ending on the last frame.

    A video shorter than one clip gets one clip at frame 0 (``short_video``: clamp, loop or error; in
    ``pad`` mode every start inside the video gets its clip). A row's extent in time is ``[row[0],
    row[-1] + 1)``: the first sampled frame and one past the last.
    """

    target_fps: float | None = None
    stride: float | None = None
    stride_seconds: float | None = None
    tail: str = "drop"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("stride", "stride_seconds"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of {'seconds' if 'sec' in name else 'frames'}"
                                 f", got {value!r}")
        if self.tail not in TAIL_MODES:
            raise ValueError(f"tail must be one of {TAIL_MODES}, got {self.tail!r}")

    def stride_frames(self, fps: float | None) -> float:
        """Source frames between consecutive clip starts for a video at ``fps``."""
        if self.stride_seconds is not None:
            if fps is None or fps <= 0:
                raise ValueError("stride_seconds needs the video's frame rate, which is unknown for this file")
            return float(self.stride_seconds) * float(fps)
        return float(self.stride) if self.stride is not None else self.num_frames * self.step(fps)

    def __call__(
        self, num_video_frames: int, fps: float | None = None, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """int64 ``[num_clips, T]`` frame indices in ``[0, num_video_frames)``, clips in time order."""
        n = num_video_frames
        if n < 1:
            raise ValueError(f"a video needs at least one frame, got num_video_frames={n}")
        if self.target_fps is not None and (fps is None or fps <= 0) and n > 1:  # (one frame: no time axis)
            raise ValueError("target_fps needs the video's frame rate, which is unknown for this file")
        step, stride = self.step(fps), self.stride_frames(fps)
        offsets = np.arange(self.num_frames) * step

        def at(start: float) -> np.ndarray:
            return np.minimum(np.floor(start + offsets + _EPS).astype(np.int64), n - 1)

        last_full = (n - 1) - (self.num_frames - 1) * step  # the latest start whose clip fits
        limit = (n - 1 if self.tail == "pad" else last_full) + _EPS
        clips: list[np.ndarray] = []
        while len(clips) * stride <= limit:  # (k * stride, not a running sum: no drift over long videos)
            clips.append(at(len(clips) * stride))
        if not clips:  # shorter than one clip
            return self._short_clip(n, step)[None]
        if self.tail == "align" and clips[-1][-1] < n - 1:
            clips.append(at(max(last_full, 0.0)))
        return np.stack(clips)
