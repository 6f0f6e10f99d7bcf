"""Tar shards (WebDataset layout): the same samples as VideoDataset, local and on fsspec's memory filesystem,
written atomically by the prepare tool, and member names that can never point outside."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import damaged_copy, distinct_frames

from hiera_video.data import RandomClipSampler, UniformClipSampler, VideoDataset, VideoRecord, write_video
from hiera_video.data.prepare import main as prepare_main
from hiera_video.data.prepare import prepare_dataset
from hiera_video.data.shards import TarShardVideoDataset, index_shard, list_shards, safe_key, write_shards
from hiera_video.data.transforms import VideoTrainTransform


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[VideoRecord]:
    root = tmp_path_factory.mktemp("shard_videos")
    records = []
    for index, (folder, frames) in enumerate([("cats", 30), ("dogs", 24), ("cats", 36), ("owls", 20), ("dogs", 28)]):
        path = root / folder / f"clip.{index}.mp4"  # a dot in the name: keys end at the first dot
        path.parent.mkdir(exist_ok=True)
        write_video(path, distinct_frames(frames, 48, 64, seed=index), fps=30, gop_size=6, max_b_frames=2)
        records.append(VideoRecord(str(path), index % 3))
    return records


def _samples(dataset: VideoDataset) -> list[tuple]:
    return [dataset[i] for i in range(len(dataset))]


def _assert_same_samples(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for left, right in zip(a, b):
        assert len(left) == len(right)
        for x, y in zip(left, right):
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y)
            else:
                assert x == y


def _datasets_agree(shards, records: list[VideoRecord]) -> None:
    transform = VideoTrainTransform(crop_size=32, rand_augment_ops=2)
    train_args = {"clip_sampler": RandomClipSampler(8, 2, target_fps=None), "transform": transform, "seed": 3}
    sharded = TarShardVideoDataset(shards, **train_args)
    plain = VideoDataset(records, **train_args)
    for epoch in (0, 1):
        sharded.set_epoch(epoch)
        plain.set_epoch(epoch)
        _assert_same_samples(_samples(sharded), _samples(plain))
    views = UniformClipSampler(8, 2, target_fps=None, num_clips=2)
    test_args = {"train": False, "clip_sampler": views, "transform": None}
    sharded, plain = TarShardVideoDataset(shards, **test_args), VideoDataset(records, **test_args)
    _assert_same_samples(_samples(sharded), _samples(plain))


def test_shards_give_the_samples_of_video_dataset(tmp_path: Path, records) -> None:
    root = Path(records[0].path).parent.parent
    paths = write_shards(records, tmp_path / "shards", root=root, max_count=2)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    dataset = TarShardVideoDataset(tmp_path / "shards", train=False, transform=None)
    assert dataset.keys == ["cats/clip_0", "dogs/clip_1", "cats/clip_2", "owls/clip_3", "dogs/clip_4"]
    assert [r.label for r in dataset.records] == [r.label for r in records]
    assert dataset.records[1].path.endswith("shard-000000.tar#dogs/clip_1.mp4")
    _datasets_agree(tmp_path / "shards", records)
    _datasets_agree(str(tmp_path / "shards" / "shard-*.tar"), records)  # a glob
    # The same bytes as WebDataset reads them: <key>.mp4, <key>.cls, <key>.json.
    with tarfile.open(paths[0]) as archive:
        assert archive.getnames() == ["cats/clip_0.mp4", "cats/clip_0.cls", "cats/clip_0.json",
                                      "dogs/clip_1.mp4", "dogs/clip_1.cls", "dogs/clip_1.json"]
        assert archive.extractfile("cats/clip_0.mp4").read() == Path(records[0].path).read_bytes()


def test_shards_on_an_fsspec_memory_filesystem(tmp_path: Path, records) -> None:
    fsspec = pytest.importorskip("fsspec")
    paths = write_shards(records, tmp_path / "shards", max_count=3)
    memory = fsspec.filesystem("memory")
    for path in paths:
        memory.pipe(f"/bucket/k400/{path.name}", path.read_bytes())
    try:
        assert list_shards("memory://bucket/k400") == [f"memory://bucket/k400/{p.name}" for p in paths]
        _datasets_agree("memory://bucket/k400", records)
        _datasets_agree([f"memory://bucket/k400/{p.name}" for p in paths], records)
    finally:
        memory.rm("/bucket", recursive=True)


def test_writing_is_atomic_and_never_clobbers(tmp_path: Path, records) -> None:
    output = tmp_path / "shards"
    write_shards(records, output, max_count=2)
    (output / ".shard-000000.tar.abc123.tmp").write_bytes(b"left by a killed run")
    with pytest.raises(FileExistsError, match="already holds 3 shards"):
        write_shards(records[:2], output)
    paths = write_shards(records[:2], output, overwrite=True)  # one shard now: the two stale ones go
    assert sorted(p.name for p in output.iterdir()) == ["shard-000000.tar"] == [p.name for p in paths]
    # Same-named files from different folders get distinct keys.
    keys = [m.key for m, _, _ in index_shard(str(write_shards(records[:3], tmp_path / "flat")[0]))]
    assert keys == ["clip_0", "clip_1", "clip_2"]


def _tar_with(path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(name)
        info.type = kind
        data = b"not really a video"
        if kind == tarfile.REGTYPE:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        else:
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return path


@pytest.mark.parametrize("name", ["../evil.mp4", "/abs/evil.mp4", "a/../../evil.mp4", "a\\..\\evil.mp4",
                                  "a//b.mp4", "./x.mp4"])
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str) -> None:
    shard = _tar_with(tmp_path / "bad.tar", name)
    with pytest.raises(ValueError, match=r"unsafe member name.*bad\.tar"):
        index_shard(str(shard))
    with pytest.raises(ValueError, match="unsafe"):
        TarShardVideoDataset(shard)


def test_links_and_unlabeled_samples(tmp_path: Path, records) -> None:
    with pytest.raises(ValueError, match="link or device"):
        index_shard(str(_tar_with(tmp_path / "link.tar", "x.mp4", tarfile.SYMTYPE)))
    shard = _tar_with(tmp_path / "nolabel.tar", "lonely.mp4")
    with pytest.raises(ValueError, match="no label"):
        TarShardVideoDataset(shard)
    assert TarShardVideoDataset(shard, require_labels=False, train=False).records[0].label == -1
    assert safe_key("k400/abc_000010.mp4") == "k400/abc_000010.mp4"


def test_damaged_video_in_a_shard_is_reported_by_name(tmp_path: Path, records) -> None:
    broken = damaged_copy(Path(records[0].path), tmp_path / "broken.mp4", seed=0, fraction=0.5, size=4000)
    shards = write_shards([VideoRecord(str(broken), 1), *records[1:2]], tmp_path / "shards")
    dataset = TarShardVideoDataset(shards, train=False, transform=None,
                                   clip_sampler=UniformClipSampler(30, 1, target_fps=None, num_clips=1))
    assert dataset[0][3] is False and dataset[1][3] is True
    assert dataset.failure_report().paths == [f"{shards[0]}#broken.mp4"]


def test_truncated_shard_fails_the_sample_by_name(tmp_path: Path, records) -> None:
    shard = write_shards(records[:2], tmp_path / "shards")[0]
    dataset = TarShardVideoDataset(shard, train=False, transform=None)  # indexed while whole
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # the second video is cut
    assert dataset[1][3] is False
    assert dataset.failure_report().paths == [f"{shard}#clip_1.mp4"]


def test_prepare_writes_shards(tmp_path: Path, records) -> None:
    root = Path(records[0].path).parent.parent
    result = prepare_dataset(records, tmp_path / "verified.txt", source_root=root, workers=0, progress=False,
                             shard_dir=tmp_path / "shards", shard_max_count=4)
    assert len(result.records) == 5 and not result.failed
    dataset = TarShardVideoDataset(tmp_path / "shards", train=False, transform=None)
    assert dataset.keys[0] == "cats/clip_0" and [r.num_frames for r in dataset.records] == [30, 24, 36, 20, 28]
    # The CLI: same shards again only with --overwrite-shards.
    args = ["folder", str(root), "--output", str(tmp_path / "v2.txt"), "--workers", "0", "--quiet",
            "--shards", str(tmp_path / "shards"), "--shard-videos", "2"]
    with pytest.raises(FileExistsError):
        prepare_main(args)
    assert prepare_main([*args, "--overwrite-shards"]) == 0
    assert len(list_shards(tmp_path / "shards")) == 3
    frames = TarShardVideoDataset(tmp_path / "shards", train=False, transform=None)[0][0]
    assert frames.dtype == torch.uint8 and np.prod(frames.shape) > 0


def test_a_local_shard_index_is_read_once_until_the_shard_changes(tmp_path: Path, records, monkeypatch) -> None:
    """The class scan and the dataset of one run index the same shards: their headers are read once, and
    again only when a shard's size or modification time changes (it was rewritten)."""
    from hiera_video.data import shards as shards_mod

    shard = str(write_shards(records[:2], tmp_path / "shards")[0])
    opened = []
    real_open = shards_mod._open_binary
    monkeypatch.setattr(shards_mod, "_open_binary", lambda loc: opened.append(loc) or real_open(loc))
    first = index_shard(shard)
    first[0][2]["mine"] = 1  # the caller's metadata: not the kept index's
    again = index_shard(shard)
    assert len(opened) == 1 and [m for m, _, _ in again] == [m for m, _, _ in first]
    assert "mine" not in again[0][2]
    TarShardVideoDataset(shard)
    assert len(opened) == 1
    write_shards(records[1:3], tmp_path / "shards", overwrite=True)  # rewritten: other samples
    changed = index_shard(shard)
    assert len(opened) == 2 and [m.key for m, _, _ in changed] != [m.key for m, _, _ in first]
