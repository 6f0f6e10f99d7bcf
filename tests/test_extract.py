"""End-to-end tests of ``hiera-video extract`` on generated H.264 videos and PNG images with tiny models.

* exactness: the features written equal the model's own outputs on the same frames, decoded independently
  with a full sequential PyAV decode and transformed with the data layer's evaluation transforms;
* never losing work: a run killed (SIGKILL) after K shards and resumed, and a run stopped by an exception,
  give exactly the features of an uninterrupted run; corrupt files land in the failures file;
* bounded memory: a 3-minute video is extracted without holding more than a window of frames;
* torchrun: two ranks write their own shards, the last to finish merges, same features as one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from model_helpers import choices_must_be_adopted
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import hiera_video
from hiera_video.cli import main as cli_main
from hiera_video.data.synthetic import make_motion_frames, make_shape_image, write_video
from hiera_video.data.transforms import ImageEvalTransform, VideoEvalTransform
from hiera_video.engine.extract import extract_features
from hiera_video.engine.feature_store import read_shard_records, shard_files
from hiera_video.models import cpu_kernels, fast

TINY_VIDEO = dict(input_size=(8, 64, 64), embed_dim=32, num_heads=1, depths=(1, 1, 2, 1), num_classes=5)
TINY_IMAGE = dict(input_size=(64, 64), embed_dim=32, num_heads=1, depths=(1, 1, 2, 1), num_classes=3)
ATOL, RTOL = 1e-5, 1e-4
REPO = Path(__file__).resolve().parents[1]


def _randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Distinct random weights everywhere (the default init's constant biases and 0.001 head hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny models saved with save_pretrained, videos of several sizes / lengths / fps, images, junk."""
    root = tmp_path_factory.mktemp("extract")
    vmodel = _randomized(hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO), 0)
    vmodel.save_pretrained(str(root / "video_model"))
    imodel = _randomized(hiera_video.create_model("hiera_base_224", **TINY_IMAGE), 1)
    imodel.save_pretrained(str(root / "image_model"))

    rng = np.random.default_rng(0)
    videos = root / "videos"
    # (relative path, frames, (H, W), fps): landscape, portrait, 25 fps, shorter than one clip.
    for rel, n, size, fps in [("a.mp4", 40, (48, 64), 30), ("sub/b.mp4", 57, (64, 48), 25),
                              ("sub/c.mp4", 33, (48, 64), 30), ("short.mp4", 10, (48, 64), 30)]:
        write_video(videos / rel, make_motion_frames("right", n, size, rng), fps=fps, gop_size=8)
    images = root / "images"
    images.mkdir()
    for shape in ["square", "circle", "triangle"]:
        Image.fromarray(make_shape_image(shape, (56, 72), rng)).save(images / f"{shape}.png")
    write_video(images / "clip.mp4", make_motion_frames("up", 6, (48, 64), rng), fps=10)

    # More videos plus two unreadable files for the resume / failure tests.
    resume = root / "resume"
    for i in range(6):
        write_video(resume / f"v{i}.mp4", make_motion_frames("left", 20 + 4 * i, (32, 32), rng), fps=20)
    (resume / "garbage.mp4").write_bytes(os.urandom(3000))
    good = (resume / "v5.mp4").read_bytes()
    (resume / "truncated.mp4").write_bytes(good[: len(good) // 2])
    return {"root": root, "video_model": vmodel, "image_model": imodel, "videos": videos, "images": images,
            "resume": resume}


def _pyav_frames(path: Path) -> np.ndarray:
    """Every frame of a video by a plain sequential PyAV decode: uint8 [N, H, W, 3]."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _sliding_indices(n: int, T: int, rate: int) -> list[list[int]]:
    """Clips of T frames every `rate` frames, starting every T * rate frames, as long as they fit."""
    starts = list(range(0, n - (T - 1) * rate, T * rate)) or [0]
    return [[min(s + j * rate, n - 1) for j in range(T)] for s in starts]


# ---------------------------------------------------------------------------------------- exactness


def test_video_features_equal_model_outputs(data, tmp_path):
    out = tmp_path / "feats"
    summary = extract_features(
        data["videos"], out, model="hiera_base_16x224", pretrained=str(data["root"] / "video_model"),
        sampling_rate=2, target_fps=None, outputs=("embedding", "logits", "probs", "stage2"), num_workers=2,
        batch_size=3,
        shard_max_videos=2, progress=False)
    assert summary["done"] == 4 and summary["failed"] == 0
    feats = hiera_video.load_features(out)
    assert set(feats) == {"a", "sub/b", "sub/c", "short"}
    model, transform = data["video_model"], VideoEvalTransform(crop_size=64)
    for vid in feats:
        f = feats[vid]
        frames = _pyav_frames(data["videos"] / f"{vid}.mp4")
        assert f.num_frames == len(frames)
        clips = _sliding_indices(len(frames), 8, 2)
        assert f.clips["start_frame"].tolist() == [c[0] for c in clips]
        assert f.clips["end_frame"].tolist() == [c[-1] + 1 for c in clips]
        assert torch.allclose(f.clips["start_time"], f.clips["start_frame"].double() / f.fps)
        x = torch.cat([transform(torch.from_numpy(frames[c])) for c in clips])  # [N, C, T, H, W]
        with torch.inference_mode():
            emb = model.forward_features(x)
            logits = model(x)
            stage2 = model.forward_intermediates(x, stages=[2], intermediates_only=True)[0]
        torch.testing.assert_close(f["embedding"], emb, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(f["logits"], logits, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(f["probs"], logits.softmax(-1), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(f["stage2"], stage2, atol=ATOL, rtol=RTOL)
        assert f["stage2"].shape == (len(clips), 4, 4, 4, 128)  # [N, T', H', W', C]: rerolled map


def test_full_frame_fp16_pooled_and_uniform(data, tmp_path):
    """Full frames (position embeddings interpolated), N uniform clips, pooled stage map, fp16 storage."""
    lst = tmp_path / "one.txt"
    lst.write_text("sub/b.mp4 0\n")
    out = tmp_path / "feats"
    extract_features(lst, out, root=str(data["videos"]), model=str(data["root"] / "video_model"),
                     spatial="full", clip_mode="uniform", num_clips=3, sampling_rate=3, target_fps=None,
                     outputs=("embedding", "stage1"), pool_space=True, dtype="fp16", num_workers=0,
                     manifest_format="csv", progress=False)
    assert (out / "manifest.csv").is_file()
    f = hiera_video.load_features(out, "sub/b")  # ids are paths relative to the root, without extension
    frames = _pyav_frames(data["videos"] / "sub/b.mp4")  # 57 frames of 64x48: resized to 64x64 (x32)
    n, span = len(frames), 7 * 3 + 1
    starts = [0, (n - span) // 2, n - span]
    clips = [[s + 3 * j for j in range(8)] for s in starts]
    clip_frames = torch.stack([torch.from_numpy(frames[c]) for c in clips])  # [N, T, H, W, C]
    x = TF.resize(clip_frames.permute(0, 1, 4, 2, 3).flatten(0, 1), [64, 64], antialias=True)
    x = ((x.view(3, 8, 3, 64, 64).float() - 0.45 * 255) / (0.225 * 255)).transpose(1, 2)  # [N, C, T, H, W]
    model = data["video_model"]
    with torch.inference_mode():
        emb = model.forward_features(x)
        st1 = model.forward_intermediates(x, stages=[1], intermediates_only=True)[0].mean(dim=(-3, -2))
    assert f["embedding"].dtype == torch.float16 and f["stage1"].shape == (3, 4, 64)
    torch.testing.assert_close(f["embedding"].float(), emb, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(f["stage1"].float(), st1, atol=2e-3, rtol=2e-3)
    assert f.clips["start_frame"].tolist() == starts


def test_image_model_features_equal_model_outputs(data, tmp_path):
    """An image model from a save_pretrained directory, on PNGs and on the frames of a video."""
    out = tmp_path / "feats"
    summary = extract_features(data["images"], out, model=str(data["root"] / "image_model"),
                               outputs=("embedding", "logits"), num_workers=1, batch_size=4, progress=False)
    assert summary["done"] == 4
    feats = hiera_video.load_features(out)
    model, transform = data["image_model"], ImageEvalTransform(crop_size=64)
    for name in ("square", "circle", "triangle"):
        f = feats[name]
        x = transform(Image.open(data["images"] / f"{name}.png"))[None]
        with torch.inference_mode():
            torch.testing.assert_close(f["embedding"], model.forward_features(x), atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(f["logits"], model(x), atol=ATOL, rtol=RTOL)
        assert f.num_frames == 1 and f.clips["start_frame"].tolist() == [0]
    f = feats["clip"]  # a video through an image model: one clip per frame
    frames = _pyav_frames(data["images"] / "clip.mp4")
    assert f["embedding"].shape == (6, 256) and f.clips["start_frame"].tolist() == list(range(6))
    x = torch.stack([transform(torch.from_numpy(fr).permute(2, 0, 1)) for fr in frames])
    with torch.inference_mode():
        torch.testing.assert_close(f["embedding"], model.forward_features(x), atol=ATOL, rtol=RTOL)


def test_training_run_folder_supplies_model_and_clip_settings(data, tmp_path):
    """model=<run folder>: weights from checkpoints/best.pt, clip length / rate / crop from config.yaml."""
    from hiera_video.config import Config, DataConfig, ModelConfig, config_to_dict, save_config

    arch = {k: v for k, v in TINY_VIDEO.items() if k not in ("input_size", "num_classes")}
    cfg = Config(model=ModelConfig(name="hiera_base_16x224", overrides=arch),
                 data=DataConfig(num_frames=8, sampling_rate=3, crop_size=64))
    run = tmp_path / "run"
    save_config(cfg, run / "config.yaml")
    (run / "checkpoints").mkdir()
    torch.save({"model": data["video_model"].state_dict(), "config": config_to_dict(cfg)},
               run / "checkpoints" / "best.pt")
    lst = tmp_path / "one.txt"
    lst.write_text(f"{data['videos'] / 'a.mp4'}\n")
    extract_features(lst, tmp_path / "feats", model=str(run), id_root=str(data["videos"]), num_workers=0,
                     progress=False)
    f = next(iter(hiera_video.load_features(tmp_path / "feats").values()))
    frames = _pyav_frames(data["videos"] / "a.mp4")
    clips = _sliding_indices(len(frames), 8, 3)  # the run's 8x3 clips
    assert f.clips["start_frame"].tolist() == [c[0] for c in clips]
    x = torch.cat([VideoEvalTransform(crop_size=64)(torch.from_numpy(frames[c])) for c in clips])
    with torch.inference_mode():
        expected = data["video_model"].forward_features(x)
    torch.testing.assert_close(f["embedding"], expected, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------- never lose work

RESUME_KW = dict(model="hiera_base_16x224", sampling_rate=1, target_fps=None, num_frames=4, outputs=("embedding",),
                 num_workers=0, batch_size=2, shard_max_videos=2, progress=False)


def _all_features(out: Path) -> dict[str, torch.Tensor]:
    feats = hiera_video.load_features(out)
    return {vid: feats[vid]["embedding"] for vid in feats}


def _shard_video_ids(out: Path) -> list[str]:
    return [r["video_id"] for p in shard_files(out) for r in read_shard_records(p)]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run over the resume set (6 good videos, 2 unreadable files)."""
    out = tmp_path_factory.mktemp("ref") / "feats"
    summary = extract_features(data["resume"], out, pretrained=str(data["root"] / "video_model"), **RESUME_KW)
    return out, summary


def test_reference_run_records_failures(reference):
    out, summary = reference
    assert (summary["done"], summary["skipped"], summary["failed"]) == (6, 0, 2)
    failures = {json.loads(line)["video_id"]: json.loads(line)
                for line in (out / "failures.jsonl").read_text().splitlines()}
    assert set(failures) == {"garbage", "truncated"}
    assert all("cannot read video" in f["error"] for f in failures.values())
    assert sorted(_shard_video_ids(out)) == [f"v{i}" for i in range(6)]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["video_id"] for m in manifest] == [f"v{i}" for i in range(6)]  # input order
    assert json.loads((out / "summary.json").read_text())["clips"] == summary["clips"] > 0


def test_killed_run_resumes_to_the_same_features(data, reference, tmp_path):
    """SIGKILL after 2 shards (no handler runs), then the same command again."""
    out = tmp_path / "feats"
    script = textwrap.dedent(f"""
        import os, signal
        from hiera_video.engine.extract import extract_features
        shards = []
        def hook(path, records):
            shards.append(path)
            if len(shards) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        extract_features({str(data['resume'])!r}, {str(out)!r}, on_shard=hook,
                         pretrained={str(data['root'] / 'video_model')!r}, **{RESUME_KW!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(shard_files(out)) == 2 and not (out / "manifest.jsonl").exists()
    # What a kill in the middle of a shard write leaves behind: a temporary file, never a shard.
    (out / "shards" / ".r00000-000002.safetensors.x1y2.tmp").write_bytes(b"half a shard")
    partial = hiera_video.load_features(out)  # readable before any merge, from the shard headers
    assert len(partial) == 4

    # The killed run's CPU kernel choices were kept with its shards; the resume adopts them (measuring any
    # again would fail here), so the folder's features are one computation.
    kept = json.loads((out / "parts" / "kernel_choices.r00000.json").read_text())
    with torch.inference_mode():
        fast_on = fast.active(torch.zeros(1))
    assert bool(kept["choices"]) == fast_on and kept["fingerprint"] == cpu_kernels.fingerprint()
    with choices_must_be_adopted(kept):
        summary = extract_features(data["resume"], out, pretrained=str(data["root"] / "video_model"), **RESUME_KW)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 4, 2)
    assert not list((out / "shards").glob("*.tmp"))
    ids = _shard_video_ids(out)
    assert sorted(ids) == sorted(set(ids)) == [f"v{i}" for i in range(6)]  # nothing missing or duplicated
    ref, got = _all_features(reference[0]), _all_features(out)
    assert set(ref) == set(got)
    for vid in ref:
        torch.testing.assert_close(got[vid], ref[vid], atol=1e-6, rtol=1e-5)
    assert {json.loads(x)["video_id"] for x in (out / "failures.jsonl").read_text().splitlines()} == \
        {"garbage", "truncated"}

    again = extract_features(data["resume"], out, pretrained=str(data["root"] / "video_model"), **RESUME_KW)
    assert (again["done"], again["skipped"], again["clips"]) == (0, 6, 0)


def test_exception_mid_run_keeps_finished_videos(data, reference, tmp_path):
    out = tmp_path / "feats"

    def boom(path, records):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        extract_features(data["resume"], out, on_shard=boom, pretrained=str(data["root"] / "video_model"),
                         **RESUME_KW)
    # The first shard is in place (the hook ran after its rename); the videos that had finished by then
    # were flushed to another shard on the way out.
    assert len(shard_files(out)) >= 1
    summary = extract_features(data["resume"], out, pretrained=str(data["root"] / "video_model"), **RESUME_KW)
    assert summary["done"] + summary["skipped"] == 6
    ids = _shard_video_ids(out)
    assert sorted(ids) == sorted(set(ids)) == [f"v{i}" for i in range(6)]
    ref = _all_features(reference[0])
    for vid, t in _all_features(out).items():
        torch.testing.assert_close(t, ref[vid], atol=1e-6, rtol=1e-5)


def test_changed_settings_are_refused(data, reference, tmp_path):
    with pytest.raises(ValueError, match="num_frames"):
        extract_features(data["resume"], reference[0], pretrained=str(data["root"] / "video_model"),
                         **{**RESUME_KW, "num_frames": 8})


# ---------------------------------------------------------------------------------------- bounded memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_long_video_is_streamed_in_bounded_windows(data, tmp_path, monkeypatch):
    """3 minutes at 10 fps (1800 frames of 192x256, 265 MB decoded): never more than a window in memory."""
    n, h, w = 1800, 192, 256
    base = np.random.default_rng(0).integers(0, 256, (h, w + n), dtype=np.uint8)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):  # a texture scrolling one pixel per frame: cheap to make, not trivially compressible
        frames[t] = base[:, t:t + w, None]
    write_video(tmp_path / "long" / "long.mp4", frames, fps=10, gop_size=30, preset="ultrafast")
    whole = frames.nbytes
    del frames, base

    import hiera_video.data.video_reader as vr

    calls: list[int] = []
    real_open = vr.open_video

    def spy_open(*args, **kwargs):
        reader = real_open(*args, **kwargs)
        real_get = reader.get_frames

        def get_frames(indices):
            calls.append(len(indices))
            return real_get(indices)

        reader.get_frames = get_frames
        return reader

    monkeypatch.setattr(vr, "open_video", spy_open)
    # PyAV: its reader decodes into one array per read, so RSS follows the frames alive. (With decord the
    # same bounded reads leave RSS 200-400 MB higher, from heap fragmentation, not frames held: see
    # BENCHMARKS_EXTRACT.md. The frame counters below hold for every backend.)
    settings = dict(model="hiera_base_16x224", pretrained=str(data["root"] / "video_model"), sampling_rate=4,
                    target_fps=None, num_workers=0, batch_size=8, window_frames=64, backend="pyav", progress=False)
    # Warm up on a short video first: lazy imports, the decoder's one-off allocations and the allocator's
    # pools then count in the baseline, and what is left to measure is what grows with the video.
    warm = tmp_path / "warm.txt"
    warm.write_text(f"{data['videos'] / 'a.mp4'}\n")
    extract_features(warm, tmp_path / "warm", id_root=str(data["videos"]), **settings)
    calls.clear()
    peak, stop = [0], threading.Event()
    baseline = _rss_bytes()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes() - baseline)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        summary = extract_features(tmp_path / "long", tmp_path / "feats", **settings)
    finally:
        stop.set()
        sampler.join()
    clips = n // 32  # 8 frames every 4 frames, tiling time: one clip per 32 frames
    assert summary["done"] == 1 and summary["clips"] == clips
    assert sum(calls) == summary["frames_decoded"] == 8 * clips  # every sampled frame read once
    assert max(calls) <= 64 and len(calls) >= (8 * clips) // 64
    assert summary["peak_frames_held"] <= 64 + 29  # a window + frames carried over (< one clip span)
    # Held frames are resized to 64x64 right after decoding; the decoded window itself is 64 frames of
    # 192x256 (9 MB). Whole-video decoding would add 265 MB.
    assert peak[0] < whole / 4, f"RSS grew by {peak[0] / 2**20:.0f} MB"
    f = hiera_video.load_features(tmp_path / "feats", "long")
    assert f["embedding"].shape == (clips, 256) and f.clips["end_time"][-1] <= 180.0


# ---------------------------------------------------------------------------------------- CLI + torchrun


def test_cli_and_torchrun_match_single_process(data, tmp_path):
    single = tmp_path / "single"
    args = [str(data["videos"]), "--model", "hiera_base_16x224", "--pretrained",
            str(data["root"] / "video_model"), "--sampling-rate", "2", "--num-workers", "0",
            "--shard-max-videos", "1", "--no-progress"]
    # Overrides go before the flags (argparse does not take positionals after options).
    # (cli_main is the hiera-video console script)
    assert cli_main(["extract", args[0], str(single), "data.target_fps=null", *args[1:]]) == 0
    ref = _all_features(single)

    multi = tmp_path / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(29500 + os.getpid() % 1000), "-m", "hiera_video", "extract",
                           args[0], str(multi), "data.target_fps=null", *args[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [p.name for p in shard_files(multi)]
    assert {n[:6] for n in names} == {"r00000", "r00001"}  # each rank wrote its own shards
    summary = json.loads((multi / "summary.json").read_text())
    assert (summary["ranks"], summary["done"]) == (2, 4)
    manifest = [json.loads(x)["video_id"] for x in (multi / "manifest.jsonl").read_text().splitlines()]
    assert manifest == ["a", "short", "sub/b", "sub/c"]  # merged once, in input order
    got = _all_features(multi)
    assert set(got) == set(ref)
    for vid in ref:
        torch.testing.assert_close(got[vid], ref[vid], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------- one config, named errors


def test_cli_takes_a_config_file_overrides_and_prints_the_resolved_config(data, tmp_path, capsys):
    import yaml

    out = tmp_path / "feats"
    cfg_file = tmp_path / "extract.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "model": {"name": "hiera_base_16x224", "pretrained": str(data["root"] / "video_model")},
        "data": {"sampling_rate": 2, "target_fps": None, "num_workers": 0},
        "extract": {"input": str(data["videos"]), "output_dir": str(out), "outputs": ["embedding"]},
        "train": {"progress": False}}))
    assert cli_main(["extract", str(cfg_file), "extract.tail=align", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    # The model's clip length and crop (8 x 64 x 64) fill what the file leaves open; the file and the
    # override win where they speak.
    assert printed["data"]["num_frames"] == 8 and printed["data"]["crop_size"] == 64
    assert printed["data"]["sampling_rate"] == 2 and printed["extract"]["tail"] == "align"
    assert not out.exists()  # printing extracts nothing

    # --backend takes every decoder data.decoder accepts (torchcodec too) and sets data.decoder.
    for backend in ("pyav", "torchcodec", "decord"):
        assert cli_main(["extract", str(cfg_file), "--backend", backend, "--print-config"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["data"]["decoder"] == backend

    assert cli_main(["extract", str(cfg_file), "extract.tail=align", "extract.shard_max_videos=2"]) == 0
    saved = json.loads((out / "extract_config.json").read_text())["features"]
    assert saved["extract.tail"] == "align" and saved["data.num_frames"] == 8
    assert len(hiera_video.load_features(out)) == 4
    # A re-run with a feature-defining flag changed is refused, naming the key.
    assert cli_main(["extract", str(cfg_file), "--tail", "drop"]) == 2
    assert "extract.tail: 'align' -> 'drop'" in capsys.readouterr().err


@pytest.mark.parametrize("flags,key", [(["--stride", "0"], "extract.stride"),
                                       (["--batch-size", "0"], "extract.batch_size"),
                                       (["--num-workers", "-1"], "data.num_workers"),
                                       (["--crop-size", "60"], "data.crop_size=60 must be a multiple of 32")])
def test_invalid_values_stop_before_any_video(data, tmp_path, capsys, flags, key):
    out = tmp_path / "feats"
    code = cli_main(["extract", str(data["videos"]), str(out), "--model", str(data["root"] / "video_model"),
                     "--no-progress", *flags])
    assert code == 2
    assert key in capsys.readouterr().err
    assert not (out / "shards").exists()  # stopped up front, not once per video


def test_truncated_shard_is_detected_and_redone(data, reference, tmp_path):
    """A shard cut short (full disk, copy interrupted): named, moved aside, its videos extracted again."""
    import shutil

    out = tmp_path / "feats"
    shutil.copytree(reference[0], out)
    victim = shard_files(out)[1]
    lost = {r["video_id"] for r in read_shard_records(victim)}
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    from hiera_video.engine.feature_store import DamagedShardError

    with pytest.raises(DamagedShardError, match=victim.name):
        hiera_video.load_features(out)
    summary = extract_features(data["resume"], out, pretrained=str(data["root"] / "video_model"), **RESUME_KW)
    assert (summary["done"], summary["damaged_shards"]) == (len(lost), 1)
    assert [p.name.split(".")[0] for p in (out / "damaged").iterdir()] == [victim.name.split(".")[0]]
    ref, got = _all_features(reference[0]), _all_features(out)
    assert set(got) == set(ref)
    for vid in ref:
        torch.testing.assert_close(got[vid], ref[vid], atol=1e-6, rtol=1e-5)
