"""Video readers: frame-exactness of every backend (PyAV, torchcodec, decord) against a full sequential PyAV
decode, and clear errors."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import VIDEO_SPECS, VideoSpec, distinct_frames, reference_decode

import hiera_video.data.video_reader as video_reader
from hiera_video.data import VideoNotFoundError, VideoReadError, open_video, write_video
from hiera_video.data.reader_torchcodec import torchcodec_installed
from hiera_video.data.video_reader import (
    AUTO_ORDER,
    DecordVideoReader,
    PyAVVideoReader,
    TorchCodecVideoReader,
    short_side_size,
)

# torchcodec is an optional extra (it needs FFmpeg's shared libraries); CI installs both.
needs_torchcodec = pytest.mark.skipif(not torchcodec_installed(), reason="torchcodec or its FFmpeg libraries missing")
TORCHCODEC = pytest.param("torchcodec", marks=needs_torchcodec)
READERS = ("pyav", TORCHCODEC, "decord")  # the three backends
BACKENDS = (*READERS, "auto")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray, VideoSpec]]:
    folder = tmp_path_factory.mktemp("reader_videos")
    table = {}
    for spec in VIDEO_SPECS:
        path = spec.write(folder)
        table[spec.name] = (path, reference_decode(path), spec)
    return table


def _index_lists(num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sorted, unsorted, reversed, duplicated, clip-like (16x4 with clamping) and single-frame requests."""
    lists = [
        np.arange(num_frames),
        np.arange(num_frames)[::-1].copy(),
        np.array([num_frames - 1, 0, num_frames // 2, 0, num_frames - 1]),
        np.minimum(np.arange(16) * 4 + int(rng.integers(0, max(1, num_frames - 60))), num_frames - 1),
        np.array([num_frames - 1]),
    ]
    for _ in range(12):
        lists.append(rng.integers(0, num_frames, size=int(rng.integers(1, 24))))
    return lists


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [spec.name for spec in VIDEO_SPECS])
def test_frames_match_full_pyav_decode(videos, name: str, backend: str) -> None:
    path, reference, spec = videos[name]
    rng = np.random.default_rng(len(name))
    with open_video(path, backend=backend) as reader:
        assert len(reader) == len(reference) == spec.num_frames
        assert reader.fps == pytest.approx(spec.fps)
        assert reader.duration == pytest.approx(spec.num_frames / spec.fps)
        assert (reader.height, reader.width) == reference.shape[1:3]
        # One reader serves many requests (its decoder position carries over between them).
        for indices in _index_lists(len(reference), rng):
            frames = reader.get_frames(indices)
            assert frames.dtype == torch.uint8
            assert frames.shape == (len(indices), *reference.shape[1:])
            assert np.array_equal(frames.numpy(), reference[indices]), (name, backend, indices.tolist())


@pytest.mark.parametrize("backend", READERS)
def test_get_clips_reads_the_union_once_and_returns_views(videos, backend: str) -> None:
    path, reference, _ = videos["h264_gop12_b2_30fps"]
    last = len(reference) - 1
    requests = {
        "overlapping, evenly spaced": np.array([[0, 4, 8, 12], [2, 6, 10, 14], [8, 10, 12, 14]]),
        "identical (repeated augmentation)": np.array([[3, 5, 7, 9], [3, 5, 7, 9]]),
        "clamped short clip": np.array([[last - 2, last, last, last]]),
        "irregular": np.array([[5, 1, 9, 9], [0, 2, 3, 7]]),
    }
    for name, indices in requests.items():
        calls = []
        with open_video(path, backend=backend) as reader:
            original = reader.get_frames

            def recording(i, original=original, calls=calls):  # noqa: ANN001, ANN202
                calls.append(np.asarray(i).copy())
                return original(i)

            reader.get_frames = recording
            clips = reader.get_clips(torch.from_numpy(indices))
        assert len(calls) == 1 and np.array_equal(calls[0], np.unique(indices)), name  # one sorted read
        assert len(clips) == len(indices)
        for clip, row in zip(clips, indices):
            assert np.array_equal(clip.numpy(), reference[row]), (name, row.tolist())
        storage = {clip.untyped_storage().data_ptr() for clip in clips}
        assert len(storage) == (len(indices) if name == "irregular" else 1), name  # views unless irregular
    with open_video(path, backend=backend) as reader, pytest.raises(ValueError, match=r"\[K, T\]"):
        reader.get_clips(np.arange(4))


@pytest.mark.parametrize("name", ["h264_gop12_b2_30fps", "vp9_webm_25fps"])
def test_fresh_reader_per_request(videos, name: str) -> None:
    """The dataset's pattern: open, read one clip, close."""
    path, reference, _ = videos[name]
    rng = np.random.default_rng(0)
    for backend in ["pyav", "decord", "auto"] + (["torchcodec"] if torchcodec_installed() else []):
        for _ in range(5):
            indices = np.sort(rng.integers(0, len(reference), size=8))
            with open_video(path, backend=backend) as reader:
                assert np.array_equal(reader.get_frames(indices.tolist()).numpy(), reference[indices])


def test_auto_backend_choice(videos, monkeypatch: pytest.MonkeyPatch) -> None:
    # The order measured in BENCHMARKS_DATA.md: PyAV (reference decoder, damage flags for free), torchcodec, decord.
    assert AUTO_ORDER == ("pyav", "torchcodec", "decord")
    path, reference, _ = videos["h264_gop5_b3_25fps"]
    with open_video(path) as reader:
        assert isinstance(reader, PyAVVideoReader)
    for missing, expected in ((("pyav",), TorchCodecVideoReader), (("pyav", "torchcodec"), DecordVideoReader)):
        if expected is TorchCodecVideoReader and not torchcodec_installed():
            continue
        monkeypatch.setattr(video_reader, "_installed", lambda name, missing=missing: name not in missing)
        with open_video(path) as reader:
            assert isinstance(reader, expected)
            assert np.array_equal(reader.get_frames([7, 3]).numpy(), reference[[7, 3]])
    monkeypatch.setattr(video_reader, "_installed", lambda name: False)
    with pytest.raises(ImportError, match="no video backend"):
        open_video(path)


def test_decord_on_files_it_cannot_seek(videos) -> None:
    # decord would return wrong frames after seeks in this file: it reads it sequentially (slower, exact)...
    path, reference, _ = videos["mpeg4_bframes"]
    with open_video(path, backend="decord") as reader:
        assert isinstance(reader, DecordVideoReader) and reader._sequential_only
        assert np.array_equal(reader.get_frames([33, 5, 21]).numpy(), reference[[33, 5, 21]])
    # ... or refuses it when asked to.
    with pytest.raises(VideoReadError, match="cannot seek exactly"):
        DecordVideoReader(path, unsafe="raise")


def test_missing_backend_is_named(videos, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_reader, "_installed", lambda name: name != "torchcodec")
    with pytest.raises(ImportError, match=r"torchcodec.*ffmpeg"):
        open_video(videos["h264_gop5_b3_25fps"][0], backend="torchcodec")


@pytest.mark.parametrize("ffmpeg_major_version", [None, 7])
def test_torchcodec_without_ffmpeg_libraries_is_not_installed(monkeypatch: pytest.MonkeyPatch,
                                                              ffmpeg_major_version) -> None:
    # torchcodec 0.17 imports without FFmpeg's libraries and records it as ffmpeg_major_version = None
    # (its VideoDecoder raises later): that must read as "not installed", so the backend is named as
    # missing instead of failing on every video.
    import importlib.machinery
    import sys
    import types

    import hiera_video.data.reader_torchcodec as rtc

    fake = types.ModuleType("torchcodec")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchcodec", None)
    fake.__path__ = []
    fake.ffmpeg_major_version = ffmpeg_major_version
    decoders = types.ModuleType("torchcodec.decoders")
    fake.decoders = decoders
    monkeypatch.setitem(sys.modules, "torchcodec", fake)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    monkeypatch.setattr(rtc.importlib.util, "find_spec", lambda name: fake.__spec__)
    rtc.torchcodec_installed.cache_clear()
    try:
        assert rtc.torchcodec_installed() is (ffmpeg_major_version is not None)
    finally:
        rtc.torchcodec_installed.cache_clear()


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_side_resize(videos, backend: str) -> None:
    path, reference, _ = videos["h264_gop12_b2_30fps"]
    with open_video(path, backend=backend, short_side=32) as reader:
        frames = reader.get_frames([0, 10, 74])
    assert frames.shape == (3, 32, 43, 3)  # 48x64 -> short side 32, long side round(64 * 32 / 48)
    assert short_side_size(64, 48, 32) == (43, 32)
    with open_video(path, backend="pyav", short_side=32) as reader:
        pyav_frames = reader.get_frames([0, 10, 74]).numpy().astype(np.int32)
    # The backends' scalers differ (decord's filter graph, torchcodec's in-decoder Resize and PyAV's bilinear
    # libswscale reformat): resized frames
    # agree on average, not bitwise (full-resolution frames are bitwise equal, tested above). On these noisy,
    # sharp-edged test frames the measured mean difference is about 2.6 levels.
    difference = np.abs(frames.numpy().astype(np.int32) - pyav_frames)
    assert difference.mean() < 5.0
    if backend in ("pyav", "auto"):
        assert difference.max() == 0


def test_errors_name_the_file(tmp_path: Path, videos) -> None:
    missing = tmp_path / "missing.mp4"
    backends = ["pyav", "decord", "auto"] + (["torchcodec"] if torchcodec_installed() else [])
    for backend in backends:
        with pytest.raises(VideoNotFoundError, match="missing.mp4"):
            open_video(missing, backend=backend)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError
        open_video(missing)

    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"this is not a video " * 100)
    for backend in backends:
        with pytest.raises(VideoReadError, match="notes.mp4"):
            open_video(not_video, backend=backend)

    path, reference, _ = videos["h264_gop5_b3_25fps"]
    with open_video(path) as reader:
        with pytest.raises(IndexError, match=r"out of range \[0, 60\).*h264_gop5_b3_25fps"):
            reader.get_frames([0, 60])
        with pytest.raises(IndexError):
            reader.get_frames([-1])
        with pytest.raises(TypeError):
            reader.get_frames([0.5])
        assert reader.get_frames([]).shape == (0, 48, 64, 3)
    with pytest.raises(ValueError, match="backend"):
        open_video(path, backend="opencv")


