"""Helpers shared by the data-layer tests (tests/test_data_*.py): test videos and a reference decoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from hiera_video.data.synthetic import write_video


def reference_decode(path: str | Path, threads: int | None = None) -> np.ndarray:
    """Every frame of ``path`` from a full sequential PyAV decode, ``uint8 [N, H, W, 3]`` — the ground truth.

    ``threads``: decoder threads (default FFmpeg's choice). Intact files decode the same with any count;
    FFmpeg's concealment of damaged data depends on it (the readers use 1).
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads is not None:
            stream.codec_context.thread_count = threads
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])


def distinct_frames(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Frames that stay distinguishable after lossy coding: a scrolling gradient, a moving block and noise.

    Every frame differs from every other, so a reader returning a neighbouring frame fails bitwise tests.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        base = ((x * 3 + y * 2 + t * 7) % 256).astype(np.float64)
        frame = np.stack([base, np.roll(base, t, axis=1), 255 - base], axis=-1)
        frame += rng.normal(0, 12, size=frame.shape)
        top, left = (t * 3) % (height - 8), (t * 5) % (width - 8)
        frame[top : top + 8, left : left + 8] = (255, (t * 37) % 256, 0)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


@dataclass(frozen=True)
class VideoSpec:
    """A test video: ``name`` (also the pytest id), frame count, fps, codec and GOP structure."""

    name: str
    num_frames: int
    fps: float = 30
    codec: str = "h264"
    gop_size: int = 12
    max_b_frames: int = 2
    x264_params: str | None = None

    @property
    def extension(self) -> str:
        return ".webm" if self.codec == "vp9" else ".mp4"

    def write(self, folder: Path, height: int = 48, width: int = 64) -> Path:
        path = folder / f"{self.name}{self.extension}"
        options = {"x264-params": self.x264_params} if self.x264_params else None
        write_video(
            path,
            distinct_frames(self.num_frames, height, width, seed=self.num_frames),
            fps=self.fps,
            codec=self.codec,
            gop_size=self.gop_size,
            max_b_frames=self.max_b_frames,
            options=options,
        )
        return path


# Covers: all-intra, short GOPs with many B-frames, 25 and 30 fps, one GOP for the whole video, a video
# shorter than one 16x4 clip, an open-GOP H.264 file, VP9/WebM (no frame count in the container) and an
# MPEG-4 Part 2 file whose key frames are out of place in decode order (decord cannot seek it exactly).
VIDEO_SPECS: tuple[VideoSpec, ...] = (
    VideoSpec("h264_intra_30fps", 40, fps=30, gop_size=1, max_b_frames=0),
    VideoSpec("h264_gop5_b3_25fps", 60, fps=25, gop_size=5, max_b_frames=3),
    VideoSpec("h264_gop12_b2_30fps", 75, fps=30, gop_size=12, max_b_frames=2),
    VideoSpec("h264_single_gop", 50, fps=30, gop_size=250, max_b_frames=2),
    VideoSpec("h264_shorter_than_clip", 12, fps=30, gop_size=8, max_b_frames=2),
    VideoSpec("h264_open_gop", 50, fps=30, gop_size=8, max_b_frames=3, x264_params="open-gop=1"),
    VideoSpec("vp9_webm_25fps", 45, fps=25, codec="vp9", gop_size=10),
    VideoSpec("mpeg4_bframes", 40, fps=30, codec="mpeg4", gop_size=4, max_b_frames=1),
)


def ffmpeg_exe() -> str:
    """The static ffmpeg binary of imageio-ffmpeg (a dev dependency): makes rotated / anamorphic copies."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_copy(source: Path, destination: Path, input_options: list[str], output_options: list[str]) -> Path:
    """``ffmpeg [input_options] -i source -c copy [output_options] destination`` (stream copy: same pixels)."""
    import subprocess

    command = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *input_options, "-i", str(source),
               "-c", "copy", *output_options, str(destination)]
    subprocess.run(command, check=True, capture_output=True)
    return destination


def rotated_copy(source: Path, destination: Path, degrees: int) -> Path:
    """A copy whose display matrix says: turn ``degrees`` counter-clockwise for display."""
    return ffmpeg_copy(source, destination, ["-display_rotation", str(degrees)], [])


def anamorphic_copy(source: Path, destination: Path, sar: str) -> Path:
    """A copy of an H.264 file whose pixels are ``sar`` (e.g. ``"2/1"``) wide (written into the SPS)."""
    return ffmpeg_copy(source, destination, [], ["-bsf:v", f"h264_metadata=sample_aspect_ratio={sar}"])


def damaged_copy(source: Path, destination: Path, seed: int, fraction: float = 0.3, size: int = 64) -> Path:
    """A copy with ``size`` random bytes written at ``fraction`` of its length."""
    data = bytearray(source.read_bytes())
    position = int(len(data) * fraction)
    data[position : position + size] = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    destination.write_bytes(bytes(data))
    return destination


def ffmpeg_reports_errors(path: Path) -> bool:
    """The static ffmpeg binary logs decoding errors for ``path`` (an oracle independent of our readers)."""
    import subprocess

    completed = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                               capture_output=True, text=True)
    return bool(completed.stderr.strip())
