"""Reading and writing Hiera weights in every format users have: the original release, HF transformers,
plain safetensors, this library's own directories and hub repos. The format is detected automatically."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hiera_video.fileio import atomic_write_bytes, atomic_write_text

from .config import FIELD_ALIASES, HieraConfig
from .hiera import resize_pos_embed

logger = logging.getLogger("hiera_video")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LIBRARY_TAG = "hiera_video"
MAE_ONLY_PREFIXES = ("encoder_norm.", "multi_scale_fusion_heads.", "decoder_", "mask_token")


@dataclass
class Checkpoint:
    """Weights in this library's key names plus whatever config came with them."""

    state_dict: dict[str, torch.Tensor]
    source: str
    format: str  # "hiera_video" | "original" | "hf" | "safetensors" | "torch"
    config: dict[str, Any] | None = None  # HieraConfig fields
    arch: str | None = None  # "hiera" | "mae_hiera" when known
    # --- sam2 hook (sam2_interop): entries dropped when reading (e.g. SAM 2's neck and heads), reported on
    # load; trunk_only: the source has no final norm / head, so the model's are initialised fresh (reported).
    ignored: list[str] = field(default_factory=list)
    trunk_only: bool = False


@dataclass
class LoadReport:
    """What `load_pretrained` adapted. Empty lists mean an exact load."""

    reinitialized: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading
def read_checkpoint(source: str | os.PathLike) -> Checkpoint:
    """Read weights from a file, a directory or a hub repo id (see `create_model`)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_dir(path)
    if path.is_file():
        return _read_file(path)
    if _looks_like_repo_id(str(source)):
        return _read_dir(_fetch_from_hub(str(source)), source=str(source))
    raise FileNotFoundError(
        f"pretrained source '{source}' is neither a file, a directory nor a hub repo id ('org/name'); "
        "check the path")


def _looks_like_repo_id(s: str) -> bool:
    return re.fullmatch(r"[\w.\-]+/[\w.\-]+", s) is not None and not s.startswith((".", "/"))


def _fetch_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("loading from the hub needs huggingface_hub: pip install huggingface_hub") from e
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.pth"]))
    except Exception as e:
        raise FileNotFoundError(
            f"could not fetch hub repo '{repo_id}' ({type(e).__name__}: {e}). Offline? Set HF_HUB_OFFLINE=1 "
            "with the repo in the local cache, or pass a local path instead") from e


def _read_dir(path: Path, source: str | None = None) -> Checkpoint:
    source = source or str(path)
    cfg_file = path / CONFIG_NAME
    raw_cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else None
    weights = [path / n for n in (WEIGHTS_NAME, "pytorch_model.bin", "model.pth") if (path / n).exists()]
    if not weights:
        weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth")) + sorted(path.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"no weights in {path} (looked for model.safetensors, pytorch_model.bin, *.pth)")
    ckpt = _read_file(weights[0], source=source)
    if raw_cfg is None:
        return ckpt
    if raw_cfg.get("library") == LIBRARY_TAG:
        ckpt.format, ckpt.config, ckpt.arch = LIBRARY_TAG, raw_cfg["config"], raw_cfg.get("architecture", "hiera")
    elif ckpt.arch == "hieradet":  # sam2 hook: a timm hub folder of a sam2_hiera_* model (see sam2_interop)
        from .sam2_interop import timm_folder_config

        ckpt.config = timm_folder_config(raw_cfg, path)
    elif raw_cfg.get("model_type") == "hiera":
        ckpt.format, ckpt.config, ckpt.arch = "hf", hf_config_to_ours(raw_cfg), "hiera"
    else:  # the original release's hub format: its constructor arguments
        ckpt.format, ckpt.config = "original", _known_fields(raw_cfg)
        ckpt.arch = "mae_hiera" if any(k.startswith("decoder_") for k in ckpt.state_dict) else "hiera"
    return ckpt


def _read_file(path: Path, source: str | None = None) -> Checkpoint:
    source = source or str(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd, fmt = load_file(str(path)), "safetensors"
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
        sd, fmt = _unwrap(obj, path), "torch"
    if any(k.startswith(("hiera.", "embeddings.", "encoder.stages.")) for k in sd):
        return Checkpoint(hf_state_dict_to_ours(sd), source, "hf")
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}
    from .sam2_interop import read_hieradet  # sam2 hook: SAM 2 / timm HieraDet layouts (see there)

    if (det := read_hieradet(sd, source)) is not None:
        return det
    fmt = "original" if fmt == "torch" and "blocks.0.attn.qkv.weight" in sd else fmt
    arch = "mae_hiera" if any(k.startswith("decoder_") for k in sd) else None
    return Checkpoint(sd, source, fmt, arch=arch)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict in a training checkpoint (``model_state`` in the original, ``model`` etc.)."""
    for key in ("model_state", "model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return _unwrap(obj[key], path)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not contain a state dict (expected a dict of tensors, optionally under "
                         "'model_state' / 'model' / 'state_dict')")
    return obj


