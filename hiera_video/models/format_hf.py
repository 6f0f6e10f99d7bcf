"""HF transformers' Hiera: key names, ``config.json``, and an export that transformers' own tools run.

Facts from transformers (`models/hiera/modeling_hiera.py`, `configuration_hiera.py`, and the auto mapping
``"hiera" -> BitImageProcessor`` in `image_processing_auto.py`), read, not copied. An exported folder holds
``config.json`` (with ``id2label`` / ``label2id``), ``model.safetensors`` and ``preprocessor_config.json``, so
``pipeline("image-classification", model=dir)`` and ``AutoModelForImageClassification.from_pretrained(dir)``
work on it offline.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hiera_video.constants import IMAGENET_MEAN, IMAGENET_STD
from hiera_video.fileio import atomic_write_bytes, atomic_write_text

from .config import HieraConfig

_PIL_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, the value HF processor configs store as "resample"


def is_hf_config(raw: dict[str, Any]) -> bool:
    return raw.get("model_type") == "hiera"


def is_hf_state_dict(keys: set[str]) -> bool:
    return any(k.startswith(("hiera.", "embeddings.", "encoder.stages.")) for k in keys)


_HF_BLOCK = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attn.qkv": "attn.qkv",
             "attn.proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "proj": "proj"}


def hf_state_dict_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF `HieraForImageClassification` / `HieraModel` keys -> original (our) keys."""
    stage_layers: dict[int, int] = {}
    for k in sd:
        m = re.search(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.", k)
        if m:
            s, j = int(m[1]), int(m[2])
            stage_layers[s] = max(stage_layers.get(s, 0), j + 1)
    offsets = {s: sum(stage_layers[t] for t in range(s)) for s in stage_layers}
    out = {}
    for k, v in sd.items():
        key = k.removeprefix("hiera.")
        if key.startswith("embeddings.patch_embeddings.projection."):
            new = "patch_embed.proj." + key.rsplit(".", 1)[1]
        elif key == "embeddings.position_embeddings":
            new = "pos_embed"
        elif key.startswith("pooler.layernorm."):
            new = "norm." + key.rsplit(".", 1)[1]
        elif key.startswith("classifier."):
            new = "head.projection." + key.rsplit(".", 1)[1]
        else:
            m = re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
            if not m or m[3] not in _HF_BLOCK:
                raise ValueError(f"unrecognised HF Hiera key '{k}' (only image classification models convert)")
            new = f"blocks.{offsets[int(m[1])] + int(m[2])}.{_HF_BLOCK[m[3]]}.{m[4]}"
        out[new] = v
    return out


def ours_state_dict_to_hf(sd: dict[str, torch.Tensor], cfg: HieraConfig) -> dict[str, torch.Tensor]:
    """Our (original) keys -> HF `HieraForImageClassification` keys."""
    stage_of = {}
    b = 0
    for s, n in enumerate(cfg.depths):
        for j in range(n):
            stage_of[b] = (s, j)
            b += 1
    inv = {v: k for k, v in _HF_BLOCK.items()}
    out = {}
    for k, v in sd.items():
        if k.startswith("patch_embed.proj."):
            new = "hiera.embeddings.patch_embeddings.projection." + k.rsplit(".", 1)[1]
        elif k == "pos_embed":
            new = "hiera.embeddings.position_embeddings"
        elif k.startswith("norm."):
            new = "hiera.pooler.layernorm." + k.rsplit(".", 1)[1]
        elif k.startswith("head.projection."):
            new = "classifier." + k.rsplit(".", 1)[1]
        else:
            m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", k)
            if not m:
                raise ValueError(f"cannot express '{k}' in HF transformers Hiera (image classifiers only)")
            s, j = stage_of[int(m[1])]
            new = f"hiera.encoder.stages.{s}.layers.{j}.{inv[m[2]]}.{m[3]}"
        out[new] = v
    return out


def hf_config_to_ours(hf: dict[str, Any]) -> dict[str, Any]:
    heads = hf.get("num_heads", [1, 2, 4, 8])
    out = {
        "input_size": hf.get("image_size", [224, 224]), "in_chans": hf.get("num_channels", 3),
        "embed_dim": hf.get("embed_dim", 96), "num_heads": heads[0],
        "head_mul": heads[1] / heads[0] if len(heads) > 1 else 2.0, "depths": hf.get("depths", [2, 3, 16, 3]),
        "dim_mul": hf.get("embed_dim_multiplier", 2.0), "q_pool": hf.get("num_query_pool", 3),
        "q_stride": hf.get("query_stride", [2, 2]), "mask_unit_size": hf.get("masked_unit_size", [8, 8]),
        "mask_unit_attn": hf.get("masked_unit_attention", [True, True, False, False]),
        "patch_kernel": hf.get("patch_size", [7, 7]), "patch_stride": hf.get("patch_stride", [4, 4]),
        "patch_padding": hf.get("patch_padding", [3, 3]), "mlp_ratio": hf.get("mlp_ratio", 4.0),
        "drop_path_rate": hf.get("drop_path_rate", 0.0), "norm_eps": hf.get("layer_norm_eps", 1e-6),
    }
    if isinstance(hf.get("id2label"), dict) and hf["id2label"]:
        out["num_classes"] = len(hf["id2label"])
        out["extra"] = {"class_names": [hf["id2label"][str(i)] for i in range(len(hf["id2label"]))]}
    return out


def export_hf(model: nn.Module, directory: str | os.PathLike, class_names: list[str] | None = None) -> Path:
    """Write an image classifier as a HF transformers ``HieraForImageClassification`` directory.

    Labels: ``class_names``, else the model's ``config.extra["class_names"]`` (a trained run's classes),
    else ``LABEL_<i>``. The image processor normalises with ``config.extra["mean"] / ["std"]`` (what the
    model was trained with, recorded by `create_model` from a run) and falls back to ImageNet's.
    """
    from safetensors.torch import save

    cfg: HieraConfig = model.config
    if cfg.is_video:
        raise ValueError("HF transformers Hiera supports image models only; this model is a video model")
    if cfg.sep_pos_embed:
        raise ValueError("HF transformers Hiera has no separate spatial/temporal position embeddings")
    if cfg.abs_win_pos_embed or cfg.layer_scale_init is not None or not cfg.expand_proj:
        raise ValueError("HF transformers Hiera has no abswin position embedding / layer scale / projection-free "
                         "widening (timm's abswin models); export those with to='timm'")
    n = cfg.num_classes
    names = list(class_names or cfg.extra.get("class_names") or [f"LABEL_{i}" for i in range(n)])
    if len(names) != n or len(set(names)) != n:
        raise ValueError(f"need {n} distinct class names for the {n}-class head, got {len(names)} "
                         f"({len(set(names))} distinct)")
    hf_cfg = {
        "model_type": "hiera", "architectures": ["HieraForImageClassification"],
        "embed_dim": cfg.embed_dim, "image_size": list(cfg.input_size), "patch_size": list(cfg.patch_kernel),
        "patch_stride": list(cfg.patch_stride), "patch_padding": list(cfg.patch_padding),
        "mlp_ratio": cfg.mlp_ratio, "depths": list(cfg.depths),
        "num_heads": [int(cfg.num_heads * cfg.head_mul**i) for i in range(cfg.num_stages)],
        "embed_dim_multiplier": cfg.dim_mul, "num_query_pool": cfg.q_pool, "query_stride": list(cfg.q_stride),
        "masked_unit_size": list(cfg.mask_unit_size), "masked_unit_attention": list(cfg.mask_unit_attn),
        "drop_path_rate": cfg.drop_path_rate, "num_channels": cfg.in_chans, "hidden_act": "gelu",
        "initializer_range": 0.02, "layer_norm_init": 1.0, "layer_norm_eps": cfg.norm_eps,
        "id2label": {str(i): names[i] for i in range(n)}, "label2id": {names[i]: i for i in range(n)},
    }
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "preprocessor_config.json", json.dumps(image_processor_config(cfg), indent=2))
    sd = ours_state_dict_to_hf({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, cfg)
    atomic_write_bytes(d / "model.safetensors", save(sd, metadata={"format": "pt"}))
    atomic_write_text(d / "config.json", json.dumps(hf_cfg, indent=2))
    return d


def image_processor_config(cfg: HieraConfig) -> dict[str, Any]:
    """``preprocessor_config.json`` for transformers' `BitImageProcessor` (what `AutoImageProcessor` maps
    ``model_type="hiera"`` to): resize the short side, centre-crop to the input size, rescale to [0, 1],
    normalise with the model's training mean / std (``config.extra``), ImageNet's when none was recorded.

    The short side is ``extra["resize_size"]`` (a run's ``data.test_short_side``), else crop / ``crop_pct``
    (timm's convention; 0.875 -> 256 for a 224 crop, the HF Hiera processors' value).
    """
    extra = cfg.extra
    H, W = cfg.input_size
    short = extra.get("resize_size") or round(min(H, W) / float(extra.get("crop_pct", 0.875)))
    return {
        "image_processor_type": "BitImageProcessor", "do_convert_rgb": True,
        "do_resize": True, "size": {"shortest_edge": int(short)}, "resample": _PIL_BICUBIC,
        "do_center_crop": True, "crop_size": {"height": H, "width": W},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [float(v) for v in extra.get("mean", IMAGENET_MEAN)],
        "image_std": [float(v) for v in extra.get("std", IMAGENET_STD)],
    }


def hf_processor_extra(directory: Path) -> dict[str, Any]:
    """Normalisation and resize recorded in an HF folder's ``preprocessor_config.json`` (for ``extra``)."""
    f = directory / "preprocessor_config.json"
    if not f.is_file():
        return {}
    raw = json.loads(f.read_text())
    out: dict[str, Any] = {}
    if raw.get("do_normalize", True) and "image_mean" in raw and "image_std" in raw:
        out["mean"], out["std"] = list(raw["image_mean"]), list(raw["image_std"])
    short = (raw.get("size") or {}).get("shortest_edge") if isinstance(raw.get("size"), dict) else None
    if short:
        out["resize_size"] = int(short)
    return out
