"""The ``hiera-video`` command: parsing, dispatch, and clear errors before any heavy work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hiera_video.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_subcommand_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "pretrain", "eval", "predict", "extract", "convert", "demo", "configs"} <= set(sub.choices)


def test_configs_lists_and_prints_resolved(capsys):
    code, out, _ = run_main(capsys, "configs")
    assert code == 0 and "k400_finetune_hiera_base_16x224" in out and "demo_tiny_cpu" in out
    code, out, _ = run_main(capsys, "configs", "ssv2_finetune_hiera_base_16x224", "optim.lr=0.5")
    resolved = yaml.safe_load(out)
    assert code == 0 and resolved["optim"]["lr"] == 0.5 and resolved["data"]["hflip"] is False


def test_print_config_applies_overrides_without_training(capsys, tmp_path):
    code, out, _ = run_main(capsys, "train", "k400_finetune_hiera_base_16x224", f"data.root={tmp_path}",
                            "train.epochs=7", "--print-config")
    assert code == 0 and yaml.safe_load(out)["train"]["epochs"] == 7
    code, out, _ = run_main(capsys, "demo", "train.epochs=2", "--print-config")
    assert code == 0 and yaml.safe_load(out)["train"]["epochs"] == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "k400_finetune_hiera_base_16x224", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["train", "k400_finetune_hiera_base_16x224", "train.epochs=many"], "train.epochs: expected an integer"),
        (["train", "no_such_config"], "config 'no_such_config' not found"),
        (["train", "k400_finetune_hiera_base_16x224"], "data.root is not set"),
        (["train", "k400_finetune_hiera_base_16x224", "data.root=/nonexistent/k400"],
         "dataset folder '/nonexistent/k400' does not exist"),
        (["train", "k400_finetune_hiera_base_16x224", "model.name=hiera_bsae_16x224", "data.root=/tmp"],
         "unknown model 'hiera_bsae_16x224' (did you mean 'hiera_base_16x224'"),
        (["train", "k400_finetune_hiera_base_16x224", "model.name=hiera_base_224", "data.root=/tmp"],
         "is an image model but data.kind is 'video'"),
        (["train", "k400_finetune_hiera_base_16x224", "data.crop_size=100", "data.root=/tmp"],
         "model: input height=100 is not divisible by 32"),
        (["pretrain", "k400_finetune_hiera_base_16x224", "data.root=/tmp"], "pretraining needs an MAE model"),
        (["train", "k400_mae_pretrain_hiera_base_16x224", "data.root=/tmp"], "is an MAE model"),
        (["train", "k400_finetune_hiera_base_16x224", "model.pretrained=/nonexistent/ckpt.pth", "data.root=/tmp"],
         "model.pretrained: '/nonexistent/ckpt.pth' does not exist"),
        (["eval", "k400_finetune_hiera_base_16x224"], "pass --checkpoint"),
        (["demo", "train.precision=fp64"], "train.precision: expected one of"),
    ],
)
def test_bad_configs_fail_fast_with_a_clear_message(capsys, argv, message):
    start = time.time()
    code, out, err = run_main(capsys, *argv)
    assert code == 2, (out, err)
    assert message in err, err
    assert "Traceback" not in err
    assert time.time() - start < 10  # checked before any data is read or model built


def test_missing_list_file_is_reported(capsys, tmp_path):
    code, _, err = run_main(capsys, "train", "k400_finetune_hiera_base_16x224", f"data.root={tmp_path}")
    # The recipe reads the official Kinetics CSVs (data.format=kinetics_csv).
    assert code == 2 and "data.train_list: Kinetics CSV" in err and "annotations/train.csv' does not exist" in err


def test_predict_with_a_missing_model_fails_cleanly(capsys, tmp_path):
    code, _, err = run_main(capsys, "predict", str(tmp_path / "a.mp4"), "--model", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("flags, says", [
    (("--topk", "0"), "topk must be an integer >= 1, got 0"),
    (("--topk", "-2"), "topk must be an integer >= 1, got -2"),
    (("--num-clips", "0"), "num_clips must be an integer >= 1, got 0"),
    (("--num-crops", "2"), "num_crops must be 1 (centre crop) or 3"),
])
def test_predict_rejects_bad_counts_before_loading_anything(capsys, tmp_path, flags, says):
    """No traceback, no empty result: the argument and its allowed values are named (the model named here
    does not exist, so the check must come first)."""
    code, out, err = run_main(capsys, "predict", str(tmp_path / "a.mp4"), "--model", str(tmp_path / "nope"), *flags)
    assert code == 2 and says in err and "Traceback" not in err and out == ""


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "hiera_video", "train", "k400_finetune_hiera_base_16x224",
                           "optim.lrr=1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "did you mean 'optim.lr'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hiera_video", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout and "pretrain" in proc.stdout


def test_ctrl_c_saves_a_checkpoint_and_exits(tmp_path):
    """A real Ctrl-C to the whole process group (main process and a DataLoader worker) mid-training."""
    import os
    import signal

    import torch

    from hiera_video.data import make_motion_dataset

    root = tmp_path / "data"
    make_motion_dataset(root, num_videos_per_class={"train": 16, "val": 1}, num_frames=8, size=(32, 32), fps=8)
    cmd = [sys.executable, "-m", "hiera_video", "train", "demo_tiny_cpu", f"data.root={root}", "data.synthetic=null",
           f"run.output_dir={tmp_path}", "run.name=run", "data.num_workers=1", "data.batch_size=4",
           "train.log_every_steps=1", "train.epochs=50", "train.progress=false", "train.tensorboard=false"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "checkpoint saved to" in err and "--resume" in err
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["loop"]["step"] >= 2 and saved["loop"]["epoch"] < 50
