"""Clip feature extraction at scale: ``hiera-video extract`` and :func:`load_features`.

Turns a folder, a list file or a Kinetics-style CSV of videos (or images) into per-clip features of a Hiera
model, for ten videos on a laptop or a million on many GPUs::

    from hiera_video.engine.extract import extract_features
    summary = extract_features("videos/", "feats/", model="hiera_base_16x224", pretrained="k400.pth",
                               stride_seconds=2.0, outputs=("embedding", "probs"))
    feats = hiera_video.load_features("feats/")          # lazy mapping: video id -> VideoFeatures
    feats["cooking/abc123"].features["embedding"]        # [num_clips, D]

Pipeline (one process per rank; ``torchrun`` gives several)::

    inputs --rank shard--> DataLoader workers (each a disjoint subset of videos)
        open_video -> WindowedClipReader (bounded windows of frames) -> resize/crop (uint8)
        -> batches of clips mixed across videos, as uint8 [B, T, C, H, W]
    main process: normalise on the device -> model -> outputs per clip -> per-video assembly
        -> ShardWriter: complete videos only, atomic safetensors shards (+ per-video records in the header)
    the last rank to finish: manifest (JSON lines or CSV) merged from every shard header, failures, summary

Output directory::

    extract_config.json          resolved settings; a re-run with different feature settings is refused
    shards/r00000-000000.safetensors   tensors "<video id>/<output>" [num_clips, ...] + header records
    parts/                       per-rank failures and summaries of the latest run
    manifest.jsonl | .csv        per video: path, id, frames, fps, shard, and per clip start/end frame + time
    failures.jsonl               videos that could not be read, with the error
    summary.json                 done, skipped, failed, clips, clips/s, peak frames held

Never losing work: a video is *done* exactly when a shard containing it has been renamed into place (the
shard header is the source of truth; the manifest is derived from headers and can always be rebuilt). A
re-run of the same command scans the shard headers, skips done videos and extracts the rest; partial shards
are temporary files that are never matched as shards and are removed on the next run.

Clip timing convention: a clip's ``start_frame`` is its first sampled frame index and ``end_frame`` is one
past its last sampled frame (exclusive); times are those frame numbers divided by the video's fps.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hiera_video.config import ConfigError
from hiera_video.fileio import atomic_write_bytes

# The data layer (and through it torchvision) is imported where it is used: `hiera-video --help` and the
# argument parsing of every subcommand stay fast.

logger = logging.getLogger("hiera_video.extract")

__all__ = [
    "Clip",
    "ExtractConfig",
    "FeatureStore",
    "VideoFeatures",
    "VideoItem",
    "WindowedClipReader",
    "discover_inputs",
    "extract_features",
    "load_features",
    "merge_outputs",
    "plan_clips",
    "run_extract",
]

FORMAT_TAG = "hiera_video.features/1"
SHARD_DIR, PARTS_DIR = "shards", "parts"
CONFIG_FILE, SUMMARY_FILE, FAILURES_FILE = "extract_config.json", "summary.json", "failures.jsonl"
_SHARD_NAME = re.compile(r"^r(\d{5})-(\d{6})\.safetensors$")


# ============================================================================================ configuration
@dataclass
class ExtractConfig:
    """Everything an extraction run needs. ``None`` fields take model-dependent defaults (see `_resolve`).

    Fields marked *feature-defining* are stored in ``extract_config.json``; re-running into the same output
    directory with different values is refused, so one directory never mixes incompatible features.
    """

    input: str = ""  # directory (recursive), list file ("path [label]" lines) or Kinetics-style CSV
    output_dir: str = ""
    root: str | None = None  # base folder of relative paths in list / CSV files (default: the file's folder)
    extensions: tuple[str, ...] | None = None  # directory scan; default: video + image extensions
    # --- model (feature-defining)
    model: str = "hiera_base_16x224"  # registry name, or a run / save_pretrained directory
    pretrained: str | None = None  # file, directory or hub repo id (see create_model)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # --- clips (feature-defining)
    clip_mode: Literal["sliding", "uniform"] = "sliding"
    num_frames: int | None = None  # frames per clip; default the model's (1 for image models)
    sampling_rate: int | None = None  # frames between samples; default 4 for video models, 1 for images
    target_fps: float | None = None  # sampling_rate counts frames at this rate (source frames otherwise)
    stride: float | None = None  # sliding: source frames between clip starts (default: clips tile time)
    stride_seconds: float | None = None  # sliding: the same in seconds (overrides ``stride``)
    tail: Literal["drop", "pad", "align"] = "drop"  # sliding: what to do with frames after the last clip
    num_clips: int = 10  # uniform: evenly spaced clips covering the first and the last frame
    # --- space (feature-defining)
    spatial: Literal["center_crop", "full"] = "center_crop"
    crop_size: int | None = None  # center_crop: square crop side; default the model's input height
    short_side: int | None = None  # before the crop; default crop_size (video), crop / 0.875 (image)
    decode_resize: bool = False  # let the decoder's scaler do the short-side resize (faster, not bitwise)
    mean: tuple[float, ...] | None = None  # default: video 0.45/0.225, image ImageNet statistics
    std: tuple[float, ...] | None = None
    # --- what to save (feature-defining)
    outputs: tuple[str, ...] = ("embedding",)  # embedding | logits | probs | stage<k> (e.g. stage2, stage-1)
    pool_space: bool = False  # stage maps: average over H, W (keeps time for video models)
    dtype: Literal["fp32", "fp16"] = "fp32"
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast of the model on GPU
    # --- execution (free to change between runs)
    batch_size: int = 8
    num_workers: int = 2
    device: str = "auto"
    backend: str = "auto"  # video decoder: auto | decord | pyav
    window_frames: int = 64  # most new frames decoded per read of a video (bounds memory per worker)
    shard_size_mb: float = 512.0  # close a shard once it holds this much
    shard_max_videos: int = 1000  # ... or this many videos
    flush_seconds: float = 300.0  # ... or when its first video finished this long ago
    manifest_format: Literal["jsonl", "csv"] = "jsonl"
    progress: bool = True

    FEATURE_FIELDS = (
        "model", "pretrained", "model_overrides", "clip_mode", "num_frames", "sampling_rate", "target_fps",
        "stride", "stride_seconds", "tail", "num_clips", "spatial", "crop_size", "short_side",
        "decode_resize",
        "mean", "std", "outputs", "pool_space", "dtype", "amp",
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExtractConfig:
        """Build from a plain dict; unknown keys raise naming the key (with close matches)."""
        import difflib

        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                raise ConfigError(f"unknown extract setting '{key}'{hint}; valid: {', '.join(names)}")
        values = dict(data)
        for key in ("extensions", "mean", "std", "outputs"):
            if isinstance(values.get(key), (list, str)):
                v = values[key]
                values[key] = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# ============================================================================================ inputs
@dataclass(frozen=True)
class VideoItem:
    """One input: a stable ``video_id`` (the output key) and the file path."""

    video_id: str
    path: str


def _is_image(path: str | os.PathLike[str]) -> bool:
    from hiera_video.data.annotations import IMAGE_EXTENSIONS

    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _strip_ext(rel: str) -> str:
    p = Path(rel)
    return p.with_suffix("").as_posix() if p.suffix else p.as_posix()


def _ids_for(rel_paths: Sequence[str]) -> list[str]:
    """Video ids: the relative path without extension, keeping the extension where two files would clash."""
    stems = [_strip_ext(r) for r in rel_paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else Path(r).as_posix() for s, r in zip(stems, rel_paths)]


def discover_inputs(source: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                    extensions: Sequence[str] | None = None) -> list[VideoItem]:
    """List the videos (or images) of a directory, a list file or a Kinetics-style CSV.

    * directory: every file below it whose extension is in ``extensions`` (default: the data layer's video
      and image extensions), sorted; ids are paths relative to the directory without extension.
    * list file: ``path [label]`` lines, read by `hiera_video.data.annotations.read_list_file` (paths with
      spaces, tab-separated verified lists); relative paths resolve against ``root`` (default: the file's
      folder), which ids are relative to.
    * CSV: the official Kinetics columns (``label,youtube_id,time_start,time_end,split``), resolved below
      ``root`` (default: the CSV's folder) by `hiera_video.data.annotations.read_kinetics_csv` in any of
      the downloaders' layouts. Rows whose file is missing are kept: they land in the failures file. A CSV
      with a ``path`` column is read as a plain list.

    Returns the items in input order; duplicate paths are dropped, duplicate ids are an error.
    """
    from hiera_video.data.annotations import (
        IMAGE_EXTENSIONS,
        VIDEO_EXTENSIONS,
        read_kinetics_csv,
        read_list_file,
    )

    src = Path(source)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                 for e in (extensions or VIDEO_EXTENSIONS + IMAGE_EXTENSIONS))
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        base, paths = src, [str(p) for p in files]
    elif src.is_file():
        base = Path(root) if root is not None else src.parent
        if src.suffix.lower() == ".csv":
            with open(src, newline="") as f:
                header = next(csv.reader(f), [])
            if "path" in header:
                with open(src, newline="") as f:
                    paths = [r["path"] if os.path.isabs(r["path"]) else str(base / r["path"])
                             for r in csv.DictReader(f)]
            else:
                records, _ = read_kinetics_csv(src, base, missing="keep")
                paths = [r.path for r in records]
        else:
            paths = [r.path for r in read_list_file(src, base)]
    else:
        raise FileNotFoundError(f"input '{source}' is neither a directory nor a list / CSV file")
    paths = list(dict.fromkeys(paths))  # a file listed twice is extracted once
    rels = [Path(os.path.relpath(p, base)).as_posix() for p in paths]
    rels = [r if not r.startswith("../") else Path(p).as_posix().lstrip("/") for r, p in zip(rels, paths)]
    items = [VideoItem(i, p) for i, p in zip(_ids_for(rels), paths)]
    seen: dict[str, str] = {}
    for it in items:
        if it.video_id in seen:
            raise ValueError(f"two inputs map to the video id '{it.video_id}': {seen[it.video_id]} and "
                             f"{it.path}")
        seen[it.video_id] = it.path
    return items


# ============================================================================================ clip planning
@dataclass(frozen=True)
class Clip:
    """One clip: the sampled frame ``indices`` (clamped to the video) and its extent.

    ``start_frame`` is the first sampled index, ``end_frame`` one past the last (exclusive, unclamped
    values are clamped to the video length).
    """

    indices: tuple[int, ...]
    start_frame: int
    end_frame: int


def _round(x: float) -> int:
    # Round half up (Python's round() is half-to-even, which makes the grid depend on parity).
    return int(math.floor(x + 0.5))


def plan_clips(num_frames: int, fps: float, *, clip_frames: int, sampling_rate: int = 1,
               mode: str = "sliding", stride: float | None = None, stride_seconds: float | None = None,
               target_fps: float | None = None, num_clips: int = 10, tail: str = "drop") -> list[Clip]:
    """Frame indices of every clip of a video with ``num_frames`` frames at ``fps``.

    Index conventions are the data layer's (`hiera_video.data.clip_sampling`): a clip samples
    ``clip_frames`` frames ``step`` source frames apart, ``step = sampling_rate`` or, with ``target_fps``,
    ``sampling_rate * fps / target_fps`` (a rate then means the same time on 25 and 60 fps videos); sample
    ``j`` of a clip starting at ``s`` is frame ``floor(s + j * step)``.

    * ``mode="uniform"``: the data layer's test sampler, ``num_clips`` evenly spaced clips, the first
      starting on the first frame and the last ending on the last frame (one clip: centred).
    * ``mode="sliding"``: clip ``k`` starts at ``k * stride`` source frames (``stride_seconds * fps`` when
      given; default ``clip_frames * step``, so consecutive clips tile the time axis). ``tail``: ``drop``
      keeps only clips that fit, ``pad`` adds clips until every frame is covered (indices past the end
      repeat the last frame), ``align`` adds one last clip ending on the last frame.

    A video shorter than one clip gets one clip at frame 0 whose indices past the end repeat the last frame.
    """
    from hiera_video.data.clip_sampling import UniformClipSampler, clip_step

    if num_frames <= 0:
        raise ValueError(f"video has no frames ({num_frames})")
    if clip_frames <= 0 or sampling_rate <= 0:
        raise ValueError(f"clip_frames ({clip_frames}) and sampling_rate ({sampling_rate}) must be positive")
    if target_fps is not None and fps <= 0:
        raise ValueError("target_fps needs the video's frame rate, which is unknown for this file")
    if mode == "uniform":
        rows = UniformClipSampler(num_frames=clip_frames, sampling_rate=sampling_rate, target_fps=target_fps,
                                  num_clips=num_clips, short_video="clamp")(num_frames, fps)
        return [_clip(tuple(int(i) for i in row), num_frames) for row in rows]
    if mode != "sliding":
        raise ValueError(f"unknown clip mode '{mode}' (expected 'sliding' or 'uniform')")
    if tail not in ("drop", "pad", "align"):
        raise ValueError(f"unknown tail '{tail}' (expected 'drop', 'pad' or 'align')")
    step = clip_step(sampling_rate, fps, target_fps)
    if stride_seconds is not None:
        if fps <= 0:
            raise ValueError("stride_seconds needs the video's frame rate, which is unknown for this file")
        stride = stride_seconds * fps
    stride = float(stride) if stride is not None else clip_frames * step
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")

    def at(start: float) -> Clip:
        idx = [math.floor(start + j * step + _EPS) for j in range(clip_frames)]
        return _clip(tuple(min(i, num_frames - 1) for i in idx), num_frames, idx[0], idx[-1] + 1)

    last_full = (num_frames - 1) - (clip_frames - 1) * step  # the latest start whose clip fits
    clips: list[Clip] = []
    k = 0
    while True:
        start = k * stride
        if start > (num_frames - 1 if tail == "pad" else last_full) + _EPS:
            break
        clips.append(at(start))
        k += 1
    if not clips:  # shorter than one clip
        return [at(0.0)]
    if tail == "align" and clips[-1].indices[-1] < num_frames - 1:
        clips.append(at(max(last_full, 0.0)))
    return clips


_EPS = 1e-6  # guards floor() against float error, as the data layer's samplers do


def _clip(indices: tuple[int, ...], num_frames: int, start: int | None = None,
          end: int | None = None) -> Clip:
    start = indices[0] if start is None else start
    end = indices[-1] + 1 if end is None else end
    return Clip(indices, start, min(end, num_frames))


# ============================================================================================ reading
class _ImageReader:
    """A still image as a one-frame "video" (``open_video`` reads videos only). fps is 0 (no time axis)."""

    fps = 0.0
    duration = 0.0

    def __init__(self, path: str, short_side: int | None = None) -> None:
        import numpy as np
        from PIL import Image

        from hiera_video.data.transforms import ShortSideResize

        with Image.open(path) as im:
            frame = torch.from_numpy(np.asarray(im.convert("RGB")).copy())[None]  # [1, H, W, 3]
        if short_side is not None:  # what the decoder's scaler does for videos
            frame = ShortSideResize(short_side)(frame.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        self._frame = frame

    def __len__(self) -> int:
        return 1

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        return self._frame[[0 for _ in indices]]

    def close(self) -> None:
        pass


def _open_media(path: str, backend: str, short_side: int | None) -> Any:
    if _is_image(path):
        return _ImageReader(path, short_side)
    from hiera_video.data.video_reader import open_video

    return open_video(path, backend=backend, short_side=short_side)


class WindowedClipReader:
    """Yield ``(clip index, frames)`` for each clip of a video in order, decoding it in bounded windows.

    Each read asks the reader for at most ``window_frames`` frames not already held (at least one clip's
    worth), so memory does not grow with the video's length: frames are kept only while a later clip
    still needs them. ``transform`` maps decoded ``uint8 [t, H, W, 3]`` to the per-frame tensors that are
    kept (e.g. resized + cropped ``uint8 [t, C, h, w]``); clips are stacked from them: ``[T, *frame]``.

    Counters (for tests and the summary): ``frames_decoded``, ``reads``, ``peak_frames_held`` (decoded
    frames alive at once: the held cache plus the window being read).
    """

    def __init__(self, reader: Any, clips: Sequence[Clip], window_frames: int = 64,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.reader, self.clips, self.window = reader, list(clips), max(1, int(window_frames))
        self.transform = transform
        self.frames_decoded = self.reads = self.peak_frames_held = 0

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        cache: dict[int, torch.Tensor] = {}
        clips, c = self.clips, 0
        while c < len(clips):
            # Grow the window clip by clip while the frames it adds still fit.
            need: list[int] = []
            seen = set(cache)
            e = c
            while e < len(clips):
                new = sorted(set(clips[e].indices) - seen)
                if e > c and len(need) + len(new) > self.window:
                    break
                need += new
                seen.update(new)
                e += 1
            if need:
                frames = self.reader.get_frames(need)
                self.reads += 1
                self.frames_decoded += len(need)
                self.peak_frames_held = max(self.peak_frames_held, len(cache) + len(need))
                if self.transform is not None:
                    frames = self.transform(frames)
                # Clone each kept frame: a view would pin the whole window's storage while any frame of it
                # is still needed, and the memory bound would depend on the clip layout.
                for i, f in zip(need, frames.unbind(0)):
                    cache[i] = f.clone()
                del frames
            for k in range(c, e):
                yield k, torch.stack([cache[i] for i in clips[k].indices])
                nxt = min(clips[k + 1].indices) if k + 1 < len(clips) else math.inf
                for i in [i for i in cache if i < nxt]:
                    del cache[i]
            c = e


# ============================================================================================ transforms
@dataclass(frozen=True)
class SpatialSpec:
    """How frames become model input (per frame, so windows of frames are transformed at once).

    ``center_crop``: the data layer's evaluation transform, i.e. `ShortSideResize` to ``short_side`` then
    the centre `SpatialCrops` of side ``crop``. ``full``: optional short-side resize, then each side resized
    to the nearest multiple of ``multiple`` (the model interpolates its position embeddings).
    """

    mode: str
    crop: int
    short_side: int | None
    multiple: tuple[int, int]
    resize_in_decoder: bool = False

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[t, H, W, 3]`` -> uint8 ``[t, 3, h, w]``."""
        from torchvision.transforms.v2 import functional as TF

        from hiera_video.data.transforms import ShortSideResize, SpatialCrops

        x = frames.permute(0, 3, 1, 2)  # a free view, channels-last memory: torch's fast uint8 resize path
        if self.short_side is not None and not self.resize_in_decoder:
            x = ShortSideResize(self.short_side)(x)
        if self.mode == "center_crop":
            return SpatialCrops(self.crop, 1)(x)[0].contiguous()
        h, w = x.shape[-2:]
        mh, mw = self.multiple
        size = [max(mh, _round(h / mh) * mh), max(mw, _round(w / mw) * mw)]
        if size != [h, w]:
            x = TF.resize(x, size, antialias=True)
        return x.contiguous()


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                    video: bool) -> torch.Tensor:
    """uint8 ``[B, T, C, H, W]`` -> float ``[B, C, T, H, W]`` (video) or ``[B, C, H, W]`` (image, T = 1).

    Runs on the model's device (4x less data moved than float clips) with the data layer's
    `NormalizeToFloat`, so results are bitwise those of its transforms.
    """
    from hiera_video.data.transforms import NormalizeToFloat

    normalize = NormalizeToFloat(mean, std, video_to_cthw=video).to(x.device)
    return normalize(x if video else x[:, 0])


