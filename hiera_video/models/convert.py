"""Checkpoint conversion: any supported source -> this library's format or HF transformers format."""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import export_hf
from .registry import create_model


def convert_checkpoint(src: str | os.PathLike, dst_dir: str | os.PathLike, model_name: str | None = None,
                       to: str = "hiera_video", strict: bool = True) -> Path:
    """Convert ``src`` (original ``.pth``, safetensors, HF dir, our dir or hub repo) into ``dst_dir``.

    to: ``"hiera_video"`` (``config.json`` + ``model.safetensors``, loadable with ``create_model(pretrained=)``)
    or ``"hf"`` (a transformers ``HieraForImageClassification`` directory; image classifiers only).
    ``model_name`` is required when the source carries no config (e.g. an original ``.pth``).
    """
    if to not in ("hiera_video", "hf"):
        raise ValueError(f"unknown target format '{to}': use 'hiera_video' or 'hf'")
    model = create_model(model_name, pretrained=str(src), strict=strict)
    if to == "hf":
        return export_hf(model, dst_dir)
    model.save_pretrained(str(dst_dir))
    return Path(dst_dir)
