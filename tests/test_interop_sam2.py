"""SAM 2's image-encoder trunk (HieraDet): parity with SAM 2 itself, its checkpoint layouts and timm's.

The reference is `sam2.modeling.backbones.hieradet.Hiera`, built from the YAML configs shipped in the sam2
package; weights travel through real files written here and `create_model(name, pretrained=path)`.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path

import pytest
import torch
from model_helpers import randomize_

import hiera_video
from hiera_video.models import HieraBackbone, get_config, load_pretrained, pretrained_sources, read_checkpoint
from hiera_video.models.hieradet import HieraDet, HieraDetConfig
from hiera_video.models.registry import SAM2_MODELS
from hiera_video.models.sam2_interop import to_sam2_trunk

sam2_hieradet = pytest.importorskip("sam2.modeling.backbones.hieradet")
yaml = pytest.importorskip("yaml")
SAM2Hiera = sam2_hieradet.Hiera

YAMLS = {"sam2_hiera_tiny": "t", "sam2_hiera_small": "s", "sam2_hiera_base_plus": "b+", "sam2_hiera_large": "l"}
# A small trunk whose stage-2/3 windows (6, 3) do not tile its grids (16, 8 at 256²): exercises the padding.
SMALL = dict(embed_dim=16, num_heads=1, stages=(1, 2, 3, 1), global_att_blocks=(5,), window_spec=(8, 4, 6, 3),
             window_pos_embed_bkg_spatial_size=(5, 5))


def sam2_trunk_kwargs(name: str, release: str = "sam2.1") -> dict:
    """``model.image_encoder.trunk`` of the sam2 package's YAML for this model (the published config)."""
    import sam2

    stem = f"{release}_hiera_{YAMLS[name]}.yaml" if release == "sam2.1" else f"sam2_hiera_{YAMLS[name]}.yaml"
    path = Path(sam2.__file__).parent / "configs" / release / stem
    trunk = dict(yaml.safe_load(path.read_text())["model"]["image_encoder"]["trunk"])
    assert trunk.pop("_target_") == "sam2.modeling.backbones.hieradet.Hiera"
    return trunk


def sam2_checkpoint(ref: torch.nn.Module, path: Path) -> Path:
    """A SAM 2 release-style file: the trunk under image_encoder.trunk plus other modules' entries."""
    model = {f"image_encoder.trunk.{k}": v for k, v in ref.state_dict().items()}
    model.update({"image_encoder.neck.convs.0.conv.weight": torch.randn(256, 768, 1, 1),
                  "image_encoder.neck.convs.0.conv.bias": torch.randn(256),
                  "sam_mask_decoder.iou_token.weight": torch.randn(1, 256),
                  "no_mem_embed": torch.randn(1, 1, 256)})
    torch.save({"model": model}, path)
    return path


