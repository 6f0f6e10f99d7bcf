"""`create_model`: a registered Hiera, optionally with weights from any source `read_checkpoint` reads."""

from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from .config import HieraConfig
from .hiera import Hiera
from .hiera_mae import MaskedAutoencoderHiera
from .hieradet import HieraDet
from .loading import load_pretrained, read_checkpoint, resolve_model_config
from .registry import get_config, model_arch
from .weights import Checkpoint

# Architecture name (the registry's ``arch``) -> class. One more architecture is one entry.
ARCHITECTURES: dict[str, type[nn.Module]] = {"hiera": Hiera, "mae_hiera": MaskedAutoencoderHiera,
                                             "hieradet": HieraDet}


def build_model(arch: str, config: HieraConfig) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{arch}' (expected one of {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](config)


def create_model(name: str | None = None, pretrained: str | os.PathLike | Checkpoint | None = None, strict: bool = True,
                 use_ema: bool | None = None, **overrides: Any) -> nn.Module:
    """Build a registered Hiera, optionally loading weights.

    name: a registry name (`list_models()`); may be None when ``pretrained`` carries its own config.
    pretrained, any of:

    * a weights file: an original ``.pth`` (with or without ``model_state``), a ``.safetensors``, a timm or
      HF state dict (key names detected);
    * a folder: `save_pretrained`'s, HF transformers', timm's hub layout (``config.json`` with
      ``architecture`` + ``model.safetensors``), the original release's hub layout;
    * a `Checkpoint` already read by `read_checkpoint`;
    * a hub repo id (``org/name``, fetched with huggingface_hub; ``HF_HUB_OFFLINE=1`` uses the cache);
    * a training run folder (``runs/x``: its ``checkpoints/best.pt``, else ``last.pt``, else ``model/``) or a
      training checkpoint (``last.pt`` / ``best.pt`` / ``ckpt_*.pt``): the EMA weights when it has them
      (``use_ema=False`` for the raw ones, ``use_ema=True`` to require EMA), rebuilt from the saved
      ``model_config``; class names in ``model.config.extra["class_names"]``.

    overrides: any config field, e.g. ``num_classes=10, input_size=(8, 224, 224), depths=(1, 1, 2, 1)``.
    Loading is strict: missing, unexpected or mis-shaped keys raise with their names. A different
    ``num_classes`` re-initialises only the head; another input size interpolates the position embeddings;
    an MAE checkpoint loads into a classifier as encoder weights (head and final norm fresh). Each such
    adaptation, which weights of a training checkpoint were taken, and the licence of the weights when
    known are logged.
    """
    if pretrained is None:
        if name is None:
            raise ValueError("create_model needs a model name or a pretrained source")
        return build_model(model_arch(name), get_config(name, **overrides))
    ckpt = pretrained if isinstance(pretrained, Checkpoint) else read_checkpoint(pretrained, use_ema=use_ema)
    arch, config = resolve_model_config(ckpt, name, dict(overrides))
    model = build_model(arch, config)
    load_pretrained(model, ckpt, strict=strict)
    return model
