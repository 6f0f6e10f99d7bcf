"""Engine building blocks: optimizer groups and schedule, checkpoints and RNG state, the resumable sampler."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch

import hiera_video
from hiera_video.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_save,
    load_checkpoint,
    resolve_resume,
    rng_state,
    set_rng_state,
)
from hiera_video.engine.ema import ModelEMA
from hiera_video.engine.optim import CosineWarmupSchedule, build_optimizer, layer_id, param_groups
from hiera_video.engine.sampler import ResumableSampler


def tiny_video_model(**kw):
    return hiera_video.create_model(
        "hiera_base_16x224", input_size=(4, 32, 32), embed_dim=16, num_heads=1, depths=(1, 1, 2, 1),
        num_classes=3, **kw,
    )


def test_layer_ids_follow_parameter_names():
    depth = 5
    assert layer_id("patch_embed.proj.weight", depth) == 0
    assert layer_id("pos_embed_spatial", depth) == 0 and layer_id("pos_embed", depth) == 0
    assert layer_id("blocks.0.attn.qkv.weight", depth) == 1
    assert layer_id("blocks.4.mlp.fc2.bias", depth) == 5
    assert layer_id("norm.weight", depth) == 6 and layer_id("head.projection.weight", depth) == 6


def test_param_groups_layer_decay_and_no_weight_decay():
    model = tiny_video_model()
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    depth = len(model.blocks)
    by_name = {n: g for g in groups for n in g["names"]}
    assert set(by_name) == {n for n, _ in model.named_parameters()}  # every parameter exactly once
    assert sum(len(g["names"]) for g in groups) == len(by_name)
    # Last layer full lr, first layer decay ** (depth + 1).
    assert by_name["head.projection.weight"]["lr_scale"] == 1.0
    assert by_name["patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.5 ** (depth + 1))
    assert by_name["blocks.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.5**depth)
    # No weight decay on norms, biases and position embeddings; decay on matrices.
    for name in ("pos_embed_spatial", "pos_embed_temporal", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias",
                 "norm.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    for name in ("blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "head.projection.weight"):
        assert by_name[name]["weight_decay"] == 0.05, name
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    assert {g["lr"] for g in opt.param_groups} == {1e-3 * g["lr_scale"] for g in opt.param_groups}


def test_build_optimizer_is_fused_and_equals_the_foreach_update():
    """The engines' AdamW runs PyTorch's fused kernel on CPU; its steps equal the plain foreach AdamW's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
    twin = copy.deepcopy(model)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.05)
    assert all(g["fused"] for g in opt.param_groups)
    ref = torch.optim.AdamW([{"params": [p for n, p in twin.named_parameters() if p.ndim > 1], "weight_decay": 0.05},
                             {"params": [p for n, p in twin.named_parameters() if p.ndim <= 1],
                              "weight_decay": 0.0}], lr=1e-2, foreach=True)
    x = torch.randn(5, 8)
    start = model[0].weight.detach().clone()
    for _ in range(3):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            m(x).square().sum().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert (model[0].weight - start).abs().min() > 0  # every weight moved


def test_cosine_schedule_with_warmup():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": 0.5}], lr=1.0)
    sched = CosineWarmupSchedule(opt, peak_lr=1.0, total_steps=10, warmup_steps=4, min_lr=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[:4] == pytest.approx([0.125, 0.25, 0.375, 0.5])  # linear warmup (x lr_scale 0.5)
    assert max(lrs) == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # then monotone decay
    assert sched.lr_at(10) == pytest.approx(0.1) and sched.lr_at(7) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    state = sched.state_dict()
    again = CosineWarmupSchedule(opt, peak_lr=1.0, total_steps=10, warmup_steps=4, min_lr=0.1)
    again.load_state_dict(state)
    assert again.last_step == 10 and opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_atomic_save_and_keep_last(tmp_path):
    manager = CheckpointManager(tmp_path / "ck", keep_last=2)
    for step in (10, 20, 30):
        manager.save({"step": step, "w": torch.full((3,), float(step))}, step)
    files = manager.step_files()
    assert [p.name for p in files] == ["ckpt_000000020.pt", "ckpt_000000030.pt"]
    assert load_checkpoint(manager.latest())["step"] == 30
    assert not list((tmp_path / "ck").glob(".*.tmp"))
    manager.save_best({"step": 20})
    assert load_checkpoint(tmp_path / "ck" / "best.pt")["step"] == 20
    with pytest.raises(CheckpointError, match="has no checkpoint to resume from"):  # never a silent fresh start
        resolve_resume("auto", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(tmp_path / "missing.pt"), tmp_path)

    # A failing save leaves the previous file intact and no temporary file behind.
    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    target = tmp_path / "ck" / "last.pt"
    with pytest.raises(RuntimeError):
        atomic_save({"bad": Boom()}, target)
    assert load_checkpoint(target)["step"] == 30
    assert not list((tmp_path / "ck").glob(".*.tmp"))


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    atomic_save({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(5)  # move the streams on
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_sampler_shards_like_a_single_process_with_the_combined_batch():
    n, batch = 37, 4
    single = list(ResumableSampler(n, seed=5, world_size=1))
    ranks = [list(ResumableSampler(n, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == n // 2
    for k in range(len(ranks[0]) // batch):
        combined = ranks[0][k * batch:(k + 1) * batch] + ranks[1][k * batch:(k + 1) * batch]
        assert sorted(combined) == sorted(single[2 * k * batch:2 * (k + 1) * batch])
    # Epochs differ, the same epoch is reproducible, and a mid-epoch start skips exactly.
    s = ResumableSampler(n, seed=5)
    s.set_epoch(1)
    epoch1 = list(s)
    assert epoch1 != single
    s.set_start(8)
    assert list(s) == epoch1[8:] and len(s) == n - 8
    evals = [list(ResumableSampler(n, shuffle=False, rank=r, world_size=3, drop_last=False)) for r in range(3)]
    assert sorted(i for part in evals for i in part) == list(range(n))


def test_ema_tracks_weights():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update(model)
    expected = model.weight - 1.0  # halfway between old (w - 2) and new (w)
    assert torch.allclose(ema.module.weight, expected)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_progress_bars_update_rarely_into_a_log_file(monkeypatch, tmp_path):
    """On a terminal the bar is live; written into a file (``> log``, nohup, SLURM) every update would be
    appended, so there the engines' bars update every LOG_BAR_INTERVAL_S; tqdm's own setting wins."""
    import io

    from hiera_video import progress_bars
    from hiera_video.engine import logging as run_logging

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    assert "mininterval" not in progress_bars.bar_options(Terminal())
    log = io.StringIO()
    assert progress_bars.bar_options(log)["mininterval"] == progress_bars.LOG_BAR_INTERVAL_S
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    assert "mininterval" not in progress_bars.bar_options(log)

    # End to end into a file: 0.6 s of batches (a live bar would append ~6 updates) leave the first and the
    # final state only.
    import time

    monkeypatch.delenv("TQDM_MININTERVAL")
    with open(tmp_path / "log.txt", "w") as f, monkeypatch.context() as mp:  # (stderr restored before f closes)
        mp.setattr(run_logging.sys, "stderr", f)
        for _ in run_logging.progress([torch.zeros(2, 1)] * 60, total_clips=120, desc="epoch 1"):
            time.sleep(0.01)
    raw = (tmp_path / "log.txt").read_bytes()  # (bytes: text mode would turn tqdm's \r into newlines)
    assert b"120/120" in raw and raw.count(b"\r") <= 3, raw[:500]
