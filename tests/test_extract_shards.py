"""Tar shards as a dataset beyond one disk: extraction, training and evaluation read videos inside shards.

* extraction from shards (a folder of ``*.tar``, a glob, a list of ``.tar`` on the command line, an fsspec
  ``memory://`` URL) gives the ids and bitwise the features of an extraction of the unpacked folder; resume
  skips done videos; a damaged member is a line in the failures file, not a crash;
* ``data.format=tar_shards``: a two-step training run and an evaluation on generated shards only (no video
  files next to them);
* ``data.decode_device``: the selection logic (GPU availability and torchcodec's capability monkeypatched),
  that extraction and evaluation pass the chosen device to the readers and decode in the main process then,
  and that the CPU fallback of a GPU request gives the frames of a CPU decode.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import hiera_video
from hiera_video.cli import main as cli_main
from hiera_video.config import Config, ConfigError, apply_overrides, demo_config
from hiera_video.data import VideoRecord, make_motion_dataset, read_list_file
from hiera_video.data.shards import is_shard_input, write_shards
from hiera_video.data.streaming import shard_inputs
from hiera_video.data.synthetic import make_motion_frames, write_video
from hiera_video.engine import build
from hiera_video.engine.extract import extract_features

TINY_VIDEO = dict(input_size=(8, 64, 64), embed_dim=32, num_heads=1, depths=(1, 1, 2, 1), num_classes=5)
KW = dict(model="hiera_base_16x224", sampling_rate=2, target_fps=None, outputs=("embedding", "logits"),
          num_workers=0, batch_size=3, shard_max_videos=2, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny model, a folder of videos (two levels) and the same videos packed into two tar shards."""
    root = tmp_path_factory.mktemp("extract_shards")
    model = hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO).eval()
    model.save_pretrained(str(root / "model"))
    rng = np.random.default_rng(0)
    videos = root / "videos"
    for rel, n in [("a.mp4", 20), ("sub/b.mp4", 26), ("sub/c.mp4", 17)]:
        write_video(videos / rel, make_motion_frames("right", n, (48, 64), rng), fps=25, gop_size=8)
    records = [VideoRecord(str(videos / rel), i) for i, rel in enumerate(["a.mp4", "sub/b.mp4", "sub/c.mp4"])]
    shards = write_shards(records, root / "shards", root=videos, max_count=2)
    return {"root": root, "videos": videos, "records": records, "shards": shards,
            "pretrained": str(root / "model")}