def test_sam2_trunk_parity_1024_all_stages(tmp_path, caplog):
    """sam2_hiera_tiny at SAM 2's 1024², loaded from a SAM 2.1 release-layout file (the whole SAM 2 model,
    built by sam2's own `build_sam2` from its YAML): all four stage maps <= 1e-5."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    sam = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval")
    ref = randomize_(sam.image_encoder.trunk, seed=1).eval()
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam.state_dict()}, path)
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        model = hiera_video.create_model("sam2_hiera_tiny", pretrained=str(path)).eval()
    # the final norm is fresh; neck, prompt encoder, mask decoder and memory modules are ignored, by name
    assert "norm.weight" in caplog.text
    assert "image_encoder.neck.*" in caplog.text and "memory_attention.*" in caplog.text
    backbone = HieraBackbone(model)
    x = torch.randn(1, 3, 1024, 1024)
    start = time.perf_counter()
    with torch.no_grad():
        expected = ref(x)
        got = backbone(x)
    elapsed = time.perf_counter() - start
    assert [tuple(g.shape) for g in got] == [(1, 96, 256, 256), (1, 192, 128, 128), (1, 384, 64, 64),
                                             (1, 768, 32, 32)]
    assert backbone.channels == [96, 192, 384, 768] and backbone.strides == [4, 8, 16, 32]
    for i, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"stage {i} differs")
    assert elapsed < 120, f"two 1024² forwards took {elapsed:.1f}s"


def test_small_trunk_parity_with_padding_and_api(tmp_path):
    """A small trunk with padded windows and a global block, plus the rest of the Hiera API on it."""
    ref = randomize_(SAM2Hiera(**SMALL), seed=2).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "trunk.pt")  # a bare trunk state dict
    # a published name with overrides (SAM 2's YAML names) describes a custom trunk
    model = hiera_video.create_model("sam2_hiera_tiny", pretrained=str(tmp_path / "trunk.pt"),
                                     input_size=(256, 256), **SMALL).eval()
    assert read_checkpoint(tmp_path / "trunk.pt").format == "sam2"
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected = ref(x)
        feats, stages = model.forward_intermediates(x)
        assert feats.shape == (2, 128)  # no classes: pooled, normalised features
        torch.testing.assert_close(model.forward_features(x), feats, rtol=0, atol=0)
        for i, (a, b) in enumerate(zip(stages, expected)):
            torch.testing.assert_close(a.permute(0, 3, 1, 2), b, rtol=0, atol=1e-5, msg=f"stage {i}")
        assert [s.shape for s in model.forward_intermediates(x, stages=[-1], intermediates_only=True)] == \
            [stages[-1].shape]
        # other input sizes interpolate the background embedding, as SAM 2 does
        x2 = torch.randn(1, 3, 320, 192)
        for a, b in zip(HieraBackbone(model)(x2), ref(x2)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # training: the same gradients as SAM 2 (this takes the oneDNN training linears on CPUs that have them)
    xt = torch.randn(1, 3, 128, 128)
    want = torch.autograd.grad(sum(o.square().mean() for o in ref.train()(xt)), list(ref.parameters()))
    got = torch.autograd.grad(sum(o.square().mean() for o in HieraBackbone(model.train())(xt)),
                              [model.get_parameter(n.replace("layers.0", "fc1").replace("layers.1", "fc2"))
                               for n, _ in ref.named_parameters()])
    for (name, _), a, b in zip(ref.named_parameters(), got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7, msg=name)
    model.eval()
    # back to SAM 2's key names: the reference loads them strictly and reproduces itself
    ref2 = SAM2Hiera(**SMALL).eval()
    trunk = {k.removeprefix("image_encoder.trunk."): v for k, v in to_sam2_trunk(model.state_dict()).items()}
    ref2.load_state_dict(trunk, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ref2(x)[-1], expected[-1], rtol=0, atol=0)
    # our own directory format round-trips the HieraDet config (windows included)
    model.save_pretrained(str(tmp_path / "ours"))
    again = hiera_video.create_model(pretrained=str(tmp_path / "ours")).eval()
    assert isinstance(again, HieraDet) and again.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(again.forward_features(x), feats, rtol=0, atol=0)


def test_load_report_names_ignored_and_fresh_entries(tmp_path):
    ref = randomize_(SAM2Hiera(**SMALL), seed=3)
    ckpt = read_checkpoint(sam2_checkpoint(ref, tmp_path / "sam2.pt"))
    assert ckpt.format == "sam2" and ckpt.arch == "hieradet" and ckpt.config is None
    assert not any(k.startswith("image_encoder.") or ".mlp.layers." in k for k in ckpt.state_dict)
    model = HieraDet(HieraDetConfig.from_dict(SMALL, input_size=(256, 256), num_classes=3))
    report = load_pretrained(model, ckpt)
    assert sorted(report.reinitialized) == ["head.projection.bias", "head.projection.weight", "norm.bias",
                                            "norm.weight"]
    assert report.ignored == ["image_encoder.neck.* (2 keys)", "no_mem_embed", "sam_mask_decoder.* (1 key)"]
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, ref.blocks[1].mlp.layers[1].weight)


def test_timm_sam2_weights_match_timm(tmp_path):
    """timm's sam2_hiera_tiny (its own key names, head.norm / head.fc) loads and matches timm's outputs."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    # tiny's blocks and windows, narrower (timm records the width in its folder's model_args)
    ref = timm.create_model("sam2_hiera_tiny", pretrained=False, num_classes=10, embed_dim=32)
    ref = randomize_(ref, seed=4).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    assert read_checkpoint(path).format == "timm"
    model = hiera_video.create_model("sam2_hiera_tiny", pretrained=str(path), input_size=(256, 256),
                                     embed_dim=32).eval()
    assert model.config.num_classes == 10  # taken from the checkpoint's head
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        logits, stages = model.forward_intermediates(x)
        ref_stages = ref.forward_intermediates(x, intermediates_only=True)
        for i, (a, b) in enumerate(zip(HieraBackbone(model)(x), ref_stages)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"stage {i}")
        torch.testing.assert_close(logits, ref(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(model(x), logits, rtol=0, atol=0)
    # timm's hub folder layout (config.json with "architecture", as timm writes it): no model name needed
    from timm.models import save_for_hf

    save_for_hf(ref, str(tmp_path / "hub"), safe_serialization=True)
    folder = hiera_video.create_model(pretrained=str(tmp_path / "hub"), input_size=(256, 256)).eval()
    assert isinstance(folder, HieraDet) and folder.config.num_classes == 10 and folder.config.embed_dim == 32
    assert folder.config.global_att_blocks == (5, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(folder(x), logits, rtol=0, atol=0)
    cfg_file = tmp_path / "hub" / "config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"sam2_hiera_tiny"', '"hieradet_small"'))
    with pytest.raises(ValueError, match="'hieradet_small' holds HieraDet weights but is not one of"):
        hiera_video.create_model(pretrained=str(tmp_path / "hub"))


@pytest.mark.parametrize("name", sorted(SAM2_MODELS))
def test_registry_configs_are_sam2s_published_ones(name):
    """Every sam2_hiera_* entry equals its YAML trunk (both releases), block by block; built on meta."""
    defaults = {k: p.default for k, p in inspect.signature(SAM2Hiera.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    cfg = get_config(name)
    for release in ("sam2", "sam2.1"):
        trunk = {**defaults, **sam2_trunk_kwargs(name, release)}
        assert cfg.embed_dim == trunk["embed_dim"] and cfg.num_heads == trunk["num_heads"]
        assert cfg.depths == tuple(trunk["stages"])
        assert cfg.window_spec == tuple(trunk["window_spec"])
        assert cfg.global_att_blocks == tuple(trunk["global_att_blocks"])
        assert cfg.window_pos_embed_bkg_spatial_size == tuple(trunk["window_pos_embed_bkg_spatial_size"])
        assert (cfg.q_pool, cfg.q_stride, cfg.dim_mul, cfg.head_mul) == (
            trunk["q_pool"], tuple(trunk["q_stride"]), trunk["dim_mul"], trunk["head_mul"])
    assert cfg.input_size == (1024, 1024) and cfg.num_classes == 0
    with torch.device("meta"):
        model = hiera_video.create_model(name)
    assert model.pos_embed.shape == (1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size)
    assert model.pos_embed_window.shape == (1, cfg.embed_dim, 8, 8)
    # Block structure (window, pooling, heads, widths) against SAM 2's own construction, narrow to stay small.
    small = {**sam2_trunk_kwargs(name), "embed_dim": 8}
    ref, ours = SAM2Hiera(**small), HieraDet(HieraDetConfig.from_dict(small))
    assert len(ref.blocks) == len(ours.blocks) == len(model.blocks)
    for i, (a, b) in enumerate(zip(ref.blocks, ours.blocks)):
        assert (a.window_size, a.q_stride, a.attn.num_heads, a.dim, a.dim_out) == (
            b.window_size, b.q_stride, b.attn.heads, b.dim, b.dim_out), f"block {i}"
    # licence metadata of the published weights (picked up by the package's checkpoint listing)
    published = pretrained_sources(name)
    assert {s.tag for s in published} == {"sam2", "sam2.1"} and {s.format for s in published} == {"sam2", "timm"}
    assert {s.license for s in published} == {"Apache-2.0"}
    assert set(hiera_video.models.pretrained_urls(name)) == {"sam2", "sam2.1"}  # the release files
    assert any(s.is_hub_id and s.location.startswith(f"timm/{name}.") for s in published)


def test_trunk_trains_with_grad_checkpointing():
    cfg = HieraDetConfig.from_dict(SMALL, input_size=(128, 128), num_classes=4)
    model = randomize_(HieraDet(cfg), seed=6).train()
    x = torch.randn(2, 3, 128, 128)
    plain = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for (name, p), g in zip(model.named_parameters(), plain):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6, msg=name)
    # stochastic depth acts in training only
    model = HieraDet(cfg.replace(drop_path_rate=0.5)).train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_cpu_fast_paths_equal_the_regular_path(monkeypatch):
    """Inference (`forward_fast`, global and windowed blocks) and the fp32 training path (`fast_train`)."""
    from hiera_video.models import cpu_kernels, fast, fast_train

    if not cpu_kernels.kernel_ok("onednn_fp32_linear"):  # (every x86 oneDNN build runs it, capped or not)
        pytest.skip(f"oneDNN refuses the fp32 linear here: {cpu_kernels.kernel_status()['onednn_fp32_linear']}")
    monkeypatch.setattr(fast, "FORCE_ONEDNN", True)  # the oneDNN kernels, not the per-shape measured choice
    monkeypatch.setattr(fast, "MLP_CHUNK_ROWS", 1 << 30)  # one fc1 / fc2 call per block (no row chunks)
    model = randomize_(HieraDet(HieraDetConfig.from_dict(SMALL, input_size=(256, 256), num_classes=3)), seed=7)
    x = torch.randn(2, 3, 256, 256)
    calls = []
    linear = fast.linear
    monkeypatch.setattr(fast, "linear", lambda *a, **k: calls.append(1) or linear(*a, **k))
    with torch.no_grad():
        model.eval()
        logits, stages = model.forward_intermediates(x)
        assert len(calls) == 4 * len(model.blocks) + 3  # qkv, proj, fc1, fc2 per block + the 3 residual projs
        with fast.disabled():
            want_logits, want_stages = model.forward_intermediates(x)
    for a, b in zip(stages + [logits], want_stages + [want_logits]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    model.train()
    train_linear, train_mlp = fast_train.train_linear, fast_train.train_mlp
    monkeypatch.setattr(fast_train, "train_linear", lambda *a, **k: calls.append(2) or train_linear(*a, **k))
    monkeypatch.setattr(fast_train, "train_mlp", lambda *a, **k: calls.append(3) or train_mlp(*a, **k))
    grads = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    assert calls.count(2) == 2 * len(model.blocks) + 3  # qkv, proj per block + the residual projs
    assert calls.count(3) == len(model.blocks)  # the MLPs (`fast_train.train_mlp`)
    with fast.disabled():
        want = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    for (name, _), g, w in zip(model.named_parameters(), grads, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=name)


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = HieraDet(HieraDetConfig.from_dict(SMALL, input_size=(256, 256))).eval()
    with pytest.raises(ValueError, match=r"height=200 is not divisible by 32.*use 224 or 192"):
        model(torch.randn(1, 3, 200, 256))
    with pytest.raises(ValueError, match="channels-last"):
        model(torch.randn(1, 256, 256, 3))
    with pytest.raises(ValueError, match="4-D input"):
        model(torch.randn(1, 3, 4, 256, 256))
    with pytest.raises(ValueError, match="no mask units"):
        model.forward_tokens(torch.randn(1, 3, 256, 256), mask=torch.ones(1, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="image model"):
        HieraDetConfig(input_size=(8, 1024, 1024))
    with pytest.raises(ValueError, match="window_spec=.*3 entries but there are 4 stages"):
        HieraDetConfig(window_spec=(8, 4, 14))
    with pytest.raises(ValueError, match=r"global_att_blocks \[24\] are outside"):
        HieraDetConfig(global_att_blocks=(12, 24))
    with pytest.raises(ValueError, match="multiple of q_stride"):
        HieraDetConfig(window_spec=(8, 3, 14, 7))
    with pytest.raises(TypeError, match="unknown HieraDet config field 'window_specs' \\(did you mean 'window_spec'"):
        HieraDetConfig.from_dict({"window_specs": (8, 4, 14, 7)})
    with pytest.raises(TypeError, match="needs a HieraDetConfig"):
        HieraDet(hiera_video.HieraConfig())

    ref = randomize_(SAM2Hiera(**SMALL), seed=5)
    path = sam2_checkpoint(ref, tmp_path / "sam2.pt")
    with pytest.raises(ValueError, match="create_model\\('sam2_hiera_tiny'"):
        hiera_video.create_model(pretrained=str(path))  # SAM 2 files carry no config
    with pytest.raises(RuntimeError, match=r"(?s)\(sam2 format\).*missing keys.*blocks\.7\..*mis-shaped keys"):
        hiera_video.create_model("sam2_hiera_tiny", pretrained=str(path), input_size=(256, 256))
    with pytest.raises(RuntimeError, match=r"mis-shaped keys \(1\): pos_embed: checkpoint \(1, 16, 5, 5\) vs "
                                           r"model \(1, 16, 14, 14\)"):
        hiera_video.create_model("sam2_hiera_tiny", pretrained=str(path), input_size=(256, 256),
                                 **{**SMALL, "window_pos_embed_bkg_spatial_size": (14, 14)})
    trunk = {k: v for k, v in ref.state_dict().items() if k != "blocks.0.attn.qkv.bias"}
    trunk["blocks.0.extra.weight"] = torch.zeros(1)
    torch.save({"model": {f"image_encoder.trunk.{k}": v for k, v in trunk.items()}}, tmp_path / "bad.pt")
    cfg = HieraDetConfig.from_dict(SMALL, input_size=(256, 256))
    with pytest.raises(RuntimeError, match=r"missing keys \(1\): blocks\.0\.attn\.qkv\.bias[\s\S]*unexpected "
                                           r"keys \(1\): blocks\.0\.extra\.weight"):
        load_pretrained(HieraDet(cfg), read_checkpoint(tmp_path / "bad.pt"))
