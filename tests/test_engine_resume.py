"""A run stopped by Ctrl-C and resumed ends with exactly the weights of the uninterrupted run.

Everything random is switched on so that a missed state would show: drop path (torch RNG), MixUp/CutMix,
label smoothing, random crops (per-sample seeds), EMA, gradient accumulation, and a stop in the middle of an
epoch. The resumed run also uses a DataLoader worker process where the reference run decodes in the main
process, so the data order and augmentation must not depend on either.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from model_helpers import choices_must_be_adopted

from hiera_video.config import apply_overrides, demo_config
from hiera_video.data import make_motion_dataset
from hiera_video.engine.checkpoint import load_checkpoint
from hiera_video.engine.loop import TrainingInterrupted
from hiera_video.engine.train import train
from hiera_video.models import cpu_kernels


def config(root: Path, out: Path, name: str, *extra: str):
    return apply_overrides(demo_config(), [
        f"data.root={root}", "data.synthetic=null", f"run.output_dir={out}", f"run.name={name}",
        "data.batch_size=4", "optim.accum_steps=2", "train.epochs=3", "optim.warmup_epochs=1",
        "model.drop_path_rate=0.2", "aug.mixup=0.8", "aug.cutmix=1.0", "aug.label_smoothing=0.1",
        "train.ema=true", "train.ema_decay=0.9", "train.log_every_steps=1", "train.ckpt_every_steps=0",
        "train.progress=false", "train.tensorboard=false", "eval.batch_size=8", *extra,
    ])


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path):
    root = tmp_path / "data"
    make_motion_dataset(root, num_videos_per_class={"train": 4, "val": 2}, num_frames=8, size=(32, 32), fps=8)
    # 16 training videos / (batch 4 x accumulation 2) = 2 optimizer steps per epoch, 6 in all.
    reference = train(config(root, tmp_path, "reference"))
    assert reference["state"].step == 6

    stop_at = 3  # the middle of epoch 2

    def ctrl_c(state, loss, model):
        if state.step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled by the loop after this step

    with pytest.raises(TrainingInterrupted) as stopped:
        train(config(root, tmp_path, "resumed"), on_step=ctrl_c)
    saved = load_checkpoint(stopped.value.checkpoint)
    assert saved["loop"]["step"] == stop_at and saved["loop"]["epoch"] == 1 and saved["loop"]["batch_in_epoch"] == 2

    # The kernel choices of the interrupted run travel in its checkpoint and the resume adopts them (as a new
    # process would have to): with them forgotten here, measuring any of them again would fail.
    assert saved["kernel_choices"]["fingerprint"] == cpu_kernels.fingerprint()
    with choices_must_be_adopted(saved["kernel_choices"]):
        resumed = train(config(root, tmp_path, "resumed", "data.num_workers=1"), resume="auto")
    assert resumed["state"].step == 6

    ref, res = final_state(reference["run_dir"]), final_state(resumed["run_dir"])
    for part in ("model", "ema"):
        ref_sd = ref[part] if part == "model" else ref[part]["module"]
        res_sd = res[part] if part == "model" else res[part]["module"]
        assert ref_sd.keys() == res_sd.keys()
        for key in ref_sd:
            assert torch.allclose(ref_sd[key], res_sd[key], rtol=0, atol=1e-6), f"{part}.{key}"
    # Optimizer moments too, and the logged loss curve is the same curve (no duplicated steps).
    for a, b in zip(ref["optimizer"]["state"].values(), res["optimizer"]["state"].values()):
        assert torch.allclose(a["exp_avg_sq"], b["exp_avg_sq"], rtol=0, atol=1e-9)

    def losses(run_dir):
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], round(r["loss"], 5)) for r in rows if r["kind"] == "train"]

    assert losses(resumed["run_dir"]) == losses(reference["run_dir"])
    # The weights really moved (a resume that restored nothing but reloaded the end state would also match).
    assert not torch.equal(saved["model"]["blocks.0.attn.qkv.weight"], ref["model"]["blocks.0.attn.qkv.weight"])
