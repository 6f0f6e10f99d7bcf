"""timm's Hiera weights: key names, its hub folder layout (``config.json`` + ``model.safetensors``), export.

Facts from timm 1.0 (`timm/models/hiera.py`, `timm/models/_hub.py`), read, not copied:

* keys are the original release's except the head: timm's `ClNormMlpClassifierHead` holds the final norm and
  the classifier as ``head.norm.*`` / ``head.fc.*`` (ours: ``norm.*`` / ``head.projection.*``, as the
  original); timm's `checkpoint_filter_fn` renames the original's ``pos_embed_abs`` to ``pos_embed``, so in
  an abswin model timm's ``pos_embed`` is the channel-first background ``[1, C, *G]`` (ours:
  ``pos_embed_abs``, to keep ``pos_embed`` meaning one ``[1, N, C]`` embedding);
* `save_for_hf` writes ``config.json`` = ``{"architecture": <timm model name>, "num_classes",
  "num_features", "global_pool", "model_args": <constructor kwargs that differ>, "pretrained_cfg": {input
  size, mean / std, crop, "license", ...}, "label_names"?}``; `timm.create_model(name, **model_args)`
  rebuilds it, so the architecture's defaults plus ``model_args`` are the whole config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hiera_video.constants import IMAGENET_MEAN, IMAGENET_STD
from hiera_video.fileio import atomic_write_bytes, atomic_write_text

from .config import FIELD_ALIASES, HieraConfig
from .registry import get_config, list_models

# timm constructor arguments that carry no weights/shape information we model, with the values we accept.
_TIMM_ONLY = {"global_pool": ("avg", ""), "norm_layer": ("LayerNorm", "layernorm"), "weight_init": None,
              "fix_init": None, "patch_drop_rate": None, "pretrained_cfg": None, "pretrained_cfg_overlay": None,
              "device": None, "dtype": None}
# Our field -> timm's constructor argument, for export (the inverse of the aliases in `config`).
_TO_TIMM = {"input_size": "img_size", "depths": "stages", "layer_scale_init": "init_values",
            "expand_proj": "use_expand_proj", "head_dropout": "drop_rate"}
_TIMM_FIELDS = ("input_size", "in_chans", "embed_dim", "num_heads", "num_classes", "depths", "q_pool", "q_stride",
                "mask_unit_size", "mask_unit_attn", "expand_proj", "dim_mul", "head_mul", "patch_kernel",
                "patch_stride", "patch_padding", "mlp_ratio", "drop_path_rate", "layer_scale_init",
                "head_dropout", "head_init_scale", "sep_pos_embed", "abs_win_pos_embed", "global_pos_size")


def is_timm_config(raw: dict[str, Any]) -> bool:
    """A timm hub ``config.json``: ``architecture`` (a string) and ``pretrained_cfg`` / ``num_classes``."""
    return isinstance(raw.get("architecture"), str) and ("pretrained_cfg" in raw or "model_args" in raw
                                                          or "num_features" in raw)


def is_timm_state_dict(keys: set[str]) -> bool:
    return any(k.startswith(("head.fc.", "head.norm.")) for k in keys) or {"pos_embed", "pos_embed_win"} <= keys


def timm_state_dict_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    abswin = "pos_embed_win" in sd
    for k, v in sd.items():
        if k.startswith("head.fc."):
            k = "head.projection." + k.removeprefix("head.fc.")
        elif k.startswith("head.norm."):
            k = "norm." + k.removeprefix("head.norm.")
        elif k == "pos_embed" and abswin:
            k = "pos_embed_abs"
        out[k] = v
    return out


def ours_state_dict_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("head.projection."):
            k = "head.fc." + k.removeprefix("head.projection.")
        elif k.startswith("norm."):
            k = "head.norm." + k.removeprefix("norm.")
        elif k == "pos_embed_abs":
            k = "pos_embed"
        elif k.startswith(("decoder_", "mask_token", "encoder_norm.", "multi_scale_fusion_heads.")):
            raise ValueError(f"timm's Hiera has no MAE decoder ('{k}'); export the encoder: "
                             "create_model('<classifier name>', pretrained=<MAE weights>) first")
        out[k] = v
    return out


def timm_config_to_ours(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """timm ``config.json`` -> (our config fields, extra metadata: normalisation, licence, label names)."""
    arch = raw["architecture"]
    if arch not in list_models():
        timm_names = ", ".join(n for n in list_models("hiera_*") if "16x" not in n)
        raise ValueError(f"timm architecture '{arch}' has no Hiera config here (supported: {timm_names})")
    cfg = get_config(arch).to_dict()
    cfg.pop("extra")
    for k, v in dict(raw.get("model_args") or {}).items():
        if k in _TIMM_ONLY:
            allowed = _TIMM_ONLY[k]
            if allowed is not None and v not in allowed:
                raise ValueError(f"timm model_args {k}={v!r} is not supported here (only {allowed})")
            continue
        key = FIELD_ALIASES.get(k, k)
        if key not in cfg:
            raise ValueError(f"timm model_args '{k}' has no counterpart in HieraConfig; cannot rebuild '{arch}'")
        cfg[key] = v
    if "num_classes" in raw:
        cfg["num_classes"] = raw["num_classes"]
    pcfg = raw.get("pretrained_cfg") or {}
    if "input_size" in pcfg and "img_size" not in (raw.get("model_args") or {}):
        cfg["input_size"] = list(pcfg["input_size"][1:])  # timm's (C, H, W)
    extra: dict[str, Any] = {k: pcfg[k] for k in ("mean", "std", "crop_pct", "interpolation", "license")
                             if k in pcfg}
    names = raw.get("label_names")
    if isinstance(names, dict):
        names = [names[str(i)] if str(i) in names else names[i] for i in range(len(names))]
    if names:
        extra["class_names"] = list(names)
    return cfg, extra


def timm_architecture(cfg: HieraConfig) -> str:
    """The timm model whose defaults are closest (same width, depths, position embedding); model_args carry
    every field anyway, so the choice only names the family."""
    for name in list_models("hiera_*"):
        if "16x" in name:
            continue
        ref = get_config(name)
        if (ref.embed_dim, ref.depths, ref.num_heads, ref.abs_win_pos_embed) == (
                cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.abs_win_pos_embed):
            return name
    return "hiera_small_abswin_256" if cfg.abs_win_pos_embed else "hiera_base_224"


def export_timm(model: nn.Module, directory: str | os.PathLike, class_names: list[str] | None = None) -> Path:
    """Write ``model`` as a timm hub folder: ``timm.create_model("local-dir:<dir>", pretrained=True)`` (or
    ``hf-hub:`` once pushed) rebuilds it, and `create_model(pretrained=<dir>)` reads it back."""
    from safetensors.torch import save

    cfg: HieraConfig = model.config
    if cfg.norm_eps != 1e-6:  # timm's Hiera builds LayerNorm(eps=1e-6) and takes no eps argument
        raise ValueError(f"timm's Hiera has LayerNorm eps 1e-6; this model uses {cfg.norm_eps}")
    model_args = {}
    for f in _TIMM_FIELDS:
        v = getattr(cfg, f)
        if f == "global_pos_size" and not cfg.abs_win_pos_embed:
            continue
        model_args[_TO_TIMM.get(f, f)] = list(v) if isinstance(v, tuple) else v
    extra = cfg.extra
    names = class_names or extra.get("class_names")
    pretrained_cfg = {
        "input_size": [cfg.in_chans, *cfg.input_size], "fixed_input_size": True,
        "interpolation": extra.get("interpolation", "bicubic"), "crop_pct": _crop_pct(cfg),
        "crop_mode": "center", "mean": list(extra.get("mean", IMAGENET_MEAN)),
        "std": list(extra.get("std", IMAGENET_STD)), "num_classes": cfg.num_classes,
        "first_conv": "patch_embed.proj", "classifier": "head.fc",
    }
    if extra.get("license"):
        pretrained_cfg["license"] = extra["license"]
    raw = {"architecture": timm_architecture(cfg), "num_classes": cfg.num_classes,
           "num_features": cfg.stage_dims[-1], "global_pool": "avg", "model_args": model_args,
           "pretrained_cfg": pretrained_cfg}
    if names:
        raw["label_names"] = list(names)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = ours_state_dict_to_timm({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    atomic_write_bytes(d / "model.safetensors", save(sd, metadata={"format": "pt"}))
    atomic_write_text(d / "config.json", json.dumps(raw, indent=2))
    return d


def _crop_pct(cfg: HieraConfig) -> float:
    """timm's centre-crop fraction: recorded, else crop / the run's eval resize, else timm's 0.875."""
    extra = cfg.extra
    if extra.get("crop_pct"):
        return float(extra["crop_pct"])
    if extra.get("resize_size"):
        return min(cfg.input_size[-2:]) / float(extra["resize_size"])
    return 0.875
