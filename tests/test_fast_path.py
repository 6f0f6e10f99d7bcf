"""The CPU fast paths (`hiera_video.models.fast`) give the regular path's results.

Inference (no grad, eval): oneDNN linears with fused epilogues, fp32 or bf16. Training (fp32, grad on):
oneDNN linears with a hand-written backward. Both must match the regular eager path, handle images, video,
masked input and intermediates, and step aside for hooked or replaced layers.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn
from model_helpers import TINY_IMAGE, TINY_VIDEO, randomize_

import hiera_video
from hiera_video.models import fast

pytestmark = pytest.mark.skipif(not fast._HAS_ONEDNN, reason="PyTorch built without oneDNN")

CONFIGS = {"image": ("hiera_tiny_224", TINY_IMAGE), "video": ("hiera_base_16x224", TINY_VIDEO)}


@pytest.fixture(autouse=True)
def _fast_on_tiny_models(monkeypatch):
    """The tiny test models are below the size where the fast path pays off; exercise it anyway."""
    monkeypatch.setattr(fast, "MIN_ACTIVATION", 0)


def make(kind: str, **kw) -> tuple[nn.Module, torch.Tensor]:
    name, cfg = CONFIGS[kind]
    torch.manual_seed(0)
    model = randomize_(hiera_video.create_model(name, **{**cfg, **kw})).eval()
    x = torch.randn(2, 3, *model.config.input_size)
    return model, x


def run(model: nn.Module, x: torch.Tensor, use_fast: bool, **kw):
    with torch.inference_mode(), (fast.enabled() if use_fast else fast.disabled()):
        return model.forward_intermediates(x, **kw)


def count_fast_linears(monkeypatch) -> list[int]:
    calls = [0]
    orig = fast.linear

    def spy(*a, **k):
        calls[0] += 1
        return orig(*a, **k)

    monkeypatch.setattr(fast, "linear", spy)
    return calls


@pytest.mark.parametrize("kind", ["image", "video"])
def test_fp32_matches_regular_path(kind, monkeypatch):
    model, x = make(kind)
    ref_logits, ref_stages = run(model, x, use_fast=False)
    calls = count_fast_linears(monkeypatch)
    logits, stages = run(model, x, use_fast=True)
    assert calls[0] > 0, "the fast path was not taken"
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    for a, b in zip(stages, ref_stages):
        assert a.shape == b.shape and a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_bf16_weights_and_autocast(kind, monkeypatch):
    model, x = make(kind)
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    scale = ref.abs().max().item()
    calls = count_fast_linears(monkeypatch)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        auto = model(x)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    with torch.inference_mode():
        weights = bf16_model(x.bfloat16())
    assert calls[0] > 0
    assert weights.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; 24 residual updates accumulate a few ulps of the logit scale.
    for out in (auto, weights):
        err = (out.float() - ref).abs().max().item()
        assert err <= 0.05 * scale + 1e-3, (err, scale)


def test_masked_input_matches_and_ignores_hidden_units():
    model, x = make("image")
    n_units = int(torch.tensor(model.mask_units_shape()).prod())
    mask = torch.zeros(2, n_units, dtype=torch.bool)
    mask[:, : n_units // 2] = True
    mask[1] = mask[1][torch.randperm(n_units)]
    ref = run(model, x, use_fast=False, mask=mask)
    out = run(model, x, use_fast=True, mask=mask)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # Pixels of hidden units must not leak into the encoding (the patch embedding zeroes them first).
    hidden = ~mask.view(2, *model.mask_units_shape())
    pix = torch.nn.functional.interpolate(hidden[:, None].float(), size=x.shape[2:]).bool().expand_as(x)
    x2 = torch.where(pix, torch.randn_like(x) * 10, x)
    for a, b in zip(run(model, x2, use_fast=True, mask=mask), out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_grad_enabled_or_train_mode_uses_regular_inference(monkeypatch):
    model, x = make("image")
    calls = count_fast_linears(monkeypatch)
    out = model(x)  # eval, grad enabled: autograd must work, so no inference fast path
    assert out.requires_grad and calls[0] == 0
    model.train()
    with torch.no_grad():
        model(x)  # train mode (drop path / dropout semantics): regular path
    assert calls[0] == 0


@pytest.mark.parametrize("kind", ["image", "video"])
def test_training_linears_gradients(kind):
    model, x = make(kind, drop_path_rate=0.0)
    model.train()
    grads = {}
    for use_fast in (False, True):
        model.zero_grad(set_to_none=True)
        with fast.enabled() if use_fast else fast.disabled():
            out = model(x)
            (out.square().sum() + out.sum()).backward()
        grads[use_fast] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (o0, g0), (o1, g1) = grads[False], grads[True]
    torch.testing.assert_close(o1, o0, rtol=0, atol=1e-5)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-5 * float(g0[n].abs().max()) + 1e-9)


def test_training_linears_with_gradient_checkpointing():
    model, x = make("image", drop_path_rate=0.0)
    model.train()
    with fast.disabled():
        model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    with fast.enabled():
        model(x).sum().backward()
    for n, p in model.named_parameters():  # same math, other GEMM kernels: float rounding only
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-5 * float(ref[n].abs().max()) + 1e-9)


def test_hooks_and_replaced_layers_disable_the_fast_path(monkeypatch):
    model, x = make("image")
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    calls = count_fast_linears(monkeypatch)
    seen = []
    h = model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-6)
    assert seen and calls[0] == 0  # the hook fired, the fast path stepped aside
    h.remove()

    class Doubled(nn.Linear):  # a replaced layer (think LoRA) must keep its own forward
        def forward(self, inp):
            return 2 * super().forward(inp)

    fc = model.blocks[0].mlp.fc2
    model.blocks[0].mlp.fc2 = Doubled(fc.in_features, fc.out_features)
    model.blocks[0].mlp.fc2.load_state_dict(fc.state_dict())
    with torch.inference_mode(), fast.disabled():
        want = model(x)
    with torch.inference_mode():
        got = model(x)
    assert calls[0] == 0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (want - ref).abs().max() > 1e-4  # the replacement does change the output


def test_weight_updates_invalidate_the_cache():
    model, x = make("image")
    with torch.inference_mode():
        model(x)  # fills the packed-weight cache
    with torch.no_grad():
        model.blocks[-1].mlp.fc2.weight.mul_(3.0)  # in place: same storage, new version
        model.blocks[0].attn.qkv.weight = nn.Parameter(model.blocks[0].attn.qkv.weight * 0.5)  # re-assigned
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)
    fast.clear_cache()  # dropping the cache only costs a re-pack
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)
    sd = {k: v * 1.1 for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)


def test_model_stays_copyable_and_picklable_after_fast_inference():
    model, x = make("image")
    with torch.inference_mode():
        out = model(x)
    clone = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    assert set(clone.state_dict()) == set(model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(clone(x), out, rtol=0, atol=0)


def test_switches():
    model, x = make("image")
    assert fast.is_enabled()
    with torch.no_grad():
        assert fast.active(x) and fast.compute_dtype(x) == torch.float32
        with fast.disabled():
            assert not fast.active(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast.compute_dtype(x) == (torch.bfloat16 if fast._HAS_BF16 else None)
        assert fast.compute_dtype(x.half()) is None  # no fast fp16 GEMM on CPU: regular path
    assert not fast.active(x)  # grad enabled
    fast.set_enabled(False)
    try:
        with torch.no_grad():
            assert not fast.active(x)
    finally:
        fast.set_enabled(True)


def test_toy_sizes_use_the_regular_path(monkeypatch):
    model, x = make("image")
    monkeypatch.setattr(fast, "MIN_ACTIVATION", 1 << 16)  # the default; TINY_IMAGE at batch 2: 8192
    calls = count_fast_linears(monkeypatch)
    with torch.inference_mode():
        model(x)
    assert calls[0] == 0