# ============================================================================================ the clip stream
@dataclass(frozen=True)
class ClipSpec:
    clip_frames: int
    sampling_rate: int
    mode: str
    stride: float | None
    stride_seconds: float | None
    target_fps: float | None
    num_clips: int
    tail: str

    def plan(self, num_frames: int, fps: float) -> list[Clip]:
        return plan_clips(num_frames, fps, clip_frames=self.clip_frames, sampling_rate=self.sampling_rate,
                          mode=self.mode, stride=self.stride, stride_seconds=self.stride_seconds,
                          target_fps=self.target_fps, num_clips=self.num_clips, tail=self.tail)


def _identity(x: Any) -> Any:
    return x


class ClipStream(IterableDataset):
    """Clips of many videos, batched across videos, for a DataLoader with ``batch_size=None``.

    Worker ``w`` of ``W`` handles videos ``w, w + W, ...`` of ``items`` (disjoint subsets), opening each
    video inside the worker and streaming it through a :class:`WindowedClipReader`. Each yielded packet is::

        {"clips": uint8 [b, T, C, H, W] or None, "keys": [(item index, clip index)] * b,
         "events": [{"type": "video", "index", "num_frames", "fps", "clips": [[start, end], ...]},
                    {"type": "failed", "index", "error"}, {"type": "stats", "index", "peak", "decoded"}]}

    A video's ``video`` event is always yielded no later than its last clip, so the consumer knows how many
    clips to wait for. Clips of different sizes (``spatial="full"`` on mixed resolutions) go to separate
    batches.
    """

    def __init__(self, items: Sequence[VideoItem], spec: ClipSpec, spatial: SpatialSpec, batch_size: int,
                 window_frames: int, backend: str = "auto") -> None:
        super().__init__()
        self.items, self.spec, self.spatial = list(items), spec, spatial
        self.batch_size, self.window_frames, self.backend = batch_size, window_frames, backend

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from hiera_video.data.allocator import keep_freed_memory

        keep_freed_memory()  # per-window buffers are reused instead of page-faulted in every time
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        buffers: dict[tuple[int, ...], list[tuple[tuple[int, int], torch.Tensor]]] = {}
        events: list[dict[str, Any]] = []

        def packet(shape: tuple[int, ...]) -> dict[str, Any]:
            buf = buffers.pop(shape)
            out = {"clips": torch.stack([t for _, t in buf]), "keys": [k for k, _ in buf],
                   "events": events[:]}
            events.clear()
            return out

        decoder_short = self.spatial.short_side if self.spatial.resize_in_decoder else None
        for index in range(wid, len(self.items), nw):
            item = self.items[index]
            reader = None
            try:
                reader = _open_media(item.path, self.backend, decoder_short)
                n, fps = len(reader), float(reader.fps or 0.0)
                clips = self.spec.plan(n, fps)
                events.append({"type": "video", "index": index, "num_frames": n, "fps": fps,
                               "clips": [[c.start_frame, c.end_frame] for c in clips]})
                stream = WindowedClipReader(reader, clips, self.window_frames, self.spatial)
                for ci, frames in stream:
                    shape = tuple(frames.shape)
                    buffers.setdefault(shape, []).append(((index, ci), frames))
                    if len(buffers[shape]) >= self.batch_size:
                        yield packet(shape)
                events.append({"type": "stats", "index": index, "peak": stream.peak_frames_held,
                               "decoded": stream.frames_decoded})
            except Exception as err:  # noqa: BLE001 - any unreadable input is recorded, the run goes on
                for shape in list(buffers):  # clips of the failed video still waiting here are dropped
                    buffers[shape] = [b for b in buffers[shape] if b[0][0] != index]
                    if not buffers[shape]:
                        del buffers[shape]
                events.append({"type": "failed", "index": index, "error": f"{type(err).__name__}: {err}"})
            finally:
                if reader is not None:
                    reader.close()
        for shape in list(buffers):
            yield packet(shape)
        if events:
            yield {"clips": None, "keys": [], "events": events[:]}


