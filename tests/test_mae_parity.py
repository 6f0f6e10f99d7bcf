"""Parity with the original ``MaskedAutoencoderHiera`` (pip hiera-transformer) on random weights, and the
MAE -> classifier transfer path.

Weights travel through real files (the original release's ``{"model_state": ...}`` .pth and our
``save_pretrained`` directory) and `create_model`, so loading is part of what is proven. Both models get the
same explicit mask; loss, predictions and targets must agree within 1e-5.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from hiera_video.models import create_model, get_config
from hiera_video.models.hiera_mae import MaskedAutoencoderHiera
from hiera_video.models.loading import load_pretrained
from hiera_video.models.weights import MAE_ONLY_PREFIXES, read_checkpoint

ATOL = 1e-5


def original_mae(name: str) -> torch.nn.Module:
    """The original MAE with every 1-D parameter (zero biases, unit norms) perturbed so bugs cannot hide."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hiera
    torch.manual_seed(0)
    ref = getattr(hiera, name)(pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return ref


class Pair:
    def __init__(self, name: str, tmp_path_factory: pytest.TempPathFactory):
        self.name = name
        self.ref = original_mae(name)
        self.path = tmp_path_factory.mktemp(name) / f"{name}.pth"
        torch.save({"model_state": self.ref.state_dict()}, self.path)  # the original release's wrapper
        self.ours = create_model(name, pretrained=str(self.path)).eval()


@pytest.fixture(scope="module")
def image_pair(tmp_path_factory) -> Pair:
    return Pair("mae_hiera_tiny_224", tmp_path_factory)


@pytest.fixture(scope="module")
def video_pair(tmp_path_factory) -> Pair:
    return Pair("mae_hiera_base_16x224", tmp_path_factory)


def check_parity(pair: Pair, x: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        out = pair.ours(x, mask=mask)
        loss, pred, label, ref_mask = pair.ref(x, mask=mask)
    assert torch.equal(out.mask, ref_mask)
    assert out.pred.shape == pred.shape and out.target.shape == label.shape
    diffs = {"loss": float((out.loss - loss).abs()), "pred": float((out.pred - pred).abs().max()),
             "target": float((out.target - label).abs().max())}
    print(pair.name, "max abs diff", diffs)
    assert all(d <= ATOL for d in diffs.values()), diffs
    assert 0.1 < float(loss) < 10 and float(pred.std()) > 0.1  # non-degenerate numbers
    return diffs


def test_state_dict_matches_original_keys_and_shapes(image_pair):
    ours = {k: tuple(v.shape) for k, v in image_pair.ours.state_dict().items()}
    ref = {k: tuple(v.shape) for k, v in image_pair.ref.state_dict().items()}
    assert ours == ref


def test_image_parity(image_pair):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 224, 224, generator=g)
    mask = image_pair.ours.get_random_mask(2, generator=g)  # 0.6 -> int(49 * 0.4) = 19 kept
    assert mask.sum(1).tolist() == [19, 19]
    check_parity(image_pair, x, mask)


def test_video_parity_16x224(video_pair):
    # One clip keeps the CPU time down; the batch-major ordering is shared with (and tested by) the 2-D case.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 16, 224, 224, generator=g)
    mask = video_pair.ours.get_random_mask(1, generator=g)  # 0.9 -> int(392 * 0.1) = 39 kept
    assert mask.sum(1).tolist() == [39]
    check_parity(video_pair, x, mask)


# ------------------------------------------------------------------------------------------ transfer
def check_encoder_transfer(clf: torch.nn.Module, mae_sd: dict[str, torch.Tensor]) -> None:
    own = clf.state_dict()
    encoder = [k for k in mae_sd if not k.startswith(MAE_ONLY_PREFIXES)]
    assert encoder and all(torch.equal(own[k], mae_sd[k]) for k in encoder)
    assert not any(k.startswith(MAE_ONLY_PREFIXES) for k in own)


def test_original_mae_checkpoint_into_video_classifier(video_pair, caplog):
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        clf = create_model("hiera_base_16x224", pretrained=str(video_pair.path))
    assert not isinstance(clf, MaskedAutoencoderHiera)
    assert clf.config.q_pool == 3 and clf.config.num_classes == 400  # the classifier's own architecture
    check_encoder_transfer(clf, video_pair.ref.state_dict())
    # The final norm and head are fresh (head scaled by head_init_scale) and reported.
    assert torch.equal(clf.norm.weight, torch.ones_like(clf.norm.weight))
    assert float(clf.head.projection.weight.detach().abs().max()) < 1e-3
    reinit = [r.getMessage() for r in caplog.records if "re-initialised" in r.getMessage()]
    assert len(reinit) == 1
    for key in ("norm.weight", "norm.bias", "head.projection.weight", "head.projection.bias"):
        assert key in reinit[0]
    assert any("ignored checkpoint entries" in r.getMessage() and "mask_token" in r.getMessage()
               for r in caplog.records)


def small_mae(**kw) -> MaskedAutoencoderHiera:
    """A small image MAE (custom depths / widths travel in the saved config)."""
    torch.manual_seed(0)
    return create_model("mae_hiera_tiny_224", embed_dim=16, depths=(1, 1, 2, 1), decoder_embed_dim=32,
                        decoder_depth=1, input_size=(64, 64), **kw)


def test_our_mae_directory_into_classifier(tmp_path):
    mae = small_mae()
    mae.save_pretrained(str(tmp_path / "mae"))
    report = load_pretrained(mae, read_checkpoint(tmp_path / "mae"))
    assert report.reinitialized == report.ignored == []  # an exact round trip as the MAE itself
    again = create_model(None, pretrained=str(tmp_path / "mae"))
    assert isinstance(again, MaskedAutoencoderHiera)
    # Feeds a classifier for fine-tuning, with another number of classes.
    clf = create_model("hiera_tiny_224", pretrained=str(tmp_path / "mae"), num_classes=10).eval()
    check_encoder_transfer(clf, mae.state_dict())
    assert clf.config.depths == (1, 1, 2, 1) and clf.head.projection.weight.shape == (10, 128)
    report = load_pretrained(clf, read_checkpoint(tmp_path / "mae"))
    assert sorted(report.reinitialized) == ["head.projection.bias", "head.projection.weight", "norm.bias",
                                            "norm.weight"]
    assert "decoder_pred.weight" in report.ignored and "encoder_norm.weight" in report.ignored
    with torch.no_grad():
        assert clf(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_original_mae_checkpoint_into_image_classifier(image_pair):
    clf = create_model("hiera_tiny_224", pretrained=str(image_pair.path), num_classes=10)
    assert clf.config.q_pool == 3
    check_encoder_transfer(clf, image_pair.ref.state_dict())


def test_our_mae_directory_keeps_the_classifiers_architecture(tmp_path):
    small_mae().save_pretrained(str(tmp_path / "mae"))
    clf = create_model("hiera_tiny_224", pretrained=str(tmp_path / "mae"))
    assert clf.config.q_pool == get_config("hiera_tiny_224").q_pool == 3
