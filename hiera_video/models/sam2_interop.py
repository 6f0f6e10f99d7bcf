"""SAM 2 interop: the published trunk configs and checkpoints, and conversion of SAM 2 / timm HieraDet weights.

Layouts read (all detected from their key names by `is_hieradet_state_dict`):

* **SAM 2 release** (``sam2_hiera_*.pt``, ``sam2.1_hiera_*.pt``): ``{"model": {"image_encoder.trunk.<key>":
  ..., "image_encoder.neck.<key>": ..., "sam_mask_decoder.<key>": ..., ...}}``. The trunk is taken; every other
  entry (FPN neck, prompt encoder, mask decoder, memory modules) is ignored and listed in the load report.
  SAM 2 2.1 changed training, not the trunk, so both releases have the same trunk keys.
* **A bare SAM 2 trunk** state dict (``sam2.modeling.backbones.hieradet.Hiera.state_dict()``).
* **timm** ``sam2_hiera_*`` (``timm/sam2_hiera_*.fb_r896`` on the hub): the trunk with ``mlp.fc1/fc2`` and
  optionally timm's classifier head ``head.norm`` / ``head.fc``.

Renames (SAM 2 -> ours): ``mlp.layers.0`` -> ``mlp.fc1``, ``mlp.layers.1`` -> ``mlp.fc2`` (the same as timm's
``checkpoint_filter_fn`` in ``timm/models/hieradet_sam2.py``); timm -> ours: ``head.norm`` -> ``norm``,
``head.fc`` -> ``head.projection``. Nothing else changes: both position embeddings keep SAM 2's
``[1, C, h, w]`` layout. Neither layout has our final ``norm`` (SAM 2 has none; timm's hub weights may lack
it): a missing final norm / head is initialised fresh and reported, never an error.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from .registry import SAM2_MODELS

SAM2_TRUNK_PREFIX = "image_encoder.trunk."

_SAM2_MLP = re.compile(r"^(blocks\.\d+\.mlp\.)layers\.([01])\.")
_TIMM_HEAD = {"head.norm.": "norm.", "head.fc.": "head.projection."}


def is_hieradet_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """A SAM 2 model / trunk or timm HieraDet state dict (ours too): it has the tiled window embedding."""
    return any(k.startswith(SAM2_TRUNK_PREFIX) for k in sd) or "pos_embed_window" in sd


def hieradet_state_dict_to_ours(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """SAM 2 (full model or trunk) / timm HieraDet keys -> `HieraDet` keys.

    Returns ``(state_dict, ignored, format)``: ``ignored`` summarises the dropped non-trunk entries of a full
    SAM 2 checkpoint by module (``"image_encoder.neck.* (24 keys)"``); ``format`` is ``"sam2"``, ``"timm"`` or
    ``"hieradet"`` (already our names).
    """
    fmt = "hieradet"
    if any(k.startswith(SAM2_TRUNK_PREFIX) for k in sd):
        fmt = "sam2"
        dropped = [k for k in sd if not k.startswith(SAM2_TRUNK_PREFIX)]
        sd = {k.removeprefix(SAM2_TRUNK_PREFIX): v for k, v in sd.items() if k.startswith(SAM2_TRUNK_PREFIX)}
    else:
        dropped = []
    out = {}
    for k, v in sd.items():
        m = _SAM2_MLP.match(k)
        if m:
            fmt = "sam2"
            k = f"{m[1]}fc{int(m[2]) + 1}." + k[m.end():]
        for old, new in _TIMM_HEAD.items():
            if k.startswith(old):
                fmt = "timm" if fmt == "hieradet" else fmt
                k = new + k.removeprefix(old)
        if k in out:
            raise ValueError(f"HieraDet checkpoint has two entries for '{k}' (SAM 2 and timm names mixed?)")
        out[k] = v
    if fmt == "hieradet" and any(".mlp.fc1." in k for k in out) and "norm.weight" not in out:
        fmt = "timm"  # timm's trunk names without its head (ours always has the final norm)
    groups = Counter(".".join(k.split(".")[:2]) if k.startswith("image_encoder.") else k.split(".")[0]
                     for k in dropped)
    ignored = [g if g in dropped else f"{g}.* ({n} key{'s' * (n > 1)})" for g, n in sorted(groups.items())]
    return out, ignored, fmt


def timm_folder_config(raw_cfg: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """Config fields for a timm hub folder holding HieraDet weights (timm's ``config.json``: ``architecture``,
    ``num_classes``, optional ``model_args``), or None when it names no architecture.

    timm's registry names are ours (``sam2_hiera_tiny`` ...), so the published config is taken from
    `SAM2_MODELS`; the input size stays SAM 2's 1024² (timm's pretrained_cfg says 896² for T / S / B+, a
    resolution its windows tile, not the one the weights were trained at).
    """
    arch = raw_cfg.get("architecture")
    if arch is None:
        return None
    if arch not in SAM2_MODELS:
        raise ValueError(f"{path}: timm architecture {arch!r} holds HieraDet weights but is not one of the SAM 2 "
                         f"trunks known here ({', '.join(SAM2_MODELS)}); pass a model name and overrides, e.g. "
                         f"create_model('sam2_hiera_small', pretrained=..., window_spec=...)")
    fields = {**SAM2_MODELS[arch], **_from_timm_args(raw_cfg.get("model_args", {}), path)}
    if "num_classes" in raw_cfg:
        fields["num_classes"] = raw_cfg["num_classes"]
    return fields


# timm `HieraDet.__init__` arguments (timm/models/hieradet_sam2.py) that have no field here: the values that
# describe this model (anything else is a layer it does not have), and arguments that only steer timm's
# random init (irrelevant when weights are loaded).
_TIMM_FIXED = {"global_pool": ("avg",), "init_values": (None,), "patch_size": (None,),
               "norm_layer": ("LayerNorm",), "act_layer": ("GELU",)}
_TIMM_INIT_ONLY = ("weight_init", "fix_init")


def _from_timm_args(args: dict[str, Any], path: Path) -> dict[str, Any]:
    out = {}
    for k, v in args.items():
        if k in _TIMM_FIXED:
            if v not in _TIMM_FIXED[k]:
                raise ValueError(f"{path}: timm model_args {k}={v!r} is not supported by HieraDet here (only "
                                 f"{_TIMM_FIXED[k]})")
        elif k == "drop_rate":
            out["head_dropout"] = v
        elif k not in _TIMM_INIT_ONLY:
            out[k] = v  # config fields under timm's names (stages, global_pos_size, ...): HieraDetConfig maps them
    return out


def to_sam2_trunk(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`HieraDet` weights -> SAM 2's ``image_encoder.trunk.*`` keys (final norm and head dropped: SAM 2 has
    neither), e.g. to put a fine-tuned trunk back into a SAM 2 model's state dict."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith(("norm.", "head.")):
            continue
        k = re.sub(r"^(blocks\.\d+\.mlp\.)fc([12])\.", lambda m: f"{m[1]}layers.{int(m[2]) - 1}.", k)
        out[SAM2_TRUNK_PREFIX + k] = v
    return out
