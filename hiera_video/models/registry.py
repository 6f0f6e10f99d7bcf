"""Named model configurations: every published Hiera (original, timm's abswin, SAM 2's trunk) and a video abswin.

Configs only; nothing here builds a model (that is `factory.create_model`), so every other module may import
the registry without an import cycle. Where weights are published: `sources.pretrained_sources`.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from .config import HieraConfig, HieraDetConfig

_VIDEO = dict(input_size=(16, 224, 224), q_stride=(1, 2, 2), mask_unit_size=(1, 8, 8), patch_kernel=(3, 7, 7),
              patch_stride=(2, 4, 4), patch_padding=(1, 3, 3), sep_pos_embed=True, num_classes=400)
_SIZES = {
    "tiny": dict(embed_dim=96, num_heads=1, depths=(1, 2, 7, 2)),
    "small": dict(embed_dim=96, num_heads=1, depths=(1, 2, 11, 2)),
    "base": dict(embed_dim=96, num_heads=1, depths=(2, 3, 16, 3)),
    "base_plus": dict(embed_dim=112, num_heads=2, depths=(2, 3, 16, 3)),
    "large": dict(embed_dim=144, num_heads=2, depths=(2, 6, 36, 4)),
    "huge": dict(embed_dim=256, num_heads=4, depths=(2, 6, 36, 4)),
}
# name -> (architecture, config fields). Where weights are published: `sources.pretrained_sources` (one listing).
_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {}


def config_class(arch: str) -> type[HieraConfig]:
    """The config dataclass of an architecture: HieraDet's (SAM 2's trunk) adds its windows to HieraConfig."""
    return HieraDetConfig if arch == "hieradet" else HieraConfig


def register_model(name: str, arch: str, **fields: Any) -> None:
    """Add a named configuration. ``arch`` is ``"hiera"`` (classifier), ``"mae_hiera"`` (MAE) or ``"hieradet"``
    (SAM 2's trunk) (the keys of `factory.ARCHITECTURES`)."""
    config_class(arch)(**fields)  # validate now, not at first use
    _REGISTRY[name] = (arch, fields)


for _size, _f in _SIZES.items():
    register_model(f"hiera_{_size}_224", "hiera", **_f)
    # MAE pretraining pools only twice: the last two stages share the mask-unit resolution.
    register_model(f"mae_hiera_{_size}_224", "mae_hiera", q_pool=2, **_f)
for _size in ("base", "base_plus", "large", "huge"):
    _f = {**_SIZES[_size], **_VIDEO}
    register_model(f"hiera_{_size}_16x224", "hiera", **_f)
    register_model(f"mae_hiera_{_size}_16x224", "mae_hiera", q_pool=2, **_f)

# timm's abswin models (timm/models/hiera.py `hiera_small_abswin_256` / `hiera_base_abswin_256`): LayerScale
# 1e-5 on both branches; the small one widens without a projection (`use_expand_proj=False`); timm builds both
# at 256 px (the pretrained_cfg input size) and gives the base one timm's default background grid (14, 14).
_ABSWIN = dict(input_size=(256, 256), abs_win_pos_embed=True, layer_scale_init=1e-5)
register_model("hiera_small_abswin_256", "hiera", **_SIZES["small"], **_ABSWIN, global_pos_size=(16, 16),
               expand_proj=False)
register_model("hiera_base_abswin_256", "hiera", **_SIZES["base"], **_ABSWIN, global_pos_size=(14, 14))
# A video abswin (no published weights): 3-D background (8, 14, 14) interpolated to the token grid (8, 56, 56)
# + a (1, 8, 8) window tile. Convert the video checkpoints' separate embeddings into it with
# `create_model("hiera_base_abswin_16x224", pretrained=<hiera_base_16x224 weights>)` (see `pos_embed.to_abswin`).
_VIDEO_ABSWIN = {**_VIDEO, "sep_pos_embed": False, "abs_win_pos_embed": True}
for _size in ("base", "base_plus"):
    register_model(f"hiera_{_size}_abswin_16x224", "hiera", **_SIZES[_size], **_VIDEO_ABSWIN,
                   global_pos_size=(8, 14, 14))
    register_model(f"mae_hiera_{_size}_abswin_16x224", "mae_hiera", **_SIZES[_size], **_VIDEO_ABSWIN,
                   global_pos_size=(8, 14, 14), q_pool=2)


# The published trunks: `model.image_encoder.trunk` of sam2/configs/sam2/sam2_hiera_{t,s,b+,l}.yaml and
# sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml (identical trunks in both releases). Fields the YAMLs omit
# take the defaults of SAM 2's `Hiera` constructor (sam2/modeling/backbones/hieradet.py), which are
# `HieraDetConfig`'s defaults: stages (2, 3, 16, 3), window_spec (8, 4, 14, 7), global_att_blocks
# (12, 16, 20), bkg size (14, 14), q_pool 3, q_stride (2, 2), dim_mul = head_mul = 2. timm's
# `sam2_hiera_*` (timm/models/hieradet_sam2.py) registers the same four.
SAM2_MODELS: dict[str, dict[str, Any]] = {
    "sam2_hiera_tiny": dict(embed_dim=96, num_heads=1, depths=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                            window_pos_embed_bkg_spatial_size=(7, 7)),
    "sam2_hiera_small": dict(embed_dim=96, num_heads=1, depths=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                             window_pos_embed_bkg_spatial_size=(7, 7)),
    "sam2_hiera_base_plus": dict(embed_dim=112, num_heads=2),  # the constructor defaults otherwise
    "sam2_hiera_large": dict(embed_dim=144, num_heads=2, depths=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                             window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8)),
}

for _name, _f in SAM2_MODELS.items():  # (their published weights: sources.pretrained_sources("sam2_*"))
    register_model(_name, "hieradet", **_f)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("*16x224")``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides: Any) -> HieraConfig:
    """The config of a registered model with ``overrides`` applied (any field; aliases such as ``stages``)."""
    return config_class(model_arch(name)).from_dict(_entry(name)[1], **overrides)


def model_arch(name: str) -> str:
    return _entry(name)[0]


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def _entry(name: str) -> tuple[str, dict[str, Any]]:
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model '{name}'.{hint} Available: {', '.join(list_models())}")
    return _REGISTRY[name]
