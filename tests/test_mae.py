"""MAE behaviour on tiny models: masking, the encoder's blindness to masked pixels, targets, errors, pictures."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from hiera_video.models import HieraConfig, create_model
from hiera_video.models.hiera_mae import MAEOutput, MaskedAutoencoderHiera
from hiera_video.models.mae_visualize import HEADER, LABEL_WIDTH, PAD, save_reconstruction

VIDEO = dict(q_stride=(1, 2, 2), mask_unit_size=(1, 8, 8), patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4),
             patch_padding=(1, 3, 3), sep_pos_embed=True)
SMALL = dict(embed_dim=16, num_heads=1, depths=(1, 1, 2, 1), q_pool=2, decoder_embed_dim=32, decoder_depth=1,
             decoder_num_heads=2)


def tiny_image(**kw) -> MaskedAutoencoderHiera:
    torch.manual_seed(0)
    return MaskedAutoencoderHiera(HieraConfig(input_size=(64, 96), **{**SMALL, **kw})).eval()


def tiny_video(**kw) -> MaskedAutoencoderHiera:
    torch.manual_seed(0)
    return MaskedAutoencoderHiera(HieraConfig(input_size=(8, 64, 64), **VIDEO, **{**SMALL, **kw})).eval()


# ------------------------------------------------------------------------------------------ construction
def test_registry_builds_mae_without_classifier_parts():
    m = create_model("mae_hiera_tiny_224", decoder_depth=2, decoder_embed_dim=128, decoder_num_heads=4)
    assert isinstance(m, MaskedAutoencoderHiera) and m.arch == "mae_hiera"
    assert not hasattr(m, "norm") and not hasattr(m, "head")
    assert not any(k.startswith(("norm.", "head.")) for k in m.state_dict())
    assert len(m.decoder_blocks) == 2 and m.decoder_embed.out_features == 128
    assert m.decoder_blocks[0].attn.heads == 4
    assert m.decoder_pred.out_features == 16 * 16 * 3  # pred stride 4 * 2^2
    assert m.config.default_mask_ratio == 0.6
    with pytest.raises(AttributeError, match="no classification head"):
        m.reset_classifier(10)


@torch.no_grad()
def test_original_mae_initialisation():
    m = tiny_video()
    lin = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert all(float(mod.bias.abs().max()) == 0.0 for mod in lin)
    bound = math.sqrt(6 / sum(m.decoder_pred.weight.shape))  # xavier uniform
    assert float(m.decoder_pred.weight.abs().max()) <= bound
    lns = [mod for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)]
    assert all(bool((ln.weight == 1).all() and (ln.bias == 0).all()) for ln in lns)
    assert 0.005 < float(m.decoder_pos_embed.std()) < 0.03 and 0 < float(m.mask_token.abs().max()) < 0.1
    assert m.config.default_mask_ratio == 0.9


# ------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.6, 0.75, 0.9])
def test_kept_units_match_ratio(ratio):
    m = tiny_video()
    U = m.num_mask_units()
    assert U == 4 * 2 * 2
    keep = int(U * (1 - ratio)) or None
    if keep is None:
        with pytest.raises(ValueError, match="at least one visible unit"):
            m.get_random_mask(3, mask_ratio=ratio)
        return
    mask = m.get_random_mask(3, mask_ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (3, U)
    assert mask.sum(1).tolist() == [keep] * 3
    x = torch.randn(3, 3, 8, 64, 64)
    with torch.no_grad():
        out = m(x, mask_ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.mask, mask)
    tokens_per_unit = math.prod(m.mask_unit_final)
    assert out.pred.shape == out.target.shape == (3 * (U - keep) * tokens_per_unit, m.patch_dim)
    assert out.token_mask.sum().item() == 3 * keep * tokens_per_unit


def test_masks_are_reproducible_with_a_generator():
    m = tiny_image()
    a = m.get_random_mask(4, generator=torch.Generator().manual_seed(7))
    b = m.get_random_mask(4, generator=torch.Generator().manual_seed(7))
    c = m.get_random_mask(4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 4))  # samples get different masks
    x = torch.randn(4, 3, 64, 96)
    with torch.no_grad():
        o1 = m(x, generator=torch.Generator().manual_seed(7))
        o2 = m(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(o1.mask, a) and torch.equal(o1.loss, o2.loss)


def test_masked_pixels_cannot_influence_the_encoder():
    m = tiny_video()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 64, 64, generator=g)
    mask = m.get_random_mask(2, generator=g, mask_ratio=0.75)
    hidden = ~m.pixel_mask(mask)  # [B, 1, T, H, W]
    assert 0 < hidden.float().mean() < 1
    x2 = torch.where(hidden, torch.randn(x.shape, generator=g) * 10, x)
    with torch.no_grad():
        tok1, st1 = m.forward_tokens(x, mask, stages=(0, 1, 2, 3))
        tok2, st2 = m.forward_tokens(x2, mask, stages=(0, 1, 2, 3))
        lat1, lat2 = m.forward_encoder(x, mask), m.forward_encoder(x2, mask)
    assert torch.equal(tok1, tok2) and torch.equal(lat1, lat2)
    assert all(torch.equal(a, b) for a, b in zip(st1, st2))
    # Not vacuous: a change in one visible pixel does reach the encoder output.
    x3 = torch.where(hidden, x, x + 1.0)
    with torch.no_grad():
        assert not torch.allclose(m.forward_encoder(x3, mask), lat1)


def test_pixel_mask_follows_unit_raster_order():
    m = tiny_image()  # 64 x 96 px -> 2 x 3 mask units of 32 x 32 px
    mask = torch.zeros(1, 6, dtype=torch.bool)
    mask[0, 4] = True  # row 1, column 1
    pix = m.pixel_mask(mask)[0, 0]
    assert pix.shape == (64, 96)
    assert pix[32:, 32:64].all() and pix.sum() == 32 * 32


# ------------------------------------------------------------------------------------------ targets
def test_patchify_round_trips_and_layouts():
    img = tiny_image(norm_pix_loss=False)
    x = torch.randn(2, 3, 64, 96)
    p = img.patchify(x)
    assert p.shape == (2, 4 * 6, 3 * 16 * 16)
    assert torch.equal(p[0, 1].view(3, 16, 16), x[0, :, :16, 16:32])  # image vectors are (C, ph, pw)
    assert torch.equal(img.unpatchify(p), x)

    vid = tiny_video(norm_pix_loss=False)
    v = torch.randn(2, 3, 8, 64, 64)
    q = vid.patchify(v)
    assert q.shape == (2, 4 * 4 * 4, 16 * 16 * 3)
    # The original 3-D target: the first frame of each temporal token, channel-last (ph, pw, C).
    assert torch.equal(q[1, 4 * 4 + 1].view(16, 16, 3), v[1, :, 2, :16, 16:32].permute(1, 2, 0))
    assert torch.equal(vid.unpatchify(q, expand_time=False), v[:, :, ::2])
    assert torch.equal(vid.unpatchify(q), v[:, :, ::2].repeat_interleave(2, dim=2))

    tub = tiny_video(norm_pix_loss=False, full_tubelet_target=True)
    t = tub.patchify(v)
    assert t.shape == (2, 64, 2 * 16 * 16 * 3) and tub.decoder_pred.out_features == 2 * 16 * 16 * 3
    assert torch.equal(tub.unpatchify(t), v)
    assert torch.equal(t[..., : 16 * 16 * 3], q)  # the first frame of a tubelet is the default target


def test_full_tubelet_target_trains_and_differs_from_default():
    m = tiny_video(full_tubelet_target=True)
    x = torch.randn(2, 3, 8, 64, 64)
    out = m(x, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert out.pred.shape[1] == 2 * 16 * 16 * 3 and torch.isfinite(out.loss)
    assert m.decoder_pred.weight.grad is not None
    # With norm_pix_loss the tubelet is normalised as a whole, so its first frame differs from the default.
    d = tiny_video()
    assert not torch.allclose(m.get_pixel_target(x)[..., : 16 * 16 * 3], d.get_pixel_target(x))


def test_loss_is_mse_over_masked_tokens_only():
    m = tiny_image()
    x = torch.randn(2, 3, 64, 96)
    mask = m.get_random_mask(2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = m(x, mask=mask)
    target = m.get_pixel_target(x)
    hidden = ~out.token_mask
    torch.testing.assert_close(out.target, target[hidden])
    torch.testing.assert_close(out.pred, out.pred_full[hidden])
    torch.testing.assert_close(out.loss, ((out.pred_full - target)[hidden] ** 2).mean())
    mean, var = target.mean(-1), target.var(-1)  # norm_pix_loss: every target patch is normalised
    assert mean.abs().max() < 1e-5 and (var - 1).abs().max() < 1e-3
    raw = tiny_image(norm_pix_loss=False)
    assert torch.equal(raw.get_pixel_target(x), raw.patchify(x))
    # tuple protocol in the original's order
    loss, pred, label, mask_out = out
    assert loss is out.loss and pred is out.pred and label is out.label and mask_out is out.mask
    assert isinstance(out, MAEOutput) and len(out) == 4 and out[3] is out.mask


def test_other_clip_length_interpolates_decoder_pos_embed():
    m = tiny_video()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 4, 64, 96), mask_ratio=0.5)
    assert out.mask.shape == (1, 2 * 2 * 3) and out.pred_full.shape == (1, 2 * 4 * 6, m.patch_dim)


# ------------------------------------------------------------------------------------------ reconstructions
def test_reconstruct_undoes_patch_normalisation():
    m = tiny_video()
    x = torch.randn(2, 3, 8, 64, 64)
    mask = m.get_random_mask(2, generator=torch.Generator().manual_seed(0), mask_ratio=0.5)
    with torch.no_grad():
        out = m(x, mask=mask)
    perfect = MAEOutput(out.loss, out.pred, out.target, out.mask, m.get_pixel_target(x), out.token_mask)
    first_frames = x[:, :, ::2].repeat_interleave(2, dim=2)
    recon, visible = m.reconstruct(x, perfect, stats="target")
    torch.testing.assert_close(recon, first_frames, atol=1e-4, rtol=0)
    # Visible-patch statistics: exact where visible, the sample's average visible stats elsewhere.
    recon_v, _ = m.reconstruct(x, perfect)
    vis = visible.expand_as(x)
    torch.testing.assert_close(recon_v[vis], first_frames[vis], atol=1e-4, rtol=0)
    assert not torch.allclose(recon_v[~vis], first_frames[~vis], atol=1e-2)
    pasted, _ = m.reconstruct(x, out, paste_visible=True)
    assert torch.equal(pasted[vis], x[vis])


def test_save_reconstruction_image_grid(tmp_path):
    m = tiny_image()
    x = torch.randn(2, 3, 64, 96)
    (png,) = save_reconstruction(m, x, tmp_path / "img.png", generator=torch.Generator().manual_seed(0))
    with Image.open(png) as im:
        assert im.size == (4 * 96 + 5 * PAD, HEADER + 2 * 64 + 3 * PAD) and im.mode == "RGB"
    m.train()
    save_reconstruction(m, x[0], tmp_path / "one.png", labels=False)  # unbatched input
    assert m.training  # mode restored
    with Image.open(tmp_path / "one.png") as im:
        assert im.size == (4 * 96 + 5 * PAD, 64 + 2 * PAD)


def test_save_reconstruction_video_strip_and_gif(tmp_path):
    m = tiny_video()
    x = torch.randn(1, 3, 8, 64, 64)
    png, gif = save_reconstruction(m, x, tmp_path / "vid.png", gif=True, mean=(0.45,) * 3, std=(0.225,) * 3)
    with Image.open(png) as im:
        assert im.size == (LABEL_WIDTH + 8 * 64 + 9 * PAD, 4 * 64 + 5 * PAD)
    with Image.open(gif) as im:
        assert im.size == (4 * 64 + 5 * PAD, 64 + 2 * PAD) and im.n_frames == 8
    (png2,) = save_reconstruction(m, x, tmp_path / "few.png", max_frames=3, labels=False)
    with Image.open(png2) as im:
        assert im.size == (3 * 64 + 4 * PAD, 4 * 64 + 5 * PAD)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_masks_raise_clear_errors():
    m = tiny_image()
    x = torch.randn(2, 3, 64, 96)
    good = m.get_random_mask(2)
    with pytest.raises(TypeError, match="bool"):
        m(x, mask=good.float())
    with pytest.raises(ValueError, match=r"\[2, 6\]"):
        m(x, mask=good[:, :5])
    with pytest.raises(ValueError, match=r"flatten"):
        m(x, mask=good.view(2, 2, 3))
    with pytest.raises(ValueError, match=r"\[2, 6\]"):
        m(x, mask=good[:1])
    uneven = good.clone()
    uneven[0] = True
    with pytest.raises(ValueError, match="same number"):
        m(x, mask=uneven)
    with pytest.raises(ValueError, match="at least one visible"):
        m(x, mask=torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask_ratio"):
        m(x, 0.6)  # the original's positional ratio: explain instead of failing obscurely


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "0.5"])
def test_bad_ratios_raise(ratio):
    m = tiny_image()
    with pytest.raises(ValueError, match=r"mask_ratio must be a number in \[0, 1\)"):
        m.get_random_mask(2, mask_ratio=ratio)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        m(torch.randn(1, 3, 64, 96), mask_ratio=ratio)


def test_sizes_not_divisible_into_mask_units_raise():
    m = tiny_image()
    with pytest.raises(ValueError, match="height=72 is not divisible by 32"):
        m(torch.randn(1, 3, 72, 96))
    v = tiny_video()
    with pytest.raises(ValueError, match="frames=7 is not divisible by 2"):
        v(torch.randn(1, 3, 7, 64, 64))
    with pytest.raises(ValueError, match="divisible by q_stride"):
        MaskedAutoencoderHiera(HieraConfig(input_size=(64, 64), mask_unit_size=(2, 2), q_pool=2, **{
            k: v for k, v in SMALL.items() if k != "q_pool"}))
