"""Streaming clips of many videos in bounded memory: windowed reading, still images as videos, clip streams.

The evaluation datasets decode every frame of a video's views at once, which is right for a few short clips
per video. Feature extraction walks *every* clip of videos of any length, so it reads them in windows::

    reader = open_media(path)                                  # a video, or a still image as a 1-frame video
    rows = SlidingClipSampler(16, 4, stride=32)(len(reader), reader.fps)    # [K, T] frame indices
    for k, frames in WindowedClipReader(reader, rows, window_frames=64, transform=FrameTransform(...)):
        ...                                                    # uint8 [T, C, h, w], clip k, in order

and :class:`ClipStream` turns a list of files (:func:`discover_inputs`: a folder, list file or CSV, with
canonical ids) into batches of clips mixed across videos for a DataLoader
(one disjoint subset of the files per worker). Frames stay uint8 until the consumer normalises them (on its
device: 4x less data moved than float clips), with the same :class:`~hiera_video.data.transforms.NormalizeToFloat`
the evaluation transforms use, so the values are those of
:class:`~hiera_video.data.transforms.VideoEvalTransform`. Nothing here imports the models.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

__all__ = ["ClipStream", "FrameTransform", "MediaItem", "StillImageReader", "WindowedClipReader", "discover_inputs",
           "is_image", "open_media", "shard_inputs"]


def is_image(path: str | Path) -> bool:
    """Whether ``path`` names a still image (by extension, the data layer's ``IMAGE_EXTENSIONS``)."""
    from hiera_video.data.annotations import IMAGE_EXTENSIONS

    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class StillImageReader:
    """A still image as a one-frame "video" with the reader interface (``len``, ``fps``, ``get_frames``).

    ``fps`` is 0 (no time axis). ``short_side``: resize on reading, what the decoder's scaler does for videos.
    """

    fps = 0.0
    duration = 0.0

    def __init__(self, path: str | Path, short_side: int | None = None) -> None:
        from PIL import Image

        from hiera_video.data.transforms import ShortSideResize

        with Image.open(path) as im:
            frame = torch.from_numpy(np.asarray(im.convert("RGB")).copy())[None]  # [1, H, W, 3]
        if short_side is not None:
            frame = ShortSideResize(short_side)(frame.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        self._frame = frame

    def __len__(self) -> int:
        return 1

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 ``[len(indices), H, W, 3]`` (every index is frame 0)."""
        return self._frame[[0 for _ in indices]]

    def close(self) -> None:
        pass


def open_media(source: Any, backend: str = "auto", short_side: int | None = None,
               device: str | torch.device = "cpu") -> Any:
    """A reader for a video (:func:`~hiera_video.data.video_reader.open_video`), a still image, or a video
    inside a tar shard (a :class:`~hiera_video.data.shards.ShardMember`: its bytes are read into memory with
    one ranged read and decoded from there, never unpacked to disk).

    ``device``: ``"cuda"`` asks torchcodec to decode on the GPU (frames come back on it); still images and
    the backends that cannot decode on a GPU read on the CPU.
    """
    from hiera_video.data.shards import ShardMember, read_member
    from hiera_video.data.video_reader import open_video

    if isinstance(source, ShardMember):
        name = f"{source.shard}#{source.key}{source.suffix}"
        return open_video(read_member(source), backend=backend, short_side=short_side, device=device, name=name)
    if is_image(source):
        return StillImageReader(source, short_side)
    return open_video(str(source), backend=backend, short_side=short_side, device=device)


@dataclass(frozen=True)
class FrameTransform:
    """How decoded frames become model input, frame by frame (so a window of frames is transformed at once).

    ``center_crop``: the evaluation transform's spatial part, `ShortSideResize` to ``short_side`` then the
    centre `SpatialCrops` of side ``crop`` (bitwise the frames :class:`VideoEvalTransform` /
    :class:`ImageEvalTransform` normalise). ``full``: the optional short-side resize, then each side resized to
    the nearest multiple of ``multiple`` (a model whose position embeddings interpolate takes any such size).
    ``resize_in_decoder``: the short-side resize was already done by the decoder's scaler.
    """

    mode: str = "center_crop"
    crop: int = 224
    short_side: int | None = None
    multiple: tuple[int, int] = (32, 32)
    resize_in_decoder: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("center_crop", "full"):
            raise ValueError(f"unknown spatial mode {self.mode!r} (expected 'center_crop' or 'full')")
        if self.mode == "center_crop" and self.short_side is not None and self.short_side < self.crop:
            raise ValueError(f"short side {self.short_side} is smaller than the crop {self.crop}")

    @property
    def decoder_short_side(self) -> int | None:
        """The short side to ask the decoder for (None: decode at full size)."""
        return self.short_side if self.resize_in_decoder else None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[t, H, W, 3]`` -> uint8 ``[t, 3, h, w]``."""
        from torchvision.transforms.v2 import functional as TF

        from hiera_video.data.transforms import ShortSideResize, SpatialCrops

        x = frames.permute(0, 3, 1, 2)  # a free view, channels-last memory: torch's fast uint8 resize path
        short = self.short_side if self.short_side is not None or self.mode == "full" else self.crop
        if short is not None and not self.resize_in_decoder:
            x = ShortSideResize(short)(x)
        if self.mode == "center_crop":
            return SpatialCrops(self.crop, 1)(x)[0].contiguous()
        h, w = x.shape[-2:]
        mh, mw = self.multiple
        # Round half up (Python's round() is half-to-even, which would make sizes depend on parity).
        size = [max(mh, math.floor(h / mh + 0.5) * mh), max(mw, math.floor(w / mw + 0.5) * mw)]
        if size != [h, w]:
            x = TF.resize(x, size, antialias=True)
        return x.contiguous()


class WindowedClipReader:
    """Yield ``(clip index, frames)`` for each clip of a video in order, decoding it in bounded windows.

    ``clips``: the frame indices of each clip (``[K, T]``, e.g. a clip sampler's output), in time order.
    Each read asks the reader for at most ``window_frames`` frames not already held (at least one clip's
    worth), so memory does not grow with the video's length: frames are kept only while a later clip
    still needs them. ``transform`` maps decoded ``uint8 [t, H, W, 3]`` to the per-frame tensors that are
    kept (e.g. a :class:`FrameTransform`: resized + cropped ``uint8 [t, C, h, w]``); clips are stacked
    from them: ``[T, *frame]``.

    Counters (for tests and the summary): ``frames_decoded``, ``reads``, ``peak_frames_held`` (decoded
    frames alive at once: the held cache plus the window being read).
    """

    def __init__(self, reader: Any, clips: Sequence[Sequence[int]] | np.ndarray, window_frames: int = 64,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.reader, self.window = reader, max(1, int(window_frames))
        self.clips = [tuple(int(i) for i in row) for row in clips]
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
                new = sorted(set(clips[e]) - seen)
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
                yield k, torch.stack([cache[i] for i in clips[k]])
                nxt = min(clips[k + 1]) if k + 1 < len(clips) else math.inf
                for i in [i for i in cache if i < nxt]:
                    del cache[i]
            c = e


@dataclass(frozen=True)
class MediaItem:
    """One input: a stable ``video_id`` (the key of its outputs) and its path (absolute, normalised).

    A video inside a tar shard has ``member`` (a :class:`~hiera_video.data.shards.ShardMember`, what
    :func:`open_media` reads) and ``path`` ``<shard>#<key><suffix>`` (for manifests and failure reports).
    """

    video_id: str
    path: str
    member: Any = None

    @property
    def source(self) -> Any:
        """What :func:`open_media` opens: the shard member, else the path."""
        return self.member if self.member is not None else self.path


def _ids_for(rel_paths: Sequence[str]) -> list[str]:
    """Video ids: the relative path without extension, keeping the extension where two files would clash."""
    stems = [str(Path(r).with_suffix("").as_posix()) if Path(r).suffix else r for r in rel_paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else r for s, r in zip(stems, rel_paths)]


def _listed_paths(src: Path, base: Path) -> list[str]:
    """The paths a list file or CSV names, relative ones resolved against ``base``."""
    import csv

    from hiera_video.data.annotations import read_kinetics_csv, read_list_file

    if src.suffix.lower() != ".csv":
        return [r.path for r in read_list_file(src, base)]
    with open(src, newline="") as f:
        header = next(csv.reader(f), [])
    if "path" in header:
        with open(src, newline="") as f:
            return [r["path"] if os.path.isabs(r["path"]) else str(base / r["path"]) for r in csv.DictReader(f)]
    records, _ = read_kinetics_csv(src, base, missing="keep")
    return [r.path for r in records]


def discover_inputs(source: str | os.PathLike[str] | Sequence[str], root: str | os.PathLike[str] | None = None,
                    extensions: Sequence[str] | None = None,
                    id_root: str | os.PathLike[str] | None = None) -> list[MediaItem]:
    """List the videos (or images) of a directory, a list file or a Kinetics-style CSV, with canonical ids.

    * directory: every file below it whose extension is in ``extensions`` (default: the data layer's video
      and image extensions), sorted;
    * list file: ``path [label]`` lines, read by `hiera_video.data.annotations.read_list_file` (paths with
      spaces, tab-separated verified lists); relative paths resolve against ``root`` (default: the list
      file's folder), as for training lists;
    * CSV: the official Kinetics columns (``label,youtube_id,time_start,time_end,split``), resolved below
      ``root`` (default: the CSV's folder) by `hiera_video.data.annotations.read_kinetics_csv` in any of the
      downloaders' layouts (rows whose file is missing are kept: they land in the failures file); a CSV with
      a ``path`` column is read as a plain list.

    Ids are paths relative to ``id_root`` (default: ``root``, else the input directory or the list file's
    folder), without the extension. Paths are normalised lexically (``os.path.normpath`` of the absolute
    path; symlinks are not followed), so every spelling of a file gives one id (``lists/../v/one`` from the
    id root, ``/abs/lists/../v/one``, ``../v/one`` from a list in ``lists/``: all ``v/one``), and a file
    listed twice, in any spelling, is extracted once. Ids never escape the id root: a path outside it raises
    ``ValueError`` naming it and a folder that holds every input (give it as ``id_root``; relative paths
    still resolve as before).

    Tar shards (:func:`~hiera_video.data.shards.is_shard_input`: a ``.tar`` file, a list of them, a glob, an
    fsspec URL, or a folder whose top level holds ``*.tar``) are listed by
    :func:`shard_inputs`: the videos inside them, with their sample keys as ids.
    """
    from hiera_video.data.annotations import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
    from hiera_video.data.shards import is_shard_input

    if is_shard_input(source):
        if root is not None or id_root is not None or extensions is not None:
            import logging

            logging.getLogger(__name__).warning("tar shard input: root, id_root and extensions are not used (ids "
                                                "are the shards' sample keys, every video member is read)")
        return shard_inputs(source)
    src = Path(source)
    for what, folder in (("root", root), ("id root", id_root)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                 for e in (extensions or VIDEO_EXTENSIONS + IMAGE_EXTENSIONS))
    if src.is_dir():
        base = Path(root) if root is not None else src
        paths = [str(p) for p in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in exts)]
    elif src.is_file():
        base = Path(root) if root is not None else src.parent
        paths = _listed_paths(src, base)
    else:
        raise FileNotFoundError(f"input '{source}' is neither a directory nor a list / CSV file")
    ids_from = os.path.normpath(os.path.abspath(id_root if id_root is not None else base))
    paths = list(dict.fromkeys(os.path.normpath(os.path.abspath(p)) for p in paths))
    rels = [Path(os.path.relpath(p, ids_from)).as_posix() for p in paths]
    outside = [p for p, r in zip(paths, rels) if r == ".." or r.startswith("../")]
    if outside:
        common = os.path.commonpath([ids_from, *outside])
        raise ValueError(f"{len(outside)} input(s) lie outside {ids_from}, the folder video ids are relative to, "
                         f"e.g. {', '.join(outside[:3])}; set extract.id_root (--id-root) to a folder that holds "
                         f"every input, e.g. {common}")
    items = [MediaItem(i, p) for i, p in zip(_ids_for(rels), paths)]
    seen: dict[str, str] = {}
    for it in items:
        if it.video_id in seen:
            raise ValueError(f"two inputs map to the video id '{it.video_id}': {seen[it.video_id]} and "
                             f"{it.path}")
        seen[it.video_id] = it.path
    return items


def _identity(x: Any) -> Any:
    return x


class ClipStream(IterableDataset):
    """Clips of many files, batched across files, for a DataLoader with ``batch_size=None``.

    Worker ``w`` of ``W`` handles files ``w, w + W, ...`` of ``paths`` (disjoint subsets), opening each inside
    the worker (:func:`open_media`), asking ``clip_sampler(len(reader), reader.fps)`` for its clips and
    streaming them through a :class:`WindowedClipReader` with ``frame_transform``. Each packet is::

        {"clips": uint8 [b, T, C, H, W] or None, "keys": [(file index, clip index)] * b,
         "events": [{"type": "video", "index", "num_frames", "fps", "clips": [[start, end], ...]},
                    {"type": "failed", "index", "error"}, {"type": "stats", "index", "peak", "decoded"}]}

    ``paths``: files, or :class:`~hiera_video.data.shards.ShardMember` s (videos inside tar shards).
    ``device="cuda"``: decode on the GPU where torchcodec can (:func:`open_media`); the clips then come back
    on the GPU, so such a stream must run in the main process (``num_workers=0``): CUDA cannot be used in
    forked workers, and GPU tensors cannot be pinned or shared through worker queues cheaply.

    ``[start, end)`` is a clip's extent: its first sampled frame and one past its last. A file's ``video``
    event comes no later than its last clip, so the consumer knows how many clips to wait for; a file that
    cannot be read (at any point) gets a ``failed`` event and its clips still waiting here are dropped. Clips
    of different sizes (``full`` frames of mixed resolutions) go to separate batches.
    """

    collate_fn = staticmethod(_identity)  # for DataLoader(..., batch_size=None, collate_fn=...)

    def __init__(self, paths: Sequence[Any], clip_sampler: Callable[..., np.ndarray],
                 frame_transform: FrameTransform, batch_size: int, window_frames: int = 64,
                 backend: str = "auto", device: str | torch.device = "cpu") -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.paths, self.clip_sampler, self.frame_transform = list(paths), clip_sampler, frame_transform
        self.batch_size, self.window_frames, self.backend = batch_size, window_frames, backend
        self.device = device

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from hiera_video.allocator import keep_freed_memory

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

        for index in range(wid, len(self.paths), nw):
            reader = None
            try:
                reader = open_media(self.paths[index], self.backend, self.frame_transform.decoder_short_side,
                                    self.device)
                n, fps = len(reader), float(reader.fps or 0.0)
                rows = self.clip_sampler(n, fps)
                events.append({"type": "video", "index": index, "num_frames": n, "fps": fps,
                               "clips": [[int(r[0]), int(r[-1]) + 1] for r in rows]})
                stream = WindowedClipReader(reader, rows, self.window_frames, self.frame_transform)
                for ci, frames in stream:
                    shape = tuple(frames.shape)
                    buffers.setdefault(shape, []).append(((index, ci), frames))
                    if len(buffers[shape]) >= self.batch_size:
                        yield packet(shape)
                events.append({"type": "stats", "index": index, "peak": stream.peak_frames_held,
                               "decoded": stream.frames_decoded})
            except Exception as err:  # noqa: BLE001 - any unreadable input is recorded, the run goes on
                for shape in list(buffers):  # clips of the failed file still waiting here are dropped
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


def shard_inputs(shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Any]:
    """The videos inside tar shards as extraction inputs (:class:`MediaItem` s,
    in shard order, each with its :class:`ShardMember`).

    Ids are the sample keys (``abseiling/abc_000010``): they do not depend on how a set was split into
    shards or where the shards live, and for shards written by ``shards.write_shards`` with ``root`` they
    are the ids an extraction of the unpacked folder gives. Keys are checked safe (relative, no ``..``, see
    ``shards.safe_key``), so ids never escape the output folder; a key in two shards raises ``ValueError``.
    Labels and metadata are not needed here and are not checked.
    """
    import tarfile

    from hiera_video.data.shards import index_shard, list_shards

    items: list[Any] = []
    seen: dict[str, str] = {}
    for shard in list_shards(shards):
        try:
            samples = index_shard(shard)
        except (OSError, tarfile.TarError) as error:
            raise ValueError(f"cannot read the tar shard {shard}: {type(error).__name__}: {error}") from error
        for member, _, _ in samples:
            if member.key in seen:
                raise ValueError(f"sample key {member.key!r} is in two shards: {seen[member.key]} and {shard}")
            seen[member.key] = shard
            items.append(MediaItem(member.key, f"{shard}#{member.key}{member.suffix}", member))
    return items
