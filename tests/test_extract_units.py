"""Unit tests of the extraction parts: sliding clips, windowed reading, shards, manifest, inputs, settings.

No model and no video decoding here (a fake reader stands in), so these run in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiera_video.data.clip_sampling import SlidingClipSampler, UniformClipSampler
from hiera_video.data.streaming import WindowedClipReader, discover_inputs
from hiera_video.engine.feature_store import FeatureStore, ShardWriter, merge_outputs, scan_done, shard_files


def plan(n: int, fps: float, T: int, rate: int = 1, **kw) -> list[tuple[int, ...]]:
    """The sliding clips of a video of n frames as tuples of frame indices."""
    return [tuple(row) for row in SlidingClipSampler(T, rate, **kw)(n, fps).tolist()]

# ------------------------------------------------------------------------------------- clip planning


def test_sliding_default_tiles_time():
    clips = plan(40, 30.0, 4, 2)
    # Clips of 4 frames every 2 frames: each clip covers 8 frames of time, the next one starts there.
    assert clips == [(0, 2, 4, 6), (8, 10, 12, 14), (16, 18, 20, 22), (24, 26, 28, 30), (32, 34, 36, 38)]


def test_sliding_stride_frames_seconds_and_tail():
    assert [c[0] for c in plan(40, 30.0, 4, 2, stride=5)] == [0, 5, 10, 15, 20, 25, 30]
    # 0.5 s at 30 fps = 15 frames.
    assert [c[0] for c in plan(40, 30.0, 4, 2, stride_seconds=0.5)] == [0, 15, 30]
    drop = plan(37, 30.0, 4, 2)
    pad = plan(37, 30.0, 4, 2, tail="pad")
    align = plan(37, 30.0, 4, 2, tail="align")
    assert drop[-1] == (24, 26, 28, 30)
    assert pad[-1] == (32, 34, 36, 36)  # past the end: the last frame repeats
    assert align[-1] == (30, 32, 34, 36)  # one more clip ending on the last frame


def test_target_fps_and_short_video_and_uniform():
    # sampling_rate 2 at 15 fps on a 30 fps video = every 4th source frame.
    assert plan(40, 30.0, 4, 2, target_fps=15)[0] == (0, 4, 8, 12)
    assert plan(3, 30.0, 4, 2) == [(0, 2, 2, 2)]
    uni = UniformClipSampler(4, 2, target_fps=None, num_clips=3)(40, 30.0)
    assert uni[0][0] == 0 and uni[-1][-1] == 39  # first and last frame covered
    assert plan(1, 0.0, 1, target_fps=30.0) == [(0,)]  # a still image: no frame rate needed
    with pytest.raises(ValueError, match="frame rate"):
        plan(10, 0.0, 2, stride_seconds=1.0)
    with pytest.raises(ValueError, match="frame rate"):
        plan(10, 0.0, 2, target_fps=30.0)


@pytest.mark.parametrize("kw,match", [(dict(stride=0), "stride must be a positive"),
                                      (dict(stride=-2.0), "stride must be a positive"),
                                      (dict(stride=float("nan")), "stride must be a positive"),
                                      (dict(stride_seconds=0.0), "stride_seconds must be a positive"),
                                      (dict(tail="wrap"), "tail must be one of")])
def test_sliding_sampler_refuses_bad_settings_when_built(kw, match):
    with pytest.raises(ValueError, match=match):
        SlidingClipSampler(4, 2, **kw)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), fps=st.sampled_from([10.0, 24.0, 25.0, 29.97, 60.0]), T=st.integers(1, 16),
       rate=st.integers(1, 5), stride=st.one_of(st.none(), st.floats(0.5, 50.0)),
       target=st.one_of(st.none(), st.sampled_from([15.0, 30.0])),
       tail=st.sampled_from(["drop", "pad", "align"]))
def test_sliding_properties(n, fps, T, rate, stride, target, tail):
    rows = SlidingClipSampler(T, rate, target_fps=target, stride=stride, tail=tail)(n, fps)
    assert rows.dtype.kind == "i" and rows.ndim == 2 and rows.shape[0] >= 1 and rows.shape[1] == T
    for c in rows.tolist():
        assert all(0 <= i < n for i in c)
        assert c == sorted(c)
        assert 0 <= c[0] < c[-1] + 1 <= n  # the extent [start, end) lies in the video
    starts = rows[:, 0].tolist()
    assert starts == sorted(starts)
    step = rate * fps / target if target else rate
    if tail == "pad":  # no further clip could start inside the video: nothing after the last start is lost
        assert len(rows) * (stride if stride is not None else T * step) > n - 1 - 1e-6
    if tail == "align" and len(rows) > 1:
        assert rows[-1, -1] == n - 1


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
    clips = SlidingClipSampler(T, 2, stride=stride)(n, 10.0)
    reader = FakeReader(n)
    stream = WindowedClipReader(reader, clips, window_frames=window)
    got = list(stream)
    assert [k for k, _ in got] == list(range(len(clips)))
    for (_, frames), clip in zip(got, clips):
        assert frames.shape == (T, 2, 2, 3)
        assert frames[:, 0, 0, 0].tolist() == clip.tolist()
    # Each frame decoded exactly once even when clips overlap, and never much more than a window at once.
    flat = [i for call in reader.calls for i in call]
    assert sorted(flat) == sorted({int(i) for c in clips for i in c})
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


def test_settings_are_config_keys_with_aliases():
    from hiera_video.config import Config, ConfigError, update_config
    from hiera_video.engine.extract import ALIASES, _dotted

    with pytest.raises(ConfigError, match="did you mean 'num_frames'"):
        _dotted({"num_frame": 8})
    values = _dotted({"outputs": "embedding,stage2", "short_side": 80, "backend": "pyav", "amp": "none",
                      "num_clips": 3, "data.crop_size": 64})
    cfg = update_config(Config(), values)
    assert cfg.extract.outputs == ["embedding", "stage2"] and cfg.data.test_short_side == 80
    assert (cfg.data.decoder, cfg.train.precision, cfg.eval.num_clips, cfg.data.crop_size) == ("pyav", "fp32", 3, 64)
    assert all(key.split(".")[0] in ("extract", "model", "data", "eval", "train") for key in ALIASES.values())
    with pytest.raises(ConfigError, match="data.nm_frames"):  # dotted keys are checked like overrides
        update_config(Config(), {"data.nm_frames": 8})


@pytest.mark.parametrize("key,value,match", [
    ("extract.stride", 0, "extract.stride must be a positive number or null, got 0"),
    ("extract.stride_seconds", -1.0, "extract.stride_seconds must be a positive"),
    ("extract.batch_size", 0, "extract.batch_size must be a positive integer"),
    ("extract.window_frames", 0, "extract.window_frames"),
    ("data.num_workers", -1, "data.num_workers must be a non-negative integer"),
    ("data.crop_size", 0, "data.crop_size"),
    ("eval.num_clips", 0, "eval.num_clips"),
    ("extract.outputs", [], "extract.outputs is empty"),
])
def test_invalid_extract_values_fail_up_front_naming_the_key(tmp_path, key, value, match):
    from hiera_video.config import Config, ConfigError, update_config
    from hiera_video.engine.extract import check_extract_config

    valid = update_config(Config(), {"extract.input": str(tmp_path), "extract.output_dir": str(tmp_path / "o")})
    check_extract_config(valid)
    with pytest.raises(ConfigError, match=match):
        check_extract_config(update_config(valid, {key: value}))


# ------------------------------------------------------------------------------------- canonical ids (defect 7)


def test_ids_are_canonical_whatever_the_spelling(tmp_path: Path, monkeypatch):
    """One video spelled lists/../v/one, <abs>/lists/../v/one and ../v/one (from lists/): one id."""
    home = tmp_path / "home" / "me"
    (home / "v").mkdir(parents=True)
    (home / "lists").mkdir()
    (home / "v" / "one.mp4").write_bytes(b"")
    spellings = [(home / "a.txt", "lists/../v/one.mp4", None), (home / "b.txt", f"{home}/lists/../v/one.mp4", None),
                 (home / "lists" / "c.txt", "../v/one.mp4", home)]  # (the last one relative to lists/)
    ids = set()
    for list_file, line, id_root in spellings:
        list_file.write_text(f"{line} 0\n")
        (item,) = discover_inputs(list_file, id_root=id_root)
        ids.add(item.video_id)
        assert item.path == str(home / "v" / "one.mp4")  # absolute and normalised
    assert ids == {"v/one"}
    # The same relative spelling from another working directory, and a file listed twice: one item.
    monkeypatch.chdir(home / "lists")
    both = home / "both.txt"
    both.write_text("v/one.mp4\nlists/../v/./one.mp4\n")
    assert [it.video_id for it in discover_inputs(Path("..") / "both.txt")] == ["v/one"]


def test_inputs_outside_the_root_are_refused_naming_them(tmp_path: Path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "one.mp4").write_bytes(b"")
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "l.txt"
    lst.write_text("../v/one.mp4\n")
    with pytest.raises(ValueError, match=rf"outside {lst.parent}, .*{tmp_path}/v/one\.mp4; set extract.id_root "
                       rf"\(--id-root\) to a folder that holds every input, e.g. {tmp_path}$"):
        discover_inputs(lst)
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_inputs(lst, id_root=tmp_path / "nope")
    assert [it.video_id for it in discover_inputs(lst, id_root=tmp_path)] == ["v/one"]  # the suggested fix


# ------------------------------------------------------------------------------------- damaged store (defect 10)


def _store(tmp_path: Path, videos: int = 4, per_shard: int = 2) -> dict:
    w = ShardWriter(tmp_path / "shards", 0, 0, 1e9, per_shard, 1e9)
    (tmp_path / "shards").mkdir(exist_ok=True)
    feats = {f"v{i}": torch.randn(i + 1, 4) for i in range(videos)}
    for vid, f in feats.items():
        w.add(_record(vid, f.shape[0]), {"embedding": f})
    w.flush()
    merge_outputs(tmp_path)
    return feats


@pytest.mark.parametrize("cut", ["data", "header", "empty"])
def test_truncated_shard_is_named_and_quarantined(tmp_path: Path, cut):
    from hiera_video.engine.feature_store import DamagedShardError, quarantine_shards, scan_shards

    feats = _store(tmp_path)
    shard = shard_files(tmp_path)[1]
    data = shard.read_bytes()
    shard.write_bytes({"data": data[:-10], "header": data[:20], "empty": b""}[cut])
    done, damaged = scan_shards(tmp_path)
    assert set(done) == {"v0", "v1"} and [d.path for d in damaged] == [shard]
    with pytest.raises(DamagedShardError, match=rf"{shard.name} is damaged \((truncated|.*shorter)"):
        FeatureStore(tmp_path)
    moved = quarantine_shards(tmp_path, damaged)
    assert len(moved) == 1 and moved[0].parent.name == "damaged" and not shard.exists()
    store = FeatureStore(tmp_path)  # readable again; the manifest still lists the lost videos: reported
    assert set(store) == {"v0", "v1"} and "in no shard (v2, v3)" in " ".join(store.manifest_problems)
    assert torch.equal(store["v1"]["embedding"], feats["v1"])


def test_manifest_is_verified_against_the_shards(tmp_path: Path):
    feats = _store(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # the line of v1 deleted
    store = FeatureStore(tmp_path)
    assert set(store) == set(feats)  # the shards are the truth: nothing dropped
    assert store.manifest_problems == ["1 video(s) in the shards are missing from manifest.jsonl (v1)"]
    assert torch.equal(store["v1"]["embedding"], feats["v1"])
    merge_outputs(tmp_path)  # rebuilds it
    assert FeatureStore(tmp_path).manifest_problems == []


def test_settings_of_an_older_output_folder_are_compared_by_their_new_names(tmp_path: Path):
    """extract_config.json written with the flat names of earlier versions still guards the folder."""
    from hiera_video.config import Config, ConfigError
    from hiera_video.engine.extract import _check_or_save_config

    _store(tmp_path)  # a folder with shards
    (tmp_path / "extract_config.json").write_text(json.dumps({"features": {
        "model": "hiera_base_16x224", "num_frames": 8, "short_side": 64, "amp": "none", "tail": "drop"}}))
    same = {"model.name": "hiera_base_16x224", "data.num_frames": 8, "data.test_short_side": 64,
            "train.precision": "fp32", "extract.tail": "drop", "data.kind": "video"}
    _check_or_save_config(tmp_path, Config(), same, is_main=False)
    with pytest.raises(ConfigError, match=r"data.num_frames: 8 -> 16"):
        _check_or_save_config(tmp_path, Config(), {**same, "data.num_frames": 16}, is_main=False)
    _check_or_save_config(tmp_path, Config(), same, is_main=True)  # rewritten in the new names
    assert json.loads((tmp_path / "extract_config.json").read_text())["features"] == same
    with pytest.raises(ConfigError, match=r"extract.tail: 'drop' -> 'pad'"):
        _check_or_save_config(tmp_path, Config(), {**same, "extract.tail": "pad"}, is_main=False)
