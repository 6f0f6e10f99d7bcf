"""Small layers shared by the Hiera family (`hiera`, `hieradet`): stochastic depth, the MLP (with its fp32
CPU training linears, see `fast`) and timm's LayerScale."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import fast

__all__ = ["DropPath", "LayerScale", "Mlp", "drop_path", "max_over"]


def max_over(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Max-pooling's reduction: the maximum of ``x`` over ``dim`` (one dim or several).

    With autograd recording, ``max(dim).values`` (dim by dim, last first): its backward is one scatter that
    routes each gradient to the first maximum, as the original Hiera's ``.max(dim).values`` and SAM 2's
    ``MaxPool2d`` do. ``amax``'s backward instead splits ties evenly, which takes an eq / count / divide
    pass over the whole input: 4-5% of a `hiera_base_224` training step under torch.compile (~126 ms per
    step), ~2% eagerly. Without autograd, ``amax`` (no indices to compute). The values are identical.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.amax(dim=dim)
    for d in sorted((dim,) if isinstance(dim, int) else dim, reverse=True):
        x = x.max(dim=d).values
    return x


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch per sample with probability p, rescale the survivors."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep.div_(1 - p)


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, onednn: bool = False) -> torch.Tensor:
        if onednn:  # fp32 CPU training linears (see fast.train_linear)
            return fast.train_linear(self.act(fast.train_linear(x, self.fc1)), self.fc2)
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (CaiT); ``gamma`` as timm names it."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
