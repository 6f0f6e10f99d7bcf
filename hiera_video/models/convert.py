"""Checkpoint conversion: any supported source -> this library's format or HF transformers format."""

from __future__ import annotations

import os
from pathlib import Path

from .factory import create_model
from .format_hf import export_hf
from .format_timm import export_timm

TARGETS = ("hiera_video", "hf", "timm")


def convert_checkpoint(src: str | os.PathLike, dst_dir: str | os.PathLike, model_name: str | None = None,
                       to: str = "hiera_video", strict: bool = True) -> Path:
    """Convert ``src`` (original ``.pth``, safetensors, HF dir, our dir or hub repo) into ``dst_dir``.

    to: ``"hiera_video"`` (``config.json`` + ``model.safetensors``, loadable with ``create_model(pretrained=)``),
    ``"hf"`` (a transformers ``HieraForImageClassification`` folder with its image processor; image
    classifiers only) or ``"timm"`` (timm's hub layout: ``timm.create_model("local-dir:<dst>",
    pretrained=True)``).
    ``model_name`` is required when the source carries no config (e.g. an original ``.pth``).
    """
    if to not in TARGETS:
        raise ValueError(f"unknown target format '{to}': use one of {', '.join(TARGETS)}")
    model = create_model(model_name, pretrained=str(src), strict=strict)
    if to == "hf":
        return export_hf(model, dst_dir)
    if to == "timm":
        return export_timm(model, dst_dir)
    model.save_pretrained(str(dst_dir))
    return Path(dst_dir)