# ============================================================================================ model
def load_extract_model(cfg: ExtractConfig, device: torch.device) -> tuple[nn.Module, Any]:
    """The classifier to extract with, and the training run's config when it came from a run.

    ``cfg.model`` is a registry name (weights from ``cfg.pretrained``: file, directory or hub id, see
    `create_model`), or an existing path: a training run folder, a training checkpoint ``.pt`` or a
    ``save_pretrained`` folder, loaded by the training engine's `load_trained` (EMA weights preferred).
    """
    from hiera_video.models.registry import create_model

    run_cfg = None
    if Path(cfg.model).expanduser().exists():
        from hiera_video.engine.build import load_trained

        if cfg.pretrained or cfg.model_overrides:
            raise ConfigError(f"model={cfg.model} is a trained model: pretrained / model overrides do not "
                              "apply")
        model, run_cfg, _ = load_trained(Path(cfg.model).expanduser(), "cpu")
    else:
        from hiera_video.models.registry import list_models

        if cfg.model not in list_models():
            import difflib

            close = difflib.get_close_matches(cfg.model, list_models(), n=3)
            raise ConfigError(f"model '{cfg.model}' is neither a registered model"
                              + (f" (did you mean {', '.join(close)}?)" if close else "")
                              + " nor an existing run folder / checkpoint")
        if cfg.pretrained is None:
            logger.warning("extract: no pretrained weights given, features come from a randomly initialised "
                           "%s (and differ from run to run)", cfg.model)
        model = create_model(cfg.model, pretrained=cfg.pretrained, **cfg.model_overrides)
    if not hasattr(model, "forward_features"):
        raise ConfigError(f"'{cfg.model}' is not a classifier/backbone (MAE models: load the checkpoint "
                          "into the classifier of the same size, e.g. model=hiera_base_16x224 "
                          "pretrained=<mae ckpt>)")
    return model.eval().requires_grad_(False).to(device), run_cfg


