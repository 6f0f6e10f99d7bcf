"""Clip samplers: property tests (hypothesis) for ranges, counts, spacing, coverage and short videos."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hiera_video.data import (
    RandomClipSampler,
    SegmentClipSampler,
    UniformClipSampler,
    VideoTooShortError,
    clip_step,
)

geometry = st.fixed_dictionaries(
    {
        "num_frames": st.integers(1, 32),
        "sampling_rate": st.one_of(st.integers(1, 16), st.floats(0.25, 16.0)),
        "target_fps": st.one_of(st.none(), st.sampled_from([30.0, 24.0, 15.0])),
        "num_clips": st.integers(1, 6),
    }
)
video_length = st.integers(1, 3000)
video_fps = st.one_of(st.sampled_from([25.0, 30.0, 60.0, 29.97, 23.976, 12.0]), st.floats(1.0, 120.0))
sampler_kinds = st.sampled_from([RandomClipSampler, UniformClipSampler])
SETTINGS = settings(max_examples=150, deadline=None)


def _is_short(num_video_frames: int, step: float, num_frames: int) -> bool:
    return (num_frames - 1) * step > num_video_frames - 1 + 1e-6


@SETTINGS
@given(geometry, video_length, video_fps, sampler_kinds, st.integers(0, 2**32 - 1))
def test_indices_in_range_with_right_count_and_spacing(params, length, fps, kind, seed) -> None:
    for short_video in ("clamp", "loop"):
        sampler = kind(**params, short_video=short_video)
        indices = sampler(length, fps, np.random.default_rng(seed))
        assert indices.shape == (params["num_clips"], params["num_frames"])
        assert indices.dtype == np.int64
        assert indices.min() >= 0 and indices.max() < length
        step = clip_step(params["sampling_rate"], fps, params["target_fps"])
        differences = np.diff(indices, axis=1)
        if not _is_short(length, step, params["num_frames"]):
            # Floor of a fractional stride: every gap is floor(step) or ceil(step).
            assert np.all((differences >= math.floor(step)) & (differences <= math.ceil(step)))
        elif short_video == "clamp":
            assert np.all(indices[:, 0] == 0)
            assert np.all(differences >= 0)
            assert np.all(indices[:, -1] == length - 1) or step < 1
        else:  # loop wraps to the start
            offsets = np.floor(np.arange(params["num_frames"]) * step + 1e-6).astype(np.int64)
            assert np.array_equal(indices[0], offsets % length)


@SETTINGS
@given(geometry, video_length, video_fps)
def test_uniform_views_cover_first_and_last_frame(params, length, fps) -> None:
    sampler = UniformClipSampler(**params)
    step = sampler.step(fps)
    indices = sampler(length, fps)
    if _is_short(length, step, params["num_frames"]):
        return
    if params["num_clips"] >= 2:
        assert indices[0, 0] == 0
        assert indices[-1, -1] == length - 1
        starts = indices[:, 0]
        assert np.all(np.diff(starts) >= 0)
        # Evenly spaced: start gaps differ by at most one frame (rounding).
        gaps = np.diff(starts)
        assert gaps.max() - gaps.min() <= 1
    else:  # one clip is centred: margins before and after differ by at most one frame
        before, after = indices[0, 0], length - 1 - indices[0, -1]
        assert abs(int(before) - int(after)) <= 1 + math.ceil(step)


@SETTINGS
@given(geometry, video_length, video_fps, st.integers(0, 2**32 - 1))
def test_random_sampler_is_deterministic_for_a_seed(params, length, fps, seed) -> None:
    sampler = RandomClipSampler(**params)
    first = sampler(length, fps, np.random.default_rng(seed))
    second = sampler(length, fps, np.random.default_rng(seed))
    assert np.array_equal(first, second)


@SETTINGS
@given(geometry, video_length, video_fps)
def test_short_video_error_mode(params, length, fps) -> None:
    sampler = UniformClipSampler(**params, short_video="error")
    if _is_short(length, sampler.step(fps), params["num_frames"]):
        with pytest.raises(VideoTooShortError, match=f"{length} frames"):
            sampler(length, fps)
    else:
        assert sampler(length, fps).shape == (params["num_clips"], params["num_frames"])


@SETTINGS
@given(st.integers(2, 32), st.integers(1, 8), st.sampled_from([25.0, 30.0, 50.0, 60.0]))
def test_target_fps_makes_clip_duration_fps_independent(num_frames, sampling_rate, fps) -> None:
    """With target_fps the clip covers (T - 1)·τ / target_fps seconds whatever the video's fps."""
    sampler = UniformClipSampler(num_frames=num_frames, sampling_rate=sampling_rate, target_fps=30.0, num_clips=1)
    length = int(fps * 60)  # a minute: never short
    indices = sampler(length, fps)[0]
    seconds = (indices[-1] - indices[0]) / fps
    expected = (num_frames - 1) * sampling_rate / 30.0
    assert abs(seconds - expected) <= 1.0 / fps + 1e-9


