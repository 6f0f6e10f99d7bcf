"""timm interop: its state dicts and hub folders load (parity with timm itself on random weights), the
abswin family is exact, export to timm's layout runs in timm, and the video abswin works end to end."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from model_helpers import TINY_IMAGE, TINY_VIDEO, randomize_

import hiera_video
from hiera_video.models import create_model, export_timm, get_config
from hiera_video.models.pos_embed import abswin_pos_embed, resize_background

timm = pytest.importorskip("timm")


def _timm_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return randomize_(timm.create_model(name, pretrained=False, **kwargs), seed=seed).eval()


def _timm_outputs(ref: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.no_grad():
        return ref(x), [w.permute(0, 2, 3, 1) for w in ref.forward_intermediates(x, intermediates_only=True)]


def _assert_same_as_timm(ours: torch.nn.Module, want: tuple[torch.Tensor, list[torch.Tensor]],
                         x: torch.Tensor) -> None:
    """Logits and all four stage maps (timm's NCHW as our NHWC), <= 1e-5."""
    with torch.no_grad():
        torch.testing.assert_close(ours(x), want[0], rtol=0, atol=1e-5)
        got = ours.forward_intermediates(x, intermediates_only=True)
    assert len(got) == len(want[1]) == 4
    for s, (g, w) in enumerate(zip(got, want[1])):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5, msg=f"stage {s}")


def _hub_cache(tmp_path, monkeypatch, repo_id: str, folder) -> None:
    """Put ``folder`` into a local huggingface_hub cache as ``repo_id`` and go offline."""
    import huggingface_hub.constants as hc

    repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("b" * 40)
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)


def test_timm_state_dict_files_match_timm(tmp_path):
    from safetensors.torch import save_file

    ref = _timm_model("hiera_tiny_224", num_classes=10)
    sd = ref.state_dict()
    assert "head.fc.weight" in sd and "head.norm.weight" in sd  # timm's names, not the original's
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "timm.safetensors"))
    torch.save(sd, tmp_path / "timm.pth")
    x = torch.randn(2, 3, 224, 224)
    ours = create_model("hiera_tiny_224", pretrained=str(tmp_path / "timm.safetensors")).eval()
    assert ours.config.num_classes == 10
    _assert_same_as_timm(ours, _timm_outputs(ref, x), x)
    for f in ("timm.safetensors", "timm.pth"):  # both files: the same (renamed) weights
        ckpt = hiera_video.models.read_checkpoint(tmp_path / f)
        assert ckpt.format == "timm" and "head.projection.weight" in ckpt.state_dict and "norm.bias" in ckpt.state_dict
        assert all(torch.equal(ckpt.state_dict[k], v) for k, v in ours.state_dict().items())
    # strict: the same key reports as for every format, in our names
    broken = {k: v for k, v in sd.items() if k != "head.norm.weight"}
    broken["blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match=r"\(timm format\).*\n.*missing keys \(1\): norm\.weight") as e:
        create_model("hiera_tiny_224", pretrained=str(tmp_path / "broken.pth"))
    assert "unexpected keys (1): blocks.0.attn.extra" in str(e.value)


def test_timm_hub_folder_and_hub_id_match_timm(tmp_path, monkeypatch, caplog):
    from timm.models import save_for_hf

    ref = _timm_model("hiera_tiny_224", seed=1, num_classes=10)
    save_for_hf(ref, str(tmp_path / "folder"), safe_serialization=True,
                model_config={"label_names": [f"c{i}" for i in range(10)]})
    raw = json.loads((tmp_path / "folder" / "config.json").read_text())
    assert raw["architecture"] == "hiera_tiny_224" and "pretrained_cfg" in raw  # timm's own layout
    x = torch.randn(2, 3, 224, 224)
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        ours = create_model(pretrained=str(tmp_path / "folder")).eval()  # no name: the folder says it
    assert "licence of these weights: cc-by-nc-4.0" in caplog.text
    assert ours.config.extra["class_names"] == [f"c{i}" for i in range(10)]
    assert ours.config.extra["mean"] == [0.485, 0.456, 0.406]
    want = _timm_outputs(ref, x)
    _assert_same_as_timm(ours, want, x)
    # the same folder as a timm hub repo, through huggingface_hub (offline, local cache)
    _hub_cache(tmp_path, monkeypatch, "timm/hiera_tiny_224.mae_in1k_ft_in1k", tmp_path / "folder")
    hub = create_model(pretrained="timm/hiera_tiny_224.mae_in1k_ft_in1k").eval()
    with torch.no_grad():
        torch.testing.assert_close(hub(x), want[0], rtol=0, atol=1e-5)
    # a headless timm folder (the ".mae" tags have num_classes=0): a backbone
    save_for_hf(_timm_model("hiera_tiny_224", num_classes=0), str(tmp_path / "mae"))  # pytorch_model.bin
    backbone = create_model(pretrained=str(tmp_path / "mae"))
    assert backbone.config.num_classes == 0 and isinstance(backbone.head.projection, torch.nn.Identity)


def test_timm_abswin_matches_timm(tmp_path):
    from timm.models import save_for_hf

    ref = _timm_model("hiera_small_abswin_256", seed=2, num_classes=10)
    assert ref.pos_embed.shape == (1, 96, 16, 16) and ref.pos_embed_win.shape == (1, 96, 8, 8)
    save_for_hf(ref, str(tmp_path / "abswin"), safe_serialization=True)
    ours = create_model(pretrained=str(tmp_path / "abswin")).eval()
    cfg = ours.config
    assert (cfg.abs_win_pos_embed, cfg.global_pos_size, cfg.layer_scale_init, cfg.expand_proj) == (
        True, (16, 16), 1e-5, False)
    assert cfg.extra["license"] == "apache-2.0"  # timm's own training, as its pretrained_cfg says
    x = torch.randn(2, 3, 256, 256)
    _assert_same_as_timm(ours, _timm_outputs(ref, x), x)


def test_export_to_timm_runs_in_timm(tmp_path):
    from hiera_video.cli import main

    for name, extra, size in (("hiera_tiny_224", {}, 64), ("hiera_small_abswin_256", {"global_pos_size": (4, 4)}, 64)):
        src = randomize_(create_model(name, **TINY_IMAGE, **extra)).eval()
        src.save_pretrained(tmp_path / name)
        assert main(["convert", str(tmp_path / name), str(tmp_path / f"{name}_timm"), "--to", "timm"]) == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = timm.create_model(f"local-dir:{tmp_path / f'{name}_timm'}", pretrained=True).eval()
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ref(x), src(x), rtol=0, atol=1e-5, msg=name)
        back = create_model(pretrained=str(tmp_path / f"{name}_timm")).eval()  # and back
        assert back.config.replace(extra={}) == src.config.replace(extra={})
        with torch.no_grad():
            torch.testing.assert_close(back(x), src(x), rtol=0, atol=0)
    video = create_model("hiera_base_16x224", **TINY_VIDEO)
    with pytest.raises(ValueError, match="MAE decoder"):
        export_timm(create_model("mae_hiera_base_16x224", **TINY_VIDEO), tmp_path / "mae")
    export_timm(video, tmp_path / "video")  # timm's Hiera is dimension-generic too: model_args say it all
    assert json.loads((tmp_path / "video" / "config.json").read_text())["model_args"]["img_size"] == [4, 64, 64]


