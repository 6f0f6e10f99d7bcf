"""Pictures of MAE reconstructions a person can look at (PIL only).

    >>> model = create_model("mae_hiera_base_16x224", pretrained="mae_hiera_base_16x224.pth")
    >>> save_reconstruction(model, clip, "recon.png", gif=True, mean=(0.45,) * 3, std=(0.225,) * 3)

Every picture shows, per sample, four panels: the **input**, the **masked** input (hidden mask units grey),
the **reconstruction** and the reconstruction with the visible units **pasted** back from the input.
Predictions of a ``norm_pix_loss`` model are un-normalised with the visible patches' statistics
(`MaskedAutoencoderHiera.reconstruct`, ``stats="visible"``), then everything is un-normalised with the
data ``mean`` / ``std`` and clipped to [0, 1].

Layouts (``PAD`` pixels of white between tiles):

* images: a grid, one row per sample, the four panels as columns; with ``labels`` a ``HEADER``-pixel title
  row on top.
* video: a frame strip, four rows per sample (input, masked, reconstruction, pasted), one column per shown
  frame; with ``labels`` a ``LABEL_WIDTH``-pixel column of row titles on the left. ``gif`` also writes an
  animation whose frame ``t`` shows the four panels side by side (samples stacked vertically).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .config import IMAGENET_MEAN, IMAGENET_STD
from .hiera_mae import MaskedAutoencoderHiera

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PANELS", "reconstruction_panels", "save_reconstruction"]

PANELS = ("input", "masked", "recon", "recon+visible")
PAD = 2
HEADER = 14
LABEL_WIDTH = 80
MASK_GREY = 0.5  # colour of hidden units in the "masked" panel, in [0, 1] display space


@torch.no_grad()
def reconstruction_panels(model: MaskedAutoencoderHiera, x: torch.Tensor, mask: torch.Tensor | None = None,
                          mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                          stats: Literal["visible", "target"] = "visible",
                          generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
    """The four panels as uint8 RGB arrays ``[B, (T,) H, W, 3]`` keyed by `PANELS`.

    x: normalised input ``[B, C, (T,) H, W]`` (a single sample without the batch dim is accepted);
    mask: ``[B, num_mask_units]`` bool, True = visible (None: a random mask with the config's ratio).
    The model runs in eval mode; its training flag is restored afterwards.
    """
    cfg = model.config
    if x.ndim == cfg.ndim + 1:
        x = x[None]
        mask = mask[None] if mask is not None and mask.ndim == 1 else mask
    C = x.shape[1]
    if C not in (1, 3):
        raise ValueError(f"can only draw 1- or 3-channel inputs, got {C} channels")
    if len(mean) != C or len(std) != C:
        raise ValueError(f"mean / std need one value per channel ({C}), got {len(mean)} / {len(std)}")
    was_training = model.training
    model.eval()
    try:
        out = model(x, mask=mask, generator=generator)
        recon, visible = model.reconstruct(x, out, stats=stats)
    finally:
        model.train(was_training)

    shape = (1, C) + (1,) * cfg.ndim
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)
    x_disp = (x.float() * s + m).clamp(0, 1)
    r_disp = (recon.float() * s + m).clamp(0, 1)
    masked = torch.where(visible, x_disp, torch.full_like(x_disp, MASK_GREY))
    pasted = torch.where(visible, x_disp, r_disp)

    def to_uint8(t: torch.Tensor) -> np.ndarray:
        t = t.movedim(1, -1)  # channels last
        if t.shape[-1] == 1:
            t = t.expand(*t.shape[:-1], 3)
        return (t * 255).round().to(torch.uint8).cpu().numpy()

    return {name: to_uint8(t) for name, t in zip(PANELS, (x_disp, masked, r_disp, pasted))}


def _tile(tiles: list[list[np.ndarray]], pad: int = PAD) -> np.ndarray:
    """Rows of equally sized ``[h, w, 3]`` tiles -> one white-padded ``[H, W, 3]`` canvas."""
    h, w = tiles[0][0].shape[:2]
    rows, cols = len(tiles), max(len(r) for r in tiles)
    canvas = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), 255, np.uint8)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = tile
    return canvas


def _frame_indices(T: int, max_frames: int | None) -> list[int]:
    if max_frames is None or max_frames >= T:
        return list(range(T))
    return sorted({round(i * (T - 1) / max(max_frames - 1, 1)) for i in range(max_frames)})


def save_reconstruction(model: MaskedAutoencoderHiera, x: torch.Tensor, path: str | os.PathLike,
                        mask: torch.Tensor | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, gif: bool | str | os.PathLike = False,
                        labels: bool = True, max_frames: int | None = None, gif_fps: float = 4.0,
                        stats: Literal["visible", "target"] = "visible",
                        generator: torch.Generator | None = None) -> list[Path]:
    """Write a PNG of input / masked input / reconstruction / reconstruction with visible units pasted.

    Args:
        model: a `MaskedAutoencoderHiera`.
        x: normalised input ``[B, C, H, W]`` / ``[B, C, T, H, W]`` (or one sample without the batch dim).
        path: the PNG to write (parents are created).
        mask: ``[B, num_mask_units]`` bool, True = visible; None draws one (``generator`` for a fixed one).
        mean, std: the data normalisation to undo for display.
        gif: video only; True writes ``path`` with a ``.gif`` suffix, a path writes there.
        labels: draw panel titles (see the module docstring for the exact layout).
        max_frames: video only; show this many evenly spaced frames in the strip (default all).
        stats: ``"visible"`` or ``"target"``, see `MaskedAutoencoderHiera.reconstruct`.

    Returns:
        The files written (PNG first, then the GIF if any).
    """
    from PIL import Image, ImageDraw

    panels = reconstruction_panels(model, x, mask, mean, std, stats, generator)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    B = panels["input"].shape[0]
    if not model.config.is_video:
        if gif:
            raise ValueError("gif=True needs a video model; image reconstructions are a single PNG")
        grid = _tile([[panels[p][b] for p in PANELS] for b in range(B)])
        if labels:
            w = panels["input"].shape[2]
            header = np.full((HEADER, grid.shape[1], 3), 255, np.uint8)
            grid = np.concatenate([header, grid], axis=0)
        img = Image.fromarray(grid)
        if labels:
            draw = ImageDraw.Draw(img)
            for j, name in enumerate(PANELS):
                draw.text((PAD + j * (w + PAD) + 2, 1), name, fill=(0, 0, 0))
        img.save(path)
        return written

    T = panels["input"].shape[1]
    frames = _frame_indices(T, max_frames)
    strip = _tile([[panels[p][b, t] for t in frames] for b in range(B) for p in PANELS])
    if labels:
        strip = np.concatenate([np.full((strip.shape[0], LABEL_WIDTH, 3), 255, np.uint8), strip], axis=1)
    img = Image.fromarray(strip)
    if labels:
        draw = ImageDraw.Draw(img)
        h = panels["input"].shape[2]
        for r in range(B * len(PANELS)):
            draw.text((2, PAD + r * (h + PAD) + h // 2 - 5), PANELS[r % len(PANELS)], fill=(0, 0, 0))
    img.save(path)

    if gif:
        gif_path = path.with_suffix(".gif") if gif is True else Path(gif)
        gif_path.parent.mkdir(parents=True, exist_ok=True)
        movie = [Image.fromarray(_tile([[panels[p][b, t] for p in PANELS] for b in range(B)])) for t in range(T)]
        movie[0].save(gif_path, save_all=True, append_images=movie[1:], duration=int(1000 / gif_fps), loop=0)
        written.append(gif_path)
    return written