def test_hiera_defaults_and_examples() -> None:
    sampler = RandomClipSampler()
    assert (sampler.num_frames, sampler.sampling_rate, sampler.target_fps) == (16, 4, 30.0)
    assert sampler.span(30.0) == 61
    # 25 fps: step 4 * 25 / 30 = 3.33 frames.
    indices = UniformClipSampler(num_clips=1)(300, 25.0)[0]
    assert set(np.diff(indices).tolist()) <= {3, 4}
    # Kinetics test views: 5 clips, first at 0, last ending on the last frame.
    views = UniformClipSampler(num_clips=5, target_fps=None)(300, 30.0)
    assert views[0, 0] == 0 and views[-1, -1] == 299 and views.shape == (5, 16)
    # Repeated augmentation: K independent clips.
    clips = RandomClipSampler(num_clips=2, target_fps=None)(300, 30.0, np.random.default_rng(1))
    assert clips.shape == (2, 16) and not np.array_equal(clips[0], clips[1])
    same = RandomClipSampler(num_clips=3, same_start=True)(300, 30.0, np.random.default_rng(1))
    assert np.array_equal(same[0], same[1]) and np.array_equal(same[0], same[2])
    # Short video, clamp: repeat the last frame.
    short = RandomClipSampler(num_frames=4, sampling_rate=4, target_fps=None)(6, 30.0)
    assert short.tolist() == [[0, 4, 5, 5]]
    loop = RandomClipSampler(num_frames=4, sampling_rate=4, target_fps=None, short_video="loop")(6, 30.0)
    assert loop.tolist() == [[0, 4, 2, 0]]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        RandomClipSampler(num_frames=0)
    with pytest.raises(ValueError, match="sampling_rate"):
        RandomClipSampler(sampling_rate=0)
    with pytest.raises(ValueError, match="short_video"):
        RandomClipSampler(short_video="pad")
    with pytest.raises(ValueError, match="num_clips"):
        UniformClipSampler(num_clips=0)
    with pytest.raises(ValueError, match="target_fps"):
        UniformClipSampler(target_fps=0)
    with pytest.raises(ValueError, match="at least one frame"):
        RandomClipSampler()(0, 30.0)
    # Unknown fps (0) falls back to source-frame strides.
    assert RandomClipSampler(target_fps=30.0).step(0.0) == 4.0


@SETTINGS
@given(st.integers(1, 32), st.integers(1, 4), video_length, st.booleans(), st.integers(0, 2**32 - 1))
def test_segment_sampler(num_frames, num_clips, length, random, seed) -> None:
    sampler = SegmentClipSampler(num_frames=num_frames, random=random, num_clips=num_clips)
    indices = sampler(length, 12.0, np.random.default_rng(seed))
    assert indices.shape == (num_clips, num_frames)
    assert indices.min() >= 0 and indices.max() < length
    assert np.all(np.diff(indices, axis=1) >= 0)
    segment = length / num_frames
    # Frame i comes from segment i: [i * segment, (i + 1) * segment).
    lower = np.floor(np.arange(num_frames) * segment + 1e-6)
    upper = np.ceil((np.arange(num_frames) + 1) * segment)
    assert np.all(indices >= lower) and np.all(indices <= np.minimum(upper, length - 1))
    if not random and num_clips == 1 and length >= num_frames:
        centres = np.floor((np.arange(num_frames) + 0.5) * segment + 1e-6)
        assert np.array_equal(indices[0], centres.astype(np.int64))
