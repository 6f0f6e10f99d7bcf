"""Scan a video dataset, verify that every video decodes, optionally re-encode it, write a verified list file.

Usable as a module (``from hiera_video.data.prepare import prepare_dataset``), as
``python -m hiera_video.data.prepare`` or as ``python datasets/prepare.py`` (same CLI)::

    # verify a class-per-folder tree and write root/train_verified.txt
    python datasets/prepare.py folder /data/mydata/train --output /data/mydata/train_verified.txt

    # Kinetics-400 validation: re-encode to short side 320, GOP 16, no audio, 8 processes
    python datasets/prepare.py kinetics /data/k400/annotations/val.csv --root /data/k400 \\
        --output /data/k400_320/val.txt --reencode-dir /data/k400_320/val --short-side 320 --workers 8

What it does, per video, in a process pool with a progress bar:

1. (optional) re-encode: scale so the short side is ``--short-side`` (downscale only unless ``--upscale``;
   even dimensions), H.264 yuv420p, constant frame rate (the source's average rate, or ``--fps``), key frame
   every ``--gop`` frames (cheap seeks for random clips), no audio. Uses ``ffmpeg`` when it is on ``PATH``
   (faster, keeps odd timestamps sane), PyAV otherwise.
2. verify: open the (re-encoded) video with the reader the datasets use and decode **every** frame; count
   them and read the frame rate.
3. write the verified list ``path<TAB>label<TAB>num_frames<TAB>fps`` (read by
   :func:`~hiera_video.data.annotations.read_list_file`) and ``<output>.failed.txt`` with one
   ``path<TAB>error`` line per video that failed;
4. (optional, ``--shards DIR``) pack the verified videos into WebDataset-style tar shards
   ``DIR/shard-000000.tar`` (``<key>.mp4`` + ``<key>.cls`` + ``<key>.json``, keys = paths relative to the
   source root), read by :class:`~hiera_video.data.shards.TarShardVideoDataset`::

    python datasets/prepare.py kinetics val.csv --root /data/k400 --output /data/k400_320/val.txt \
        --reencode-dir /data/k400_320/val --shards /data/k400_320/val_shards --shard-videos 1000

Verification decodes every frame with damage detection on (``on_corrupt="raise"``): a video FFmpeg reports
damage in is listed as failed, so a verified list or shard set holds no video known to be damaged.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from hiera_video.data.annotations import (
    VIDEO_EXTENSIONS,
    VideoRecord,
    read_kinetics_csv,
    read_list_file,
    read_ssv2,
    scan_class_folders,
    write_list_file,
)
from hiera_video.data.video_reader import VideoReadError, open_video
from hiera_video.fileio import atomic_write_text

__all__ = [
    "EncodeSettings",
    "PrepareResult",
    "VideoCheck",
    "main",
    "prepare_dataset",
    "reencode_video",
    "verify_video",
]

logger = logging.getLogger(__name__)

# Frames decoded per get_frames call while verifying (bounds memory on long videos).
_VERIFY_CHUNK = 64


@dataclass(frozen=True)
class EncodeSettings:
    """Re-encoding parameters (see the module docstring)."""

    short_side: int | None = 320
    gop_size: int = 16
    crf: int = 23
    preset: str = "veryfast"
    fps: float | None = None
    upscale: bool = False
    use_ffmpeg: bool | None = None  # None: ffmpeg if on PATH


@dataclass(frozen=True)
class VideoCheck:
    """Outcome for one video: ``ok`` with ``num_frames`` / ``fps`` / size, or ``error``."""

    source: str
    path: str
    label: int
    ok: bool
    num_frames: int = 0
    fps: float = 0.0
    height: int = 0
    width: int = 0
    error: str = ""


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare_dataset` wrote: the verified ``records``, the ``failed`` checks and the files."""

    records: list[VideoRecord]
    failed: list[VideoCheck]
    list_file: Path
    failed_file: Path


