"""The feature store of ``hiera-video extract``: safetensors shards, their scan, the manifest, and reading.

Layout of an extraction directory::

    shards/r00000-000000.safetensors   tensors "<video id>/<output>" [num_clips, ...] + per-video records
    damaged/                           shards found damaged (e.g. truncated by a full disk), kept for a look
    manifest.jsonl | .csv              per video: path, id, frames, fps, shard, per clip start/end frame + time
    failures.jsonl                     videos that could not be read, with the error

The shards are the source of truth. A video is *done* exactly when a shard holding it is in place: shards are
written to a temporary file and renamed (:func:`hiera_video.fileio.atomic_write_bytes`), and each carries in
its header the JSON records of its videos. The manifest is derived from those headers by
:func:`merge_outputs` and can always be rebuilt; :class:`FeatureStore` indexes the headers themselves and
reports a manifest that disagrees with them (a deleted or stale line never hides a video).

A shard whose size does not match its header (truncated, or cut inside the header) is *damaged*:
:func:`scan_shards` names it, the extraction job moves it to ``damaged/`` and extracts its videos again, and
:class:`FeatureStore` raises :class:`DamagedShardError` naming it instead of a bare decoder error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hiera_video.fileio import atomic_write_bytes

logger = logging.getLogger("hiera_video.extract")

__all__ = [
    "DamagedShardError",
    "FeatureStore",
    "ShardWriter",
    "VideoFeatures",
    "load_features",
    "merge_outputs",
    "quarantine_shards",
    "read_shard_records",
    "scan_done",
    "scan_shards",
    "shard_files",
]

FORMAT_TAG = "hiera_video.features/1"
SHARD_DIR, DAMAGED_DIR = "shards", "damaged"
PARTS_DIR, FAILURES_FILE = "parts", "failures.jsonl"
SHARD_NAME = re.compile(r"^r(\d{5})-(\d{6})\.safetensors$")
MANIFESTS = ("manifest.jsonl", "manifest.csv")


class DamagedShardError(ValueError):
    """A feature shard that cannot be read as written (truncated, cut inside its header, not a shard)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"feature shard {path} is damaged ({problem}); re-run the same extraction command "
                         f"into {Path(path).parent.parent}: it moves the shard to {DAMAGED_DIR}/ and extracts "
                         "its videos again")


def tensor_key(video_id: str, output: str) -> str:
    return f"{video_id}/{output}"


# ============================================================================================ writing
class ShardWriter:
    """Collect complete videos and write them as safetensors shards, atomically.

    A shard holds ``"<video id>/<output>"`` tensors ``[num_clips, ...]`` and, in its header metadata, the
    JSON records of its videos (path, frames, fps, clips), so every shard is self-describing. A shard is
    closed when it reaches ``max_bytes`` or ``max_videos``, or ``max_seconds`` after its first video.
    ``on_shard(path, records)`` is called after each shard is in place.
    """

    def __init__(self, directory: Path, rank: int, next_index: int, max_bytes: float, max_videos: int,
                 max_seconds: float, on_shard: Callable[[Path, list[dict[str, Any]]], None] | None = None):
        self.directory, self.rank, self.index = Path(directory), rank, next_index
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
            self.tensors[tensor_key(record["video_id"], name)] = t
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


