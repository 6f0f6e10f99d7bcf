"""End-to-end training on generated data: temporal modelling, the image path, evaluate / predict / outputs.

The motion-direction set labels each video with the direction a textured square moves; its start position is
random, so one frame carries no information. A tiny video Hiera must reach >= 90% on held-out videos, while
the same model and budget fed one frame repeated stays near chance: the accuracy comes from motion.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hiera_video.config import apply_overrides, demo_config, load_config
from hiera_video.data import make_motion_dataset
from hiera_video.engine.train import train

# 24 + 12 videos per class of 8 frames at 32x32: large enough to generalise, small enough for 2 CPU cores.
PER_CLASS, VAL_PER_CLASS = 24, 12


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    make_motion_dataset(root, num_videos_per_class={"train": PER_CLASS, "val": VAL_PER_CLASS}, num_frames=8,
                        size=(32, 32), fps=8, seed=0)
    return root


def motion_config(root: Path, out: Path, name: str, *overrides: str):
    return apply_overrides(demo_config(), [
        f"data.root={root}", "data.synthetic=null", f"run.output_dir={out}", f"run.name={name}",
        "train.epochs=4", "train.progress=false", "train.tensorboard=false", *overrides,
    ])


@pytest.fixture(scope="module")
def motion_run(motion_root, tmp_path_factory) -> dict:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("runs")
    return train(motion_config(motion_root, out, "motion"))


def test_motion_task_is_learned_from_time_not_from_a_frame(motion_run, motion_root, tmp_path):
    metrics = motion_run["metrics"]
    assert metrics["num_videos"] == 4 * VAL_PER_CLASS and metrics["num_failed"] == 0
    assert metrics["top1"] >= 0.9, metrics
    # Every class is recognised, not just some of them.
    assert min(metrics["per_class_accuracy"]) >= 0.75, metrics["per_class_accuracy"]

    frozen = train(motion_config(motion_root, tmp_path, "single_frame", "data.repeat_single_frame=true"))
    # Chance is 25%; 48 validation videos: 45% would need a large, systematic signal a single frame lacks.
    assert frozen["metrics"]["top1"] <= 0.45, frozen["metrics"]
    assert frozen["metrics"]["loss"] > motion_run["metrics"]["loss"] + 0.3


def test_deterministic_runs_ignore_the_per_process_kernel_choices(motion_root, tmp_path, monkeypatch):
    """``train.deterministic``: two runs give the same weights bit for bit even where the CPU fast path
    would pick other kernels in each process (simulated: oneDNN everywhere in one run, MKL in the other);
    without it those two runs differ. The global switches are restored after the run."""
    from hiera_video.models import cpu_kernels, fast

    def run(name: str, onednn: bool, deterministic: bool) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(fast, "FORCE_ONEDNN", onednn)
        cfg = motion_config(motion_root, tmp_path, name, "train.epochs=1", "train.max_steps=3",
                            f"train.deterministic={str(deterministic).lower()}")
        return {k: v.clone() for k, v in train(cfg)["model"].state_dict().items()}

    a, b = run("a", True, True), run("b", False, True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fast.is_enabled() and not torch.are_deterministic_algorithms_enabled()
    if cpu_kernels.kernel_ok("onednn_fp32_linear"):  # the two kernels exist (else nothing could differ)
        c, d = run("c", True, False), run("d", False, False)
        assert not all(torch.equal(c[k], d[k]) for k in c)


def test_run_folder_holds_every_output(motion_run, motion_root):
    run = Path(motion_run["run_dir"])
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "eval_metrics.json", "eval_confusion.png",
                 "checkpoints/last.pt", "checkpoints/best.pt", "model/config.json"):
        assert (run / name).is_file(), name
    # The saved config is the resolved one and loads back.
    saved = load_config(run / "config.yaml")
    assert saved.data.root == str(motion_root) and saved.train.epochs == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert len(val_rows) == 4 and train_rows and all("lr" in r for r in train_rows)
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    report = json.loads((run / "eval_metrics.json").read_text())
    assert set(report["per_class_accuracy"]) == {"left", "right", "up", "down"}
    assert sum(map(sum, report["confusion_matrix"])) == report["num_videos"]
    # The final evaluation's per-video predictions, one line per video, probabilities over every class.
    preds = [json.loads(line) for line in (run / "eval_predictions.jsonl").read_text().splitlines()]
    scored = [p for p in preds if "probs" in p]
    assert len(scored) == report["num_videos"] and all(len(p["probs"]) == 4 for p in scored)
    assert all(abs(sum(p["probs"]) - 1) < 1e-4 and p["topk"][0][0] in report["per_class_accuracy"] for p in scored)
    top1 = sum(p["topk"][0][0] == p["label_name"] for p in scored) / len(scored)
    assert abs(top1 - report["top1"]) < 1e-6


def test_exported_model_and_predict_agree_with_labels(motion_run, motion_root):
    from hiera_video.engine.predict import predict_files

    lines = (motion_root / "val.txt").read_text().splitlines()[::VAL_PER_CLASS]  # one video per class
    paths = [str(motion_root / line.split()[0]) for line in lines]
    truth = [Path(p).parent.name for p in paths]
    results = predict_files(paths + [str(motion_root / "missing.mp4")], motion_run["run_dir"], topk=2)
    assert [r["topk"][0][0] for r in results[:4]] == truth
    assert all(len(r["topk"]) == 2 and r["topk"][0][1] >= r["topk"][1][1] for r in results[:4])
    assert results[4] == {"path": str(motion_root / "missing.mp4"), "error": "file not found"}
    # The exported folder alone (no run config) gives the same top-1.
    again = predict_files(paths, Path(motion_run["run_dir"]) / "model", topk=1)
    assert [r["topk"][0][0] for r in again] == truth


def test_evaluation_excludes_unreadable_videos_and_counts_them(motion_run, motion_root, tmp_path):
    from hiera_video.engine.evaluate import evaluate_run

    # A copy of the validation list with one corrupt file added.
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    lines = (motion_root / "val.txt").read_text().splitlines()
    (tmp_path / "val_with_bad.txt").write_text(
        "\n".join(f"{motion_root / line.split()[0]} {line.split()[1]}" for line in lines) + f"\n{bad} 0\n")
    out = evaluate_run(str(motion_run["run_dir"]), [f"data.val_list={tmp_path / 'val_with_bad.txt'}",
                                                    "eval.num_clips=2", "eval.num_crops=3"])
    m = out["metrics"]
    assert m["num_failed"] == 1 and m["failed"][0]["path"].endswith("corrupt.mp4")
    assert m["num_videos"] == len(lines) and m["top1"] >= 0.9
    assert Path(out["files"]["metrics"]).is_file() and Path(out["files"]["confusion"]).is_file()


def test_image_task_learns_with_a_2d_config(tmp_path, monkeypatch):
    cfg = apply_overrides(load_config("in1k_finetune_hiera_base_224"), [
        # The ImageNet recipe made tiny: a small Hiera on 32x32 generated shapes, no heavy regularisation.
        "model.name=hiera_tiny_224", "model.overrides={embed_dim: 32, num_heads: 1, depths: [1, 1, 2, 1]}",
        "model.drop_path_rate=0.0", "data.crop_size=32", "data.test_short_side=32", "data.train_scale=[0.8, 1.0]",
        "data.randaug_n=0", "data.erase_prob=0.0", "data.batch_size=16", "data.num_workers=0",
        "aug.mixup=0.0", "aug.cutmix=0.0", "aug.label_smoothing=0.0", "optim.lr=5e-4", "optim.lr_batch_size=null",
        "optim.layer_decay=1.0", "optim.warmup_epochs=1", "train.epochs=6", "train.device=cpu",
        "train.precision=fp32", "train.progress=false", "train.tensorboard=false", "eval.batch_size=16",
        "data.synthetic={kind: shapes, num_per_class: 32, num_val_per_class: 16, size: [32, 32]}",
        f"run.output_dir={tmp_path}", "run.name=shapes",
    ])
    import hiera_video.engine.loop as loop
    from hiera_video.models import fast_train

    kept = []  # the training process keeps freed memory mapped on CPU (hiera_video/allocator.py), not only loaders
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: kept.append(True) or True)
    pooled = []  # the CPU training path (models/fast_train.py) ran, and its pool is released after training
    take = fast_train.take
    monkeypatch.setattr(fast_train, "take", lambda *a: pooled.append(1) or take(*a))
    from hiera_video.engine.train import SupervisedTask

    at_eval = []  # ... and released before each evaluation too (its buffers would sit beside evaluation's)
    end_of_epoch = SupervisedTask.end_of_epoch
    monkeypatch.setattr(SupervisedTask, "end_of_epoch",
                        lambda self, *a: at_eval.append(fast_train.pool_bytes()) or end_of_epoch(self, *a))
    out = train(cfg)
    assert kept and pooled and fast_train.pool_bytes() == 0
    assert at_eval and not any(at_eval)
    m = out["metrics"]
    assert m["num_videos"] == 48 and m["num_classes"] == 3
    assert m["top1"] >= 0.55, m  # chance is 1/3
    assert out["model"].config.input_size == (32, 32)


def test_cli_eval_predict_convert_on_the_trained_run(motion_run, motion_root, tmp_path, capsys):
    from hiera_video.cli import main
    from hiera_video.models import create_model

    run = str(motion_run["run_dir"])
    assert main(["eval", run, "eval.num_clips=2"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and f"on {4 * VAL_PER_CLASS} items (0 unreadable, excluded)" in out
    assert (Path(run) / "eval_val_metrics.json").is_file()

    video = motion_root / (motion_root / "val.txt").read_text().split()[0]  # a "left" video
    assert main(["predict", str(video), "--model", run, "--topk", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{video}: left ")

    assert main(["convert", str(Path(run) / "model"), str(tmp_path / "converted")]) == 0
    converted = create_model(pretrained=str(tmp_path / "converted"))
    original = motion_run["model"].state_dict()
    assert all(torch.equal(v, original[k]) for k, v in converted.state_dict().items())


def test_demo_command_prints_its_result_and_keeps_its_run(tmp_path, capsys):
    """`hiera-video demo` end to end on a shrunken budget: generated videos, result lines, run folder rules."""
    from hiera_video.cli import main

    small = ["--output-dir", str(tmp_path), "data.synthetic.num_per_class=2", "data.synthetic.num_val_per_class=1",
             "data.synthetic.num_frames=8",
             "train.epochs=1", "train.progress=false", "train.tensorboard=false"]
    assert main(["demo", *small]) == 0
    out = capsys.readouterr().out
    assert "demo accuracy:" in out and "top-1 on 8 held-out videos" in out and "chance 12%" in out
    assert "right, down_right, down, down_left, left, up_left, up, up_right" in out
    assert "learning curve (epoch: val top-1): 1: " in out
    run = tmp_path / "demo"
    marker = run / "data" / "synthetic.json"
    assert json.loads(marker.read_text())["settings"]["kind"] == "motion"
    stamp = marker.stat().st_mtime_ns
    # A second demo into the same folder is refused; --overwrite starts again and reuses the generated data.
    assert main(["demo", *small]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "--resume" not in err
    assert main(["demo", "--overwrite", *small]) == 0
    assert marker.stat().st_mtime_ns == stamp and (run / "model" / "config.json").is_file()
