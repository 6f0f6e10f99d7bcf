"""Synthetic datasets (deterministic, labelled by motion) and the dataset preparation tool."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from data_fixtures import reference_decode

from hiera_video.data import (
    MOTION_CLASSES,
    VideoReadError,
    make_image_dataset,
    make_motion_dataset,
    make_motion_frames,
    open_video,
    read_list_file,
)
from hiera_video.data.prepare import EncodeSettings, main, prepare_dataset, reencode_video

REPO = Path(__file__).resolve().parent.parent


def _bright_centroid(frame: np.ndarray) -> np.ndarray:
    mask = frame.min(axis=-1) >= 150  # the square's colours are all >= 170, the background < 150
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()])


def test_motion_dataset_is_labelled_by_motion_and_deterministic(tmp_path: Path) -> None:
    start = time.perf_counter()
    splits = make_motion_dataset(tmp_path / "a", num_videos_per_class={"train": 20, "val": 5}, seed=1)
    assert time.perf_counter() - start < 30  # "a few seconds" for 100 small videos on a quiet machine
    assert splits.classes == list(MOTION_CLASSES)
    records = read_list_file(splits.paths["train"])
    assert len(records) == 80 and len(read_list_file(splits.paths["val"])) == 20
    assert [r.label for r in records[:21]] == [0] * 20 + [1]
    assert (tmp_path / "a" / "classes.txt").read_text().split() == list(MOTION_CLASSES)
    expected_motion = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}
    for record in records[::7]:
        frames = reference_decode(record.path)
        assert frames.shape == (16, 48, 64, 3)
        displacement = _bright_centroid(frames[-1]) - _bright_centroid(frames[0])
        direction = np.sign(np.round(displacement / 4)).astype(int)
        assert tuple(direction) == expected_motion[record.label], record.path
    # Same seed, same videos (bitwise); another seed, other videos.
    again = make_motion_dataset(tmp_path / "b", num_videos_per_class=1, seed=1, splits=("train",))
    other = make_motion_dataset(tmp_path / "c", num_videos_per_class=1, seed=2, splits=("train",))
    first = reference_decode(read_list_file(again.paths["train"])[0].path)
    assert np.array_equal(first, reference_decode(records[0].path))
    assert not np.array_equal(first, reference_decode(read_list_file(other.paths["train"])[0].path))


_GENERATE = """
import hashlib, sys
from pathlib import Path
from hiera_video.data import make_motion_dataset
from hiera_video.data.synthetic import COMPASS_CLASSES
root = Path(sys.argv[1])
make_motion_dataset(root, num_videos_per_class=16, num_frames=32, size=(32, 32), wrap=True, splits=("train",),
                    classes=COMPASS_CLASSES)