def _known_fields(d: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import fields

    valid = {f.name for f in fields(HieraConfig)}
    return {FIELD_ALIASES.get(k, k): v for k, v in d.items() if FIELD_ALIASES.get(k, k) in valid}


# ------------------------------------------------------------------------------------------ loading
def load_pretrained(model: nn.Module, ckpt: Checkpoint, strict: bool = True) -> LoadReport:
    """Load ``ckpt`` into ``model``, adapting what can be adapted safely and reporting it.

    Adapted: a different number of classes (head re-initialised), another input size (position embeddings
    interpolated), MAE weights into a classifier (decoder ignored; final norm and head fresh). Anything else
    that does not match raises with the offending key names when ``strict``.
    """
    sd = dict(ckpt.state_dict)
    own = model.state_dict()
    report = LoadReport()
    is_mae_ckpt = any(k.startswith(MAE_ONLY_PREFIXES) for k in sd)
    if is_mae_ckpt and not any(k.startswith(MAE_ONLY_PREFIXES) for k in own):
        report.ignored += [k for k in sd if k.startswith(MAE_ONLY_PREFIXES)]
        sd = {k: v for k, v in sd.items() if not k.startswith(MAE_ONLY_PREFIXES)}
        for k in [k for k in own if k.startswith(("norm.", "head."))]:
            if k not in sd:
                report.reinitialized.append(k)
    for k in ("head.projection.weight", "head.projection.bias"):
        if k in sd and k in own and sd[k].shape != own[k].shape:
            report.reinitialized.append(k)
            report.ignored.append(f"{k} {tuple(sd.pop(k).shape)}")
    report.ignored += ckpt.ignored  # sam2 hook (see Checkpoint.trunk_only)
    if ckpt.trunk_only:
        report.reinitialized += [k for k in own if k.startswith(("norm.", "head.")) and k not in sd]
    _interpolate_pos_embeds(model, sd, own, ckpt.config, report)

    missing = [k for k in own if k not in sd and k not in report.reinitialized]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or shapes):
        lines = [f"checkpoint {ckpt.source} ({ckpt.format} format) does not match the model:"]
        if missing:
            more = " ..." if len(missing) > 20 else ""
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:20])}{more}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}"
                         f"{' ...' if len(unexpected) > 20 else ''}")
        if shapes:
            lines.append(f"  mis-shaped keys ({len(shapes)}): {'; '.join(shapes[:10])}")
        lines.append("  Is this the right model name / config (depths, embed_dim, input_size)? "
                     "Pass strict=False to load what matches.")
        raise RuntimeError("\n".join(lines))
    sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(sd, strict=False)
    if any(k.startswith("head.") for k in report.reinitialized) and hasattr(model, "init_head"):
        model.init_head()
    if report.reinitialized:
        logger.warning("re-initialised from scratch (not in %s): %s", ckpt.source, ", ".join(report.reinitialized))
    if report.interpolated:
        logger.warning("interpolated to the model's input size: %s", "; ".join(report.interpolated))
    if report.ignored:
        logger.info("ignored checkpoint entries: %s", ", ".join(report.ignored[:10]))
    if not strict and (missing or unexpected or shapes):
        logger.warning("non-strict load: missing %s, unexpected %s, mis-shaped %s", missing, unexpected, shapes)
    return report