# ============================================================================================ scanning
def shard_files(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Finished shards of an output directory, sorted (temporary files are never matched)."""
    d = Path(out_dir) / SHARD_DIR
    return sorted(p for p in d.glob("r*.safetensors") if SHARD_NAME.match(p.name)) if d.is_dir() else []


def read_shard_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-video records in a shard's header, after checking the file is whole.

    The safetensors layout is ``u64 header length | JSON header | tensor bytes``; the header gives every
    tensor's byte range, so a file of any other size than ``8 + header + the last range's end`` was cut short
    (or grown): :class:`DamagedShardError` names it. Reads the header only.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DamagedShardError(path, f"{size} bytes, shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise DamagedShardError(path, f"truncated inside its header: {size} bytes, header ends at {8 + n}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DamagedShardError(path, f"unreadable header: {err}") from None
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != FORMAT_TAG or "videos" not in meta:
        raise DamagedShardError(path, "not a hiera_video feature shard (no feature records in its header)")
    end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    if size != 8 + n + end:
        raise DamagedShardError(path, f"truncated: {size} bytes on disk, its header describes {8 + n + end}")
    return json.loads(meta["videos"])


def scan_shards(out_dir: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], list[DamagedShardError]]:
    """``(video id -> record, damaged shards)`` over the finished shards of ``out_dir``.

    A video found in two shards (two runs writing into one directory at once) keeps its first shard and is
    logged. Damaged shards are returned, not raised: the caller decides (redo or refuse).
    """
    done: dict[str, dict[str, Any]] = {}
    damaged: list[DamagedShardError] = []
    for p in shard_files(out_dir):
        try:
            records = read_shard_records(p)
        except DamagedShardError as err:
            damaged.append(err)
            continue
        for rec in records:
            vid = rec["video_id"]
            if vid in done:
                logger.warning("video '%s' is in %s and %s; using the first", vid, done[vid]["shard"], p.name)
                continue
            done[vid] = rec
    return done, damaged


def scan_done(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """video id -> record for every video in a finished shard; raises :class:`DamagedShardError` on the
    first damaged shard."""
    done, damaged = scan_shards(out_dir)
    if damaged:
        raise damaged[0]
    return done


def quarantine_shards(out_dir: str | os.PathLike[str], damaged: Sequence[DamagedShardError]) -> list[Path]:
    """Move damaged shards to ``<out_dir>/damaged/`` (kept for inspection, never read as shards again), so
    their videos count as not done. Another rank moving the same file first is fine. Returns the new paths."""
    target = Path(out_dir) / DAMAGED_DIR
    moved = []
    for err in damaged:
        target.mkdir(exist_ok=True)
        dest = target / f"{err.path.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.replace(err.path, dest)
        except FileNotFoundError:
            continue
        logger.warning("damaged shard %s (%s) moved to %s; its videos are extracted again", err.path,
                       err.problem, dest)
        moved.append(dest)
    return moved


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


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-video records of a ``manifest.jsonl`` or ``manifest.csv`` (one row per clip, regrouped)."""
    path = Path(path)
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
    it at the end of a run; safe to call any time, e.g. after an interrupted run or to repair a manifest).
    ``order``: video ids in input order (others follow, sorted). Returns ``{"videos": n, "failed": m}``."""
    out = Path(out_dir)
    done = scan_done(out)
    rank_of = {vid: i for i, vid in enumerate(order or [])}
    records = sorted(done.values(), key=lambda r: (rank_of.get(r["video_id"], len(rank_of)), r["video_id"]))
    for stale in MANIFESTS:
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


# ============================================================================================ reading
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


def _summarise(ids: set[str]) -> str:
    shown = sorted(ids)[:5]
    return ", ".join(shown) + (f" and {len(ids) - len(shown)} more" if len(ids) > len(shown) else "")


class FeatureStore(Mapping[str, VideoFeatures]):
    """Read-only mapping video id -> :class:`VideoFeatures` over an extraction directory.

    The index comes from the shard headers (the source of truth; one small read per shard), so a manifest
    that lost or gained lines never hides or invents a video: a manifest that disagrees with the shards is
    reported (``manifest_problems``, and a warning) and can be rebuilt with :func:`merge_outputs`. A
    damaged shard raises :class:`DamagedShardError` naming it. Tensors are read on access, so opening a
    store of a million videos costs only the index.
    """

    def __init__(self, directory: str | os.PathLike[str], outputs: Sequence[str] | None = None) -> None:
        self.directory = Path(directory)
        self.outputs = list(outputs) if outputs is not None else None
        if not self.directory.is_dir():
            raise FileNotFoundError(f"feature directory '{directory}' does not exist")
        self._index = scan_done(self.directory)
        self.manifest_problems = self._check_manifest()
        if self.manifest_problems:
            logger.warning("%s: %s; the shards are used (rebuild the manifest with "
                           "hiera_video.engine.feature_store.merge_outputs(%r))", self.directory,
                           "; ".join(self.manifest_problems), str(self.directory))

    def _check_manifest(self) -> list[str]:
        """How the manifest on disk differs from the shards' contents ([] when it agrees or is absent)."""
        for name in MANIFESTS:
            path = self.directory / name
            if path.is_file():
                listed = {r["video_id"]: r.get("shard") for r in read_manifest(path)}
                problems = []
                missing = set(self._index) - set(listed)
                extra = set(listed) - set(self._index)
                moved = {v for v in set(listed) & set(self._index) if listed[v] != self._index[v]["shard"]}
                if missing:
                    problems.append(f"{len(missing)} video(s) in the shards are missing from {name} "
                                    f"({_summarise(missing)})")
                if extra:
                    problems.append(f"{len(extra)} video(s) listed in {name} are in no shard ({_summarise(extra)})")
                if moved:
                    problems.append(f"{len(moved)} video(s) listed in {name} under another shard "
                                    f"({_summarise(moved)})")
                return problems
        return []

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    def record(self, video_id: str) -> dict[str, Any]:
        """The record (path, num_frames, fps, shard, clips as lists) without reading tensors."""
        return self._index[video_id]

    def __getitem__(self, video_id: str) -> VideoFeatures:
        from safetensors import safe_open

        try:
            rec = self._index[video_id]
        except KeyError:
            raise KeyError(f"no features for video id '{video_id}' in {self.directory}") from None
        names = self.outputs if self.outputs is not None else list(rec["outputs"])
        unknown = [n for n in names if n not in rec["outputs"]]
        if unknown:
            raise KeyError(f"video '{video_id}' has no output {', '.join(unknown)} (saved: "
                           f"{', '.join(rec['outputs'])})")
        with safe_open(str(self.directory / SHARD_DIR / rec["shard"]), "pt") as f:
            feats = {n: f.get_tensor(tensor_key(video_id, n)) for n in names}
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
