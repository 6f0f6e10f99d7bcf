"""Named model configurations (every published Hiera) and `create_model`."""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

import torch.nn as nn

from .config import HieraConfig
from .hieradet import HieraDetConfig

logger = logging.getLogger(__name__)

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
# The original release's checkpoints, for reference in `pretrained_urls` (never downloaded implicitly).
_URL = "https://dl.fbaipublicfiles.com/hiera/{}.pth"

# name -> (architecture, config fields, published checkpoints)
_REGISTRY: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {}


def _config_class(arch: str) -> type[HieraConfig]:
    """The config dataclass of an architecture (sam2 hook): HieraDet's adds its windows to HieraConfig."""
    return HieraDetConfig if arch == "hieradet" else HieraConfig


def register_model(name: str, arch: str, checkpoints: dict[str, str] | None = None, **fields: Any) -> None:
    """Add a named configuration. ``arch`` is ``"hiera"`` (classifier), ``"mae_hiera"`` (MAE) or ``"hieradet"``
    (SAM 2's trunk)."""
    _config_class(arch)(**fields)  # validate now, not at first use
    _REGISTRY[name] = (arch, fields, checkpoints or {})


for _size, _f in _SIZES.items():
    register_model(f"hiera_{_size}_224", "hiera", {
        "mae_in1k_ft_in1k": _URL.format(f"hiera_{_size}_224"), "mae_in1k": _URL.format(f"mae_hiera_{_size}_224")},
        **_f)
    # MAE pretraining pools only twice: the last two stages share the mask-unit resolution.
    register_model(f"mae_hiera_{_size}_224", "mae_hiera", {"mae_in1k": _URL.format(f"mae_hiera_{_size}_224")},
                   q_pool=2, **_f)
for _size in ("base", "base_plus", "large", "huge"):
    _f = {**_SIZES[_size], **_VIDEO}
    register_model(f"hiera_{_size}_16x224", "hiera", {
        "mae_k400_ft_k400": _URL.format(f"hiera_{_size}_16x224"),
        "mae_k400": _URL.format(f"mae_hiera_{_size}_16x224")}, **_f)
    register_model(f"mae_hiera_{_size}_16x224", "mae_hiera", {"mae_k400": _URL.format(f"mae_hiera_{_size}_16x224")},
                   q_pool=2, **_f)

# SAM 2's image-encoder trunk (HieraDet); the published configs and checkpoints live in sam2_interop.py.
from .sam2_interop import SAM2_CHECKPOINTS, SAM2_MODELS  # noqa: E402  (sam2 hook)

for _name, _f in SAM2_MODELS.items():
    register_model(_name, "hieradet", {t: c["url"] for t, c in SAM2_CHECKPOINTS[_name].items()}, **_f)

def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("*16x224")``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides: Any) -> HieraConfig:
    """The config of a registered model with ``overrides`` applied (any field; aliases such as ``stages``)."""
    return _config_class(model_arch(name)).from_dict(_entry(name)[1], **overrides)


def model_arch(name: str) -> str:
    return _entry(name)[0]


def pretrained_urls(name: str) -> dict[str, str]:
    """Where the original release publishes this model's weights (download them yourself; pass the path)."""
    return dict(_entry(name)[2])


def _entry(name: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model '{name}'.{hint} Available: {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(arch: str, config: HieraConfig) -> nn.Module:
    if arch == "hiera":
        from .hiera import Hiera

        return Hiera(config)
    if arch == "mae_hiera":
        from .hiera_mae import MaskedAutoencoderHiera

        return MaskedAutoencoderHiera(config)
    if arch == "hieradet":  # sam2 hook
        from .hieradet import HieraDet

        return HieraDet(config)
    raise ValueError(f"unknown architecture '{arch}' (expected 'hiera', 'mae_hiera' or 'hieradet')")


def create_model(name: str | None = None, pretrained: str | None = None, strict: bool = True,
                 **overrides: Any) -> nn.Module:
    """Build a registered Hiera, optionally loading weights.

    name: a registry name (`list_models()`); may be None when ``pretrained`` is a directory or hub repo
    that carries its own config. pretrained: an original ``.pth`` (with or without ``model_state``), a
    ``.safetensors`` file, a HF transformers Hiera directory, a directory written by ``save_pretrained``,
    or a hub repo id (``org/name``, fetched with huggingface_hub). overrides: any config field, e.g.
    ``num_classes=10, input_size=(8, 224, 224), depths=(1, 1, 2, 1), drop_path_rate=0.1``.

    Loading is strict: missing, unexpected or mis-shaped keys raise with their names. A different
    ``num_classes`` re-initialises only the head; another input size interpolates the position embeddings;
    an MAE checkpoint loads into a classifier as encoder weights (head and final norm fresh). Each such
    adaptation is logged.
    """
    from .checkpoint import load_pretrained, read_checkpoint

    if pretrained is None:
        if name is None:
            raise ValueError("create_model needs a model name or a pretrained source")
        return build_model(model_arch(name), get_config(name, **overrides))

    ckpt = read_checkpoint(pretrained)
    if name is None and ckpt.config is None:
        example = "sam2_hiera_tiny" if ckpt.arch == "hieradet" else "hiera_base_224"
        raise ValueError(f"{pretrained} carries no config; pass a model name, e.g. "
                         f"create_model({example!r}, pretrained={pretrained!r})")
    # The name decides the architecture (an MAE checkpoint may feed a classifier); a config saved with the
    # weights describes them better than the registry entry (custom depths, input sizes, ...).
    arch = model_arch(name) if name is not None else (ckpt.arch or "hiera")
    base = ckpt.config if ckpt.config is not None else _entry(name)[1]
    if name is not None and ckpt.config is not None and ckpt.arch not in (None, arch):
        # MAE encoders pool twice, classifiers three times: the pooling schedule is the target's, not the
        # checkpoint's (it has no weights, so the encoder weights fit either way).
        base = {**base, "q_pool": _entry(name)[1].get("q_pool", HieraConfig.q_pool)}
    if "num_classes" not in overrides and arch in ("hiera", "hieradet"):
        head = ckpt.state_dict.get("head.projection.weight")
        if head is not None:  # keep the checkpoint's classes unless the user asks for others
            overrides["num_classes"] = head.shape[0]
    model = build_model(arch, _config_class(arch).from_dict(base, **overrides))
    load_pretrained(model, ckpt, strict=strict)
    return model