# ------------------------------------------------------------------------------------------ abswin
def test_abswin_shapes_and_interpolation():
    m = randomize_(create_model("hiera_small_abswin_256", **TINY_IMAGE, global_pos_size=(4, 4))).eval()
    assert m.pos_embed_abs.shape == (1, 16, 4, 4) and m.pos_embed_win.shape == (1, 16, 8, 8)
    assert not hasattr(m, "pos_embed")
    pe = m.get_pos_embed((16, 16))
    assert pe.shape == (1, 16, 16, 16)
    # the window embedding repeats in every window; the background is timm's antialiased bicubic
    bkg = F.interpolate(m.pos_embed_abs, size=(16, 16), mode="bicubic", antialias=True)
    torch.testing.assert_close(pe.movedim(-1, 1) - bkg, m.pos_embed_win.tile(1, 1, 2, 2), rtol=0, atol=1e-7)
    # another resolution: the background is resampled, the windows stay identical
    pe2 = m.get_pos_embed((24, 24)).movedim(-1, 1)
    bkg2 = F.interpolate(m.pos_embed_abs, size=(24, 24), mode="bicubic", antialias=True)
    torch.testing.assert_close(pe2 - bkg2, m.pos_embed_win.tile(1, 1, 3, 3), rtol=0, atol=1e-7)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 96, 96)).shape == (1, 7)


def test_video_abswin_shapes_interpolation_and_resize():
    m = randomize_(create_model("hiera_base_abswin_16x224", **TINY_VIDEO, global_pos_size=(2, 4, 4))).eval()
    assert m.pos_embed_abs.shape == (1, 16, 2, 4, 4) and m.pos_embed_win.shape == (1, 16, 1, 8, 8)
    pe = m.get_pos_embed((2, 16, 16))  # the native token grid of (4, 64, 64)
    assert pe.shape == (1, 2, 16, 16, 16)
    # 3-D background: bicubic (antialiased) per frame in space, then linear in time
    frames = F.interpolate(m.pos_embed_abs[0].transpose(0, 1), size=(16, 16), mode="bicubic", antialias=True)
    torch.testing.assert_close(resize_background(m.pos_embed_abs, (2, 16, 16)), frames.transpose(0, 1)[None])
    b3 = resize_background(m.pos_embed_abs, (3, 4, 4))  # time only: linear
    lin = F.interpolate(m.pos_embed_abs.permute(0, 1, 3, 4, 2).reshape(1, -1, 2), size=3, mode="linear")
    torch.testing.assert_close(b3, lin.reshape(1, 16, 4, 4, 3).permute(0, 1, 4, 2, 3))
    torch.testing.assert_close(pe.movedim(-1, 1), resize_background(m.pos_embed_abs, (2, 16, 16))
                               + m.pos_embed_win.tile(1, 1, 2, 2, 2))
    torch.testing.assert_close(abswin_pos_embed(m.pos_embed_abs, m.pos_embed_win, (2, 16, 16)), pe)
    with torch.no_grad():
        out = m.forward_intermediates(torch.randn(1, 3, 8, 96, 96), intermediates_only=True)
    assert [tuple(o.shape) for o in out] == [(1, 4, 24, 24, 16), (1, 4, 12, 12, 32), (1, 4, 6, 6, 64),
                                             (1, 4, 3, 3, 128)]


