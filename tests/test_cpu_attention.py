"""The CPU attention choice (`cpu_attention`): both forms compute the same attention, the choice is measured
once per shape and mode and then followed, and measuring leaves the caller's graph and RNG alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import TINY_IMAGE, TINY_VIDEO, randomize_

import hiera_video
from hiera_video.models import cpu_attention, cpu_kernels, fast


@pytest.fixture(autouse=True)
def _fresh_choices():
    cpu_kernels.clear_choices()
    yield
    cpu_kernels.clear_choices()


@pytest.fixture(params=["plain", "fused"])
def form(request, monkeypatch):
    """Force the measured choice either way: a margin of 0 makes the plain form win every measurement, an
    infinite one makes it lose (the measuring itself still runs)."""
    monkeypatch.setattr(cpu_attention, "MARGIN", 0.0 if request.param == "plain" else float("inf"))
    return request.param


def _qkv(shape_q, shape_kv, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(s, generator=g).to(dtype) for s in (shape_q, shape_kv, shape_kv))
    return [t.requires_grad_(grad) for t in (q, k, v)]


def _attention_keys():
    return [k for k in cpu_kernels.choices() if k[0] == "attention"]


@pytest.mark.parametrize("shape_q, shape_kv", [((2, 3, 16, 8), (2, 3, 16, 8)), ((2, 3, 4, 8), (2, 3, 16, 8))])
def test_plain_form_equals_the_fused_kernel(shape_q, shape_kv):
    q, k, v = _qkv(shape_q, shape_kv, grad=True)
    fused = F.scaled_dot_product_attention(q, k, v)
    grads_fused = torch.autograd.grad(fused, (q, k, v), torch.ones_like(fused))
    plain = cpu_attention.plain_attention(q, k, v)
    grads_plain = torch.autograd.grad(plain, (q, k, v), torch.ones_like(plain))
    torch.testing.assert_close(plain, fused, atol=1e-6, rtol=1e-5)
    for a, b in zip(grads_plain, grads_fused):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    qb, kb, vb = (t.detach().bfloat16() for t in (q, k, v))  # bf16: both within bf16 rounding of fp32
    for out in (cpu_attention.plain_attention(qb, kb, vb), F.scaled_dot_product_attention(qb, kb, vb)):
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), fused.detach(), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("train", [False, True])
def test_choice_is_measured_once_then_followed(form, train, monkeypatch):
    q, k, v = _qkv((2, 4, 16, 8), (2, 4, 16, 8), grad=train)
    with torch.set_grad_enabled(train):
        first = cpu_attention.attention(q, k, v)
    (key,) = _attention_keys()
    assert key[-2] is train and cpu_kernels.choices()[key] is (form == "plain")

    calls = []
    plain = cpu_attention.plain_attention
    monkeypatch.setattr(cpu_attention, "plain_attention", lambda *a: calls.append(1) or plain(*a))
    monkeypatch.setattr(cpu_kernels, "choose", lambda *a, **k: pytest.fail("measured again"))
    with torch.set_grad_enabled(train):
        again = cpu_attention.attention(q, k, v)
    assert len(calls) == (1 if form == "plain" else 0)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    torch.testing.assert_close(first, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=1e-5)


def test_training_measurement_leaves_the_graph_and_rng_alone(form):
    q, k, v = _qkv((2, 4, 16, 8), (2, 4, 32, 8), grad=True)
    rng = torch.get_rng_state()
    out = cpu_attention.attention(q, k, v)  # measures forward + backward on copies
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(t.grad is None for t in (q, k, v)) and out.requires_grad
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    ref = F.scaled_dot_product_attention(q, k, v)
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k, v), torch.ones_like(ref))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_memory_rule_keeps_the_fused_kernel_for_long_sequences(monkeypatch):
    monkeypatch.setattr(cpu_attention, "MARGIN", 0.0)  # the plain form would win any measurement
    long_q, long_kv = (1, 2, 256, 8), (1, 2, 256, 8)  # 256 * 256 > (256 + 512) * 8
    assert not cpu_attention.plain_allowed(*_qkv(long_q, long_kv)[:2])
    assert cpu_attention.plain_allowed(*_qkv((1, 2, 16, 8), (1, 2, 16, 8))[:2])
    monkeypatch.setattr(cpu_attention, "plain_attention", lambda *a: pytest.fail("plain form on a long sequence"))
    cpu_attention.attention(*_qkv(long_q, long_kv))
    assert _attention_keys() == []


def test_disabled_fast_paths_run_the_fused_kernel(monkeypatch):
    monkeypatch.setattr(cpu_attention, "MARGIN", 0.0)
    monkeypatch.setattr(cpu_attention, "plain_attention", lambda *a: pytest.fail("plain form with fast off"))
    with fast.disabled():
        cpu_attention.attention(*_qkv((2, 4, 16, 8), (2, 4, 16, 8)))
    assert _attention_keys() == []


@pytest.mark.parametrize("name, cfg", [("hiera_base_224", TINY_IMAGE), ("hiera_base_16x224", TINY_VIDEO)],
                         ids=["image", "video"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_model_training_step_with_either_form_matches_the_regular_path(name, cfg, autocast, form):
    """fp32: the regular path's gradients to float rounding. bf16 autocast, where no two kernels round
    alike: no further from the fp32 gradients than the regular path's bf16 gradients are."""
    model = randomize_(hiera_video.create_model(name, **cfg)).train()
    x = torch.randn(2, 3, *cfg["input_size"], generator=torch.Generator().manual_seed(1))

    def grads(bf16: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().square().sum().backward()
        return out.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out, got = grads(autocast)
    assert _attention_keys(), "the attention choice was not made"
    with fast.disabled():
        ref_out, ref = grads(False)
        regular_out, regular = grads(autocast)
    if not autocast:
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
        for n in ref:
            scale = ref[n].abs().max().clamp_min(1e-6)
            torch.testing.assert_close(got[n] / scale, ref[n] / scale, atol=1e-5, rtol=1e-4, msg=n)
        return

    def err(a, b):
        return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()

    assert err(out, ref_out) <= 1.5 * err(regular_out, ref_out) + 1e-3
    for n in ref:
        assert err(got[n], ref[n]) <= 1.5 * err(regular[n], ref[n]) + 1e-3, n


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_first_measurement_inside_gradient_checkpointing(form, reentrant):
    """Measuring in a checkpointed forward (or, reentrant, in its recomputation during the backward) must
    not upset the checkpoint's bookkeeping of saved tensors, nor the gradients."""
    q, k, v = _qkv((2, 4, 16, 8), (2, 4, 16, 8), grad=True)
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)

    def block(q, k, v):
        return cpu_attention.attention(q @ w, k, v).tanh()

    out = torch.utils.checkpoint.checkpoint(block, q, k, v, use_reentrant=reentrant)
    out.sum().backward()  # (reentrant checkpointing allows no torch.autograd.grad)
    got = [t.grad for t in (q, k, v, w)]
    assert _attention_keys()
    ref_out = F.scaled_dot_product_attention(q @ w, k, v).tanh()
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    for a, b in zip(got, torch.autograd.grad(ref_out.sum(), (q, k, v, w))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # PyTorch's vmap fallback for SDPA
def test_empty_inputs_and_torch_func_take_the_fused_kernel(monkeypatch):
    monkeypatch.setattr(cpu_attention, "MARGIN", 0.0)
    out = cpu_attention.attention(*_qkv((0, 2, 16, 8), (0, 2, 16, 8)))
    assert out.shape == (0, 2, 16, 8)
    q, k, v = _qkv((3, 2, 16, 8), (3, 2, 16, 8))
    batched = torch.func.vmap(cpu_attention.attention)(q, k, v)  # inside a transform: no measuring
    torch.testing.assert_close(batched, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=1e-5)
    assert _attention_keys() == []
