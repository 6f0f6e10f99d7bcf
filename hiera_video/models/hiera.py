"""Hiera: one dimension-generic implementation for images ``[B, C, H, W]`` and video ``[B, C, T, H, W]``.

Hiera: A Hierarchical Vision Transformer without the Bells-and-Whistles (Ryali et al., ICML 2023).
Parameter names match the original implementation, so its checkpoints load without renaming.

The trick that keeps the model simple is the *unrolled* token order (see `unroll_permutation`): after the
patch embedding, tokens are permuted once so that every pooling window and every mask unit is a contiguous
slab of the sequence. Max-pooling then is a max over dim 1 of ``view(B, stride, N // stride, C)`` and mask-unit
attention a reshape, for any number of dimensions, with or without masked-out units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import cpu_attention, fast, fast_train
from .config import HieraConfig, check_input_size, stage_indices
from .layers import DropPath, LayerScale, Mlp, max_over, split_qkv
from .loading import load_pretrained, read_checkpoint, resolve_model_config
from .pos_embed import abswin_pos_embed, resize_pos_embed
from .weights import save_pretrained as _save_pretrained

__all__ = ["Hiera", "HieraBackbone", "HieraBlock", "MaskUnitAttention", "reroll", "resize_pos_embed", "unroll"]

# ----------------------------------------------------------------------------------------------------------
# Unroll / Reroll index math
#
# Take a token grid of size ``S_d`` per dimension ``d`` and an unroll schedule of ``k`` strides
# ``s_1 .. s_k`` (one per pooling stage, each a per-dimension tuple). The original Hiera applies them one at
# a time: stride ``s_1`` splits coordinate ``x_d = x'_d * s_1d + r_1d`` and moves the remainders ``r_1``
# in front of the sequence; ``s_2`` then splits ``x'_d`` the same way, and so on. Written at once, every
# coordinate decomposes as ``x_d = (((g_d * s_kd + r_kd) ... ) * s_1d + r_1d`` i.e. in row-major order
# ``[g_d, r_kd, ..., r_1d]``, and the unrolled sequence is ordered ``[r_1, r_2, ..., r_k, g]`` (each a block
# of all dimensions). So the whole unroll is ONE permutation of a view, and so is its inverse (reroll).
#
# Consequences used below:
#  * pooling with the first remaining stride = max over the leading ``prod(s_1)`` slabs;
#  * the trailing block ``g`` enumerates mask units (when mask units = prod of strides), so a mask unit's
#    tokens are ``N / num_units`` apart and mask-unit attention is ``view(B, N // nw, nw, C)``.
# ----------------------------------------------------------------------------------------------------------


def unroll_permutation(ndim: int, schedule: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Axes of a ``[B, *split dims, C]`` view and the permutation that puts it in unrolled order.

    Returns ``(split_index, perm)``: dimension ``d`` of the grid is viewed as the axes ``[g_d, r_kd .. r_1d]``;
    ``perm`` orders those axes as ``[B, r_1 (all d), ..., r_k (all d), g (all d), C]``.
    """
    k = len(schedule)
    axis = lambda d, j: 1 + d * (k + 1) + (0 if j == 0 else k + 1 - j)  # noqa: E731  j=0: g, j>=1: r_j
    perm = [0] + [axis(d, j) for j in range(1, k + 1) for d in range(ndim)]
    perm += [axis(d, 0) for d in range(ndim)] + [1 + ndim * (k + 1)]
    return list(range(ndim)), perm