def test_video_checkpoint_converts_to_video_abswin(tmp_path, caplog):
    src = randomize_(create_model("hiera_base_16x224", **TINY_VIDEO)).eval()
    src.save_pretrained(tmp_path / "sep")
    x = torch.randn(2, 3, 4, 64, 64)
    # background grid = the source token grid: the converted embedding is the source's, exactly
    with caplog.at_level(logging.WARNING, logger="hiera_video"):
        exact = create_model("hiera_base_abswin_16x224", pretrained=str(tmp_path / "sep"), **TINY_VIDEO,
                             global_pos_size=(2, 16, 16)).eval()
    assert "-> abswin pos_embed_abs (1, 16, 2, 16, 16) + zero pos_embed_win (1, 16, 1, 8, 8)" in caplog.text
    assert exact.pos_embed_win.abs().max() == 0
    want = src.get_pos_embed((2, 16, 16))
    torch.testing.assert_close(exact.get_pos_embed((2, 16, 16)), want, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(exact(x), src(x), rtol=0, atol=1e-5)
    # a coarser background keeps the smooth part: the resampled sum, as documented
    coarse = create_model("hiera_base_abswin_16x224", pretrained=str(tmp_path / "sep"), **TINY_VIDEO,
                          global_pos_size=(2, 4, 4))
    full = want.movedim(-1, 1)
    torch.testing.assert_close(coarse.pos_embed_abs, resize_background(full, (2, 4, 4)))
    # an image model's joint embedding converts the same way
    img = randomize_(create_model("hiera_tiny_224", **TINY_IMAGE)).eval()
    img.save_pretrained(tmp_path / "img")
    conv = create_model("hiera_small_abswin_256", pretrained=str(tmp_path / "img"),
                        **{**TINY_IMAGE, "depths": img.config.depths}, layer_scale_init=None, expand_proj=True,
                        global_pos_size=(16, 16)).eval()
    with torch.no_grad():
        xi = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(conv(xi), img(xi), rtol=0, atol=1e-5)


def test_video_abswin_mae_and_finetune_steps_run(tmp_path):
    cfg = dict(TINY_VIDEO, global_pos_size=(2, 4, 4))
    cfg.pop("num_classes")
    mae = create_model("mae_hiera_base_abswin_16x224", **cfg)
    assert {"pos_embed_abs", "pos_embed_win"} <= {n for n, _ in mae.named_parameters()}
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 4, 64, 64)
    out = mae(x, mask_ratio=0.75)
    out.loss.backward()
    assert mae.pos_embed_abs.grad.abs().sum() > 0 and mae.pos_embed_win.grad.abs().sum() > 0
    opt.step()
    mae.save_pretrained(tmp_path / "mae")
    clf = create_model("hiera_base_abswin_16x224", pretrained=str(tmp_path / "mae"), num_classes=3, **cfg)
    torch.testing.assert_close(clf.pos_embed_abs, mae.pos_embed_abs)
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-3)
    loss = F.cross_entropy(clf(x), torch.tensor([0, 2]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and clf.pos_embed_win.grad.abs().sum() > 0
    assert {"pos_embed_abs", "pos_embed_win"} <= clf.no_weight_decay()


def test_abswin_config_errors():
    with pytest.raises(ValueError, match="global_pos_size with one entry per input dimension"):
        get_config("hiera_small_abswin_256", global_pos_size=(4, 4, 4))
    with pytest.raises(ValueError, match="exclude each other"):
        get_config("hiera_base_abswin_16x224", sep_pos_embed=True)
    with pytest.raises(ValueError, match="needs dim_mul=2.0"):
        get_config("hiera_small_abswin_256", dim_mul=1.5)


TIMM_NAMES = [f"hiera_{s}_224" for s in ("tiny", "small", "base", "base_plus", "large", "huge")] + [
    "hiera_small_abswin_256", "hiera_base_abswin_256"]


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_every_timm_hiera_has_the_same_weights_here(name, monkeypatch):
    """Same key names (through the timm mapping) and shapes as timm's model of that name (meta device)."""
    from hiera_video.models.format_timm import ours_state_dict_to_timm

    cpu_linspace = torch.linspace  # drop-path rates are read with .item(), which meta tensors cannot do
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: cpu_linspace(*a, **{**k, "device": "cpu"}))
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        ref = timm.create_model(name, pretrained=False)
        ours = create_model(name)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours_state_dict_to_timm(ours.state_dict()).items()}
    assert got == want
