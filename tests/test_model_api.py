"""Model zoo, API surface, input sizes, bad input, loading formats and strict-loading errors."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from model_helpers import TINY_IMAGE, TINY_VIDEO, original_model, randomize_

import hiera_video
from hiera_video.models import HieraBackbone, get_config

ALL_NAMES = [f"hiera_{s}_224" for s in ("tiny", "small", "base", "base_plus", "large", "huge")] + [
    f"hiera_{s}_16x224" for s in ("base", "base_plus", "large", "huge")]


def test_registry_lists_every_published_config():
    names = hiera_video.list_models()
    for n in ALL_NAMES:
        assert n in names and f"mae_{n}" in names
    assert hiera_video.list_models("*16x224") == sorted(n for n in names if n.endswith("16x224"))


@pytest.mark.parametrize("name", ALL_NAMES + [f"mae_{n}" for n in ALL_NAMES])
def test_registry_configs_match_the_original_exactly(name, monkeypatch):
    """Same parameter names and shapes as the original for every published model (built on the meta device)."""
    cpu_linspace = torch.linspace  # drop-path rates are read with .item(), which meta tensors cannot do
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: cpu_linspace(*a, **{**k, "device": "cpu"}))
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        ref = original_model(name)
        ours = hiera_video.create_model(name)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    if not name.startswith("mae_"):
        assert [b.attn.use_mask_unit_attn for b in ours.blocks] == [b.attn.use_mask_unit_attn for b in ref.blocks]
        assert [b.attn.window_size for b in ours.blocks] == [b.attn.window_size for b in ref.blocks]
        assert [b.attn.q_stride for b in ours.blocks] == [b.attn.q_stride for b in ref.blocks]


def test_overrides_change_any_field_and_unknown_fields_fail():
    m = hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO, drop_path_rate=0.1)
    assert len(m.blocks) == 5 and m.config.embed_dim == 16 and m.config.num_classes == 5
    assert m.blocks[-1].drop_path.p == pytest.approx(0.1)
    m2 = hiera_video.create_model("hiera_tiny_224", stages=(1, 1, 1, 1), input_size=(64, 64))  # original alias
    assert m2.config.depths == (1, 1, 1, 1)
    with pytest.raises(TypeError, match="unknown Hiera config field 'embed_dimm'.*embed_dim"):
        hiera_video.create_model("hiera_tiny_224", embed_dimm=3)
    with pytest.raises(ValueError, match="unknown model 'hiera_tiny_244'.*hiera_tiny_224"):
        hiera_video.create_model("hiera_tiny_244")


def test_forward_surfaces_and_backbone():
    m = hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO).eval()
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        logits = m(x)
        feats = m.forward_features(x)
        assert logits.shape == (2, 5) and feats.shape == (2, m.num_features)
        torch.testing.assert_close(m.forward_head(feats), logits)
        s = m.forward_intermediates(x, stages=[1, -1], intermediates_only=True)
        assert [t.shape for t in s] == [(2, 2, 8, 8, 32), (2, 2, 2, 2, 128)]
        maps = HieraBackbone(m, out_stages=(0, 1, 2, 3))(x)
    assert [t.shape for t in maps] == [(2, 16, 2, 16, 16), (2, 32, 2, 8, 8), (2, 64, 2, 4, 4), (2, 128, 2, 2, 2)]
    # logits, not probabilities
    assert not torch.allclose(logits.sum(-1), torch.ones(2))
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)


def test_bad_input_errors_name_the_problem():
    v = hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO)
    with pytest.raises(ValueError, match=r"5-D input \[B, C, T, H, W\].*time axis"):
        v(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="expected 3 input channels.*channels-last"):
        v(torch.randn(1, 4, 64, 64, 3))
    with pytest.raises(ValueError, match="frames=5 is not divisible by 2.*temporal patch stride"):
        v(torch.randn(1, 3, 5, 64, 64))
    with pytest.raises(ValueError, match="height=70 is not divisible by 32.*use 96 or 64"):
        v(torch.randn(1, 3, 4, 70, 64))
    i = hiera_video.create_model("hiera_tiny_224")
    with pytest.raises(ValueError, match=r"4-D input \[B, C, H, W\]"):
        i(torch.randn(3, 224, 224))
    with pytest.raises(ValueError, match="width=200 is not divisible by 32"):
        i(torch.randn(1, 3, 224, 200))
    with pytest.raises(ValueError, match="q_stride.*one entry per input dimension"):
        hiera_video.create_model("hiera_tiny_224", input_size=(16, 224, 224))


def test_mask_validation():
    m = hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE)
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(TypeError, match="bool"):
        m.forward_tokens(x, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        m.forward_tokens(x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="same number"):
        m.forward_tokens(x, torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool))


def _save(model, path):
    torch.save({"model_state": model.state_dict()}, path)
    return str(path)


def test_interpolated_position_embeddings_video_and_image(tmp_path, caplog):
    src = randomize_(hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO)).eval()
    d = tmp_path / "src"
    src.save_pretrained(d)
    x8 = torch.randn(1, 3, 8, 96, 96)
    with caplog.at_level(logging.WARNING, logger="hiera_video"):
        m = hiera_video.create_model("hiera_base_16x224", pretrained=str(d), input_size=(8, 96, 96)).eval()
    assert "interpolated" in caplog.text and "pos_embed_temporal" in caplog.text
    want_t = F.interpolate(src.pos_embed_temporal.transpose(1, 2), size=4, mode="linear").transpose(1, 2)
    torch.testing.assert_close(m.pos_embed_temporal, want_t)
    want_s = F.interpolate(src.pos_embed_spatial.reshape(1, 16, 16, 16).permute(0, 3, 1, 2), size=(24, 24),
                           mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 16)
    torch.testing.assert_close(m.pos_embed_spatial, want_s)
    with torch.no_grad():  # loading at the new size == running the native model on the new size on the fly
        torch.testing.assert_close(m(x8), src(x8), rtol=0, atol=1e-6)

    img = randomize_(hiera_video.create_model("hiera_base_224")).eval()
    p = _save(img, tmp_path / "img.pth")
    big = hiera_video.create_model("hiera_base_224", pretrained=p, input_size=(448, 448)).eval()
    assert big.pos_embed.shape == (1, 112 * 112, 96)
    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        torch.testing.assert_close(big(x), img(x), rtol=0, atol=1e-5)


def test_every_checkpoint_format_loads_the_same_weights(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    src = randomize_(hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = src(x)
    sd = src.state_dict()
    torch.save(sd, tmp_path / "bare.pth")
    torch.save({"model_state": sd, "epoch": 3}, tmp_path / "wrapped.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    src.save_pretrained(tmp_path / "ours")
    hiera_video.models.export_hf(src, tmp_path / "hf")
    for source in ("bare.pth", "wrapped.pth", "w.safetensors", "ours", "hf"):
        m = hiera_video.create_model("hiera_tiny_224", pretrained=str(tmp_path / source), **{
            k: v for k, v in TINY_IMAGE.items() if k != "num_classes"}).eval()
        with torch.no_grad():
            torch.testing.assert_close(m(x), want, rtol=0, atol=1e-6, msg=source)
    # directories carry their config: no name needed
    m = hiera_video.Hiera.from_pretrained(str(tmp_path / "ours")).eval()
    assert m.config == src.config
    # a hub repo id, fetched by huggingface_hub from a local cache, offline
    import huggingface_hub.constants as hc

    snap = tmp_path / "hub" / "models--someone--tiny-hiera" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (snap / f).write_bytes((tmp_path / "ours" / f).read_bytes())
    (tmp_path / "hub" / "models--someone--tiny-hiera" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-hiera" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    m = hiera_video.create_model(pretrained="someone/tiny-hiera").eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="could not fetch hub repo 'someone/missing'"):
        hiera_video.create_model("hiera_tiny_224", pretrained="someone/missing")


def test_strict_loading_reports_keys_by_name(tmp_path, caplog):
    src = randomize_(hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE))
    sd = src.state_dict()
    broken = dict(sd)
    del broken["blocks.1.mlp.fc1.weight"]
    broken["blocks.9.attn.qkv.weight"] = torch.zeros(3)
    torch.save(broken, tmp_path / "broken.pth")
    tiny = {k: v for k, v in TINY_IMAGE.items() if k != "num_classes"}
    with pytest.raises(RuntimeError, match=r"missing keys \(1\): blocks\.1\.mlp\.fc1\.weight") as e:
        hiera_video.create_model("hiera_tiny_224", pretrained=str(tmp_path / "broken.pth"), **tiny)
    assert "unexpected keys (1): blocks.9.attn.qkv.weight" in str(e.value)
    with pytest.raises(RuntimeError, match=r"mis-shaped keys.*patch_embed\.proj\.weight: checkpoint \(16"):
        hiera_video.create_model("hiera_tiny_224", pretrained=_save(src, tmp_path / "ok.pth"), **{**tiny,
                                 "embed_dim": 24})
    # non-strict loads what matches
    m = hiera_video.create_model("hiera_tiny_224", pretrained=str(tmp_path / "broken.pth"), strict=False, **tiny)
    torch.testing.assert_close(m.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])
    # another number of classes: only the head is re-initialised, and the log says so
    with caplog.at_level(logging.WARNING, logger="hiera_video"):
        m = hiera_video.create_model("hiera_tiny_224", pretrained=str(tmp_path / "ok.pth"), num_classes=3, **tiny)
    assert "re-initialised" in caplog.text and "head.projection.weight" in caplog.text
    assert m.head.projection.weight.shape == (3, 128)
    assert m.head.projection.weight.abs().max() < 0.01  # fresh init (scaled by head_init_scale)
    for k, v in sd.items():
        if not k.startswith("head."):
            torch.testing.assert_close(m.state_dict()[k], v)
    with pytest.raises(FileNotFoundError, match="neither a file"):
        hiera_video.create_model("hiera_tiny_224", pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        hiera_video.create_model("hiera_tiny_224", pretrained=str(tmp_path / "junk.pth"))


def test_converter_tool_original_to_ours_and_hf(tmp_path):
    import subprocess
    import sys

    src = randomize_(hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE))
    p = _save(src, tmp_path / "orig.pth")
    r = subprocess.run([sys.executable, "tools/convert_checkpoint.py", p, str(tmp_path / "ours")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "carries no config" in r.stderr  # an original .pth needs a model name
    from hiera_video.models.convert import convert_checkpoint

    cfg = get_config("hiera_tiny_224", **TINY_IMAGE)
    hiera_video.models.register_model("tiny_test_model", "hiera", **cfg.to_dict())
    convert_checkpoint(p, tmp_path / "ours", "tiny_test_model")
    convert_checkpoint(tmp_path / "ours", tmp_path / "hf", to="hf")
    x = torch.randn(1, 3, 64, 64)
    a = hiera_video.create_model(pretrained=str(tmp_path / "ours")).eval()
    b = hiera_video.create_model("tiny_test_model", pretrained=str(tmp_path / "hf")).eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), src.eval()(x))
        torch.testing.assert_close(b(x), src(x))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    m = randomize_(hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO))
    x = torch.randn(2, 3, 4, 64, 64)
    m(x).square().sum().backward()
    g1 = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.set_grad_checkpointing(True)
    m(x).square().sum().backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, g1[n], rtol=1e-5, atol=1e-7, msg=n)


def test_drop_path_is_stochastic_in_training_only():
    m = hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE, drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    m.train()
    assert not torch.allclose(m(x), m(x))
    m.eval()
    torch.testing.assert_close(m(x), m(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_close_to_fp32(dtype):
    m = randomize_(hiera_video.create_model("hiera_base_16x224", **TINY_VIDEO)).eval()
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=dtype):
            out = m(x)
    assert out.dtype == dtype
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_torch_compile_without_graph_breaks():
    m = randomize_(hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE)).eval()
    x = torch.randn(2, 3, 64, 64)
    explain = torch._dynamo.explain(m)(x)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_training_step_matches_eager():
    """A compiled training step (fullgraph) has eager's gradients: the branches the model takes only under
    tracing (pooling by ``max(dim)``, the q/k/v split left to the compiler) compute the same thing."""
    m = randomize_(hiera_video.create_model("hiera_tiny_224", drop_path_rate=0.0, **TINY_IMAGE)).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    grads = []
    for model in (m, compiled):
        m.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)


# ------------------------------------------------------------------------------------------ stage indices
def test_out_of_range_or_non_integer_stages_raise():
    m = hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE).eval()
    x = torch.randn(1, 3, 64, 64)
    for bad in ([5], [4], [-5]):
        with pytest.raises(IndexError, match=rf"stage index {bad[0]} .*out of range.*4 stages"):
            m.forward_intermediates(x, stages=bad)
    for bad in ([1.5], ["1"], [True]):
        with pytest.raises(TypeError, match="integer stage indices"):
            m.forward_intermediates(x, stages=bad)
    with pytest.raises(IndexError, match=r"out_stages=\[0, 5\]"):
        HieraBackbone(m, out_stages=(0, 5))
    with pytest.raises(TypeError, match="out_stages must be integer"):
        HieraBackbone(m, out_stages=(0, 1.0))
    # negative indices within range count from the end, like Python
    with torch.no_grad():
        a = m.forward_intermediates(x, stages=[-1, -4], intermediates_only=True)
        b = m.forward_intermediates(x, stages=[0, 3], intermediates_only=True)
    assert [t.shape for t in a] == [t.shape for t in b]
    assert HieraBackbone(m, out_stages=(-1,)).out_stages == [3]


# ------------------------------------------------------------------------------------------ one way to a model
def _fake_run(tmp_path, with_ema=True, files=("last.pt",)):
    raw = randomize_(hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE), seed=1)
    ema = randomize_(hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE), seed=2)
    state = {"model": raw.state_dict(), "model_config": raw.config.to_dict(), "model_name": "hiera_tiny_224",
             "class_names": list("abcdefg"), "loop": {"epoch": 1}, "optimizer": {},
             **({"ema": {"module": ema.state_dict(), "updates": 1, "decay": 0.9}} if with_ema else {})}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for f in files:
        torch.save(state, run / "checkpoints" / f)
    return run, raw.eval(), ema.eval()


def test_run_folder_and_training_checkpoint_load_with_ema_preferred(tmp_path, caplog):
    run, raw, ema = _fake_run(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        m = hiera_video.create_model(pretrained=str(run)).eval()  # run folder -> checkpoints/last.pt
    assert "loading checkpoints/last.pt" in caplog.text and "loading the EMA weights" in caplog.text
    assert m.config.extra["class_names"] == list("abcdefg") and m.config.depths == (1, 1, 2, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ema(x), rtol=0, atol=0)
        m_raw = hiera_video.create_model(pretrained=str(run / "checkpoints" / "last.pt"), use_ema=False).eval()
        torch.testing.assert_close(m_raw(x), raw(x), rtol=0, atol=0)
        cls = hiera_video.Hiera.from_pretrained(str(run), use_ema=False).eval()
        torch.testing.assert_close(cls(x), raw(x), rtol=0, atol=0)
    # best.pt wins over last.pt; model/ is the fallback
    (run / "checkpoints" / "best.pt").write_bytes((run / "checkpoints" / "last.pt").read_bytes())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        hiera_video.create_model(pretrained=str(run))
    assert "loading checkpoints/best.pt" in caplog.text
    run2, raw2, _ = _fake_run(tmp_path / "b", with_ema=False, files=("ckpt_00000010.pt",))
    with pytest.raises(ValueError, match="no EMA weights"):
        hiera_video.create_model(pretrained=str(run2 / "checkpoints" / "ckpt_00000010.pt"), use_ema=True)
    with pytest.raises(FileNotFoundError, match="no checkpoints/best.pt, checkpoints/last.pt or model/"):
        hiera_video.create_model(pretrained=str(run2))
    raw2.save_pretrained(run2 / "model")
    with torch.no_grad():
        torch.testing.assert_close(hiera_video.create_model(pretrained=str(run2)).eval()(x), raw2(x))
    # a checkpoint written before model_config was saved: rebuilt from its model name + run config
    old = {"model": raw2.state_dict(), "model_name": "hiera_tiny_224", "loop": {}, "config": {
        "model": {"name": "hiera_tiny_224", "overrides": {"embed_dim": 16, "depths": [1, 1, 2, 1]}},
        "data": {"kind": "image", "crop_size": 64}}}
    torch.save(old, tmp_path / "old.pt")
    with torch.no_grad():
        torch.testing.assert_close(hiera_video.create_model(pretrained=str(tmp_path / "old.pt")).eval()(x), raw2(x))


def test_engine_checkpoint_rebuilds_the_exact_model(tmp_path):
    """A real training run: its checkpoint carries model_config, so no engine is needed to rebuild it."""
    from hiera_video.config import apply_overrides, load_config
    from hiera_video.engine.checkpoint import load_checkpoint
    from hiera_video.engine.train import train

    cfg = apply_overrides(load_config("in1k_finetune_hiera_base_224"), [
        "model.name=hiera_tiny_224", "model.overrides={embed_dim: 16, num_heads: 1, depths: [1, 1, 1, 1]}",
        "model.drop_path_rate=0.0", "data.crop_size=32", "data.test_short_side=36", "data.randaug_n=0",
        "data.erase_prob=0.0", "data.batch_size=8", "data.num_workers=0", "aug.mixup=0.0", "aug.cutmix=0.0",
        "optim.warmup_epochs=0", "train.epochs=1", "train.device=cpu", "train.precision=fp32",
        "train.progress=false", "train.tensorboard=false", "train.ema=true", "train.ema_decay=0.5",
        "eval.batch_size=8", "data.synthetic={kind: shapes, num_per_class: 8, num_val_per_class: 2, size: [32, 32]}",
        f"run.output_dir={tmp_path}", "run.name=r",
    ])
    train(cfg)
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    saved = load_checkpoint(last)
    assert saved["model_config"]["depths"] == [1, 1, 1, 1] and saved["model_name"] == "hiera_tiny_224"
    m = hiera_video.create_model(pretrained=str(last)).eval()
    assert m.config.input_size == (32, 32) and m.config.num_classes == len(saved["class_names"])
    assert m.config.extra["class_names"] == saved["class_names"]
    assert m.config.extra["mean"] == list(cfg.data.mean)
    for k, v in saved["ema"]["module"].items():
        assert torch.equal(m.state_dict()[k], v), k
    # the run folder itself: best.pt (else last.pt), EMA weights
    run = tmp_path / "r"
    pick = run / "checkpoints" / ("best.pt" if (run / "checkpoints" / "best.pt").is_file() else "last.pt")
    from_run = hiera_video.create_model(pretrained=str(run))
    for k, v in load_checkpoint(pick)["ema"]["module"].items():
        assert torch.equal(from_run.state_dict()[k], v), k


# ------------------------------------------------------------------------------------------ sources, imports
def test_pretrained_sources_and_licences(tmp_path, caplog):
    from hiera_video.models import pretrained_sources, pretrained_urls

    every = pretrained_sources()
    assert {s.format for s in every} == {"original", "hf", "timm", "sam2"}
    by_loc = {s.location: s for s in every}
    assert by_loc["https://dl.fbaipublicfiles.com/hiera/hiera_base_224.pth"].license == "CC-BY-NC-4.0"
    assert by_loc["facebook/hiera-base-plus-224-in1k-hf"].license == "CC-BY-NC-4.0"
    assert by_loc["timm/hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k"].license == "Apache-2.0"
    sam = {s.tag: s.location for s in pretrained_sources("sam2_hiera_tiny") if not s.is_hub_id}
    assert sam == {"sam2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt",
                   "sam2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"}
    assert all(s.license == "Apache-2.0" for s in pretrained_sources("sam2_*"))
    assert pretrained_urls("hiera_base_16x224")["mae_k400_ft_k400"].endswith("/hiera_base_16x224.pth")
    assert "sam2_hiera_large" in pretrained_urls()
    with pytest.raises(ValueError, match="unknown model"):
        pretrained_urls("hiera_nope")
    # a file named like a published checkpoint: its licence is logged when loaded
    m = randomize_(hiera_video.create_model("hiera_tiny_224", **TINY_IMAGE))
    torch.save({"model_state": m.state_dict()}, tmp_path / "hiera_tiny_224.pth")
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        hiera_video.create_model("hiera_tiny_224", pretrained=str(tmp_path / "hiera_tiny_224.pth"), **TINY_IMAGE)
    assert "licence of these weights: CC-BY-NC-4.0" in caplog.text


def test_models_package_has_no_import_cycle():
    import ast
    from pathlib import Path

    pkg = Path(hiera_video.models.__file__).parent
    deps = {}
    for f in pkg.glob("*.py"):
        tree = ast.parse(f.read_text())
        deps[f.stem] = {n.module.split(".")[0] for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
        deps[f.stem] |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1
                         and not n.module for a in n.names}
    deps.pop("__init__")

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join(stack + [node])}"
        for d in deps.get(node, ()):
            visit(d, stack + [node])

    for module in deps:
        visit(module, [])
