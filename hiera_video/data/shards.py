"""WebDataset-style tar shards: many videos in a few large files, on a local disk or any fsspec filesystem.

Layout (what `WebDataset <https://github.com/webdataset/webdataset>`_ reads too)::

    shard-000000.tar
        abseiling/abc_000010.mp4     # the video, bytes as they were
        abseiling/abc_000010.cls     # the label as decimal text
        abseiling/abc_000010.json    # {"label": 0, "source": "...", "num_frames": 300, "fps": 30.0}
        ...
    shard-000001.tar

A sample is the group of members sharing a *key* (the member name up to the first dot of its last path
component); the video is the member whose suffix is a video extension, the label comes from ``.cls`` or the
``"label"`` of ``.json``.

:class:`TarShardVideoDataset` is a :class:`~hiera_video.data.datasets.VideoDataset` whose videos live in shards:
the same samples (clips, views, seeds, failure accounting) as a ``VideoDataset`` over the same videos in the
same order. On construction each shard's headers are read once (tar headers sit before each member; a seekable
file lets ``tarfile`` skip the data); each sample is then one ranged read of its video's bytes, decoded from
memory. Shards may be local paths or fsspec URLs (``s3://bucket/k400/shard-{000000..000099}.tar`` is not
expanded: pass a folder, a glob or a list).

Safety: member names are never used as paths to write to. A name that is absolute, contains ``..``, a
backslash or an empty component, and links or devices, make the shard invalid (a named ``ValueError``), so the
sample keys this dataset hands on (e.g. as extraction ids) stay relative and inside whatever folder a
consumer writes them under. :func:`write_shards` writes shards atomically (``hiera_video/fileio.py``) with keys
it derives and checks the same way.
"""

from __future__ import annotations

import collections
import glob
import io
import json
import logging
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from hiera_video.data.annotations import VIDEO_EXTENSIONS, VideoRecord
from hiera_video.data.datasets import VideoDataset
from hiera_video.data.video_reader import VideoReader, VideoReadError, is_url, open_video
from hiera_video.fileio import atomic_write, remove_stale_temps

__all__ = [
    "ShardMember",
    "TarShardVideoDataset",
    "index_shard",
    "is_shard_input",
    "list_shards",
    "read_member",
    "safe_key",
    "write_shards",
]

logger = logging.getLogger(__name__)

SHARD_NAME = "shard-{:06d}.tar"


@dataclass(frozen=True)
class ShardMember:
    """Where one sample's video lies: ``shard`` (path or URL), byte ``offset`` and ``size`` of its data."""

    shard: str
    key: str
    suffix: str
    offset: int
    size: int


def safe_key(name: str, where: str = "") -> str:
    """``name`` if it is a safe relative POSIX name (no absolute path, ``..``, backslash, empty part, NUL).

    Raises:
        ValueError: naming ``where`` (the shard) and the bad name.
    """
    parts = PurePosixPath(name).parts
    bad = (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
        or not parts
    )
    if bad:
        raise ValueError(f"unsafe member name {name!r} in {where or 'a shard'}: names must be relative, without "
                         "'..', backslashes or empty parts")
    return name


def _split(name: str) -> tuple[str, str]:
    """WebDataset's split: key = up to the first dot of the last component; suffix = the rest (``.mp4``)."""
    folder, _, base = name.rpartition("/")
    stem, dot, rest = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, (dot + rest).lower()


def _open_binary(location: str) -> IO[bytes]:
    if is_url(location):
        import fsspec

        return fsspec.open(location, "rb").open()
    return open(location, "rb")


