"""HieraDet: SAM 2's image-encoder trunk (Ravi et al., "SAM 2: Segment Anything in Images and Videos", 2024).

HieraDet is Hiera (`hiera.Hiera`) with three changes, all for dense prediction at 1024 x 1024:

* **Windowed attention on the spatial grid** instead of mask-unit attention on the unrolled order. Each stage
  has its own window (``window_spec``, e.g. 8, 4, 14, 7 tokens), and a window need not divide the grid: at
  1024² the stage-2 grid is 64 tokens wide and its windows are 14, so the grid is zero-padded to 70. Mask units
  of the unrolled order (`hiera.unroll`) only exist for windows that tile the grid exactly and nest across
  stages (8 -> 4 -> 2 -> 1), which 14 / 7 windows do not; so HieraDet keeps tokens in the spatial layout
  ``[B, H, W, C]`` and partitions windows per block (`window_partition`). Inside a window the *same*
  `MaskUnitAttention` runs: the window's tokens are unrolled with the pooling stride (`hiera.unroll`) so that
  its query max-pooling is the usual "max over the leading stride block".
* **Global attention** in a few blocks (``global_att_blocks``): the whole grid is one window.
* **Windowed absolute position embedding** (Bolya et al., "Window Attention is Bugged", arXiv:2311.05613):
  a small background embedding (``window_pos_embed_bkg_spatial_size``) interpolated bicubically to the token
  grid plus a per-window embedding (``window_spec[0]`` tokens square) tiled over it.

There is no final norm or head in SAM 2's trunk; as in `Hiera`, this model has a final ``norm`` and a ``head``
(``num_classes=0`` by default: pooled features) for classification fine-tuning; loading SAM 2 weights
initialises them fresh and says so. The SAM 2 FPN neck is not part of this module.

Parameter names are timm's `HieraDet` names (SAM 2's, except ``mlp.layers.0/1`` -> ``mlp.fc1/fc2``), with the
position embeddings in SAM 2's ``[1, C, h, w]`` layout; `sam2_interop` converts both checkpoint layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import fast, fast_train
from .config import HieraDetConfig
from .hiera import Head, Hiera, HieraBlock, PatchEmbed, resize_pos_embed, unroll
from .layers import max_over

# ----------------------------------------------------------------------------------------------------------
# Windows on the spatial layout
# ----------------------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, H, W, C]`` -> windows ``[B * nh * nw, window, window, C]`` and the window grid ``(nh, nw)``.

    The grid is zero-padded at the bottom / right to a multiple of ``window`` (as SAM 2 does). ``window=0``
    means global attention: the whole grid is one window.
    """
    B, H, W, C = x.shape
    if window == 0:
        return x, (1, 1)
    nh, nw = -(-H // window), -(-W // window)
    if nh * window != H or nw * window != W:
        x = F.pad(x, (0, 0, 0, nw * window - W, 0, nh * window - H))
    x = x.view(B, nh, window, nw, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * nh * nw, window, window, C), (nh, nw)


def window_unpartition(windows: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: windows ``[B * nh * nw, h, w, C]`` -> ``[B, *size, C]`` (padding cut)."""
    nh, nw = grid
    _, h, w, C = windows.shape
    x = windows.view(-1, nh, nw, h, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, nh * h, nw * w, C)
    if nh * h != size[0] or nw * w != size[1]:
        x = x[:, : size[0], : size[1]]
    return x


def max_pool(x: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, H / s_h, W / s_w, C]``: max over non-overlapping ``stride`` cells
    (SAM 2's ``MaxPool2d(kernel_size=stride, stride=stride)`` on a grid the config keeps divisible)."""
    B, H, W, C = x.shape
    sh, sw = stride
    return max_over(x.view(B, H // sh, sh, W // sw, sw, C), (2, 4))


class HieraDetBlock(HieraBlock):
    """A Hiera block (same layers and parameter names) that attends within padded windows of a spatial map.

    ``window_size``: window side in tokens of the block's *input* grid, 0 for global attention. ``q_stride``:
    per-dimension query-pooling stride (the first block of a stage) or None. When pooling, the output grid
    is the input grid / stride and the windows shrink by the same factor, so windows stay aligned.
    """

    def __init__(self, dim: int, dim_out: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 q_stride: Sequence[int] | None = None, window_size: int = 0, norm_eps: float = 1e-6):
        flat_q = math.prod(q_stride) if q_stride else 1
        # The attention sees one window per batch row, so it runs unwindowed (use_mask_unit_attn=False).
        super().__init__(dim, dim_out, heads, mlp_ratio, drop_path, flat_q, 0, False, norm_eps)
        self.q_stride = tuple(q_stride) if q_stride else None
        self.window_size = window_size

    def forward(self, x: torch.Tensor, train_fast: bool = False) -> torch.Tensor:
        """x: ``[B, H, W, dim]`` -> ``[B, H', W', dim_out]`` (``H' = H / q_stride`` when pooling).

        ``train_fast``: the fp32 CPU training fast path (`fast_train`)."""
        x_norm = self.norm1(x)
        if self.dim != self.dim_out:  # projected, pooled residual on the full grid (not per window)
            x = fast_train.train_linear(x_norm, self.proj) if train_fast else self.proj(x_norm)
            x = max_pool(x, self.q_stride) if self.q_stride else x
        tokens, grid = self._windows(x_norm)
        y = self._unwindows(self.attn(tokens, train_fast), grid, x.shape[1:3])
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x), train_fast))

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Inference-only `forward` (no drop path) on the oneDNN fast path; ``x`` is in the compute dtype."""
        x_norm = fast.layer_norm(x, self.norm1)
        if self.dim != self.dim_out:
            x = fast.linear(x_norm, self.proj)
            x = max_pool(x, self.q_stride) if self.q_stride else x
        tokens, grid = self._windows(x_norm)
        if self.window_size == 0:  # global: the output is the (pooled) map in row-major order, fuse the add
            B, H, W, C = x.shape
            x = self.attn.forward_fast(tokens, residual=x.reshape(B, H * W, C)).view(B, H, W, C)
        else:
            y = self.attn.forward_fast(tokens)
            x = x + self._unwindows(y, grid, x.shape[1:3])
        return fast.mlp(x, self.mlp, residual=x, consume_residual=True, norm=self.norm2)  # x: made just above

    def _windows(self, x_norm: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``[B, H, W, C]`` -> window tokens ``[B * windows, window², C]`` and the window grid.

        Padded tokens are zeros after the norm and are *not* masked out of the attention: their keys and
        values are the qkv bias. That is what SAM 2 computes (its weights were trained so); kept for parity.
        Each window is unrolled by the pooling stride so that `MaskUnitAttention` pools the queries as the max
        over the leading stride block (see `hiera.unroll`); without pooling the unroll is a plain flatten.
        """
        windows, grid = window_partition(x_norm, self.window_size)
        return unroll(windows, windows.shape[1:3], [self.q_stride] if self.q_stride else []), grid

    def _unwindows(self, y: torch.Tensor, grid: tuple[int, int], size: Sequence[int]) -> torch.Tensor:
        """Attention output ``[B * windows, L, C]`` (row-major in each, pooled, window) -> ``[B, *size, C]``
        where ``size`` is the block's output grid."""
        if self.window_size == 0:
            return y.view(-1, *size, self.dim_out)
        sh, sw = self.q_stride or (1, 1)
        y = y.view(-1, self.window_size // sh, self.window_size // sw, self.dim_out)
        return window_unpartition(y, grid, tuple(size))

    def extra_repr(self) -> str:
        return f"window_size={self.window_size or 'global'}, q_stride={self.q_stride}"


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


class HieraDet(Hiera):
    """SAM 2's Hiera image encoder trunk; the `Hiera` API (forward_features / forward_head / forward /
    forward_intermediates / `HieraBackbone`) on inputs ``[B, C, H, W]``.

    Stage maps (`forward_intermediates`, `forward_tokens`) are ``[B, H_s, W_s, C_s]``; `HieraBackbone` gives
    them as ``[B, C_s, H_s, W_s]``, equal to SAM 2's ``trunk(x)`` outputs. `Hiera.forward_tokens` picks the
    CPU fast paths for HieraDet as for Hiera (the blocks' `forward_fast`; `fast_train` in training).
    """

    arch = "hieradet"
    block_class = HieraDetBlock

    def __init__(self, config: HieraDetConfig | None = None, **overrides: Any):
        # Not Hiera.__init__: that builds mask-unit blocks and a per-token position embedding. Everything
        # after construction (init, heads, checkpoints, the forward_* API) is Hiera's.
        nn.Module.__init__(self)
        cfg = config or HieraDetConfig()
        if not isinstance(cfg, HieraDetConfig):
            raise TypeError(f"HieraDet needs a HieraDetConfig, got {type(cfg).__name__}; build one with "
                            "HieraDetConfig(...) or get_config('sam2_hiera_tiny')")
        cfg = cfg.replace(**overrides) if overrides else cfg
        self.config = cfg
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride,
                                      cfg.patch_padding)
        # SAM 2's layout [1, C, h, w] for both embeddings, so its weights load unchanged.
        w0 = cfg.window_spec[0]
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, w0, w0))

        # As SAM 2 builds them: the window "lags by a block" like Hiera's attention type, i.e. the first
        # block of a stage (which pools) still uses the previous stage's window, on the pre-pooling grid.
        q_pool_blocks, global_blocks = set(cfg.q_pool_blocks()), set(cfg.global_att_blocks)
        # on the CPU explicitly, so that the model also builds under `with torch.device("meta")`
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        self.blocks = nn.ModuleList()
        for i in range(sum(cfg.depths)):
            dim_out, window = dim, 0 if i in global_blocks else cfg.window_spec[stage]
            if i - 1 in cfg.stage_ends:
                dim_out, heads, stage = int(dim * cfg.dim_mul), int(heads * cfg.head_mul), stage + 1
            self.blocks.append(HieraDetBlock(
                dim, dim_out, heads, cfg.mlp_ratio, dpr[i], cfg.q_stride if i in q_pool_blocks else None,
                window, cfg.norm_eps))
            dim = dim_out
        self.num_features = dim
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.head = Head(dim, cfg.num_classes, cfg.head_dropout)
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.trunc_normal_(self.pos_embed_window, std=0.02)

    def get_pos_embed(self, tokens: Sequence[int]) -> torch.Tensor:
        """``[1, h, w, C]``: the background embedding resized (bicubic) to the grid + the tiled window one."""
        h, w = tokens
        w0 = self.config.window_spec[0]
        bkg = resize_pos_embed(self.pos_embed.permute(0, 2, 3, 1), (h, w))
        return bkg + self.pos_embed_window.permute(0, 2, 3, 1).tile(1, h // w0, w // w0, 1)

    def _check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.ndim == 4 and x.shape[1] == self.config.in_chans:
            self.config.check_size(tuple(x.shape[2:]))  # HieraDet's own wording; the rest is Hiera's check
        return super()._check_input(x)

    def _forward_tokens(self, x: torch.Tensor, size: tuple[int, ...], mask: torch.Tensor | None,
                        stages: Sequence[int], dt: torch.dtype | None, train_fast: bool = False
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`Hiera.forward_tokens` (input checks, CPU fast-path choice) runs this: x ``[B, C, H, W]`` -> the
        final tokens ``[B, H_last * W_last, C]`` (row-major) and the outputs of ``stages`` as
        ``[B, H_s, W_s, C_s]``."""
        if mask is not None:
            raise ValueError("HieraDet (SAM 2's trunk) attends in spatial windows and has no mask units: "
                             "masked (MAE) input is not supported; use a hiera_* model for MAE")
        cfg = self.config
        x = self.patch_embed(x, dtype=dt).permute(0, 2, 3, 1)  # [B, H, W, C]
        pos = self.get_pos_embed(x.shape[1:3])
        x = (x + (pos if dt is None else pos.to(dt))).contiguous()  # row-major for the fused residual adds
        wanted = set(int(s) % cfg.num_stages for s in stages)
        outs: list[torch.Tensor] = []
        for i, blk in enumerate(self.blocks):
            if dt is not None:
                x = blk.forward_fast(x)
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, train_fast, use_reentrant=False)
            else:
                x = blk(x, train_fast)
            if i in cfg.stage_ends and cfg.stage_ends.index(i) in wanted:
                outs.append(x)
        return x.flatten(1, 2), outs
