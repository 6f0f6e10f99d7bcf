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