print(" ".join(hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.mp4"))))
"""


def test_generated_videos_are_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    """The demo's data (and every fixture) must not depend on the process that wrote it. With x264's mbtree
    on, the same frames encoded to different bytes from process to process for 10-14 of these 128 videos
    (decoded pixels off by up to 47), so the demo's accuracy changed from run to run."""
    runs = [subprocess.run([sys.executable, "-c", _GENERATE, str(tmp_path / str(i))], capture_output=True,
                           text=True, check=True, timeout=300).stdout.split() for i in range(2)]
    assert len(runs[0]) == 8 * 16 and runs[0] == runs[1]


def test_single_frame_does_not_reveal_the_label() -> None:
    """Start positions are random: a square at any position can be moving any way."""
    positions = {name: [] for name in ("left", "right")}
    for seed in range(40):
        for name in positions:
            frames = make_motion_frames(name, rng=np.random.default_rng(seed))
            positions[name].append(_bright_centroid(frames[8])[1])
    assert abs(np.mean(positions["left"]) - np.mean(positions["right"])) < 8


def test_vp9_motion_dataset_and_images(tmp_path: Path) -> None:
    splits = make_motion_dataset(tmp_path, num_videos_per_class=1, codec="vp9", splits=("train",), num_frames=10)
    record = read_list_file(splits.paths["train"])[0]
    assert record.path.endswith(".webm")
    with open_video(record.path) as reader:
        assert len(reader) == 10
    images = make_image_dataset(tmp_path / "img", num_images_per_class={"train": 2, "val": 1}, size=(24, 24))
    assert sorted(p.name for p in images.paths["train"].iterdir()) == ["circle", "square", "triangle"]
    assert len(list(images.paths["val"].rglob("*.png"))) == 3


def test_prepare_verifies_reencodes_and_writes_the_list(tmp_path: Path) -> None:
    source = tmp_path / "source"
    splits = make_motion_dataset(source, num_videos_per_class=2, num_frames=30, size=(48, 64), gop_size=30)
    records = read_list_file(splits.paths["train"])
    broken = source / "train" / "left" / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 50)
    records.append(type(records[0])(str(broken), 0))

    result = prepare_dataset(
        records,
        tmp_path / "out" / "train.txt",
        reencode_dir=tmp_path / "out" / "videos",
        source_root=source,
        settings=EncodeSettings(short_side=32, gop_size=4, use_ffmpeg=False),
        workers=2,
        progress=False,
    )
    assert len(result.records) == 8 and [Path(c.source).name for c in result.failed] == ["broken.mp4"]
    assert "broken.mp4" in result.failed_file.read_text()
    listed = read_list_file(result.list_file)
    assert listed == result.records
    assert all(r.num_frames == 30 and r.fps == pytest.approx(30) for r in listed)
    assert listed[0].path == str(tmp_path / "out" / "videos" / "train" / "left" / "left_00000.mp4")
    with av.open(listed[0].path) as container:
        assert len(container.streams) == 1  # no audio
        stream = container.streams.video[0]
        assert (stream.codec_context.height, stream.codec_context.width) == (32, 42)
        keyframes = [i for i, packet in enumerate(container.demux(stream)) if packet.is_keyframe]
    assert keyframes[:4] == [0, 4, 8, 12]  # short GOPs

    # Verification only (no re-encoding), in-process.
    verified = prepare_dataset(records[:2], tmp_path / "verified.txt", workers=0, progress=False)
    assert [r.path for r in verified.records] == [r.path for r in records[:2]]


def test_prepare_bar_updates_rarely_into_a_log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prepare > log``: the bar's updates are appended to the file, so there it uses the package's rare
    updates (`hiera_video.progress_bars`), not tqdm's 10 a second: first and final state only."""
    splits = make_motion_dataset(tmp_path / "src", num_videos_per_class=2, splits=("train",), num_frames=8)
    records = read_list_file(splits.paths["train"]) * 6  # 48 checks
    slow = prepare_dataset.__globals__["_check_one"]

    def check(task):
        time.sleep(0.01)  # a live bar would print ~5 updates over these 0.5 s
        return slow(task)

    monkeypatch.setattr("hiera_video.data.prepare._check_one", check)
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    with open(tmp_path / "log.txt", "w") as f, monkeypatch.context() as mp:
        mp.setattr(sys, "stderr", f)
        result = prepare_dataset(records, tmp_path / "list.txt", workers=0, progress=True)
    assert len(result.records) == 48
    raw = (tmp_path / "log.txt").read_bytes()
    assert b"48/48" in raw and raw.count(b"\r") <= 3, raw[:500]


def test_reencode_never_upscales_by_default(tmp_path: Path) -> None:
    splits = make_motion_dataset(tmp_path, num_videos_per_class=1, splits=("train",), num_frames=8)
    source = read_list_file(splits.paths["train"])[0].path
    output = reencode_video(source, tmp_path / "same.mp4", EncodeSettings(short_side=320, use_ffmpeg=False))
    with open_video(output) as reader:
        assert (reader.height, reader.width, len(reader)) == (48, 64, 8)


def test_prepare_command_line(tmp_path: Path) -> None:
    splits = make_motion_dataset(tmp_path / "data", num_videos_per_class=1, splits=("train",), num_frames=8)
    output = tmp_path / "verified.txt"
    assert main(["list", str(splits.paths["train"]), "--output", str(output), "--workers", "0", "--quiet"]) == 0
    assert len(read_list_file(output)) == 4
    # The script in datasets/ runs from a checkout.
    completed = subprocess.run(
        [sys.executable, str(REPO / "datasets" / "prepare.py"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert completed.returncode == 0 and "verified list" in completed.stdout


def test_reencode_with_the_ffmpeg_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ffmpeg branch (used when ffmpeg is on PATH), run with the static binary from imageio-ffmpeg."""
    import imageio_ffmpeg

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    splits = make_motion_dataset(tmp_path / "data", num_videos_per_class=1, splits=("train",), num_frames=20)
    source = read_list_file(splits.paths["train"])[0].path
    for short_side, expected in ((32, (32, 42)), (320, (48, 64))):  # down to 32; never upscaled by default
        output = reencode_video(source, tmp_path / f"ffmpeg_{short_side}.mp4", EncodeSettings(short_side, gop_size=4))
        with av.open(str(output)) as container:
            assert len(container.streams) == 1  # no audio
            stream = container.streams.video[0]
            assert (stream.codec_context.height, stream.codec_context.width) == expected
            assert stream.codec_context.name == "h264"
            keyframes = [i for i, packet in enumerate(container.demux(stream)) if packet.is_keyframe]
        assert keyframes[:4] == [0, 4, 8, 12]
        with open_video(output) as reader:
            assert len(reader) == 20 and reader.fps == pytest.approx(30)
    with pytest.raises(VideoReadError, match="ffmpeg failed"):
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"not a video" * 20)
        reencode_video(broken, tmp_path / "never.mp4", EncodeSettings(use_ffmpeg=True))
    assert not (tmp_path / "never.mp4").exists() and not (tmp_path / "never.partial.mp4").exists()


def test_turn_clips_differ_only_in_the_order_of_their_motions() -> None:
    """The demo's task: a square moves one way, then turns. Every frame of every class has the same
    distribution (uniform position on a torus), and ``right_then_up`` / ``up_then_right`` hold the same
    motions, so neither one frame nor a bag of frame-to-frame motions tells the classes apart."""
    from hiera_video.data.synthetic import TURN_CLASSES, make_turn_frames

    def motions(name: str, seed: int) -> list[tuple[int, int]]:
        """Per frame pair, the sign of the cyclic shift that best maps the square onto the next frame's."""
        masks = make_turn_frames(name, rng=np.random.default_rng(seed)).min(axis=-1) >= 150
        shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
        best = [max(shifts, key=lambda s: (np.roll(a, s, axis=(0, 1)) & b).sum()) for a, b in zip(masks, masks[1:])]
        return [tuple(int(v) for v in np.sign(s)) for s in best]

    unit = {"right": (0, 1), "left": (0, -1), "up": (-1, 0), "down": (1, 0)}
    for name in TURN_CLASSES:
        first, second = (unit[d] for d in name.split("_then_"))
        for seed in range(4):
            seen = motions(name, seed)
            assert seen[0] == first and seen[-1] == second, (name, seed, seen)
            assert set(seen) == {first, second}
    # Any single frame: the square's position has the same distribution in every class.
    means = np.stack([
        np.mean([_bright_centroid(make_turn_frames(name, rng=np.random.default_rng(s))[4]) for s in range(80)], 0)
        for name in TURN_CLASSES
    ])
    assert np.abs(means - means.mean(0)).max() < 3  # pixels, in a 32x32 frame (uniform: mean 15.5, sd 9)
    assert np.array_equal(make_turn_frames("up_then_right", rng=np.random.default_rng(3)),
                          make_turn_frames("up_then_right", rng=np.random.default_rng(3)))
    with pytest.raises(ValueError, match="unknown turn class"):
        make_turn_frames("sideways_then_up")