def _parse_outputs(outputs: Sequence[str], num_stages: int, num_classes: int) -> list[tuple[str, int | None]]:
    """``["embedding", "stage2"]`` -> ``[("embedding", None), ("stage2", 2)]``, validated."""
    parsed = []
    for name in outputs:
        name = name.strip()
        m = re.fullmatch(r"stage[_:]?(-?\d+)", name)
        if m:
            s = int(m.group(1))
            if not -num_stages <= s < num_stages:
                raise ConfigError(f"output '{name}': the model has stages 0..{num_stages - 1}")
            parsed.append((f"stage{s % num_stages}", s % num_stages))
        elif name in ("embedding", "logits", "probs"):
            if name != "embedding" and num_classes <= 0:
                raise ConfigError(f"output '{name}' needs a classification head (the model has "
                                  "num_classes=0)")
            parsed.append((name, None))
        else:
            raise ConfigError(f"unknown output '{name}' (expected embedding, logits, probs or stage<k>)")
    if not parsed:
        raise ConfigError("no outputs selected")
    if len({n for n, _ in parsed}) != len(parsed):
        raise ConfigError(f"duplicate outputs in {list(outputs)}")
    return parsed


@torch.inference_mode()
def compute_outputs(model: nn.Module, x: torch.Tensor, outputs: Sequence[tuple[str, int | None]],
                    pool_space: bool = False) -> dict[str, torch.Tensor]:
    """The selected outputs for a batch ``x`` ``[B, C, (T,) H, W]``.

    embedding ``[B, D]`` (pooled pre-head), logits / probs ``[B, K]``, stage<k> ``[B, (T,) H, W, C]``
    (rerolled) or, with ``pool_space``, ``[B, (T,) C]``. Only the passes that are needed run: one forward
    for any mix of embedding / logits / probs, one more when stage maps are asked for too.
    """
    out: dict[str, torch.Tensor] = {}
    names = {n for n, _ in outputs}
    stages = [s for _, s in outputs if s is not None]
    if names & {"embedding", "logits", "probs"}:
        emb = model.forward_features(x)
        if "embedding" in names:
            out["embedding"] = emb
        if names & {"logits", "probs"}:
            logits = model.forward_head(emb)
            if "logits" in names:
                out["logits"] = logits
            if "probs" in names:
                out["probs"] = logits.float().softmax(-1)
    if stages:
        maps = model.forward_intermediates(x, stages=stages, intermediates_only=True)
        for s, fmap in zip(stages, maps):
            if pool_space:  # [B, (T,) H, W, C]: average the two spatial axes before the channels
                fmap = fmap.mean(dim=(-3, -2))
            out[f"stage{s}"] = fmap
    return out