def _faststart_video(path: Path, num_frames: int = 60) -> bytes:
    """An MP4 with its index first (so a truncated copy still opens and fails while decoding)."""
    import av

    frames = distinct_frames(num_frames)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30, options={"x264-params": "keyint=10"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.read_bytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_and_truncated_files_raise(tmp_path: Path, backend: str) -> None:
    data = _faststart_video(tmp_path / "good.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 6 // 10])
    garbage = bytearray(data)
    middle = len(data) // 2
    garbage[middle : middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(garbage))
    for path in (truncated, corrupt):
        # Raise (at open or at read), never hand back silently repeated frames.
        with pytest.raises(VideoReadError, match=path.name):
            with open_video(path, backend=backend) as reader:
                reader.get_frames(range(len(reader)))


def _use_in_child(reader, queue) -> None:  # runs in a forked process
    try:
        reader.get_frames([0])
        queue.put("read")
    except VideoReadError as error:
        queue.put(f"error: {error}")


@pytest.mark.parametrize("backend", READERS)
def test_reader_is_not_shared_across_processes(videos, backend: str) -> None:
    path = videos["h264_gop12_b2_30fps"][0]
    with open_video(path, backend=backend) as reader:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(reader)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_use_in_child, args=(reader, queue))
        child.start()
        message = queue.get(timeout=60)
        child.join(timeout=60)
        assert message.startswith("error") and "another process" in message
        assert reader.get_frames([1]).shape[0] == 1  # still fine in the owner


def test_reader_closed(videos) -> None:
    path = videos["h264_intra_30fps"][0]
    for backend in ["pyav", "decord"] + (["torchcodec"] if torchcodec_installed() else []):
        reader = open_video(path, backend=backend)
        reader.close()
        reader.close()  # idempotent
        with pytest.raises(VideoReadError, match="closed"):
            reader.get_frames([0])


def test_video_with_audio_track(tmp_path: Path) -> None:
    """Kinetics files carry audio: the reader must ignore the other streams."""
    import av

    frames = distinct_frames(30)
    path = tmp_path / "with_audio.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        samples_per_frame = 1024
        for index in range(30):
            frame = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
            chunk = np.zeros((1, samples_per_frame), dtype=np.float32)
            audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            audio_frame.sample_rate = 16000
            audio_frame.pts = index * samples_per_frame
            for packet in audio.encode(audio_frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    reference = reference_decode(path)
    for backend in ["pyav", "decord", "auto"] + (["torchcodec"] if torchcodec_installed() else []):
        with open_video(path, backend=backend) as reader:
            assert len(reader) == 30
            assert np.array_equal(reader.get_frames([29, 0, 14]).numpy(), reference[[29, 0, 14]])


def test_write_video_validates_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 47, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", np.zeros((2, 48, 64, 3), np.float32))
    with pytest.raises(ValueError, match="codec"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 48, 64, 3), np.uint8), codec="hevc")