def _interpolate_pos_embeds(model: nn.Module, sd: dict, own: dict, src_cfg: dict | None, report: LoadReport) -> None:
    cfg: HieraConfig = model.config
    src_tokens = None
    if src_cfg is not None and "input_size" in src_cfg:
        src_tokens = [i // s for i, s in zip(src_cfg["input_size"], src_cfg.get("patch_stride", cfg.patch_stride))]
    for key, tgt in (("pos_embed", cfg.tokens_shape()), ("pos_embed_spatial", cfg.tokens_shape()[-2:]),
                     ("pos_embed_temporal", cfg.tokens_shape()[:1]), ("decoder_pos_embed", None)):
        if key not in sd or key not in own or sd[key].shape == own[key].shape:
            continue
        src, C = sd[key], sd[key].shape[-1]
        if key == "decoder_pos_embed" or C != own[key].shape[-1]:
            continue  # left for the strict check to report
        if key == "pos_embed_temporal":
            new = resize_pos_embed(src.float(), tgt)  # [1, T, C]
        else:
            n = src.shape[1]
            if src_tokens is not None and math.prod(src_tokens[-len(tgt):]) == n:
                grid = src_tokens[-len(tgt):]
            elif len(tgt) == 2 and math.isqrt(n) ** 2 == n:
                grid = [math.isqrt(n)] * 2
            else:
                continue
            new = resize_pos_embed(src.reshape(1, *grid, C).float(), tgt)
        sd[key] = new.reshape(own[key].shape).to(src.dtype)
        report.interpolated.append(f"{key} {tuple(src.shape)} -> {tuple(own[key].shape)}")


# ------------------------------------------------------------------------------------------ writing
def save_pretrained(model: nn.Module, directory: str | os.PathLike, arch: str | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (atomically) so `create_model(pretrained=dir)` rebuilds it."""
    from safetensors.torch import save

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arch = arch or getattr(model, "arch", "hiera")
    meta = {"library": LIBRARY_TAG, "format_version": 1, "architecture": arch, "config": model.config.to_dict()}
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(d / WEIGHTS_NAME, save(sd, metadata={"format": "pt"}))
    atomic_write_text(d / CONFIG_NAME, json.dumps(meta, indent=2))
    return d


# ------------------------------------------------------------------------------------------ HF transformers
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
    if "id2label" in hf:
        out["num_classes"] = len(hf["id2label"])
        out["extra"] = {"class_names": [hf["id2label"][str(i)] for i in range(len(hf["id2label"]))]}
    return out


def export_hf(model: nn.Module, directory: str | os.PathLike, class_names: list[str] | None = None) -> Path:
    """Write an image classifier as a HF transformers ``HieraForImageClassification`` directory."""
    from safetensors.torch import save

    cfg: HieraConfig = model.config
    if cfg.is_video:
        raise ValueError("HF transformers Hiera supports image models only; this model is a video model")
    if cfg.sep_pos_embed:
        raise ValueError("HF transformers Hiera has no separate spatial/temporal position embeddings")
    n = cfg.num_classes
    names = class_names or cfg.extra.get("class_names") or [f"LABEL_{i}" for i in range(n)]
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
    sd = ours_state_dict_to_hf({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, cfg)
    atomic_write_bytes(d / WEIGHTS_NAME, save(sd, metadata={"format": "pt"}))
    atomic_write_text(d / CONFIG_NAME, json.dumps(hf_cfg, indent=2))
    return d
