"""Unit tests of the extraction engine's parts: clip planning, windowed reading, shards, manifest, inputs.

No model and no video decoding here (a fake reader stands in), so these run in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiera_video.engine.extract import (
    ExtractConfig,
    FeatureStore,
    ShardWriter,
    WindowedClipReader,
    discover_inputs,
    merge_outputs,
    plan_clips,
    scan_done,
    shard_files,
)

# ------------------------------------------------------------------------------------- clip planning


def test_sliding_default_tiles_time():
    clips = plan_clips(40, 30.0, clip_frames=4, sampling_rate=2)
    # Clips of 4 frames every 2 frames: each clip covers 8 frames of time, the next one starts there.
    assert [c.indices for c in clips] == [(0, 2, 4, 6), (8, 10, 12, 14), (16, 18, 20, 22), (24, 26, 28, 30),
                                          (32, 34, 36, 38)]
    assert [(c.start_frame, c.end_frame) for c in clips][:2] == [(0, 7), (8, 15)]


def test_sliding_stride_frames_seconds_and_tail():
    assert [c.start_frame for c in plan_clips(40, 30.0, clip_frames=4, sampling_rate=2, stride=5)] == \
        [0, 5, 10, 15, 20, 25, 30]
    # 0.5 s at 30 fps = 15 frames.
    assert [c.start_frame for c in plan_clips(40, 30.0, clip_frames=4, sampling_rate=2, stride_seconds=0.5)] \
        == [0, 15, 30]
    drop = plan_clips(37, 30.0, clip_frames=4, sampling_rate=2)
    pad = plan_clips(37, 30.0, clip_frames=4, sampling_rate=2, tail="pad")
    align = plan_clips(37, 30.0, clip_frames=4, sampling_rate=2, tail="align")
    assert drop[-1].indices == (24, 26, 28, 30)
    assert pad[-1].indices == (32, 34, 36, 36)  # past the end: the last frame repeats
    assert pad[-1].end_frame == 37
    assert align[-1].indices == (30, 32, 34, 36)  # one more clip ending on the last frame


def test_target_fps_and_short_video_and_uniform():
    # sampling_rate 2 at 15 fps on a 30 fps video = every 4th source frame.
    assert plan_clips(40, 30.0, clip_frames=4, sampling_rate=2, target_fps=15)[0].indices == (0, 4, 8, 12)
    short = plan_clips(3, 30.0, clip_frames=4, sampling_rate=2)
    assert [c.indices for c in short] == [(0, 2, 2, 2)]
    uni = plan_clips(40, 30.0, clip_frames=4, sampling_rate=2, mode="uniform", num_clips=3)
    assert uni[0].indices[0] == 0 and uni[-1].indices[-1] == 39  # first and last frame covered
    assert [c.indices for c in plan_clips(1, 0.0, clip_frames=1, mode="uniform", num_clips=1)] == [(0,)]
    with pytest.raises(ValueError, match="frame rate"):
        plan_clips(10, 0.0, clip_frames=2, stride_seconds=1.0)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), fps=st.sampled_from([10.0, 24.0, 25.0, 29.97, 60.0]), T=st.integers(1, 16),
       rate=st.integers(1, 5), stride=st.one_of(st.none(), st.floats(0.5, 50.0)),
       target=st.one_of(st.none(), st.sampled_from([15.0, 30.0])),
       tail=st.sampled_from(["drop", "pad", "align"]))
def test_sliding_properties(n, fps, T, rate, stride, target, tail):
    clips = plan_clips(n, fps, clip_frames=T, sampling_rate=rate, stride=stride, target_fps=target, tail=tail)
    assert clips
    for c in clips:
        assert len(c.indices) == T
        assert all(0 <= i < n for i in c.indices)
        assert list(c.indices) == sorted(c.indices)
        assert 0 <= c.start_frame < c.end_frame <= n
    starts = [c.start_frame for c in clips]
    assert starts == sorted(starts)
    step = rate * fps / target if target else rate
    if tail == "pad":  # no further clip could start inside the video: nothing after the last start is lost
        assert len(clips) * (stride if stride is not None else T * step) > n - 1 - 1e-6
    if tail == "align" and len(clips) > 1:
        assert clips[-1].indices[-1] == n - 1


# ------------------------------------------------------------------------------------- windowed reading


class FakeReader:
    """Frame i is a [2, 2, 3] image filled with i (int32, so the value names the frame); records reads."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, []
        self.fps = 10.0

    def __len__(self) -> int:
        return self.n

    def get_frames(self, indices):
        indices = list(indices)
        self.calls.append(indices)
        return torch.tensor(indices, dtype=torch.int32).view(-1, 1, 1, 1).expand(-1, 2, 2, 3).clone()


@pytest.mark.parametrize("stride,window", [(None, 16), (3, 16), (1, 8), (None, 1)])
def test_windowed_reader_exact_and_bounded(stride, window):
    n, T = 3000, 8
    clips = plan_clips(n, 10.0, clip_frames=T, sampling_rate=2, stride=stride)
    reader = FakeReader(n)
    stream = WindowedClipReader(reader, clips, window_frames=window)
    got = list(stream)
    assert [k for k, _ in got] == list(range(len(clips)))
    for (_, frames), clip in zip(got, clips):
        assert frames.shape == (T, 2, 2, 3)
        assert frames[:, 0, 0, 0].tolist() == list(clip.indices)
    # Each frame decoded exactly once even when clips overlap, and never much more than a window at once.
    flat = [i for call in reader.calls for i in call]
    assert sorted(flat) == sorted({i for c in clips for i in c.indices})
    assert max(len(call) for call in reader.calls) <= max(window, T)
    # Held: the window being read plus frames carried over for overlapping clips (at most one clip span).
    span = (T - 1) * 2 + 1
    assert stream.peak_frames_held <= max(window, T) + span
    assert stream.frames_decoded == len(flat)