def verify_video(path: str | os.PathLike[str], backend: str = "auto") -> tuple[int, float, int, int]:
    """Decode every frame of ``path`` with the dataset reader.

    Returns:
        ``(num_frames, fps, height, width)``.

    Raises:
        VideoReadError: the video cannot be opened or a frame cannot be decoded.
    """
    with open_video(path, backend=backend) as reader:
        num_frames = len(reader)
        for start in range(0, num_frames, _VERIFY_CHUNK):
            reader.get_frames(range(start, min(start + _VERIFY_CHUNK, num_frames)))
        return num_frames, reader.fps, reader.height, reader.width


def _even(value: float) -> int:
    return max(2, int(round(value / 2.0)) * 2)


def _target_size(height: int, width: int, settings: EncodeSettings) -> tuple[int, int]:
    if settings.short_side is None or (min(height, width) <= settings.short_side and not settings.upscale):
        return _even(height), _even(width)
    scale = settings.short_side / min(height, width)
    return _even(height * scale), _even(width * scale)


def reencode_video(
    source: str | os.PathLike[str], destination: str | os.PathLike[str], settings: EncodeSettings | None = None
) -> Path:
    """Re-encode ``source`` to an H.264 MP4 at ``destination`` (short side, GOP, CRF, no audio).

    Writes to a temporary name and renames, so an interrupted run never leaves a truncated file behind.
    """
    settings = settings or EncodeSettings()
    source, destination = Path(source), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.stem + ".partial" + destination.suffix)
    use_ffmpeg = settings.use_ffmpeg if settings.use_ffmpeg is not None else shutil.which("ffmpeg") is not None
    try:
        if use_ffmpeg:
            _reencode_ffmpeg(source, partial, settings)
        else:
            _reencode_pyav(source, partial, settings)
        os.replace(partial, destination)
    finally:
        if partial.exists():
            partial.unlink()
    return destination