def list_shards(shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Shard locations from a list, a folder (its ``*.tar``, sorted), a glob pattern or a single file/URL."""
    if not isinstance(shards, (str, os.PathLike)):
        found = [str(s) for s in shards]
    else:
        location = str(shards)
        if is_url(location):
            import fsspec

            fs, path = fsspec.core.url_to_fs(location)
            protocol = location.split("://", 1)[0]
            if any(char in path for char in "*?["):
                found = [f"{protocol}://{p.lstrip('/')}" for p in sorted(fs.glob(path))]
            elif fs.isdir(path):
                found = [f"{protocol}://{p.lstrip('/')}" for p in sorted(fs.glob(path.rstrip("/") + "/*.tar"))]
            else:
                found = [location]
        elif any(char in location for char in "*?["):
            found = sorted(glob.glob(location))
        elif os.path.isdir(location):
            found = sorted(str(p) for p in Path(location).glob("*.tar"))
        else:
            found = [location] if os.path.isfile(location) else []
    if not found:
        raise FileNotFoundError(f"no tar shards found at {shards!r}")
    return found


_INDEXES: collections.OrderedDict[tuple[str, str, int, int], list] = collections.OrderedDict()
INDEX_CACHE_SHARDS = 4096  # local shards whose index is kept (most recently read first)


def index_shard(shard: str) -> list[tuple[ShardMember, int, dict[str, Any]]]:
    """Read one shard's headers → ``(member, label, metadata)`` per sample, in the shard's order.

    ``label`` is -1 when the sample has neither ``.cls`` nor a ``"label"`` in ``.json``. A local shard's
    index is kept for the process while its size and modification time stay the same, so the class scan
    and the dataset of one run read its headers once (a URL's is read each time: it can change unseen).

    Raises:
        ValueError: an unsafe member name, a link/device member, a sample without or with two videos, or a
            label that is not an integer (each names the shard and the member).
    """
    key = None
    if not is_url(shard):
        try:
            st = os.stat(shard)
            key = (shard, os.path.abspath(shard), st.st_size, st.st_mtime_ns)  # (members keep `shard`)
        except OSError:
            pass  # missing: _read_index raises the usual error
    if key is not None and key in _INDEXES:
        _INDEXES.move_to_end(key)
    else:
        samples = _read_index(shard)
        if key is None:
            return samples
        _INDEXES[key] = samples
        while len(_INDEXES) > INDEX_CACHE_SHARDS:
            _INDEXES.popitem(last=False)
    return [(member, label, dict(meta)) for member, label, meta in _INDEXES[key]]  # metadata: the caller's


def _read_index(shard: str) -> list[tuple[ShardMember, int, dict[str, Any]]]:
    videos: dict[str, ShardMember] = {}
    labels: dict[str, int] = {}
    metadata: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    with _open_binary(shard) as handle, tarfile.open(fileobj=handle, mode="r:") as archive:
        for member in archive:
            if member.isdir():
                continue
            safe_key(member.name, shard)
            if not member.isfile():
                raise ValueError(f"member {member.name!r} of {shard} is a link or device, not a file")
            key, suffix = _split(member.name)
            if key not in videos and key not in labels and key not in metadata:
                order.append(key)
            if suffix in VIDEO_EXTENSIONS:
                if key in videos:
                    raise ValueError(f"sample {key!r} of {shard} has two videos")
                videos[key] = ShardMember(shard, key, suffix, member.offset_data, member.size)
            elif suffix in (".cls", ".json"):
                text = archive.extractfile(member).read().decode("utf-8")  # read into memory, never to disk
                try:
                    if suffix == ".cls":
                        labels[key] = int(text.strip())
                    else:
                        metadata[key] = json.loads(text)
                        if "label" in metadata[key] and key not in labels:
                            labels[key] = int(metadata[key]["label"])
                except (ValueError, TypeError) as error:
                    raise ValueError(f"bad label in {member.name!r} of {shard}: {error}") from error
    samples = []
    for key in order:
        if key not in videos:
            raise ValueError(f"sample {key!r} of {shard} has no video member ({', '.join(VIDEO_EXTENSIONS)})")
        samples.append((videos[key], labels.get(key, -1), metadata.get(key, {})))
    return samples


class TarShardVideoDataset(VideoDataset):
    """:class:`~hiera_video.data.datasets.VideoDataset` over videos stored in tar shards (module docstring).

    Args:
        shards: a folder of ``*.tar``, a glob, a list of paths/URLs, or one shard.
        require_labels: raise if a sample has no label (training); ``False`` keeps label -1 (extraction).
        **kwargs: everything :class:`VideoDataset` takes (``train``, ``clip_sampler``, ``transform``, ``backend``,
            ``short_side``, ``seed``, ``on_corrupt``...).

    Samples are named ``<shard>#<key><suffix>`` in failure reports; ``dataset.keys[i]`` is sample ``i``'s key.
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        require_labels: bool = True,
        **kwargs: Any,
    ) -> None:
        self.shards = list_shards(shards)
        members: list[ShardMember] = []
        records: list[VideoRecord] = []
        for shard in self.shards:
            for member, label, meta in index_shard(shard):
                if label < 0 and require_labels:
                    raise ValueError(f"sample {member.key!r} of {shard} has no label (.cls or .json 'label'); "
                                     "pass require_labels=False for unlabeled data")
                members.append(member)
                records.append(VideoRecord(f"{shard}#{member.key}{member.suffix}", label,
                                           meta.get("num_frames"), meta.get("fps")))
        keys = [member.key for member in members]
        if len(set(keys)) != len(keys):
            duplicate = next(key for key in keys if keys.count(key) > 1)
            raise ValueError(f"sample key {duplicate!r} appears in more than one shard sample")
        self._members = members
        self.keys = keys
        super().__init__(records, **kwargs)

    def _open_reader(self, index: int) -> VideoReader:
        return open_video(read_member(self._members[index]), backend=self.backend, short_side=self.short_side,
                          on_corrupt=self.on_corrupt, name=self.records[index].path, device=self.device)


def is_shard_input(source: Any) -> bool:
    """Whether ``source`` names tar shards rather than a folder / list file / CSV of videos.

    Shards: a list or tuple (of shard paths or URLs), an fsspec URL, a glob pattern, a path ending in
    ``.tar``, or a local folder whose top level holds ``*.tar`` files. A folder holding both shards and
    video or image files is ambiguous and raises ``ValueError`` (pass the shards as a glob, or the videos'
    folder without them).
    """
    if isinstance(source, (list, tuple)):
        return True
    location = str(source)
    if is_url(location) or any(char in location for char in "*?[") or location.lower().endswith(".tar"):
        return True
    folder = Path(location)
    if not folder.is_dir() or next(folder.glob("*.tar"), None) is None:
        return False
    from hiera_video.data.annotations import IMAGE_EXTENSIONS

    media = next((p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS), None)
    if media is not None:
        raise ValueError(f"{location} holds both tar shards and media files (e.g. {media}); give the shards as a "
                         f"glob ({Path(location) / '*.tar'}) or the videos in a folder without shards")
    return True


def read_member(member: ShardMember) -> bytes:
    """The encoded video of one shard sample (one ranged read); ``open_video(bytes, name=...)`` decodes it."""
    with _open_binary(member.shard) as handle:
        handle.seek(member.offset)
        data = handle.read(member.size)
    if len(data) != member.size:
        raise VideoReadError(f"{member.shard}#{member.key}{member.suffix}", f"the shard is truncated: {member.size} "
                             f"bytes at offset {member.offset} expected, {len(data)} read")
    return data


def _key_for(path: str, root: Path | None) -> str:
    """A WebDataset key for a video path: relative to ``root`` (else the file name), without its suffix,
    dots in the last component replaced (the first dot ends a key)."""
    source = Path(path)
    try:
        relative = source.relative_to(root) if root is not None else Path(source.name)
    except ValueError:
        relative = Path(source.name)
    parts = [part for part in relative.with_suffix("").as_posix().split("/") if part not in ("", ".", "..")]
    if not parts:
        parts = ["video"]
    parts[-1] = parts[-1].replace(".", "_")
    return safe_key("/".join(parts))


def write_shards(
    records: Sequence[VideoRecord],
    output_dir: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    max_count: int = 1000,
    max_bytes: int = 2**30,
    overwrite: bool = False,
) -> list[Path]:
    """Pack the videos of ``records`` (with labels and metadata) into ``output_dir/shard-NNNNNN.tar``.

    Args:
        records: videos to pack, in order (the shard dataset yields them in this order).
        output_dir: folder for the shards (created).
        root: keys are the video paths relative to it (default: file names; duplicates get ``_1``, ``_2``...).
        max_count, max_bytes: a new shard starts when either would be exceeded (a single larger video gets a
            shard of its own).
        overwrite: replace existing ``shard-*.tar`` files (otherwise a ``FileExistsError`` names them).

    Returns:
        The shard paths. Each shard is written atomically: a killed run leaves whole shards and at most a
        hidden ``.shard-*.tar.*.tmp`` file, cleaned by the next run.
    """
    if max_count < 1 or max_bytes < 1:
        raise ValueError(f"max_count and max_bytes must be positive, got {max_count}, {max_bytes}")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(output)
    existing = sorted(output.glob("shard-*.tar"))
    if existing and not overwrite:
        raise FileExistsError(f"{output} already holds {len(existing)} shards ({existing[0].name}...); pass "
                              "overwrite=True (prepare: --overwrite-shards) or choose another folder")
    base = Path(root) if root is not None else None
    used: dict[str, int] = {}
    groups: list[list[tuple[str, VideoRecord]]] = [[]]
    group_bytes = 0
    for record in records:
        key = _key_for(record.path, base)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        used.setdefault(key, 0)
        size = os.path.getsize(record.path)
        if groups[-1] and (len(groups[-1]) >= max_count or group_bytes + size > max_bytes):
            groups.append([])
            group_bytes = 0
        groups[-1].append((key, record))
        group_bytes += size
    paths = []
    for number, group in enumerate(g for g in groups if g):
        path = output / SHARD_NAME.format(number)
        atomic_write(path, lambda handle, group=group: _write_tar(handle, group, base))
        paths.append(path)
    for stale in existing[len(paths):]:  # shards of an earlier, longer run in this folder (overwrite=True)
        stale.unlink()
    return paths


def _write_tar(handle: IO[bytes], group: list[tuple[str, VideoRecord]], root: Path | None) -> None:
    def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(safe_key(name))
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # deterministic bytes for the same inputs
        archive.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for key, record in group:
            suffix = Path(record.path).suffix.lower()
            suffix = suffix if suffix in VIDEO_EXTENSIONS else ".mp4"
            add(archive, key + suffix, Path(record.path).read_bytes())
            if record.label >= 0:
                add(archive, key + ".cls", f"{record.label}\n".encode())
            try:
                source = str(Path(record.path).relative_to(root)) if root is not None else Path(record.path).name
            except ValueError:
                source = Path(record.path).name
            meta = {"label": record.label, "source": source, "num_frames": record.num_frames, "fps": record.fps}
            add(archive, key + ".json", json.dumps(meta, sort_keys=True).encode())
