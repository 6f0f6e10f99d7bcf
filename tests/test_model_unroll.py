"""Property tests of Unroll / Reroll for 2D and 3D grids against the original step-by-step modules, and of
the max-pool reduction and the qkv split on the unrolled order."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiera_video.models.hiera import reroll, unroll
from hiera_video.models.hieradet import max_pool
from hiera_video.models.layers import max_over, split_qkv

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from hiera.hiera_utils import Reroll, Unroll


@st.composite
def grids(draw):
    ndim = draw(st.sampled_from([2, 3]))
    k = draw(st.integers(0, 3))
    strides = [tuple(draw(st.sampled_from([1, 2, 3])) for _ in range(ndim)) for _ in range(k)]
    if ndim == 3 and draw(st.booleans()):  # the video pattern: no temporal pooling
        strides = [(1, *s[1:]) for s in strides]
    prods = [math.prod(s[d] for s in strides) for d in range(ndim)]
    size = [p * draw(st.integers(1, 3)) for p in prods]
    return size, strides


@settings(max_examples=60, deadline=None)
@given(grids(), st.integers(1, 2))
def test_unroll_matches_original_and_reroll_inverts(grid, batch):
    size, schedule = grid
    C = 3
    x = torch.randn(batch, *size, C)
    u = unroll(x, size, schedule)
    ref = Unroll(input_size=size, patch_stride=[1] * len(size), unroll_schedule=schedule)(x.reshape(batch, -1, C))
    assert torch.equal(u, ref)
    assert torch.equal(reroll(u, size, schedule), x)


@settings(max_examples=40, deadline=None)
@given(grids())
def test_unrolled_order_puts_each_stride_window_in_leading_slabs(grid):
    """Pooling with the first stride must be a max over the leading prod(stride) slabs: check with coordinates."""
    size, schedule = grid
    if not schedule:
        return
    D = len(size)
    coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in size], indexing="ij"), -1).float()  # [*size, D]
    u = unroll(coords[None], size, schedule)[0]  # [N, D]
    s1 = schedule[0]
    slabs = u.view(math.prod(s1), -1, D)
    # every slab holds the same coarse cell (coordinate // stride) in the same order
    coarse = torch.div(slabs, torch.tensor(s1, dtype=torch.float), rounding_mode="floor")
    assert torch.equal(coarse, coarse[:1].expand_as(coarse))
    # and the remaining order is the unroll of the coarse grid with the rest of the schedule
    rest = [n // s for n, s in zip(size, s1)]
    cgrid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in rest], indexing="ij"), -1).float()
    assert torch.equal(coarse[0], unroll(cgrid[None], rest, schedule[1:])[0])


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([2, 3]), st.integers(1, 3), st.data())
def test_masked_reroll_matches_original(ndim, k, data):
    """With some mask units dropped, reroll returns [B, units, *unit_shape, C] exactly like the original."""
    stride = (2,) * ndim if ndim == 2 else (1, 2, 2)
    schedule = [stride] * k
    unit = [s**k for s in stride]
    units_grid = [data.draw(st.integers(1, 3)) for _ in range(ndim)]
    size = [u * g for u, g in zip(unit, units_grid)]
    U = math.prod(units_grid)
    kept = data.draw(st.integers(1, U))
    B, C = 2, 4
    x = torch.randn(B, math.prod(unit) * kept, C)
    ours = reroll(x, size, schedule, num_units=kept)
    ref = Reroll(size, [1] * ndim, schedule, stage_ends=[0], q_pool=0)(x, 0, mask=torch.ones(B, kept))
    assert torch.equal(ours, ref)


def _tied(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Values from a set of 3, so that most pooling windows hold exact ties."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, shape, generator=g).float()


@pytest.mark.parametrize("kind", ["distinct", "tied", "nan"])
def test_max_pool_gradient_goes_to_the_first_maximum_like_the_original(kind):
    """The original Hiera's gradient (``.max(dim).values``: all of it to the first maximum), not ``amax``'s
    even split of ties; the same values, NaNs included."""
    x = torch.randn(2, 4, 50, 8) if kind == "distinct" else _tied((2, 4, 50, 8), 0)
    if kind == "nan":
        x[0, 2, 3, 1] = float("nan")
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = torch.randn(2, 50, 8)
    out = max_over(a, 1)
    ref = b.max(dim=1).values  # the original's do_pool / query pooling
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.equal(a.grad, b.grad)
    if kind == "tied":
        split = x.clone().requires_grad_()
        (split.amax(dim=1) * w).sum().backward()
        assert not torch.equal(a.grad, split.grad)  # the input does have ties that would tell them apart
    with torch.no_grad():
        torch.testing.assert_close(max_over(x, 1), x.amax(dim=1), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
def test_hieradet_max_pool_matches_sam2s_maxpool2d_gradient(tied):
    """SAM 2 pools with ``nn.MaxPool2d`` on ``[B, C, H, W]``: same values, and each tie's gradient goes to
    the first maximum in row-major order of the cell, as ``max_pool`` (two successive maxima) gives."""
    x = _tied((2, 8, 6, 5), 1) if tied else torch.randn(2, 8, 6, 5)  # [B, H, W, C]
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = torch.randn(2, 4, 3, 5)
    (max_pool(a, (2, 2)) * w).sum().backward()
    ref = torch.nn.functional.max_pool2d(b.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)
    (ref * w).sum().backward()
    assert torch.equal(max_pool(x, (2, 2)), ref.detach())
    assert torch.equal(a.grad, b.grad)
    cells = x.view(2, 4, 2, 3, 2, 5).requires_grad_()  # negative dims name the same cells
    assert torch.equal(max_over(cells, (-2, 2)), ref.detach())


@pytest.mark.parametrize("use", ["qkv", "q-only", "kv-only"])
def test_split_qkv_equals_the_reshape_and_its_gradient(use):
    """`split_qkv`'s values and its one-pass backward equal autograd's through the permute-reshape-unbind it
    replaces, also when some of q, k, v get no gradient."""
    B, L, nw, h, hd = 2, 6, 4, 3, 5
    qkv = torch.randn(B, L * nw, 3 * h * hd, dtype=torch.float64)
    a, b = qkv.clone().requires_grad_(), qkv.clone().requires_grad_()
    ours = split_qkv(a, L, nw, h)
    ref = b.view(B, L, nw, 3, h, hd).permute(3, 0, 2, 4, 1, 5).reshape(3, B, nw * h, L, hd).unbind(0)
    for o, r in zip(ours, ref):
        assert o.shape == (B, nw * h, L, hd) and o.is_contiguous()
        assert torch.equal(o, r)
    picked = {"qkv": (0, 1, 2), "q-only": (0,), "kv-only": (1, 2)}[use]
    ws = [torch.randn(B, nw * h, L, hd, dtype=torch.float64) for _ in range(3)]
    sum((ours[i] * ws[i]).sum() for i in picked).backward()
    sum((ref[i] * ws[i]).sum() for i in picked).backward()
    assert torch.equal(a.grad, b.grad)
    torch.autograd.gradcheck(lambda t: split_qkv(t, L, nw, h), (qkv[:1, :, :].clone().requires_grad_(),))
    # torch.func transforms see the same function (vmap over a stack of inputs, functional grad)
    stacked = torch.stack([qkv, 2 * qkv])
    for i, o in enumerate(torch.func.vmap(lambda t: split_qkv(t, L, nw, h))(stacked)):
        assert torch.equal(o[1], 2 * ref[i].detach())
    if use == "qkv":
        f = lambda t: sum((o * w).sum() for o, w in zip(split_qkv(t, L, nw, h), ws))  # noqa: E731
        assert torch.equal(torch.func.grad(f)(qkv), b.grad)
    with pytest.raises(ValueError, match="qkv"):
        split_qkv(qkv, L + 1, nw, h)