# ------------------------------------------------------------------------------------- shards + manifest


def _record(vid: str, n_clips: int) -> dict:
    return {"video_id": vid, "path": f"/v/{vid}.mp4", "num_frames": 10 * n_clips, "fps": 10.0,
            "duration": float(n_clips),
            "clips": {"start_frame": [10 * i for i in range(n_clips)],
                      "end_frame": [10 * i + 9 for i in range(n_clips)],
                      "start_time": [float(i) for i in range(n_clips)],
                      "end_time": [i + 0.9 for i in range(n_clips)]},
            "outputs": {"embedding": [n_clips, 4]}}


def test_shards_atomic_scan_manifest_roundtrip(tmp_path: Path):
    shards = tmp_path / "shards"
    shards.mkdir()
    seen = []
    w = ShardWriter(shards, rank=0, next_index=0, max_bytes=1e9, max_videos=2, max_seconds=1e9,
                    on_shard=lambda p, recs: seen.append((p.name, [r["video_id"] for r in recs])))
    feats = {f"v{i}": torch.randn(i + 1, 4) for i in range(5)}
    for vid, f in feats.items():
        w.add(_record(vid, f.shape[0]), {"embedding": f})
    w.flush()
    assert seen == [("r00000-000000.safetensors", ["v0", "v1"]), ("r00000-000001.safetensors", ["v2", "v3"]),
                    ("r00000-000002.safetensors", ["v4"])]
    # A leftover temporary file of a killed write is never taken for a shard.
    (shards / ".r00000-000003.safetensors.abc.tmp").write_bytes(b"partial")
    assert len(shard_files(tmp_path)) == 3
    assert set(scan_done(tmp_path)) == set(feats)

    for fmt in ("jsonl", "csv"):
        merge_outputs(tmp_path, fmt, order=["v4", "v0"])
        lines = (tmp_path / f"manifest.{fmt}").read_text().splitlines()
        if fmt == "jsonl":
            assert [json.loads(x)["video_id"] for x in lines] == ["v4", "v0", "v1", "v2", "v3"]
        else:
            assert len(lines) == 1 + sum(f.shape[0] for f in feats.values())  # header + one row per clip
        store = FeatureStore(tmp_path)
        assert set(store) == set(feats)
        for vid, f in feats.items():
            v = store[vid]
            assert torch.equal(v["embedding"], f)
            assert v.clips["start_frame"].tolist() == [10 * i for i in range(f.shape[0])]
            assert v.fps == 10.0 and v.shard.startswith("r00000-")


def test_store_falls_back_to_shard_headers_when_manifest_is_stale(tmp_path: Path):
    shards = tmp_path / "shards"
    w = ShardWriter(shards, 0, 0, 1e9, 1, 1e9)
    w.add(_record("a", 1), {"embedding": torch.zeros(1, 4)})
    merge_outputs(tmp_path)
    w.add(_record("b", 2), {"embedding": torch.ones(2, 4)})  # written after the merge (interrupted run)
    store = FeatureStore(tmp_path)
    assert set(store) == {"a", "b"}
    assert torch.equal(store["b"]["embedding"], torch.ones(2, 4))
    with pytest.raises(KeyError, match="nope"):
        store["nope"]


# ------------------------------------------------------------------------------------- inputs + config


def test_discover_directory_list_and_kinetics_csv(tmp_path: Path):
    for rel in ("a/x.mp4", "a/y.webm", "b/x.mp4", "b/x.avi", "notes.txt", "img/p.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    items = discover_inputs(tmp_path)
    ids = {it.video_id for it in items}
    # b/x.mp4 and b/x.avi would both be "b/x": they keep their extensions.
    assert ids == {"a/x", "a/y", "b/x.mp4", "b/x.avi", "img/p"}

    lst = tmp_path / "list.txt"
    lst.write_text("a/x.mp4 3\nfolder with space/clip one.mp4 -1\n\n# comment\na/y.webm\n")
    items = discover_inputs(lst)
    assert [it.video_id for it in items] == ["a/x", "folder with space/clip one", "a/y"]
    assert items[0].path == str(tmp_path / "a/x.mp4")

    kin = tmp_path / "k400"
    (kin / "abseiling").mkdir(parents=True)
    (kin / "abseiling" / "abc_000010_000020.mp4").write_bytes(b"")
    csv = tmp_path / "val.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nabseiling,abc,10,20,val\nabseiling,zzz,0,10,val\n")
    items = discover_inputs(csv, root=kin)
    assert [it.video_id for it in items] == ["abseiling/abc_000010_000020", "abseiling/zzz_000000_000010"]
    assert Path(items[0].path).is_file() and not Path(items[1].path).exists()  # missing: reported later


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="did you mean num_frames"):
        ExtractConfig.from_dict({"num_frame": 8})
    assert ExtractConfig.from_dict({"outputs": "embedding,stage2"}).outputs == ("embedding", "stage2")