def _features(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    feats = hiera_video.load_features(out)
    return {vid: {k: feats[vid][k] for k in ("embedding", "logits")} for vid in feats}


def _assert_same_features(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for vid in a:
        for name in a[vid]:
            assert torch.equal(a[vid][name], b[vid][name]), (vid, name)


@pytest.fixture(scope="module")
def folder_features(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder_feats")
    summary = extract_features(data["videos"], out, pretrained=data["pretrained"], **KW)
    assert summary["done"] == 3
    return _features(out)


# ---------------------------------------------------------------------------------------- extraction


def test_shard_inputs_use_sample_keys_as_ids(data):
    items = shard_inputs(data["root"] / "shards")
    assert [it.video_id for it in items] == ["a", "sub/b", "sub/c"]  # the folder extraction's ids
    assert all(it.member is not None and "#" in it.path for it in items)
    assert is_shard_input(str(data["root"] / "shards")) and is_shard_input(str(data["shards"][0]))
    assert is_shard_input(str(data["root"] / "shards" / "*.tar")) and is_shard_input(["x.tar"])
    assert is_shard_input("memory://bucket/shards/")
    assert not is_shard_input(str(data["videos"]))


def test_folder_of_shards_and_videos_is_ambiguous(data, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(data["root"] / "shards", mixed)
    shutil.copy(data["videos"] / "a.mp4", mixed / "a.mp4")
    with pytest.raises(ConfigError, match="both tar shards and media files"):
        extract_features(mixed, tmp_path / "out", pretrained=data["pretrained"], **KW)


def test_extraction_from_shards_equals_the_unpacked_folder_and_resumes(data, folder_features, tmp_path):
    out = tmp_path / "feats"
    summary = extract_features(data["root"] / "shards", out, pretrained=data["pretrained"], **KW)
    assert summary["done"] == 3 and summary["failed"] == 0 and summary["decode_device"] == "cpu"
    _assert_same_features(_features(out), folder_features)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {m["video_id"] for m in manifest} == {"a", "sub/b", "sub/c"}
    # Resume: the same command through a glob of the same shards skips everything.
    again = extract_features(str(data["root"] / "shards" / "shard-*.tar"), out, pretrained=data["pretrained"],
                             **KW)
    assert again["done"] == 0 and again["skipped"] == 3


def test_cli_takes_several_tar_files(data, folder_features, tmp_path):
    out = tmp_path / "cli"
    code = cli_main(["extract", *map(str, data["shards"]), str(out), "data.target_fps=null",
                     "extract.outputs=[embedding, logits]", "--model", "hiera_base_16x224",
                     "--pretrained", data["pretrained"], "--sampling-rate", "2", "--batch-size", "3",
                     "--num-workers", "0", "--no-progress"])
    assert code == 0
    _assert_same_features(_features(out), folder_features)


def test_damaged_member_is_a_failure_not_a_crash(data, folder_features, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(4000))
    records = [data["records"][0], VideoRecord(str(broken), 1), *data["records"][1:]]
    write_shards(records, tmp_path / "shards", root=None, max_count=2)
    out = tmp_path / "feats"
    summary = extract_features(tmp_path / "shards", out, pretrained=data["pretrained"], **KW)
    assert summary["done"] == 3 and summary["failed"] == 1
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["video_id"] for f in failures] == ["broken"]
    assert failures[0]["path"].endswith("#broken.mp4") and failures[0]["error"]
    # root=None keys are file names: b and c, a extracted as before
    feats = _features(out)
    assert sorted(feats) == ["a", "b", "c"]
    assert torch.equal(feats["b"]["embedding"], folder_features["sub/b"]["embedding"])


def test_shards_on_an_fsspec_memory_filesystem(data, folder_features, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    try:
        for path in data["shards"]:
            memory.pipe(f"/hv_bucket/feats_in/{path.name}", path.read_bytes())
        out = tmp_path / "feats"
        summary = extract_features("memory://hv_bucket/feats_in", out, pretrained=data["pretrained"], **KW)
        assert summary["done"] == 3
        _assert_same_features(_features(out), folder_features)
    finally:
        memory.rm("/hv_bucket", recursive=True)


def test_missing_shards_are_named(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no tar shards"):
        extract_features(str(tmp_path / "nothing-*.tar"), tmp_path / "out", pretrained=data["pretrained"], **KW)


# ---------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """A motion set packed into train / val shards in a root that holds no video files."""
    videos = tmp_path_factory.mktemp("motion_videos")
    make_motion_dataset(videos, num_videos_per_class={"train": 2, "val": 1}, num_frames=8, size=(32, 32), fps=8,
                        seed=0)
    root = tmp_path_factory.mktemp("motion_shards")
    for split in ("train", "val"):
        write_shards(read_list_file(videos / f"{split}.txt", videos), root / split, root=videos, max_count=3)
    shutil.copy(videos / "classes.txt", root / "classes.txt")
    return root


def _shard_config(root: Path, out: Path, *more: str) -> Config:
    return apply_overrides(demo_config(), [
        f"data.root={root}", "data.synthetic=null", "data.format=tar_shards", "data.train_shards=train",
        "data.val_shards=val/*.tar", "data.batch_size=4", f"run.output_dir={out}", "run.name=shards",
        "train.epochs=1", "train.max_steps=2", "train.progress=false", "train.tensorboard=false", *more,
    ])


def test_train_and_eval_from_tar_shards(shard_set, tmp_path, monkeypatch):
    from hiera_video.data.shards import TarShardVideoDataset
    from hiera_video.engine.evaluate import evaluate_run
    from hiera_video.engine.train import train

    cfg = _shard_config(shard_set, tmp_path)
    names = build.read_class_names(cfg)
    pipe = build.train_pipeline(cfg, names)
    assert isinstance(pipe.dataset, TarShardVideoDataset) and len(pipe.dataset) == 2 * len(names)
    assert isinstance(build.eval_dataset(cfg, "val", names), TarShardVideoDataset)
    torch.manual_seed(0)
    out = train(cfg)
    assert out["metrics"]["num_videos"] == len(names)
    steps = [json.loads(line) for line in (out["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    assert max(s.get("step", 0) for s in steps) == 2
    result = evaluate_run(str(out["run_dir"]), ["eval.num_clips=1", "eval.num_crops=1"])
    assert result["metrics"]["num_videos"] == len(names) and result["metrics"]["num_failed"] == 0


def test_tar_shard_config_errors_name_the_key(shard_set, tmp_path):
    with pytest.raises(ConfigError, match="data.val_shards is not set"):
        build.check_data(_shard_config(shard_set, tmp_path, "data.val_shards=null"), ("train", "val"))
    with pytest.raises(ConfigError, match="data.train_shards: no tar shards"):
        build.check_data(_shard_config(shard_set, tmp_path, "data.train_shards=nowhere"), ("train",))
    assert build.has_split(_shard_config(shard_set, tmp_path), "val")
    assert not build.has_split(_shard_config(shard_set, tmp_path), "test")


# ---------------------------------------------------------------------------------------- decode device


@pytest.mark.parametrize(
    "setting, decoder, model_device, gpu, expected",
    [
        ("cpu", "auto", "cuda:0", True, "cpu"),
        ("auto", "auto", "cpu", True, "cpu"),
        ("auto", "auto", "cuda:1", True, "cuda:1"),
        ("auto", "torchcodec", "cuda:0", True, "cuda:0"),
        ("auto", "pyav", "cuda:0", True, "cpu"),
        ("auto", "auto", "cuda:0", False, "cpu"),
        ("cuda", "auto", "cpu", True, "cuda"),
        ("cuda", "auto", "cuda:0", False, "cpu"),
        ("cuda", "decord", "cuda:0", True, "cpu"),
    ],
)
def test_decode_device_selection(monkeypatch, setting, decoder, model_device, gpu, expected):
    import hiera_video.data.reader_torchcodec as rt

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(rt, "torchcodec_installed", lambda: True)  # the capability probe: GPU + torchcodec
    cfg = apply_overrides(Config(), [f"data.decode_device={setting}", f"data.decoder={decoder}",
                                     "data.num_workers=3"])
    chosen = build.decode_device(cfg, torch.device(model_device))
    assert chosen == torch.device(expected)
    assert build.loader_workers(cfg, chosen) == (0 if chosen.type == "cuda" else 3)


def test_gpu_request_falls_back_to_the_same_cpu_frames(data):
    from hiera_video.data.video_reader import available_backends, open_video

    path = data["videos"] / "sub" / "b.mp4"
    indices = [0, 3, 7, 25]
    with open_video(path) as cpu:
        expected = cpu.get_frames(indices)
    for backend in ("auto", *[b for b in ("torchcodec",) if b in available_backends()]):
        with open_video(path, backend=backend, device="cuda") as reader:
            frames = reader.get_frames(indices)
        if not torch.cuda.is_available():  # no GPU: the CPU fallback, bitwise the CPU decode
            assert frames.device.type == "cpu"
            assert torch.equal(frames, expected), backend
        else:  # NVDEC's colour conversion is not libswscale's: close, not bitwise
            assert frames.shape == expected.shape


def test_extraction_and_eval_pass_the_gpu_decode_device_to_the_readers(data, folder_features, shard_set,
                                                                       tmp_path, monkeypatch):
    """With GPU decoding selected (monkeypatched: no GPU here), the readers are asked for ``device="cuda"``,
    in the main process (workers off), and the fallback CPU decode gives the CPU run's features."""
    import hiera_video.data.datasets as ds
    import hiera_video.data.shards as sh
    import hiera_video.data.video_reader as vr
    from hiera_video.engine.evaluate import evaluate_run
    from hiera_video.engine.train import train

    asked: list[tuple[int, str]] = []
    real = vr.open_video

    def spy(*args, **kwargs):
        asked.append((os.getpid(), str(kwargs.get("device", "cpu"))))
        return real(*args, **kwargs)

    for module in (vr, ds, sh):
        monkeypatch.setattr(module, "open_video", spy)
    monkeypatch.setattr(build, "decode_device", lambda cfg, device: torch.device("cuda"))
    out = tmp_path / "feats"
    summary = extract_features(data["root"] / "shards", out, pretrained=data["pretrained"],
                               **{**KW, "num_workers": 2})
    assert summary["done"] == 3 and summary["decode_device"] == "cuda"
    assert asked and all(a == (os.getpid(), "cuda") for a in asked)  # main process, device=cuda
    _assert_same_features(_features(out), folder_features)

    cfg = _shard_config(shard_set, tmp_path / "run")
    run = train(cfg)
    asked.clear()
    result = evaluate_run(str(run["run_dir"]), ["eval.num_clips=1", "eval.num_crops=1", "data.num_workers=2"])
    assert result["metrics"]["num_videos"] == len(build.read_class_names(cfg)) and result["metrics"]["num_failed"] == 0
    assert asked and all(a == (os.getpid(), "cuda") for a in asked)


def test_gpu_decoded_clips_are_transformed_on_their_device(data):
    """Frames a GPU decoder returns stay on its device through the evaluation and extraction transforms
    (the ``meta`` device stands in for CUDA here: any CPU allocation mixed in would raise)."""
    from hiera_video.data.datasets import VideoDataset
    from hiera_video.data.streaming import FrameTransform
    from hiera_video.data.transforms import VideoEvalTransform

    class OnDevice:
        def __init__(self, reader):
            self.reader = reader

        def __getattr__(self, name):
            return getattr(self.reader, name)

        def __len__(self):
            return len(self.reader)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.reader.close()

        def get_clips(self, indices):
            return [clip.to("meta") for clip in self.reader.get_clips(indices)]

    class MetaDataset(VideoDataset):
        def _open_reader(self, index):
            return OnDevice(super()._open_reader(index))

    dataset = MetaDataset(data["records"], train=False, transform=VideoEvalTransform(crop_size=32, num_crops=3))
    views, label, index, valid = dataset[1]
    assert valid and views.device.type == "meta" and views.shape[1:] == (3, 16, 32, 32)
    frames = torch.empty(8, 48, 64, 3, dtype=torch.uint8, device="meta")
    assert FrameTransform("center_crop", 32)(frames).device.type == "meta"
    assert FrameTransform("full", 32)(frames).shape == (8, 3, 64, 64)
