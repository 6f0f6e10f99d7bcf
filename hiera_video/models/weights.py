"""Reading and writing Hiera weights in every format users have, detected automatically.

Sources: a weights file (original ``.pth``, ``.safetensors``, timm / HF state dicts), a folder
(`save_pretrained`'s, HF transformers', timm's hub layout, the original release's hub layout), a hub repo id
(fetched by huggingface_hub), a training run folder or a training checkpoint (``last.pt`` / ``best.pt`` /
``ckpt_*.pt``). Each format is one `WeightFormat` entry in `FORMATS`: how to recognise it (by its
``config.json`` or by its key names), how to rename its keys to ours, how to read its config. Adding a
format is adding an entry. Loading them into a model is `loading.load_pretrained`.

Only tensors and plain containers are ever unpickled (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hiera_video.fileio import atomic_write_bytes, atomic_write_text

from . import sam2_interop
from .config import FIELD_ALIASES, HieraConfig
from .format_hf import hf_config_to_ours, hf_processor_extra, hf_state_dict_to_ours, is_hf_config, is_hf_state_dict
from .format_timm import is_timm_config, is_timm_state_dict, timm_config_to_ours, timm_state_dict_to_ours
from .registry import get_config, is_registered, model_arch

logger = logging.getLogger("hiera_video")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LIBRARY_TAG = "hiera_video"
MAE_ONLY_PREFIXES = ("encoder_norm.", "multi_scale_fusion_heads.", "decoder_", "mask_token")


@dataclass
class Checkpoint:
    """Weights in this library's key names plus whatever came with them.

    config: HieraConfig fields when the source carries them; model_name: a registry name when the source
    names one (timm's ``architecture``, a training checkpoint's ``model_name``); extra: metadata for
    ``config.extra`` (class names, normalisation ``mean`` / ``std``, ``resize_size``, ``license``).
    """

    state_dict: dict[str, torch.Tensor]
    source: str
    format: str  # a `FORMATS` name, "training" (a training checkpoint), "safetensors" / "torch" (bare keys)
    config: dict[str, Any] | None = None
    arch: str | None = None  # "hiera" | "mae_hiera" when known
    model_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # SAM 2 (sam2_interop): entries dropped when reading (SAM 2's neck and heads), reported on load;
    # trunk_only: the source has no final norm / head, so the model's are initialised fresh (reported).
    ignored: list[str] = field(default_factory=list)
    trunk_only: bool = False
    # A training checkpoint's whole run config (the engine's Config as a plain dict), for the jobs that need
    # its data settings; None for weight files.
    run_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class WeightFormat:
    """One checkpoint format. ``matches_config`` recognises its ``config.json`` (folders), ``matches_keys``
    its state-dict keys (bare files); ``to_ours`` renames keys; ``read_config`` turns its ``config.json``
    (and folder, for side files) into ``(our config fields or None, model name or None, extra)``;
    ``name_from_keys`` (optional) names the registry model a bare file of this format is, from its (our)
    keys and shapes, so that no model name is needed."""

    name: str
    matches_config: Callable[[dict[str, Any]], bool] | None
    matches_keys: Callable[[set[str]], bool] | None
    to_ours: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    read_config: Callable[[dict[str, Any], Path], tuple[dict[str, Any] | None, str | None, dict[str, Any]]]
    name_from_keys: Callable[[dict[str, torch.Tensor]], str | None] | None = None


def _same(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return sd


def _ours_config(raw: dict[str, Any], _: Path) -> tuple[dict[str, Any], None, dict[str, Any]]:
    return raw["config"], None, {}


def _hf_config(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], None, dict[str, Any]]:
    return hf_config_to_ours(raw), None, hf_processor_extra(path)


def _timm_config(raw: dict[str, Any], _: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    cfg, extra = timm_config_to_ours(raw)
    return cfg, raw["architecture"], extra


def _original_config(raw: dict[str, Any], _: Path) -> tuple[dict[str, Any], None, dict[str, Any]]:
    """The original release's hub ``config.json``: its constructor arguments."""
    valid = {f.name for f in fields(HieraConfig)}
    return {FIELD_ALIASES.get(k, k): v for k, v in raw.items() if FIELD_ALIASES.get(k, k) in valid}, None, {}


