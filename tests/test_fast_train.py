"""The fp32 CPU training fast path (`hiera_video.models.fast_train`) gives the regular path's gradients on
every CPU: the per-shape oneDNN linears (forced on where the probe passed, forced off, and measured) and the
MLP as one autograd function with its pre-activation in pooled memory (`take`), which must never hand out
memory a live graph still holds."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from model_helpers import FP32_OK, TINY_IMAGE, TINY_VIDEO, randomize_

import hiera_video
from hiera_video.models import cpu_kernels, fast, fast_train
from hiera_video.models.layers import Mlp

CONFIGS = {"image": ("hiera_tiny_224", TINY_IMAGE), "video": ("hiera_base_16x224", TINY_VIDEO)}
# The pool reads storage use counts through a private PyTorch API; without it nothing is pooled (tested below
# by removing it), and the tests of the pool's reuse have nothing to test.
needs_use_count = pytest.mark.skipif(fast_train._USE_COUNT is None, reason="torch._C._storage_Use_Count absent")


@pytest.fixture(autouse=True)
def _fresh():
    cpu_kernels.clear_choices()
    fast_train.clear_pool()
    yield
    cpu_kernels.clear_choices()
    fast_train.clear_pool()


def make(kind: str, **kw) -> tuple[nn.Module, torch.Tensor]:
    name, cfg = CONFIGS[kind]
    torch.manual_seed(0)
    model = randomize_(hiera_video.create_model(name, **{**cfg, "drop_path_rate": 0.0, **kw})).train()
    return model, torch.randn(2, 3, *model.config.input_size)


def spy(monkeypatch, obj, name: str) -> list[int]:
    calls = [0]
    orig = getattr(obj, name)

    def wrapped(*a, **k):
        calls[0] += 1
        return orig(*a, **k)

    monkeypatch.setattr(obj, name, wrapped)
    return calls


def grads_of(model: nn.Module, x: torch.Tensor, use_fast: bool) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    with fast.enabled() if use_fast else fast.disabled():
        out = model(x)
        (out.square().sum() + out.sum()).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_grads_close(g1: dict, g0: dict) -> None:
    for n in g0:  # same math, other GEMM kernels and order: float rounding only
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-5 * float(g0[n].abs().max()) + 1e-9, msg=n)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_training_path_gradients(kind, kernel, monkeypatch):
    model, x = make(kind)
    assert fast_train.train_active(x)
    onednn = spy(monkeypatch, fast_train._OneDNNLinear, "apply")
    mlps = spy(monkeypatch, fast_train._TrainMLP, "apply")
    o0, g0 = grads_of(model, x, use_fast=False)
    assert onednn[0] == mlps[0] == 0  # the regular path uses neither
    o1, g1 = grads_of(model, x, use_fast=True)
    assert mlps[0] == len(model.blocks)  # every block's MLP
    made = [v for k, v in cpu_kernels.choices().items() if k[0] == "train"]
    if kernel == "onednn":
        assert (onednn[0] > 0) == FP32_OK
    elif kernel == "regular":
        assert onednn[0] == 0
    else:  # measured per shape (oneDNN used exactly where it won; the MLPs' fc1 / fc2 choices inside)
        assert (len(made) > 0) == FP32_OK
        if not any(made):
            assert onednn[0] == 0
    torch.testing.assert_close(o1, o0, rtol=0, atol=1e-5)
    assert_grads_close(g1, g0)


def test_training_path_with_gradient_checkpointing(kernel):
    model, x = make("image")
    _, ref = grads_of(model, x, use_fast=False)
    model.set_grad_checkpointing(True)
    _, got = grads_of(model, x, use_fast=True)
    assert_grads_close(got, ref)


@pytest.mark.parametrize("dnn1,dnn2", [(False, False), (True, False), (False, True), (True, True)])
def test_mlp_function_equals_autograd(dnn1, dnn2):
    if (dnn1 or dnn2) and not FP32_OK:
        pytest.skip("oneDNN fp32 linears refused on this CPU (the regular kernels are the other cases)")
    torch.manual_seed(0)
    mlp = Mlp(24, 96)
    x = torch.randn(3, 7, 24, requires_grad=True)
    y = fast_train._TrainMLP.apply(x, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias, dnn1, dnn2)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *mlp.parameters()], g)
    ref_y = mlp(x)
    ref = torch.autograd.grad(ref_y, [x, *mlp.parameters()], g)
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_mlp_function_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in ((10, 6), (10,), (6, 10), (6,))]
    assert torch.autograd.gradcheck(lambda *t: fast_train._TrainMLP.apply(*t, False, False), (x, *params))


def test_mlp_with_frozen_parts_gives_only_the_needed_gradients():
    torch.manual_seed(0)
    mlp = Mlp(16, 64)
    mlp.fc1.requires_grad_(False)
    x = torch.randn(4, 16)  # no grad for the input either
    fast_train.train_mlp(x, mlp).square().sum().backward()
    mlp2 = Mlp(16, 64)
    mlp2.load_state_dict(mlp.state_dict())
    mlp2.fc1.requires_grad_(False)
    mlp2(x).square().sum().backward()
    assert mlp.fc1.weight.grad is None and mlp.fc1.bias.grad is None
    torch.testing.assert_close(mlp.fc2.weight.grad, mlp2.fc2.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mlp.fc2.bias.grad, mlp2.fc2.bias.grad, rtol=1e-5, atol=1e-6)


def test_mlp_other_activations_keep_their_own_layers():
    mlp = Mlp(8, 32)
    mlp.act = nn.GELU(approximate="tanh")
    x = torch.randn(3, 8)
    torch.testing.assert_close(fast_train.train_mlp(x, mlp), mlp.fc2(mlp.act(mlp.fc1(x))), rtol=0, atol=0)


@needs_use_count
def test_pool_reuses_free_buffers_and_never_a_held_one():
    a = fast_train.take((64, 32), torch.float32)
    b = fast_train.take((64, 32), torch.float32)  # a is held: another buffer
    assert a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    del a
    c = fast_train.take((64, 32), torch.float32)  # a's buffer is free again: reused
    assert c.data_ptr() == ptr
    view = c[3:5]  # any view keeps the storage held
    del c
    assert fast_train.take((64, 32), torch.float32).data_ptr() not in (ptr, b.data_ptr())
    del view
    assert fast_train.pool_bytes() == 3 * 64 * 32 * 4
    fast.clear_cache()  # the fast paths' caches include the pool
    assert fast_train.pool_bytes() == 0


@needs_use_count
def test_pool_is_bounded(monkeypatch):
    monkeypatch.setattr(fast_train, "POOL_SHAPES", 3)
    for n in range(1, 8):
        fast_train.take((n, 4), torch.float32)
    assert fast_train.pool_bytes() == sum(n * 4 * 4 for n in (5, 6, 7))  # the 3 most recent shapes


def test_pool_without_use_counts_allocates_fresh(monkeypatch):
    monkeypatch.setattr(fast_train, "_USE_COUNT", None)
    a = fast_train.take((8, 8), torch.float32)
    assert a.shape == (8, 8) and fast_train.pool_bytes() == 0


@needs_use_count
def test_two_forwards_before_backward_and_retained_graphs():
    """Pooled buffers held by a live graph are never reused: gradient accumulation over two forwards, a
    retained graph run twice and steps reusing the pool all give the regular path's gradients."""
    model, x = make("image")
    x2 = torch.randn_like(x)

    def run(use_fast: bool) -> dict:
        model.zero_grad(set_to_none=True)
        with fast.enabled() if use_fast else fast.disabled():
            l1, l2 = model(x).square().sum(), model(x2).sum()  # both graphs alive at once
            (l1 + l2).backward(retain_graph=True)
            l1.backward()  # the retained graph again
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    ref = run(False)
    for _ in range(2):  # the second round reuses the first one's pool
        assert_grads_close(run(True), ref)
    assert fast_train.pool_bytes() > 0