# ============================================================================================ shards
def _tensor_key(video_id: str, output: str) -> str:
    return f"{video_id}/{output}"


class ShardWriter:
    """Collect complete videos and write them as safetensors shards, atomically.

    A shard holds ``"<video id>/<output>"`` tensors ``[num_clips, ...]`` and, in its header metadata, the
    JSON records of its videos (path, frames, fps, clips), so every shard is self-describing. A shard is
    closed when it reaches ``max_bytes`` or ``max_videos``, or ``max_seconds`` after its first video.
    ``on_shard(path, records)`` is called after each shard is in place.
    """

    def __init__(self, directory: Path, rank: int, next_index: int, max_bytes: float, max_videos: int,
                 max_seconds: float, on_shard: Callable[[Path, list[dict[str, Any]]], None] | None = None):
        self.directory, self.rank, self.index = directory, rank, next_index
        self.max_bytes, self.max_videos, self.max_seconds = max_bytes, max_videos, max_seconds
        self.on_shard = on_shard
        self.records: list[dict[str, Any]] = []
        self.tensors: dict[str, torch.Tensor] = {}
        self.nbytes = 0
        self.first_at: float | None = None
        self.written: list[Path] = []

    def add(self, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Queue one complete video (``tensors``: output name -> ``[num_clips, ...]``)."""
        for name, t in tensors.items():
            t = t.contiguous()
            self.tensors[_tensor_key(record["video_id"], name)] = t
            self.nbytes += t.numel() * t.element_size()
        self.records.append(record)
        if self.first_at is None:
            self.first_at = time.monotonic()
        if (self.nbytes >= self.max_bytes or len(self.records) >= self.max_videos
                or time.monotonic() - self.first_at >= self.max_seconds):
            self.flush()

    def flush(self) -> Path | None:
        """Write the queued videos as one shard (no-op when empty). Returns its path."""
        if not self.records:
            return None
        from safetensors.torch import save

        name = f"r{self.rank:05d}-{self.index:06d}.safetensors"
        path = self.directory / name
        records = [dict(r, shard=name) for r in self.records]
        meta = {"format": FORMAT_TAG, "videos": json.dumps(records, separators=(",", ":"))}
        atomic_write_bytes(path, save(self.tensors, metadata=meta))
        self.index += 1
        self.written.append(path)
        self.records, self.tensors, self.nbytes, self.first_at = [], {}, 0, None
        if self.on_shard is not None:
            self.on_shard(path, records)
        return path


def shard_files(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Finished shards of an output directory, sorted (temporary files are never matched)."""
    d = Path(out_dir) / SHARD_DIR
    return sorted(p for p in d.glob("r*.safetensors") if _SHARD_NAME.match(p.name)) if d.is_dir() else []


def read_shard_records(path: Path) -> list[dict[str, Any]]:
    """The per-video records stored in a shard's header (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT_TAG:
        raise ValueError(f"{path} is not a hiera_video feature shard")
    return json.loads(meta["videos"])


def scan_done(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """video id -> record for every video in a finished shard. A video found in two shards (two runs
    writing into one directory at once) keeps its first shard and is logged."""
    done: dict[str, dict[str, Any]] = {}
    for p in shard_files(out_dir):
        for rec in read_shard_records(p):
            vid = rec["video_id"]
            if vid in done:
                logger.warning("video '%s' is in %s and %s; using the first", vid, done[vid]["shard"], p.name)
                continue
            done[vid] = rec
    return done


# ============================================================================================ manifest
_CSV_FIELDS = ("video_id", "path", "num_frames", "fps", "duration", "shard", "outputs", "clip", "start_frame",
               "end_frame", "start_time", "end_time")


def _manifest_bytes(records: Sequence[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(_CSV_FIELDS)
    for r in records:
        c = r["clips"]
        for i in range(len(c["start_frame"])):
            w.writerow([r["video_id"], r["path"], r["num_frames"], r["fps"], r["duration"], r["shard"],
                        json.dumps(r["outputs"], separators=(",", ":")), i,
                        c["start_frame"][i], c["end_frame"][i], c["start_time"][i], c["end_time"][i]])
    return buf.getvalue().encode()


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records: dict[str, dict[str, Any]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            r = records.get(row["video_id"])
            if r is None:
                r = records[row["video_id"]] = {
                    "video_id": row["video_id"], "path": row["path"], "num_frames": int(row["num_frames"]),
                    "fps": float(row["fps"]), "duration": float(row["duration"]), "shard": row["shard"],
                    "outputs": json.loads(row["outputs"]),
                    "clips": {"start_frame": [], "end_frame": [], "start_time": [], "end_time": []}}
            for k, conv in (("start_frame", int), ("end_frame", int), ("start_time", float),
                            ("end_time", float)):
                r["clips"][k].append(conv(row[k]))
    return list(records.values())


def merge_outputs(out_dir: str | os.PathLike[str], fmt: str = "jsonl",
                  order: Sequence[str] | None = None) -> dict[str, Any]:
    """Rebuild the manifest and the failures file of ``out_dir`` from the shard headers (the last rank calls
    it at the end of a run; safe to call any time, e.g. after an interrupted run). ``order``: video ids in
    input order (others follow, sorted). Returns ``{"videos": n, "failed": m}``."""
    out = Path(out_dir)
    done = scan_done(out)
    rank_of = {vid: i for i, vid in enumerate(order or [])}
    records = sorted(done.values(), key=lambda r: (rank_of.get(r["video_id"], len(rank_of)), r["video_id"]))
    for stale in ("manifest.jsonl", "manifest.csv"):
        if stale != f"manifest.{fmt}":
            (out / stale).unlink(missing_ok=True)
    atomic_write_bytes(out / f"manifest.{fmt}", _manifest_bytes(records, fmt))
    failures: dict[str, dict[str, Any]] = {}
    for p in sorted((out / PARTS_DIR).glob("failures.r*.jsonl")):
        for line in p.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec["video_id"] not in done:  # failed once, extracted since: not a failure any more
                    failures[rec["video_id"]] = rec
    atomic_write_bytes(out / FAILURES_FILE,
                       "".join(json.dumps(r) + "\n" for r in failures.values()).encode())
    return {"videos": len(records), "failed": len(failures)}


# ============================================================================================ loading
@dataclass
class VideoFeatures:
    """The features of one video: ``features[name]`` is ``[num_clips, ...]`` and ``clips[...]`` are
    ``[num_clips]`` tensors ``start_frame``, ``end_frame`` (exclusive), ``start_time``, ``end_time`` (s)."""

    video_id: str
    path: str
    num_frames: int
    fps: float
    features: dict[str, torch.Tensor]
    clips: dict[str, torch.Tensor]
    shard: str = ""

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.features[name]


class FeatureStore(Mapping[str, VideoFeatures]):
    """Read-only mapping video id -> :class:`VideoFeatures` over an extraction directory.

    The index comes from the manifest when it covers every shard on disk, otherwise (interrupted or
    unmerged run) from the shard headers. Tensors are read on access, so opening a store of a million
    videos costs only the index.
    """

    def __init__(self, directory: str | os.PathLike[str], outputs: Sequence[str] | None = None) -> None:
        self.directory = Path(directory)
        self.outputs = list(outputs) if outputs is not None else None
        if not self.directory.is_dir():
            raise FileNotFoundError(f"feature directory '{directory}' does not exist")
        on_disk = {p.name for p in shard_files(self.directory)}
        records: list[dict[str, Any]] | None = None
        for name in ("manifest.jsonl", "manifest.csv"):
            if (self.directory / name).is_file():
                records = _read_manifest(self.directory / name)
                if {r["shard"] for r in records} != on_disk:
                    records = None  # stale: shards were added after the last merge
                break
        if records is None:
            records = list(scan_done(self.directory).values())
        self._index = {r["video_id"]: r for r in records}

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    def record(self, video_id: str) -> dict[str, Any]:
        """The manifest record (path, num_frames, fps, shard, clips as lists) without reading tensors."""
        return self._index[video_id]

    def __getitem__(self, video_id: str) -> VideoFeatures:
        from safetensors import safe_open

        try:
            rec = self._index[video_id]
        except KeyError:
            raise KeyError(f"no features for video id '{video_id}' in {self.directory}") from None
        names = self.outputs if self.outputs is not None else list(rec["outputs"])
        with safe_open(str(self.directory / SHARD_DIR / rec["shard"]), "pt") as f:
            feats = {n: f.get_tensor(_tensor_key(video_id, n)) for n in names}
        c = rec["clips"]
        clips = {"start_frame": torch.tensor(c["start_frame"], dtype=torch.long),
                 "end_frame": torch.tensor(c["end_frame"], dtype=torch.long),
                 "start_time": torch.tensor(c["start_time"], dtype=torch.float64),
                 "end_time": torch.tensor(c["end_time"], dtype=torch.float64)}
        return VideoFeatures(video_id, rec["path"], int(rec["num_frames"]), float(rec["fps"]), feats, clips,
                             rec["shard"])


def load_features(directory: str | os.PathLike[str], video_id: str | None = None,
                  outputs: Sequence[str] | None = None) -> FeatureStore | VideoFeatures:
    """Features written by ``hiera-video extract``: a lazy :class:`FeatureStore` (video id ->
    :class:`VideoFeatures`) or, with ``video_id``, that one video's features. ``outputs`` restricts which
    tensors are read (default: every saved output)."""
    store = FeatureStore(directory, outputs)
    return store if video_id is None else store[video_id]


# ============================================================================================ the run
@dataclass
class _Pending:
    """Outputs of a video's clips as they come back from the model (clips of one video may span batches)."""

    record: dict[str, Any]
    num_clips: int
    parts: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def _resolve(cfg: ExtractConfig, model: nn.Module, run_cfg: Any = None) -> tuple[ExtractConfig, ClipSpec,
                                                                                 SpatialSpec]:
    """Fill the defaults and check the clip / crop sizes against the model.

    Defaults come from the training run when the model is one (its clip length, sampling rate, crop, test
    short side and normalisation: features then see what the model was trained on), else from the model.
    """
    mc = model.config
    video = mc.is_video
    mult = mc.size_multiple
    d = run_cfg.data if run_cfg is not None else None
    cfg = dataclasses.replace(
        cfg,
        num_frames=cfg.num_frames if cfg.num_frames is not None or d is None or not video else d.num_frames,
        sampling_rate=cfg.sampling_rate if cfg.sampling_rate is not None or d is None or not video
        else int(d.sampling_rate),
        crop_size=cfg.crop_size if cfg.crop_size is not None or d is None else d.crop_size,
        short_side=cfg.short_side if cfg.short_side is not None or d is None else d.test_short_side,
        mean=cfg.mean if cfg.mean is not None or d is None else tuple(d.mean),
        std=cfg.std if cfg.std is not None or d is None else tuple(d.std))
    T = cfg.num_frames if cfg.num_frames is not None else (mc.input_size[0] if video else 1)
    if not video and T != 1:
        raise ConfigError(f"{cfg.model} is an image model: num_frames must be 1 (got {T})")
    if video and T % mult[0]:
        raise ConfigError(f"num_frames={T} must be a multiple of {mult[0]} for this model (temporal patch "
                          "stride)")
    rate = cfg.sampling_rate if cfg.sampling_rate is not None else (4 if video else 1)
    crop = cfg.crop_size if cfg.crop_size is not None else mc.input_size[-2]
    if cfg.spatial == "center_crop":
        for m in mult[-2:]:
            if crop % m:
                lo, hi = crop // m * m, (crop // m + 1) * m
                raise ConfigError(f"crop_size={crop} must be a multiple of {m} for this model; use {hi}"
                                 + (f" or {lo}" if lo else ""))
        # The data layer's evaluation defaults: short side = crop for video, crop / 0.875 for images.
        short = cfg.short_side if cfg.short_side is not None else (crop if video else _round(crop / 0.875))
        if short < crop:
            raise ConfigError(f"short_side={short} is smaller than crop_size={crop}")
    elif cfg.spatial == "full":
        short = cfg.short_side
    else:
        raise ConfigError(f"unknown spatial mode '{cfg.spatial}' (expected 'center_crop' or 'full')")
    from hiera_video.data.transforms import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD

    mean = cfg.mean or (KINETICS_MEAN if video else IMAGENET_MEAN)
    std = cfg.std or (KINETICS_STD if video else IMAGENET_STD)
    resolved = dataclasses.replace(cfg, num_frames=T, sampling_rate=rate, crop_size=crop, short_side=short,
                                   mean=tuple(mean), std=tuple(std),
                                   outputs=tuple(n for n, _ in _parse_outputs(cfg.outputs, mc.num_stages,
                                                                              mc.num_classes)))
    spec = ClipSpec(T, rate, cfg.clip_mode, cfg.stride, cfg.stride_seconds, cfg.target_fps, cfg.num_clips,
                    cfg.tail)
    spatial = SpatialSpec(cfg.spatial, crop, short, (mult[-2], mult[-1]),
                          resize_in_decoder=cfg.decode_resize and short is not None)
    return resolved, spec, spatial


def _check_or_save_config(out: Path, cfg: ExtractConfig, is_main: bool) -> None:
    """Refuse to mix features made with different settings in one directory; save the settings."""
    path = out / CONFIG_FILE
    # Through JSON so that tuples nested in model_overrides compare equal to the lists read back.
    mine = json.loads(json.dumps({k: cfg.to_dict()[k] for k in ExtractConfig.FEATURE_FIELDS}))
    if path.is_file():
        old = json.loads(path.read_text()).get("features", {})
        diff = [k for k in ExtractConfig.FEATURE_FIELDS if k in old and old[k] != mine[k]]
        if diff and shard_files(out):
            detail = ", ".join(f"{k}: {old[k]!r} -> {mine[k]!r}" for k in diff)
            raise ConfigError(f"{out} holds features extracted with other settings ({detail}); use another "
                             "output directory or delete it")
    if is_main:
        atomic_write_bytes(path, json.dumps({"features": mine, "run": cfg.to_dict()}, indent=2).encode())


def run_extract(cfg: ExtractConfig | Mapping[str, Any],
                on_shard: Callable[[Path, list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Extract features as described by ``cfg`` (see :class:`ExtractConfig` and the module docstring).

    Under ``torchrun`` each rank takes videos ``rank, rank + world, ...`` of the input list, writes its own
    shards, and the last rank to finish merges the manifests. Returns the summary of this process (of the
    whole run on the rank that merged): ``done`` (extracted now), ``skipped`` (already done), ``failed``,
    ``clips``, ``seconds``, ``clips_per_s``, ``peak_frames_held``, ``frames_decoded``, ``shards``.
    """
    from hiera_video.engine import distributed as hd

    cfg = cfg if isinstance(cfg, ExtractConfig) else ExtractConfig.from_dict(cfg)
    if not cfg.input or not cfg.output_dir:
        raise ConfigError("extract needs an input (directory, list file or CSV) and an output directory")
    started_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    # Long timeout: the only collective is this start-up broadcast, but ranks may start far apart.
    info = hd.init_distributed(cfg.device, timeout_minutes=24 * 60)
    run_id = hd.broadcast_object(uuid.uuid4().hex if info.is_main else None)
    out = Path(cfg.output_dir)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)

    items = discover_inputs(cfg.input, cfg.root, cfg.extensions)
    model, run_cfg = load_extract_model(cfg, info.device)
    cfg, spec, spatial = _resolve(cfg, model, run_cfg)
    outputs = _parse_outputs(cfg.outputs, model.config.num_stages, model.config.num_classes)
    _check_or_save_config(out, cfg, info.is_main)

    # Shard the *full* list by rank before skipping done videos: every rank then agrees on who owns what
    # even if another rank finishes a shard while this one is still scanning.
    mine = items[info.rank::info.world_size]
    done = scan_done(out)
    todo = [it for it in mine if it.video_id not in done]
    skipped = len(mine) - len(todo)
    prefix = f"r{info.rank:05d}-"
    for tmp in (out / SHARD_DIR).glob(f".{prefix}*.tmp"):  # partial shards of a killed run of this rank
        tmp.unlink(missing_ok=True)
    existing = [int(_SHARD_NAME.match(p.name).group(2)) for p in shard_files(out)
                if p.name.startswith(prefix)]
    writer = ShardWriter(out / SHARD_DIR, info.rank, max(existing, default=-1) + 1, cfg.shard_size_mb * 2**20,
                         cfg.shard_max_videos, cfg.flush_seconds, on_shard)
    failures_path = out / PARTS_DIR / f"failures.r{info.rank:05d}.jsonl"
    failures_path.write_text("")  # this run's failures (failed videos are retried by a re-run)
    dtype = torch.float16 if cfg.dtype == "fp16" else torch.float32

    stream = ClipStream(todo, spec, spatial, cfg.batch_size, cfg.window_frames, cfg.backend)
    # Fork is unsafe once CUDA is initialised (the model is already on the GPU): spawn workers then.
    spawn = cfg.num_workers > 0 and torch.cuda.is_available() and torch.cuda.is_initialized()
    loader = DataLoader(stream, batch_size=None, collate_fn=_identity, num_workers=cfg.num_workers,
                        pin_memory=info.device.type == "cuda", persistent_workers=False,
                        prefetch_factor=2 if cfg.num_workers > 0 else None,
                        multiprocessing_context="spawn" if spawn else None)
    from hiera_video.models import cpu_kernels  # precision rule: bf16 / fp16 on CPU only where native

    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cpu_kernels.resolve_precision(cfg.amp, info.device))
    use_amp = amp is not None  # on CPU only where native (else fp32 with one warning: cpu_kernels)

    pending: dict[int, _Pending] = {}
    stats = {"done": 0, "failed": 0, "clips": 0, "peak_frames_held": 0, "frames_decoded": 0}
    bar = _progress(len(todo), enabled=cfg.progress and info.is_main, skipped=skipped)
    t0 = time.perf_counter()

    def fail(index: int, error: str) -> None:
        pending.pop(index, None)
        it = todo[index]
        with open(failures_path, "a") as f:
            f.write(json.dumps({"video_id": it.video_id, "path": it.path, "error": error, "rank": info.rank})
                    + "\n")
        logger.warning("failed: %s (%s)", it.path, error)
        stats["failed"] += 1
        bar.update(1)

    def finish(index: int) -> None:
        p = pending.pop(index)
        tensors = {name: torch.stack([p.parts[i][name] for i in range(p.num_clips)]) for name, _ in outputs}
        p.record["outputs"] = {k: list(v.shape) for k, v in tensors.items()}
        writer.add(p.record, tensors)
        stats["done"] += 1
        bar.update(1)

    try:
        for packet in loader:
            for ev in packet["events"]:
                i = ev["index"]
                if ev["type"] == "video":
                    it, fps = todo[i], ev["fps"]
                    sf = [s for s, _ in ev["clips"]]
                    ef = [e for _, e in ev["clips"]]
                    rec = {"video_id": it.video_id, "path": it.path, "num_frames": ev["num_frames"],
                           "fps": fps,
                           "duration": ev["num_frames"] / fps if fps > 0 else 0.0,
                           "clips": {"start_frame": sf, "end_frame": ef,
                                     "start_time": [s / fps if fps > 0 else 0.0 for s in sf],
                                     "end_time": [e / fps if fps > 0 else 0.0 for e in ef]}}
                    pending[i] = _Pending(rec, len(ev["clips"]))
                elif ev["type"] == "failed":
                    fail(i, ev["error"])
                elif ev["type"] == "stats":
                    stats["peak_frames_held"] = max(stats["peak_frames_held"], ev["peak"])
                    stats["frames_decoded"] += ev["decoded"]
            if packet["clips"] is not None:
                x = normalize_batch(packet["clips"].to(info.device, non_blocking=True), cfg.mean, cfg.std,
                                    model.config.is_video)
                with torch.autocast(info.device.type, dtype=amp or torch.bfloat16, enabled=use_amp):
                    res = compute_outputs(model, x, outputs, cfg.pool_space)
                res = {k: v.to("cpu", dtype) for k, v in res.items()}
                touched = set()
                for j, (i, ci) in enumerate(packet["keys"]):
                    if i in pending:  # (clips of a video that failed later are dropped)
                        # Clone: a view would keep the whole batch output alive until this video is done.
                        pending[i].parts[ci] = {k: v[j].clone() for k, v in res.items()}
                        touched.add(i)
                stats["clips"] += len(packet["keys"])
            else:
                touched = set()
            for i in touched | {ev["index"] for ev in packet["events"] if ev["type"] == "video"}:
                if i in pending and len(pending[i].parts) == pending[i].num_clips:
                    finish(i)
            rate = stats["clips"] / (time.perf_counter() - t0)
            bar.set_postfix(clips=stats["clips"], clips_s=f"{rate:.2f}",
                            failed=stats["failed"], refresh=False)
        for i in list(pending):  # the stream ended without all clips of a video: a bug, never silent
            fail(i, "internal error: stream ended before all clips were extracted")
    finally:
        # Whatever stopped the loop (Ctrl-C, a crash, a hook), finished videos are written, never lost.
        writer.flush()
        bar.close()

    seconds = time.perf_counter() - t0
    summary = {"rank": info.rank, "done": stats["done"], "skipped": skipped, "failed": stats["failed"],
               "clips": stats["clips"], "seconds": round(seconds, 3),
               "clips_per_s": round(stats["clips"] / seconds, 4) if seconds > 0 else 0.0,
               "peak_frames_held": stats["peak_frames_held"], "frames_decoded": stats["frames_decoded"],
               "shards": len(writer.written)}
    summary["run_id"] = run_id
    atomic_write_bytes(out / PARTS_DIR / f"summary.r{info.rank:05d}.json", json.dumps(summary).encode())
    # The last rank to finish merges (no barrier: ranks may finish hours apart, and a finished rank should
    # not wait on a collective's timeout). Two ranks finishing together may both merge: it is idempotent.
    parts = [json.loads(p.read_text()) for p in sorted((out / PARTS_DIR).glob("summary.r*.json"))]
    parts = [p for p in parts if p.get("run_id") == run_id]
    if len(parts) == info.world_size:
        merge_outputs(out, cfg.manifest_format, [it.video_id for it in items])
        summary = _combine(parts)
        atomic_write_bytes(out / SUMMARY_FILE, json.dumps(summary, indent=2).encode())
        if cfg.progress:
            print(_format_summary(summary, out), file=sys.stderr)
    if started_group and info.distributed:
        hd.cleanup_distributed()
    return summary


def _combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {k: sum(p[k] for p in parts)
                             for k in ("done", "skipped", "failed", "clips", "frames_decoded", "shards")}
    seconds = max(p["seconds"] for p in parts)
    total.update(ranks=len(parts), seconds=seconds,
                 peak_frames_held=max(p["peak_frames_held"] for p in parts),
                 clips_per_s=round(total["clips"] / seconds, 4) if seconds > 0 else 0.0)
    return total


def _format_summary(s: dict[str, Any], out: Path) -> str:
    return (f"extract: {s['done']} done, {s['skipped']} skipped (already done), {s['failed']} failed"
            f"{f' (see {out / FAILURES_FILE})' if s['failed'] else ''}; {s['clips']} clips in "
            f"{s['seconds']:.1f}s "
            f"({s['clips_per_s']:.2f} clips/s) -> {out}")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, skipped: int) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="video", desc=f"extract ({skipped} already done)" if skipped else "extract",
                dynamic_ncols=True, smoothing=0.1)


def extract_features(input: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                     on_shard: Callable[[Path, list[dict[str, Any]]], None] | None = None,
                     **settings: Any) -> dict[str, Any]:
    """Python entry point: ``extract_features("videos/", "feats/", model=..., **ExtractConfig fields)``.
    Returns the run summary (see :func:`run_extract`)."""
    values = {"input": str(input), "output_dir": str(output_dir), **settings}
    return run_extract(ExtractConfig.from_dict(values),
                       on_shard=on_shard)


# ============================================================================================ command line
def add_extract_arguments(p: argparse.ArgumentParser) -> None:
    """The ``extract`` options (shared by ``hiera-video extract`` and ``python -m ...extract``)."""
    d = ExtractConfig()
    p.add_argument("input", help="directory of videos/images (recursive), list file or Kinetics-style CSV")
    p.add_argument("output_dir", help="where shards, manifest, failures and summary go")
    p.add_argument("--root", help="base folder of relative paths in a list / CSV file")
    p.add_argument("--extensions", help="comma-separated extensions for directory inputs")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help="registry name or run / save_pretrained directory")
    g.add_argument("--pretrained", help="checkpoint file, directory or hub repo id")
    g.add_argument("--model-override", action="append", default=[], metavar="KEY=VALUE",
                   help="model config field, e.g. num_classes=400 (YAML value; repeatable)")
    g = p.add_argument_group("clips")
    g.add_argument("--clip-mode", choices=["sliding", "uniform"], default=d.clip_mode)
    g.add_argument("--num-frames", type=int, help="frames per clip (default: the model's)")
    g.add_argument("--sampling-rate", type=int, help="frames between samples (default 4 video, 1 image)")
    g.add_argument("--target-fps", type=float, help="count the sampling rate at this frame rate")
    g.add_argument("--stride", type=float, help="sliding: source frames between clip starts")
    g.add_argument("--stride-seconds", type=float, help="sliding: seconds between clip starts")
    g.add_argument("--tail", choices=["drop", "pad", "align"], default=d.tail)
    g.add_argument("--num-clips", type=int, default=d.num_clips, help="uniform: clips per video")
    g = p.add_argument_group("space")
    g.add_argument("--spatial", choices=["center_crop", "full"], default=d.spatial)
    g.add_argument("--crop-size", type=int)
    g.add_argument("--short-side", type=int)
    g.add_argument("--decode-resize", action="store_true", help="resize in the decoder (faster, not bitwise)")
    g = p.add_argument_group("outputs")
    g.add_argument("--outputs", default=",".join(d.outputs),
                   help="comma-separated: embedding, logits, probs, stageK")
    g.add_argument("--pool-space", action="store_true", help="average stage maps over H and W")
    g.add_argument("--dtype", choices=["fp32", "fp16"], default=d.dtype)
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], default=d.amp)
    g = p.add_argument_group("execution")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--num-workers", type=int, default=d.num_workers)
    g.add_argument("--device", default=d.device)
    g.add_argument("--backend", choices=["auto", "decord", "pyav"], default=d.backend)
    g.add_argument("--window-frames", type=int, default=d.window_frames)
    g.add_argument("--shard-size-mb", type=float, default=d.shard_size_mb)
    g.add_argument("--shard-max-videos", type=int, default=d.shard_max_videos)
    g.add_argument("--flush-seconds", type=float, default=d.flush_seconds)
    g.add_argument("--manifest-format", choices=["jsonl", "csv"], default=d.manifest_format)
    g.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
    """The :class:`ExtractConfig` of parsed ``extract`` arguments."""
    import yaml

    overrides = {}
    for item in args.model_override:
        if "=" not in item:
            raise ValueError(f"--model-override {item!r} must look like key=value")
        k, v = item.split("=", 1)
        overrides[k.strip()] = yaml.safe_load(v)
    skip = {"model_override", "no_progress", "command", "func", "verbose"}
    values = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    values.update(model_overrides=overrides, progress=not args.no_progress)
    return ExtractConfig.from_dict(values)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hiera_video.engine.extract INPUT OUTPUT [options]``."""
    parser = argparse.ArgumentParser(prog="hiera-video extract", description=__doc__.split("\n\n")[0])
    add_extract_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run_extract(config_from_args(args))
    return 0 if summary.get("failed", 0) == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