def unroll(x: torch.Tensor, size: Sequence[int], schedule: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[B, *size, C]`` (spatial order) -> ``[B, N, C]`` in unrolled order (one copy)."""
    B, C = x.shape[0], x.shape[-1]
    if not schedule:
        return x.reshape(B, -1, C)
    prods = [math.prod([s[d] for s in schedule]) for d in range(len(size))]
    split = []
    for d, n in enumerate(size):
        split += [n // prods[d]] + [s[d] for s in reversed(schedule)]
    _, perm = unroll_permutation(len(size), schedule)
    return x.reshape(B, *split, C).permute(perm).reshape(B, -1, C)


def reroll(x: torch.Tensor, size: Sequence[int], schedule: Sequence[Sequence[int]],
           num_units: int | None = None) -> torch.Tensor:
    """Inverse of `unroll` for a sequence whose remaining unroll schedule is ``schedule``.

    x: ``[B, N, C]`` unrolled; ``size``: the current token grid. Returns ``[B, *size, C]``. With
    ``num_units`` (masked input: only some mask units kept), returns ``[B, num_units, *unit_shape, C]``
    where the unit shape is the product of the remaining strides.
    """
    B, C, D, m = x.shape[0], x.shape[-1], len(size), len(schedule)
    unit = [math.prod([s[d] for s in schedule]) for d in range(D)]
    # x is ordered [r_1 (D axes), ..., r_m (D axes), g, C]; r_j,d sits at axis 1 + (j-1)*D + d.
    r_axis = lambda j, d: 1 + (j - 1) * D + d  # noqa: E731
    if num_units is not None:
        x = x.reshape(B, *[v for s in schedule for v in s], num_units, C)
        perm = [0, 1 + m * D] + [r_axis(j, d) for d in range(D) for j in range(m, 0, -1)] + [2 + m * D]
        return x.permute(perm).reshape(B, num_units, *unit, C)
    grid = [n // u for n, u in zip(size, unit)]
    x = x.reshape(B, *[v for s in schedule for v in s], *grid, C)
    perm = [0]
    for d in range(D):
        perm += [1 + m * D + d] + [r_axis(j, d) for j in range(m, 0, -1)]
    return x.permute(perm + [1 + m * D + D]).reshape(B, *size, C)


# ----------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------


class MaskUnitAttention(nn.Module):
    """Mask-unit (windowed) or global attention on an unrolled sequence, with optional query pooling.

    ``q_stride`` is the flattened pooling stride (2x2 -> 4) and ``window_size`` the flattened mask-unit size
    *after* pooling. Attention runs as a 4-D ``[B, windows * heads, L, head_dim]`` problem so that
    `scaled_dot_product_attention` can use its fused kernels (on the CPU, `cpu_attention` picks per shape
    between that and the plain softmax form).
    """

    def __init__(self, dim: int, dim_out: int, heads: int, q_stride: int = 1, window_size: int = 0,
                 use_mask_unit_attn: bool = False):
        super().__init__()
        self.dim, self.dim_out, self.heads, self.q_stride = dim, dim_out, heads, q_stride
        self.head_dim = dim_out // heads
        self.window_size = window_size
        self.use_mask_unit_attn = use_mask_unit_attn
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor, train_fast: bool = False) -> torch.Tensor:
        """x: ``[B, N, dim]`` -> ``[B, N // q_stride, dim_out]``. ``train_fast``: see `fast_train`.

        Training keeps qkv in the checkpoint order: head-major qkv (`forward_fast`) measured no faster for a
        training step, and its per-step permuted weights, saved for the backward, cost ~50 MB at Hiera-B."""
        if train_fast:
            return fast_train.train_linear(self._attend(fast_train.train_linear(x, self.qkv)), self.proj)
        return self.proj(self._attend(self.qkv(x)))

    def forward_fast(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Inference-only `forward` (+ ``residual``; see `fast`): the bias and the residual add run in the
        GEMM epilogues, qkv comes out head-major. ``x`` is in the compute dtype."""
        return self.out_fast(self.qkv_fast(x)[0], residual)

    def qkv_fast(self, x: torch.Tensor, norm: nn.LayerNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward_fast`'s first half: ``(qkv, x_norm)``, head-major qkv of ``x_norm = norm(x)`` (or ``x``),
        maybe with the bias folded into the GEMM (`fast.norm_linear`). qkv is scratch: use it at once."""
        rows = fast.head_major(self.heads, self.head_dim)
        if norm is None:
            return fast.linear(x, self.qkv, rows=rows, scratch=True), x
        return fast.norm_linear(x, norm, self.qkv, rows=rows, scratch=True)

    def out_fast(self, qkv: torch.Tensor, residual: torch.Tensor | None, consume_residual: bool = False
                 ) -> torch.Tensor:
        """`forward_fast`'s second half: attention and proj (+ ``residual``, see `fast.linear`)."""
        return fast.linear(self._attend(qkv, head_major=True), self.proj, residual=residual,
                           consume_residual=consume_residual)

    def _attend(self, qkv: torch.Tensor, head_major: bool = False) -> torch.Tensor:
        """``qkv`` ``[B, N, 3 * dim_out]`` -> attention output ``[B, N // q_stride, dim_out]`` (before proj).

        Token ``n = l * nw + w``: the ``nw`` windows are the trailing block of the unrolled order. Attention
        runs as one 4-D ``[B, nw * heads, L, head_dim]`` problem; the fused kernel's output is then already
        in token order. qkv's features are ``(3, heads, head_dim)`` (the checkpoint's order: q, k and v are
        copied into that layout), or ``(heads, 3, head_dim)`` when ``head_major`` (`fast.head_major`: the
        ``(nw, heads)`` pair shares one stride, so q, k and v are strided views, no copy).
        """
        B, N, _ = qkv.shape
        nw = N // (self.q_stride * self.window_size) if self.use_mask_unit_attn else 1
        L, h, hd = N // nw, self.heads, self.head_dim
        if head_major:  # [3, B, nw, h, L, hd] with (nw, h) merged: strided views
            q, k, v = qkv.view(B, L, nw, h, 3, hd).permute(4, 0, 2, 3, 1, 5).reshape(3, B, nw * h, L, hd)
        else:
            q, k, v = split_qkv(qkv, L, nw, h)  # copied (same layout), with a one-pass backward
        if self.q_stride > 1:  # max-pool the queries: the stride is the leading block of each window
            q = max_over(q.view(B, nw * h, self.q_stride, L // self.q_stride, hd), 2)
        # [B, nw * h, Lq, hd] -> [B, Lq, nw, h, hd] -> [B, Lq * nw, dim_out]
        return cpu_attention.attention(q, k, v).transpose(1, 2).reshape(B, -1, self.dim_out)


class HieraBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 q_stride: int = 1, window_size: int = 0, use_mask_unit_attn: bool = False,
                 norm_eps: float = 1e-6, layer_scale_init: float | None = None, expand_proj: bool = True):
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MaskUnitAttention(dim, dim_out, heads, q_stride, window_size, use_mask_unit_attn)
        self.norm2 = nn.LayerNorm(dim_out, eps=norm_eps)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.expand_proj = expand_proj
        if dim != dim_out and expand_proj:  # projected (and pooled) residual at a stage transition
            self.proj = nn.Linear(dim, dim_out)
        if layer_scale_init is not None:  # timm's abswin models; absent (no keys) otherwise
            self.ls1, self.ls2 = LayerScale(dim_out, layer_scale_init), LayerScale(dim_out, layer_scale_init)

    def _residual(self, x: torch.Tensor, x_norm: torch.Tensor, train_fast: bool) -> torch.Tensor:
        """The residual stream across a widening block: pooled like the queries."""
        s = self.attn.q_stride
        if not self.expand_proj:
            # timm's `use_expand_proj=False`: [max-pool, avg-pool] of the *un-normalised* input, no weights
            # (timm/models/hiera.py HieraBlock.forward).
            x = x.view(x.shape[0], s, -1, x.shape[-1])
            return torch.cat([max_over(x, 1), x.mean(dim=1)], dim=-1)
        x = fast_train.train_linear(x_norm, self.proj) if train_fast else self.proj(x_norm)
        return max_over(x.view(x.shape[0], s, -1, x.shape[-1]), 1) if s > 1 else x

    def forward(self, x: torch.Tensor, train_fast: bool = False) -> torch.Tensor:
        """``train_fast``: the fp32 CPU training fast path (`fast_train`: per-shape linears, pooled MLP)."""
        x_norm = self.norm1(x)
        if self.dim != self.dim_out:
            x = self._residual(x, x_norm, train_fast)
        ls1, ls2 = getattr(self, "ls1", None), getattr(self, "ls2", None)
        a = self.attn(x_norm, train_fast)
        x = x + self.drop_path(a if ls1 is None else ls1(a))
        m = self.mlp(self.norm2(x), train_fast)
        return x + self.drop_path(m if ls2 is None else ls2(m))

    def forward_fast(self, x: torch.Tensor, owned: bool = False) -> torch.Tensor:
        """Inference-only `forward` (no drop path) on the oneDNN fast path; ``x`` is in the compute dtype.
        Large batches run in chunks of samples where that measured faster (`fast.per_sample_chunks`).
        ``owned``: the caller gives ``x`` up, so the attention's residual add may write into it."""
        a = self.attn
        key = (x.shape[1], self.dim, self.dim_out, a.heads, a.q_stride, a.window_size, a.use_mask_unit_attn)
        return fast.per_sample_chunks(lambda x_: self._forward_fast(x_, owned), x, key)

    def _forward_fast(self, x: torch.Tensor, owned: bool) -> torch.Tensor:
        qkv, x_norm = self.attn.qkv_fast(x, self.norm1)  # maybe a folded-bias GEMM (`fast.norm_linear`)
        if self.dim != self.dim_out:  # the projected, pooled residual: made here, so ours to write into
            x, s, owned = fast.linear(x_norm, self.proj), self.attn.q_stride, True
            x = x.view(x.shape[0], s, -1, x.shape[-1]).amax(dim=1) if s > 1 else x
        x = self.attn.out_fast(qkv, residual=x, consume_residual=owned)
        return fast.mlp(x, self.mlp, residual=x, consume_residual=True, norm=self.norm2)  # x: this block's


class Head(nn.Module):
    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(x))


class PatchEmbed(nn.Module):
    """Conv2d / Conv3d patch embedding (chosen from the number of dims). Masked input is zeroed first."""

    def __init__(self, in_chans: int, dim: int, kernel: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int]):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(kernel)]
        self.proj = conv(in_chans, dim, kernel_size=tuple(kernel), stride=tuple(stride),
                         padding=tuple(padding))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        """x: ``[B, C, *size]``; mask: ``[B, *mask_units_shape]`` bool (True = visible) or None.

        Returns ``[B, dim, *tokens_shape]``. Masked pixels are zeroed *before* the overlapping conv so they
        cannot leak into visible tokens (nearest upsampling of the unit mask, as the original does).
        ``dtype``: compute in this dtype with cached weight casts (the inference fast path).
        """
        if mask is not None:
            mask = F.interpolate(mask[:, None].float(), size=x.shape[2:]).bool()
            x = x * mask
        if dtype is None:
            return self.proj(x)
        p = self.proj
        w, b = fast.weight(p.weight, dtype), None if p.bias is None else fast.weight(p.bias, dtype)
        return p._conv_forward(x.to(dtype), w, b)


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


POS_EMBED_NAMES = ("pos_embed", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_abs", "pos_embed_win")


class Hiera(nn.Module):
    """Hiera classifier / backbone for images (``input_size=(H, W)``) or video (``(T, H, W)``)."""

    arch = "hiera"
    block_class = HieraBlock  # the block the CPU fast path re-implements (sam2 hook: HieraDet's subclass)

    def __init__(self, config: HieraConfig | None = None, **overrides):
        super().__init__()
        cfg = (config or HieraConfig()).replace(**overrides) if overrides else (config or HieraConfig())
        self.config = cfg
        self.grad_checkpointing = False
        D = cfg.ndim

        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride,
                                      cfg.patch_padding)
        tokens = cfg.tokens_shape()
        if cfg.abs_win_pos_embed:  # channel-first background + window (see `pos_embed`)
            self.pos_embed_abs = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.global_pos_size))
            self.pos_embed_win = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.mask_unit_size))
        elif cfg.sep_pos_embed:
            if D != 3:
                raise ValueError(
                    "sep_pos_embed (separate spatial + temporal position embeddings) needs video input")
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, tokens[1] * tokens[2], cfg.embed_dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, tokens[0], cfg.embed_dim))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(tokens), cfg.embed_dim))

        # Build blocks exactly as the original: the first block of a stage changes the width, pools the
        # queries (for the first q_pool transitions) and still uses the *previous* stage's attention type
        # ("lag by one block": global attention starts after pooling).
        self.unroll_schedule = [cfg.q_stride] * (cfg.num_stages - 1)
        q_pool_blocks = {end + 1 for end in cfg.stage_ends[: cfg.q_pool]}
        flat_mu, flat_q = math.prod(cfg.mask_unit_size), math.prod(cfg.q_stride)
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        self.blocks = nn.ModuleList()
        for i in range(sum(cfg.depths)):
            dim_out, use_mu_attn = dim, cfg.mask_unit_attn[stage]
            if i - 1 in cfg.stage_ends:
                dim_out, heads, stage = int(dim * cfg.dim_mul), int(heads * cfg.head_mul), stage + 1
                if i in q_pool_blocks:
                    flat_mu //= flat_q
            self.blocks.append(HieraBlock(
                dim, dim_out, heads, cfg.mlp_ratio, dpr[i], flat_q if i in q_pool_blocks else 1, flat_mu,
                use_mu_attn, cfg.norm_eps, cfg.layer_scale_init, cfg.expand_proj))
            dim = dim_out
        self.num_features = dim
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.head = Head(dim, cfg.num_classes, cfg.head_dropout)
        self.init_weights()

    # ------------------------------------------------------------------ init / housekeeping
    def init_weights(self) -> None:
        """The original initialisation: truncated normal(0.02), biases and LayerNorm shifts 0.02."""
        for p in (getattr(self, n, None) for n in POS_EMBED_NAMES):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0.02)
                nn.init.constant_(m.weight, 1.0)
        self.init_head()

    def init_head(self) -> None:
        proj = self.head.projection
        if isinstance(proj, nn.Linear):
            nn.init.trunc_normal_(proj.weight, std=0.02)
            nn.init.constant_(proj.bias, 0.02)
            proj.weight.data.mul_(self.config.head_init_scale)
            proj.bias.data.mul_(self.config.head_init_scale)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0 = no head)."""
        self.config.num_classes = num_classes
        device = self.norm.weight.device
        self.head = Head(self.num_features, num_classes, self.config.head_dropout).to(device)
        self.init_head()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward: less memory, about one extra forward of compute."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.startswith("pos_embed")}

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json`` + ``model.safetensors``; reload with
        ``create_model(pretrained=directory)``."""
        _save_pretrained(self, directory, self.arch)

    @classmethod
    def from_pretrained(cls, source: str, strict: bool = True, use_ema: bool | None = None,
                        **overrides) -> Hiera:
        """Rebuild this class from any source that carries its config (a `save_pretrained` folder, HF / timm
        folder or hub repo, a run folder or training checkpoint); see `create_model` for the sources."""
        ckpt = read_checkpoint(source, use_ema=use_ema)
        _, config = resolve_model_config(ckpt, None, dict(overrides), arch=cls.arch)
        model = cls(config)
        load_pretrained(model, ckpt, strict=strict)
        return model

    @property
    def stage_ends(self) -> list[int]:
        return self.config.stage_ends

    # ------------------------------------------------------------------ shapes
    def _check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        cfg = self.config
        if x.ndim != cfg.ndim + 2:
            want = "[B, C, T, H, W]" if cfg.is_video else "[B, C, H, W]"
            hint = " (video models need a time axis: add it with x.unsqueeze(2) for a single frame)" \
                if cfg.is_video and x.ndim == 4 else ""
            raise ValueError(f"expected a {cfg.ndim + 2}-D input {want}, got shape {tuple(x.shape)}{hint}")
        if x.shape[1] != cfg.in_chans:
            raise ValueError(
                f"expected {cfg.in_chans} input channels at dim 1 of {tuple(x.shape)}, got {x.shape[1]}"
                + (" (channels-last input? permute to [B, C, ...])" if x.shape[-1] == cfg.in_chans else ""))
        size = tuple(x.shape[2:])
        if size != cfg.input_size:
            check_input_size(cfg, size)
        return size

    def get_pos_embed(self, tokens: Sequence[int]) -> torch.Tensor:
        """Position embedding ``[1, *tokens, C]`` for a token grid, interpolated when it is not the native one
        (bicubic in space, linear in time). abswin: the background resampled to the grid plus the window
        embedding tiled over every mask unit (`pos_embed.abswin_pos_embed`)."""
        native = self.config.tokens_shape()
        C = self.config.embed_dim
        if self.config.abs_win_pos_embed:
            return abswin_pos_embed(self.pos_embed_abs, self.pos_embed_win, tokens)
        if self.config.sep_pos_embed:
            sp = resize_pos_embed(self.pos_embed_spatial.reshape(1, native[1], native[2], C), tokens[1:])
            tp = resize_pos_embed(self.pos_embed_temporal, tokens[:1])
            return tp[:, :, None, None, :] + sp[:, None]
        return resize_pos_embed(self.pos_embed.reshape(1, *native, C), tokens)

    def mask_units_shape(self, input_size: Sequence[int] | None = None) -> tuple[int, ...]:
        return self.config.mask_units_shape(tuple(input_size) if input_size is not None else None)

    def _check_mask(self, mask: torch.Tensor, B: int, size: tuple[int, ...]) -> None:
        n = math.prod(self.mask_units_shape(size))
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = visible), got dtype {mask.dtype}; "
                            "convert with mask.bool()")
        if mask.shape != (B, n):
            raise ValueError(f"mask must have shape [B, num_mask_units] = [{B}, {n}] (mask-unit grid "
                             f"{self.mask_units_shape(size)}), got {tuple(mask.shape)}")
        kept = mask.sum(1)
        if B > 0 and not bool((kept == kept[0]).all()):
            raise ValueError(f"every sample must keep the same number of mask units, got {kept.tolist()}")

    # ------------------------------------------------------------------ forward
    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                       stages: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder.

        x: ``[B, C, (T,) H, W]``; mask: ``[B, num_mask_units]`` bool, True = visible (only those units are
        encoded). Returns the final tokens ``[B, N, C]`` (unrolled order, spatial order once every unroll
        stride is consumed) and the outputs of ``stages`` rerolled to ``[B, (T,) H, W, C]`` (or
        ``[B, units, *unit_shape, C]`` when masked).
        """
        size = self._check_input(x)
        # CPU fast paths (see `fast`): inference (no grad, eval mode) runs the blocks' `forward_fast` in
        # `dt` with autocast off, because it handles the bf16 casts itself (once per weight, not per call);
        # fp32 training (grad on, no autocast) takes `fast_train`'s linears and MLP (`train_fast`).
        dt = None if self.training else fast.compute_dtype(x)
        train_fast = dt is None and fast_train.train_active(x)
        if dt is not None or train_fast:
            work = x.shape[0] * math.prod(self.config.tokens_shape(size)) * self.config.embed_dim
            if work < fast.MIN_ACTIVATION or not self._fast_supported():
                dt, train_fast = None, False
        if dt is None:
            return self._forward_tokens(x, size, mask, stages, None, train_fast)
        with torch.autocast("cpu", enabled=False):
            out, outs = self._forward_tokens(x, size, mask, stages, dt)
        if out.dtype != x.dtype and not torch.is_autocast_enabled("cpu"):  # a bf16 model computed in fp32
            out, outs = out.to(x.dtype), [o.to(x.dtype) for o in outs]  # (bf16 is not native here, see fast)
        return out, outs

    def _fast_supported(self) -> bool:
        """The fast paths re-implement the blocks' forward: only for unmodified layers without hooks."""
        lin, ln = (nn.Linear,), (nn.LayerNorm,)
        plain = {
            "qkv": lin, "fc1": lin, "fc2": lin, "norm1": ln, "norm2": ln, "attn": (MaskUnitAttention,),
            "mlp": (Mlp,), "patch_embed": (PatchEmbed,), "proj": (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d),
            "act": (nn.GELU,),
        }
        return fast.supported(self, plain) and all(
            type(b) is self.block_class and b.mlp.act.approximate == "none" and b.expand_proj
            and not hasattr(b, "ls1")
            and (b.dim == b.dim_out or type(b.proj) in lin) for b in self.blocks)

    def _forward_tokens(self, x: torch.Tensor, size: tuple[int, ...], mask: torch.Tensor | None,
                        stages: Sequence[int], dt: torch.dtype | None, train_fast: bool = False
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        cfg = self.config
        B = x.shape[0]
        if mask is not None:
            self._check_mask(mask, B, size)
        tokens = cfg.tokens_shape(size)
        unit_mask = None if mask is None else mask.view(B, *self.mask_units_shape(size))
        x = self.patch_embed(x, unit_mask, dtype=dt)
        # [B, C, *tokens] -> [B, *tokens, C] -> unrolled [B, N, C]; the position embedding is added in
        # unrolled order so the transpose, add and unroll cost a single pass over x.
        D = cfg.ndim
        pos = self.get_pos_embed(tokens)
        x = unroll(x.permute(0, *range(2, D + 2), 1), tokens, self.unroll_schedule) \
            + unroll(pos if dt is None else pos.to(dt), tokens, self.unroll_schedule)

        num_units = None
        if mask is not None:  # keep the visible units only: unit u of position l is token l * U + u
            num_units = int(mask[0].sum())
            U = mask.shape[1]
            idx = mask.nonzero()[:, 1].view(B, 1, num_units, 1)
            idx = idx.expand(B, x.shape[1] // U, num_units, x.shape[-1])
            x = torch.gather(x.view(B, -1, U, x.shape[-1]), 2, idx).reshape(B, -1, x.shape[-1])

        wanted = set(stage_indices(stages, cfg.num_stages))
        outs: list[torch.Tensor] = []
        schedule, grid = list(self.unroll_schedule), list(tokens)
        owned = True  # x is this forward's own tensor, unless a stage output (maybe a view of it) was kept
        for i, blk in enumerate(self.blocks):
            if dt is not None:
                x, owned = blk.forward_fast(x, owned), True
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, train_fast, use_reentrant=False)
            elif train_fast:
                x = blk(x, True)
            else:
                x = blk(x)
            if i in cfg.stage_ends:
                s = cfg.stage_ends.index(i)
                if s in wanted:
                    outs.append(reroll(x, grid, schedule, num_units))
                    owned = False
                if s < cfg.q_pool and schedule:  # the next stage pools with the first remaining stride
                    grid = [g // st for g, st in zip(grid, schedule[0])]
                    schedule = schedule[1:]
        return x, outs

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled, normalised features before the head: ``[B, num_features]``."""
        x, _ = self.forward_tokens(x, mask)
        return self.norm(x.mean(dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``[B, num_features]`` pooled features -> logits ``[B, num_classes]`` (or the dropout output)."""
        return self.head.dropout(x) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, (T,) H, W]`` -> logits ``[B, num_classes]`` (no softmax)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, stages: Sequence[int] | None = None,
                              mask: torch.Tensor | None = None, intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs rerolled to spatial layout ``[B, (T,) H, W, C]``.

        stages: indices of the stages to return (default all; negative counts from the end). Returns the
        list, or ``(logits, list)`` unless ``intermediates_only`` (logits only when no mask is given).
        """
        stages = range(self.config.num_stages) if stages is None else stages
        last, outs = self.forward_tokens(x, mask, stages)
        if intermediates_only or mask is not None:
            return outs
        return self.forward_head(self.norm(last.mean(dim=1))), outs


class HieraBackbone(nn.Module):
    """Feature-pyramid wrapper for dense tasks: stage maps as ``[B, C_s, (T,) H_s, W_s]``."""

    def __init__(self, model: Hiera, out_stages: Sequence[int] = (0, 1, 2, 3)):
        super().__init__()
        self.model = model
        self.out_stages = stage_indices(out_stages, model.config.num_stages, "out_stages")
        dims = model.config.stage_dims
        self.channels = [dims[s] for s in self.out_stages]
        cfg = model.config
        self.strides = [cfg.patch_stride[-1] * cfg.q_stride[-1] ** min(s, cfg.q_pool)
                        for s in self.out_stages]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, outs = self.model.forward_tokens(x, None, self.out_stages)
        return [o.movedim(-1, 1).contiguous() for o in outs]
