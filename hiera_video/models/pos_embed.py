"""Position embeddings: resizing, the "abswin" embedding, and conversions between the layouts.

Three layouts exist among published Hiera weights:

* joint: one embedding per token, ``pos_embed [1, N, C]`` (image models, token grid ``(H, W)``);
* separate: ``pos_embed_spatial [1, H * W, C]`` + ``pos_embed_temporal [1, T, C]`` (the video models),
  summed per token: ``pe[t, h, w] = temporal[t] + spatial[h, w]``;
* abswin (Bolya et al. 2023, "Window Attention is Bugged: How not to Interpolate Position Embeddings",
  arXiv:2311.05613; timm `hiera_*_abswin_256`, SAM 2's trunk): a *background* ``pos_embed_abs [1, C, *G]``
  on a coarse global grid ``G``, interpolated to the token grid, plus a *window* embedding
  ``pos_embed_win [1, C, *U]`` of one mask unit, tiled over every window. Interpolating only the smooth
  background keeps the embedding identical inside every window at any resolution, which windowed attention
  needs. Stored channel-first (as timm and SAM 2 do) because tiling and interpolation work on that layout.

This module is dimension-generic: the same abswin works for video with a 3-D background and a 3-D window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_pos_embed(pe: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a position embedding ``[1, *grid, C]`` to ``[1, *size, C]`` (a no-op at the same size).

    The one home of token-last position-embedding resizing (on the fly in the model, at checkpoint load, in
    the MAE decoder): linear for a temporal grid ``[1, T, C]``, bicubic for a spatial ``[1, H, W, C]``,
    trilinear for a joint ``[1, T, H, W, C]``, all with ``align_corners=False`` as the original Hiera and
    timm resize.
    """
    if tuple(pe.shape[1:-1]) == tuple(size):
        return pe
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[pe.ndim - 2]
    return F.interpolate(pe.movedim(-1, 1), size=tuple(size), mode=mode, align_corners=False).movedim(1, -1)


def resize_background(bkg: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Interpolate an abswin background ``[1, C, *G]`` to ``[1, C, *size]``.

    Images: bicubic with ``antialias=True``, exactly timm's `Hiera._pos_embed` (PyTorch's antialiased
    bicubic uses the a=-0.5 kernel, so the flag matters even when upsampling). Video: the same bicubic per
    frame in space, then linear in time (``align_corners=False``), the split `resize_pos_embed` uses for the
    separate video embeddings. A no-op at the same size.
    """
    size = tuple(int(s) for s in size)
    if tuple(bkg.shape[2:]) == size:
        return bkg
    if bkg.ndim == 3:
        return F.interpolate(bkg, size=size, mode="linear", align_corners=False)
    if bkg.ndim == 4:
        return F.interpolate(bkg, size=size, mode="bicubic", antialias=True, align_corners=False)
    if bkg.ndim != 5:
        raise ValueError(f"abswin background must be [1, C, *grid] with a 1-3 D grid, got {tuple(bkg.shape)}")
    _, C, T, H, W = bkg.shape
    t, h, w = size
    x = bkg[0].transpose(0, 1)  # [T, C, H, W]: frames as a batch
    if (H, W) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    x = x.permute(1, 2, 3, 0).reshape(1, C * h * w, T)
    if T != t:
        x = F.interpolate(x, size=t, mode="linear", align_corners=False)
    return x.reshape(1, C, h, w, t).permute(0, 1, 4, 2, 3)


def abswin_pos_embed(bkg: torch.Tensor, win: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """The abswin embedding for a token grid: ``[1, *tokens, C]``.

    bkg: ``[1, C, *G]`` background; win: ``[1, C, *U]`` one mask unit, tiled ``tokens[d] // U[d]`` times
    per dimension (the token grid is a whole number of mask units; `check_input_size` guarantees it).
    """
    reps = [t // u for t, u in zip(tokens, win.shape[2:])]
    pe = resize_background(bkg, tokens) + win.tile([1, 1, *reps])
    return pe.movedim(1, -1)


# ------------------------------------------------------------------------------------------ conversions
def joint_pos_embed_grid(spatial: torch.Tensor | None, temporal: torch.Tensor | None, joint: torch.Tensor | None,
                         grid: Sequence[int]) -> torch.Tensor:
    """Any non-abswin layout as one channel-first grid ``[1, C, *grid]`` (exact: a reshape and a sum).

    joint: ``[1, N, C]`` with ``N = prod(grid)``; or spatial ``[1, H * W, C]`` + temporal ``[1, T, C]`` with
    ``grid = (T, H, W)``, giving ``temporal[t] + spatial[h, w]`` as the video models add them.
    """
    if joint is not None:
        C = joint.shape[-1]
        if joint.shape[1] != math.prod(grid):
            raise ValueError(f"pos_embed has {joint.shape[1]} tokens, not a {tuple(grid)} grid")
        return joint.reshape(1, *grid, C).movedim(-1, 1)
    if spatial is None or temporal is None or len(grid) != 3:
        raise ValueError("separate position embeddings need both pos_embed_spatial and pos_embed_temporal "
                         "and a (T, H, W) grid")
    T, H, W = grid
    C = spatial.shape[-1]
    if spatial.shape[1] != H * W or temporal.shape[1] != T:
        raise ValueError(f"pos_embed_spatial {tuple(spatial.shape)} / pos_embed_temporal {tuple(temporal.shape)} "
                         f"do not fit the token grid {tuple(grid)}")
    pe = temporal.reshape(1, T, 1, 1, C) + spatial.reshape(1, 1, H, W, C)
    return pe.movedim(-1, 1)


def to_abswin(grid_pe: torch.Tensor, global_size: Sequence[int], window: Sequence[int]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a channel-first embedding grid ``[1, C, *grid]`` into abswin ``(pos_embed_abs, pos_embed_win)``.

    The grid becomes the background (resampled to ``global_size`` with `resize_background`, exact when
    ``global_size`` is the source grid) and the window embedding starts at zero, so an abswin model with
    ``global_pos_size`` = the source token grid reproduces the source embedding exactly at the source size.
    A smaller ``global_size`` keeps only the smooth part of the source (an approximation; fine-tune after).
    """
    bkg = resize_background(grid_pe, global_size)
    win = grid_pe.new_zeros(1, grid_pe.shape[1], *window)
    return bkg.contiguous(), win