# Tried in order; the first match wins. "original" accepts any config.json, so it stays last.
FORMATS: list[WeightFormat] = [
    WeightFormat(LIBRARY_TAG, lambda raw: raw.get("library") == LIBRARY_TAG, None, _same, _ours_config),
    WeightFormat("hf", is_hf_config, is_hf_state_dict, hf_state_dict_to_ours, _hf_config),
    WeightFormat("timm", is_timm_config, is_timm_state_dict, timm_state_dict_to_ours, _timm_config),
    WeightFormat("original", lambda raw: True, lambda keys: "blocks.0.attn.qkv.weight" in keys, _same,
                 _original_config),
]


def format_named(name: str) -> WeightFormat:
    for f in FORMATS:
        if f.name == name:
            return f
    raise ValueError(f"unknown checkpoint format '{name}' (known: {', '.join(f.name for f in FORMATS)})")


# ------------------------------------------------------------------------------------------ reading
def read_checkpoint(source: str | os.PathLike, use_ema: bool | None = None) -> Checkpoint:
    """Read weights from a file, a folder, a run folder or a hub repo id (see `factory.create_model`).

    use_ema (training checkpoints): None takes the EMA weights when the checkpoint has them, True requires
    them, False takes the raw weights. Which were taken is logged.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        run_file = resolve_run_folder(path)
        if run_file is not None:
            return read_checkpoint(run_file, use_ema=use_ema)
        return _read_dir(path)
    if path.is_file():
        return _read_file(path, use_ema=use_ema)
    if _looks_like_repo_id(str(source)):
        return _read_dir(_fetch_from_hub(str(source)), source=str(source))
    raise FileNotFoundError(
        f"pretrained source '{source}' is neither a file, a directory nor a hub repo id ('org/name'); "
        "check the path")


def resolve_run_folder(path: Path) -> Path | None:
    """A training run folder -> what to load: ``checkpoints/best.pt``, else ``checkpoints/last.pt``, else its
    ``model/`` (`save_pretrained`) folder. None when ``path`` is not a run folder (it has weights itself)."""
    if (path / CONFIG_NAME).is_file() or any(path.glob("*.safetensors")) or any(path.glob("*.pth")):
        return None
    for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
        if candidate.is_file():
            logger.info("run folder %s: loading %s", path, candidate.relative_to(path))
            return candidate
    if (path / "model" / CONFIG_NAME).is_file():
        logger.info("run folder %s: loading model/ (no checkpoints/best.pt or last.pt)", path)
        return path / "model"
    if (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        raise FileNotFoundError(f"run folder {path} has no checkpoints/best.pt, checkpoints/last.pt or model/; "
                                "pass a checkpoint file (e.g. checkpoints/ckpt_<step>.pt) instead")
    return None


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
    if raw_cfg is None:
        return _read_file(weights[0], source=source)
    sd = _strip_wrappers(_unwrap(_load_tensors(weights[0]), weights[0]))
    fmt = next(f for f in FORMATS if f.matches_config is not None and f.matches_config(raw_cfg))
    if fmt.name != LIBRARY_TAG and (det := read_hieradet(sd, source)) is not None:  # timm's sam2_hiera_* folders
        det.config = sam2_interop.timm_folder_config(raw_cfg, path)
        return det
    config, model_name, extra = fmt.read_config(raw_cfg, path)
    arch = raw_cfg.get("architecture", "hiera") if fmt.name == LIBRARY_TAG else None
    ckpt = Checkpoint(fmt.to_ours(sd), source, fmt.name, config, arch, model_name, extra)
    ckpt.arch = ckpt.arch or ("mae_hiera" if any(k.startswith("decoder_") for k in ckpt.state_dict) else "hiera")
    return ckpt


def _load_tensors(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def _read_file(path: Path, source: str | None = None, use_ema: bool | None = None) -> Checkpoint:
    source = source or str(path)
    obj = _load_tensors(path)
    if is_training_checkpoint(obj):
        return _read_training_checkpoint(obj, path, use_ema)
    sd = _strip_wrappers(_unwrap(obj, path))
    if (det := read_hieradet(sd, source)) is not None:  # SAM 2 / 2.1 releases, bare trunks, timm's sam2 files
        return det
    keys, model_name = set(sd), None
    for fmt in FORMATS:
        if fmt.matches_keys is not None and fmt.matches_keys(keys):
            sd = fmt.to_ours(sd)
            name = fmt.name if not (fmt.name == "original" and path.suffix == ".safetensors") else "safetensors"
            model_name = fmt.name_from_keys(sd) if fmt.name_from_keys is not None else None
            break
    else:
        name = "safetensors" if path.suffix == ".safetensors" else "torch"
    arch = "mae_hiera" if any(k.startswith("decoder_") for k in sd) else None
    return Checkpoint(sd, source, name, arch=arch, model_name=model_name)


def read_hieradet(sd: dict[str, torch.Tensor], source: str) -> Checkpoint | None:
    """HieraDet weights (SAM 2 / 2.1 releases, bare SAM 2 trunks, timm's ``sam2_hiera_*``) as a `Checkpoint`, or
    None for other weights. These files carry no config (SAM 2 keeps it in YAML): the model name gives it."""
    if not sam2_interop.is_hieradet_state_dict(sd):
        return None
    out, ignored, fmt = sam2_interop.hieradet_state_dict_to_ours(sd)
    return Checkpoint(out, source, fmt, arch="hieradet", ignored=ignored, trunk_only=fmt in ("sam2", "timm"))


def _strip_wrappers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict in a training checkpoint (``model_state`` in the original, ``model`` etc.)."""
    for key in ("model_state", "model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return _unwrap(obj[key], path)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not contain a state dict (expected a dict of tensors, optionally under "
                         "'model_state' / 'model' / 'state_dict')")
    return obj


# ------------------------------------------------------------------------------------------ training checkpoints
def is_training_checkpoint(obj: Any) -> bool:
    """This library's training state (engine/loop.py): ``model`` weights plus the job's bookkeeping."""
    run = obj.get("config") if isinstance(obj, dict) else None
    return (isinstance(obj, dict) and isinstance(obj.get("model"), dict)
            and (any(k in obj for k in ("model_config", "model_name", "loop", "optimizer"))
                 or (isinstance(run, dict) and isinstance(run.get("model"), dict))))


def _read_training_checkpoint(obj: dict[str, Any], path: Path, use_ema: bool | None) -> Checkpoint:
    ema = obj.get("ema")
    ema_sd = ema.get("module") if isinstance(ema, dict) and isinstance(ema.get("module"), dict) else None
    if use_ema and ema_sd is None:
        raise ValueError(f"{path} has no EMA weights (trained with train.ema=false); pass use_ema=False or None")
    take_ema = ema_sd is not None and use_ema is not False
    if take_ema:
        logger.info("%s: loading the EMA weights (use_ema=False for the raw weights)", path)
    else:
        why = "use_ema=False" if ema_sd is not None else "the checkpoint has no EMA weights"
        logger.info("%s: loading the raw (non-EMA) weights (%s)", path, why)
    sd = _strip_wrappers(ema_sd if take_ema else obj["model"])
    run = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    data = run.get("data") or {}
    extra: dict[str, Any] = {}
    names = obj.get("class_names") or (obj.get("model_config") or {}).get("extra", {}).get("class_names")
    if names:
        extra["class_names"] = list(names)
    for ours, theirs in (("mean", "mean"), ("std", "std")):
        if data.get(theirs) is not None:  # the normalisation the model was trained with
            extra[ours] = data[theirs]
    if data.get("test_short_side") or data.get("crop_size"):  # its eval resize (None: the crop size)
        extra["resize_size"] = data.get("test_short_side") or data.get("crop_size")
    config = obj.get("model_config")
    model_name = obj.get("model_name") or (run.get("model") or {}).get("name")
    if config is None and model_name is not None:
        config = _legacy_model_config(run)
    arch = "mae_hiera" if any(k.startswith("decoder_") for k in sd) else (
        model_arch(model_name) if model_name and is_registered(model_name) else "hiera")
    fmt = "training" + (" (EMA)" if take_ema else "")
    return Checkpoint(sd, str(path), fmt, config, arch, model_name, extra, run_config=run or None)


def _legacy_model_config(run: dict[str, Any]) -> dict[str, Any] | None:
    """Checkpoints written before ``model_config`` was saved: the model section's overrides and the input
    size the data section implies (as engine.build.model_overrides decides them), on the named config."""
    model, data = run.get("model") or {}, run.get("data") or {}
    if not model.get("name"):
        return None
    if not is_registered(model["name"]):
        return None
    out = get_config(model["name"]).to_dict()
    out.update(model.get("overrides") or {})
    crop = data.get("crop_size")
    if crop and "input_size" not in (model.get("overrides") or {}):
        out["input_size"] = [data.get("num_frames"), crop, crop] if data.get("kind") == "video" else [crop, crop]
    return out


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