def test_torch_func_transforms_take_the_regular_path(monkeypatch):
    model, x = make("image")
    params = dict(model.named_parameters())
    mlps = spy(monkeypatch, fast_train._TrainMLP, "apply")
    got = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).square().sum())(params)
    assert mlps[0] == 0
    with fast.disabled():
        ref = torch.autograd.grad(model(x).square().sum(), list(params.values()))
    assert_grads_close(got, dict(zip(params, ref)))


def test_mlp_function_double_backward_gradgradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in ((8, 4), (8,), (4, 8), (4,))]
    assert torch.autograd.gradgradcheck(lambda *t: fast_train._TrainMLP.apply(*t, False, False), (x, *params))


@pytest.mark.parametrize("dnn", [False, True])
def test_gradient_penalty_differentiates_the_fast_backward(dnn):
    """create_graph=True (a gradient penalty) differentiates the MLP function's and the oneDNN linear's
    backward like autograd's own. (Through a whole Hiera it stops at PyTorch's CPU flash attention, whose
    backward has no derivative, on the regular path as well.)"""
    if dnn and not FP32_OK:
        pytest.skip("oneDNN fp32 linears refused on this CPU (the regular kernels are the other case)")
    torch.manual_seed(0)
    mlp, lin = Mlp(12, 48), nn.Linear(12, 12)
    x = torch.randn(5, 12)
    params = [*mlp.parameters(), *lin.parameters()]

    def penalised(fast_fns: bool) -> list[torch.Tensor]:
        xi = x.clone().requires_grad_(True)
        if fast_fns:
            w = (mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
            h = fast_train._TrainMLP.apply(xi, *w, dnn, dnn)
            out = fast_train._OneDNNLinear.apply(h, lin.weight, lin.bias) if dnn else lin(h)
        else:
            out = lin(mlp(xi))
        (gx,) = torch.autograd.grad(out.square().sum(), xi, create_graph=True)
        return torch.autograd.grad(out.sum() + gx.square().sum(), params)

    for a, b in zip(penalised(True), penalised(False)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_mae_encoder_and_decoder_take_the_training_path(monkeypatch):
    torch.manual_seed(0)
    mae = hiera_video.create_model("mae_hiera_tiny_224", embed_dim=16, depths=(1, 1, 2, 1), decoder_embed_dim=32,
                                   decoder_depth=2, decoder_num_heads=2, input_size=(64, 64)).train()
    x = torch.randn(2, 3, 64, 64)
    mask = mae.get_random_mask(2, torch.Generator().manual_seed(0))
    mlps = spy(monkeypatch, fast_train._TrainMLP, "apply")

    def grads(use_fast: bool) -> dict:
        mae.zero_grad(set_to_none=True)
        with fast.enabled() if use_fast else fast.disabled():
            mae(x, mask=mask).loss.backward()
        return {n: p.grad.clone() for n, p in mae.named_parameters() if p.grad is not None}

    ref = grads(False)
    assert mlps[0] == 0
    got = grads(True)
    assert mlps[0] == len(mae.blocks) + len(mae.decoder_blocks)
    assert got.keys() == ref.keys()
    assert_grads_close(got, ref)
