"""The reference implementations `tools/benchmark.py` compares against, built with our weights.

The original Hiera (pip ``hiera-transformer``) and timm by state-dict key mapping, HF transformers through
`hiera_video.models.export_hf`; each returns logits so the benchmark can check the weights landed right.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from hiera_video.models.config import HieraConfig


def original_config_kwargs(cfg: HieraConfig) -> dict[str, Any]:
    """Constructor arguments of the original `hiera.Hiera` for one of our configs."""
    return dict(
        input_size=cfg.input_size,
        in_chans=cfg.in_chans,
        embed_dim=cfg.embed_dim,
        num_heads=cfg.num_heads,
        num_classes=cfg.num_classes,
        stages=cfg.depths,
        q_pool=cfg.q_pool,
        q_stride=cfg.q_stride,
        mask_unit_size=cfg.mask_unit_size,
        mask_unit_attn=cfg.mask_unit_attn,
        dim_mul=cfg.dim_mul,
        head_mul=cfg.head_mul,
        patch_kernel=cfg.patch_kernel,
        patch_stride=cfg.patch_stride,
        patch_padding=cfg.patch_padding,
        mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=0.0,
        sep_pos_embed=cfg.sep_pos_embed,
    )


def build_original(ours: nn.Module) -> nn.Module:
    """The original implementation (pip ``hiera-transformer``) with our weights; the head returns logits."""
    import hiera

    ref = hiera.Hiera(**original_config_kwargs(ours.config))
    ref.load_state_dict(ours.state_dict(), strict=True)  # identical parameter names
    ref.head.act_func = nn.Identity()  # the original applies softmax in eval mode; compare logits
    return ref


def timm_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our key names -> timm's: the final norm and classifier live under ``head`` in timm."""
    rename = {
        "norm.weight": "head.norm.weight",
        "norm.bias": "head.norm.bias",
        "head.projection.weight": "head.fc.weight",
        "head.projection.bias": "head.fc.bias",
    }
    return {rename.get(k, k): v for k, v in sd.items()}


def build_timm(ours: nn.Module) -> nn.Module:
    from timm.models.hiera import Hiera as TimmHiera

    cfg = ours.config
    kw = original_config_kwargs(cfg)
    kw["img_size"] = kw.pop("input_size")
    kw["stages"] = kw.pop("stages")
    ref = TimmHiera(**kw)
    ref.load_state_dict(timm_state_dict(ours.state_dict()), strict=True)
    return ref


def build_hf(ours: nn.Module) -> nn.Module:
    from transformers import HieraForImageClassification

    from hiera_video.models import export_hf

    with tempfile.TemporaryDirectory() as d:
        export_hf(ours, d)
        ref = HieraForImageClassification.from_pretrained(d)
    return _HFLogits(ref)


class _HFLogits(nn.Module):
    """HF models return a ModelOutput; the benchmark wants the logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


BUILDERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "original": build_original,
    "hf": build_hf,
    "timm": build_timm,
}


def available_refs(requested: list[str], is_video: bool) -> tuple[list[str], list[str]]:
    """Split requested references into usable ones and skipped ones (with the reason)."""
    use, skipped = [], []
    for r in requested:
        if r in ("hf", "timm") and is_video:
            skipped.append(f"{r}: image models only")
            continue
        mod = {"original": "hiera", "hf": "transformers", "timm": "timm"}[r]
        try:
            __import__(mod)
        except ImportError:
            skipped.append(f"{r}: `{mod}` not installed")
            continue
        use.append(r)
    return use, skipped
