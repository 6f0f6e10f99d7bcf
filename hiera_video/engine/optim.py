"""AdamW with layer-wise learning-rate decay, and the per-step cosine schedule with linear warmup.

Layer ids follow the Hiera parameter names (see :func:`layer_id`): the patch embedding and position
embeddings are layer 0, block ``i`` is layer ``i + 1``, and everything after the blocks (final norm, head,
MAE decoder) is the last layer ``depth + 1``. With decay ``d``, layer ``l`` trains at
``lr * d ** (depth + 1 - l)`` so early layers of a pretrained encoder move least.

Weight decay is not applied to 1-d parameters (norm scales, biases), position embeddings, mask tokens, or
anything the model lists in ``no_weight_decay()``: decaying them only pulls them towards zero.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn as nn

__all__ = ["CosineWarmupSchedule", "build_optimizer", "layer_id", "param_groups"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_FIRST = ("patch_embed.", "pos_embed")


def layer_id(name: str, depth: int) -> int:
    """Layer index of a parameter for layer-wise lr decay; ``depth`` is ``len(model.blocks)``."""
    if name.startswith(_FIRST):
        return 0
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    return depth + 1


def _skip_decay(name: str, param: nn.Parameter, no_decay: set[str]) -> bool:
    return param.ndim <= 1 or name in no_decay or "pos_embed" in name or "mask_token" in name


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per (layer, decay / no decay) pair, each with an ``lr_scale``.

    Returns groups ``{"params", "weight_decay", "lr_scale", "layer", "names"}`` in a deterministic order
    (so that optimizer state dicts line up across runs and resumes).
    """
    depth = len(getattr(model, "blocks", []))
    num_layers = depth + 2
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, depth) if layer_decay != 1.0 else 0
        skip = _skip_decay(name, param, no_decay)
        key = (lid, skip)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if skip else weight_decay,
                "lr_scale": layer_decay ** (num_layers - 1 - lid) if layer_decay != 1.0 else 1.0,
                "layer": lid,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] | list[float] = (0.9, 0.999),
    eps: float = 1e-8,
    layer_decay: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. Each group's lr is ``lr * lr_scale`` (set by the schedule)."""
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
        del g["names"]  # names are for inspection only; AdamW would copy them into its state dict
    if len(betas) != 2:
        raise ValueError(f"optim.betas needs two values, got {list(betas)}")
    params = [p for g in groups for p in g["params"]]
    # PyTorch's fused AdamW (one kernel per parameter instead of a dozen foreach passes): measured on an
    # Intel Xeon, 2 threads, hiera_base's 51M parameters: 40 ms per step against 150 ms. It exists for CPU
    # and CUDA floating-point parameters; the update is the same formula (equal to float rounding).
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps,
                             fused=fused or None)


class CosineWarmupSchedule:
    """Per-optimizer-step lr: linear warmup from 0 to ``peak_lr``, then cosine decay to ``min_lr``.

    ``step()`` is called after every optimizer step; the lr of step ``s`` (0-based) is applied before it.
    State is just the step counter, so resuming restores the curve exactly.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        peak_lr: float,
        total_steps: int,
        warmup_steps: int,
        min_lr: float = 0.0,
    ) -> None:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.optimizer = optimizer
        self.peak_lr = peak_lr
        self.total_steps = total_steps
        self.warmup_steps = min(max(0, warmup_steps), total_steps)
        self.min_lr = min_lr
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        lr = self.lr_at(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    @property
    def lr(self) -> float:
        """The current peak-group lr (layer scale 1)."""
        return self.lr_at(self.last_step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self._apply()