def _reencode_ffmpeg(source: Path, destination: Path, settings: EncodeSettings) -> None:
    if settings.short_side is None:
        scale = "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    else:
        side = settings.short_side
        # Short side to `side` (never up unless asked); -2 keeps the aspect ratio with an even long side.
        # The quotes protect the commas from the filter-graph parser (no shell is involved).
        width = str(side) if settings.upscale else f"min({side},iw)"
        height = str(side) if settings.upscale else f"min({side},ih)"
        scale = f"scale='if(lt(iw,ih),{width},-2)':'if(lt(iw,ih),-2,{height})'"
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-vf", scale]
    if settings.fps is not None:
        command += ["-r", f"{settings.fps:g}"]
    command += [
        "-an", "-c:v", "libx264", "-preset", settings.preset, "-crf", str(settings.crf), "-pix_fmt", "yuv420p",
        "-g", str(settings.gop_size), "-keyint_min", str(settings.gop_size), "-sc_threshold", "0",
        "-movflags", "+faststart", str(destination),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise VideoReadError(source, f"ffmpeg failed: {completed.stderr.strip()[-500:]}")


def _reencode_pyav(source: Path, destination: Path, settings: EncodeSettings) -> None:
    import av

    try:
        with av.open(str(source)) as input_container:
            if not input_container.streams.video:
                raise VideoReadError(source, "no video stream")
            input_stream = input_container.streams.video[0]
            input_stream.thread_type = "AUTO"
            rate = settings.fps or input_stream.average_rate or input_stream.guessed_rate or 30
            rate = Fraction(rate).limit_denominator(1001)
            height, width = _target_size(input_stream.codec_context.height, input_stream.codec_context.width, settings)
            with av.open(str(destination), mode="w", options={"movflags": "+faststart"}) as output:
                stream = output.add_stream(
                    "libx264",
                    rate=rate,
                    options={
                        "preset": settings.preset,
                        "crf": str(settings.crf),
                        "x264-params": f"keyint={settings.gop_size}:min-keyint={settings.gop_size}:scenecut=0",
                    },
                )
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.codec_context.time_base = Fraction(1) / rate
                # Constant frame rate: frame n gets pts n (variable-rate sources are re-timed to `rate`).
                for index, frame in enumerate(input_container.decode(input_stream)):
                    scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                    scaled.pts, scaled.time_base = index, Fraction(1) / rate
                    for packet in stream.encode(scaled):
                        output.mux(packet)
                for packet in stream.encode(None):
                    output.mux(packet)
    except av.FFmpegError as error:
        raise VideoReadError(source, f"re-encoding failed: {type(error).__name__}: {error}") from error


def _check_one(task: tuple[str, str, int, EncodeSettings, str]) -> VideoCheck:
    """Worker: optional re-encode, then full decode. Never raises (errors are returned)."""
    source, destination, label, settings, backend = task
    path = destination or source
    try:
        if destination:
            reencode_video(source, destination, settings)
        num_frames, fps, height, width = verify_video(path, backend)
    except (VideoReadError, OSError) as error:
        return VideoCheck(source, path, label, False, error=str(error))
    return VideoCheck(source, path, label, True, num_frames, fps, height, width)


def _destination(source: str, source_root: Path | None, reencode_dir: Path) -> str:
    source_path = Path(source)
    try:
        relative = source_path.relative_to(source_root) if source_root is not None else Path(source_path.name)
    except ValueError:
        relative = Path(source_path.name)
    return str((reencode_dir / relative).with_suffix(".mp4"))


def prepare_dataset(
    records: Sequence[VideoRecord],
    output_list: str | os.PathLike[str],
    reencode_dir: str | os.PathLike[str] | None = None,
    source_root: str | os.PathLike[str] | None = None,
    settings: EncodeSettings | None = None,
    workers: int | None = None,
    backend: str = "auto",
    progress: bool = True,
    shard_dir: str | os.PathLike[str] | None = None,
    shard_max_count: int = 1000,
    overwrite_shards: bool = False,
) -> PrepareResult:
    """Verify (and optionally re-encode) ``records`` in parallel and write the verified list.

    Args:
        records: videos to process.
        output_list: verified list file to write (paths relative to its folder when below it).
        reencode_dir: if given, videos are re-encoded there, mirroring their path below ``source_root``.
        source_root: root of the source paths (for mirroring); default their common parent.
        settings: re-encoding settings.
        workers: processes (default: all CPUs); 0 or 1 runs in this process.
        backend: reader backend used for verification.
        progress: show a tqdm progress bar.
        shard_dir: if given, the verified videos are also packed into tar shards there (keys relative to
            ``reencode_dir`` when re-encoding, else to ``source_root``).
        shard_max_count: videos per shard.
        overwrite_shards: replace shards already in ``shard_dir``.

    Returns:
        :class:`PrepareResult`; failures are also written to ``<output_list>.failed.txt``.
    """
    from tqdm import tqdm

    from hiera_video.progress_bars import bar_options

    output_list = Path(output_list)
    settings = settings or EncodeSettings()
    records = list(records)
    if reencode_dir is not None and source_root is None and records:
        source_root = os.path.commonpath([os.path.dirname(r.path) for r in records])
    root = Path(source_root) if source_root is not None else None
    tasks = [
        (
            r.path,
            _destination(r.path, root, Path(reencode_dir)) if reencode_dir is not None else "",
            r.label,
            settings,
            backend,
        )
        for r in records
    ]
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=len(tasks), desc="prepare", unit="video", disable=not progress, **bar_options())
    results: dict[int, VideoCheck] = {}
    if workers <= 1:
        for position, task in enumerate(tasks):
            results[position] = _check_one(task)
            bar.update()
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            ordered = pool.imap(_check_one, tasks, chunksize=max(1, min(16, len(tasks) // (8 * workers) or 1)))
            for position, check in enumerate(ordered):
                results[position] = check
                bar.update()
                if not check.ok:
                    bar.set_postfix(failed=sum(not c.ok for c in results.values()))
    bar.close()
    checks = [results[i] for i in range(len(tasks))]
    good = [VideoRecord(c.path, c.label, c.num_frames, c.fps) for c in checks if c.ok]
    failed = [c for c in checks if not c.ok]
    write_list_file(output_list, good, with_metadata=True)
    failed_file = output_list.with_name(output_list.name + ".failed.txt")
    atomic_write_text(failed_file, "".join(f"{c.source}\t{c.error}\n" for c in failed))
    if failed:
        logger.warning("%d of %d videos failed; see %s", len(failed), len(checks), failed_file)
    if shard_dir is not None:
        from hiera_video.data.shards import write_shards

        key_root = reencode_dir if reencode_dir is not None else root
        shards = write_shards(good, shard_dir, root=key_root, max_count=shard_max_count, overwrite=overwrite_shards)
        logger.info("%d videos packed into %d shards in %s", len(good), len(shards), shard_dir)
    return PrepareResult(good, failed, output_list, failed_file)


def _records_from_args(args: argparse.Namespace) -> tuple[list[VideoRecord], Path | None]:
    source = Path(args.source)
    if args.format == "folder":
        records, classes = scan_class_folders(source, VIDEO_EXTENSIONS)
        return records, source
    if args.format == "list":
        return read_list_file(source, args.root), Path(args.root) if args.root else source.parent
    if args.format == "kinetics":
        if args.root is None:
            raise SystemExit("kinetics needs --root (the folder holding the videos)")
        records, _ = read_kinetics_csv(source, args.root, classes=args.classes, missing="keep")
        return records, Path(args.root)
    if args.format == "ssv2":
        if args.root is None or args.labels_json is None:
            raise SystemExit("ssv2 needs --root (folder of <id>.webm) and --labels-json")
        records, _ = read_ssv2(source, args.labels_json, args.root)
        return records, Path(args.root)
    raise SystemExit(f"unknown format {args.format}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring). Returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="prepare", description="Verify / re-encode a video dataset and write a verified list file."
    )
    parser.add_argument("format", choices=["folder", "list", "kinetics", "ssv2"], help="annotation format")
    parser.add_argument("source", help="class-folder root, list file, Kinetics CSV or SSv2 annotation JSON")
    parser.add_argument("--output", required=True, help="verified list file to write")
    parser.add_argument("--root", help="video root (list: relative paths; kinetics/ssv2: the videos)")
    parser.add_argument("--classes", help="Kinetics class file (default: sorted labels of the CSV)")
    parser.add_argument("--labels-json", help="SSv2 labels JSON")
    parser.add_argument("--reencode-dir", help="re-encode videos into this folder (mirrors the source tree)")
    parser.add_argument("--short-side", type=int, default=320, help="re-encode short side (default 320)")
    parser.add_argument("--upscale", action="store_true", help="also upscale videos smaller than --short-side")
    parser.add_argument("--gop", type=int, default=16, help="re-encode key frame interval (default 16)")
    parser.add_argument("--crf", type=int, default=23, help="re-encode x264 CRF (default 23)")
    parser.add_argument("--fps", type=float, help="re-encode to this constant frame rate (default: source)")
    parser.add_argument("--no-ffmpeg", action="store_true", help="re-encode with PyAV even if ffmpeg exists")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--backend", default="auto", choices=["auto", "pyav", "torchcodec", "decord"])
    parser.add_argument("--shards", help="also pack the verified videos into tar shards in this folder")
    parser.add_argument("--shard-videos", type=int, default=1000, help="videos per shard (default 1000)")
    parser.add_argument("--overwrite-shards", action="store_true", help="replace shards already in --shards")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    records, source_root = _records_from_args(args)
    settings = EncodeSettings(
        short_side=args.short_side,
        gop_size=args.gop,
        crf=args.crf,
        fps=args.fps,
        upscale=args.upscale,
        use_ffmpeg=False if args.no_ffmpeg else None,
    )
    result = prepare_dataset(
        records,
        args.output,
        reencode_dir=args.reencode_dir,
        source_root=source_root,
        settings=settings,
        workers=args.workers,
        backend=args.backend,
        progress=not args.quiet,
        shard_dir=args.shards,
        shard_max_count=args.shard_videos,
        overwrite_shards=args.overwrite_shards,
    )
    print(
        f"{len(result.records)} videos verified -> {result.list_file}; "
        f"{len(result.failed)} failed -> {result.failed_file}",
        file=sys.stderr,
    )
    return 0 if not result.failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
