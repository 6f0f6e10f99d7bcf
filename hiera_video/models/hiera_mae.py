"""Masked autoencoder (MAE) pretraining for Hiera, images ``[B, C, H, W]`` and video ``[B, C, T, H, W]``.

Masked Autoencoders As Spatiotemporal Learners (Feichtenhofer et al., 2022) with the Hiera encoder
(Ryali et al., ICML 2023). Parameter names match the original ``MaskedAutoencoderHiera`` (pip
``hiera-transformer``), so published ``mae_hiera_*`` checkpoints load and continue training here.

How it works
------------
* **Mask units.** Masking is decided per mask unit (``config.mask_unit_size`` tokens: 8x8 tokens = 32x32 px
  for images, 1x8x8 tokens = 2 frames x 32x32 px for video). A mask is a bool tensor ``[B, num_mask_units]``,
  **True = visible**, every sample keeping the same number of units (``int(U * (1 - mask_ratio))``, as the
  original). The encoder sees only the kept units; masked pixels are zeroed before the (overlapping) patch
  convolution so they cannot leak into visible tokens.
* **Multi-scale fusion.** The outputs of the first ``q_pool`` stages are brought to the final mask-unit
  resolution by strided convolutions (``multi_scale_fusion_heads``) and summed with the last stage's output.
* **Decoder.** A plain transformer over the full final-resolution token grid: visible units' tokens plus a
  learned ``mask_token`` for the masked ones, plus ``decoder_pos_embed``; ``decoder_pred`` maps every token to
  the pixels of its prediction patch (``patch_stride * q_stride ** q_pool`` pixels per spatial side).
* **Loss.** Mean squared error over the masked tokens only; with ``norm_pix_loss`` every target patch is
  normalised by its own mean and (unbiased) variance first.

Prediction targets: original layout vs. full tubelet
----------------------------------------------------
The target layout is the original's, bit for bit, so published checkpoints keep training correctly:

* **Images** (2-D): one vector per prediction token, laid out channel-first ``(C, ph, pw)``.
* **Video** (3-D, default ``full_tubelet_target=False``): a final token covers ``pt = patch_stride[0] *
  q_stride[0] ** q_pool`` frames (2 for the published configs) but, as in the original, only the **first**
  frame of each temporal token is predicted ("time-strided loss"), and the vector is laid out
  channel-**last** ``(ph, pw, C)`` -- a quirk of the original training code kept on purpose, because a
  decoder trained on it emits that layout. ``decoder_pred`` has ``ph * pw * C`` outputs.
* **Video with** ``full_tubelet_target=True``: every frame of the tubelet is predicted; the vector is
  ``(pt, ph, pw, C)`` and ``decoder_pred`` has ``pt * ph * pw * C`` outputs (so a published decoder does
  not load into it; the encoder does). The first ``ph * pw * C`` entries are the first frame, in the
  original layout, but with ``norm_pix_loss`` the normalisation statistics are taken over the whole tubelet,
  so the numbers differ from the default target. The reconstruction then has real motion within a
  tubelet instead of each predicted frame repeated ``pt`` times.

Reconstructions
---------------
`MaskedAutoencoderHiera.reconstruct` turns predictions back into pixels ``[B, C, (T,) H, W]``. With
``norm_pix_loss`` the network predicts *normalised* patches, so the per-patch mean and variance have to be
put back. For visible patches they are known. A masked patch's true statistics are unknown at inference
time, so by default they are replaced by the average statistics of the same sample's **visible** patches
(``stats="visible"``). For evaluation against ground truth, ``stats="target"`` uses every patch's true
statistics (this peeks at the masked pixels' mean and variance, so only use it to judge the predicted
structure).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import fast_train
from .config import HieraConfig
from .hiera import POS_EMBED_NAMES, Hiera, HieraBlock, resize_pos_embed

__all__ = ["MAEOutput", "MaskedAutoencoderHiera"]

# Added to the variance before the square root when normalising a target patch (the original's value).
NORM_PIX_EPS = 1.0e-6


@dataclass
class MAEOutput:
    """What `MaskedAutoencoderHiera.forward` returns.

    Unpacks like the original's tuple: ``loss, pred, target, mask = model(x)``.

    Attributes:
        loss: scalar, MSE over the masked prediction tokens.
        pred: ``[M, P]`` predictions of the masked tokens of the whole batch (M = B x masked tokens per
            sample, batch-major, tokens in spatial raster order), as the original returns them.
        target: ``[M, P]`` the matching (normalised, if ``norm_pix_loss``) pixel targets.
        mask: ``[B, num_mask_units]`` bool, True = visible.
        pred_full: ``[B, N, P]`` the decoder's predictions for every token (visible ones included).
        token_mask: ``[B, N]`` bool, True = visible, at the prediction-token resolution.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    pred_full: torch.Tensor
    token_mask: torch.Tensor

    @property
    def label(self) -> torch.Tensor:
        """The original's name for `target`."""
        return self.target

    def _as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.loss, self.pred, self.target, self.mask

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._as_tuple())

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._as_tuple()[i]


def apply_fusion_head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a fusion conv on every mask unit: ``[B, U, *unit, C]`` -> ``[B, U, *unit', C']``."""
    if isinstance(head, nn.Identity):
        return x
    B, U = x.shape[:2]
    y = head(x.flatten(0, 1).movedim(-1, 1))  # [B * U, C, *unit] -> [B * U, C', *unit']
    return y.movedim(1, -1).reshape(B, U, *y.shape[2:], y.shape[1])


def undo_windowing(x: torch.Tensor, grid: Sequence[int], unit: Sequence[int]) -> torch.Tensor:
    """``[B, U, *unit, C]`` (units in raster order) -> spatial ``[B, *grid, C]``, ``grid = units x unit``."""
    B, C, D = x.shape[0], x.shape[-1], len(grid)
    num_units = [g // u for g, u in zip(grid, unit)]
    x = x.reshape(B, *num_units, *unit, C)
    # Interleave (units_d, unit_d) for every dimension d, then merge each pair.
    perm = [0] + [a for d in range(D) for a in (1 + d, 1 + D + d)] + [1 + 2 * D]
    return x.permute(perm).reshape(B, *grid, C)


class MaskedAutoencoderHiera(Hiera):
    """Hiera MAE for images or video; build it from a `HieraConfig` (or ``create_model("mae_hiera_...")``).

    Uses ``config.decoder_embed_dim / decoder_depth / decoder_num_heads``, ``mask_ratio`` (None: 0.6 for
    images, 0.9 for video), ``norm_pix_loss`` and ``full_tubelet_target`` (see the module docstring for how
    the video targets differ). The classifier's ``norm`` and ``head`` do not exist here, so the state dict
    has exactly the original MAE's keys.
    """

    arch = "mae_hiera"

    def __init__(self, config: HieraConfig | None = None, **overrides):
        cfg = config or HieraConfig()
        if overrides:
            cfg = cfg.replace(**overrides)
        pool = [s**cfg.q_pool for s in cfg.q_stride]
        if any(m % p for m, p in zip(cfg.mask_unit_size, pool)):
            raise ValueError(
                f"mask_unit_size={cfg.mask_unit_size} must be divisible by q_stride ** q_pool = "
                f"{tuple(pool)}: the MAE fuses every stage at the final mask-unit resolution")
        super().__init__(cfg)
        del self.norm, self.head  # classifier only; the MAE's keys must match the original's exactly

        D = cfg.ndim
        enc_dim = self.blocks[-1].dim_out
        self.encoder_norm = nn.LayerNorm(enc_dim, eps=cfg.norm_eps)
        # Shapes at the final (post-pooling) resolution.
        self.mask_unit_final = tuple(m // p for m, p in zip(cfg.mask_unit_size, pool))
        self.tokens_final = tuple(t // p for t, p in zip(cfg.tokens_shape(), pool))
        # Pixels covered by one prediction token per dimension (time included for video).
        self.pred_patch = tuple(ps * p for ps, p in zip(cfg.patch_stride, pool))

        # Stage s < q_pool is at mask-unit resolution mask_unit_size / q_stride^s; a conv with
        # kernel = stride = the remaining pooling brings it to the final resolution and width.
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[D]
        self.multi_scale_fusion_heads = nn.ModuleList()
        for s in range(cfg.q_pool):
            kernel = tuple(q ** (cfg.q_pool - s) for q in cfg.q_stride)
            self.multi_scale_fusion_heads.append(conv(cfg.stage_dims[s], enc_dim, kernel, stride=kernel))
        self.multi_scale_fusion_heads.append(nn.Identity())  # the last stage is already final

        dec = cfg.decoder_embed_dim
        self.decoder_embed = nn.Linear(enc_dim, dec)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.tokens_final), dec))
        self.decoder_blocks = nn.ModuleList(
            HieraBlock(dec, dec, cfg.decoder_num_heads, cfg.mlp_ratio, norm_eps=cfg.norm_eps)
            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dec, eps=cfg.norm_eps)
        self.decoder_pred = nn.Linear(dec, self.patch_dim)
        self.init_weights()

    # ------------------------------------------------------------------ init / housekeeping
    def init_weights(self) -> None:
        """The original MAE initialisation.

        Position embeddings, mask token: truncated normal(0.02); every Linear: xavier uniform, bias 0;
        LayerNorm: 1 / 0; patch embedding: xavier uniform on the flattened kernel (like a Linear); fusion
        convs: PyTorch's default (the original creates them after its init pass).
        """
        if not hasattr(self, "decoder_pred"):
            return  # called by Hiera.__init__ before the decoder exists; we initialise everything below
        names = (*POS_EMBED_NAMES, "mask_token", "decoder_pos_embed")
        for name in names:
            p = getattr(self, name, None)
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in self.multi_scale_fusion_heads:
            if not isinstance(head, nn.Identity):
                head.reset_parameters()
        self.patch_embed.proj.reset_parameters()  # default bias, as the original
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def init_head(self) -> None:  # Hiera.init_weights calls it while the (to be deleted) head exists
        if "head" in self._modules:
            super().init_head()

    def _no_head(self) -> AttributeError:
        return AttributeError(
            "MaskedAutoencoderHiera has no classification head (norm / head); load its weights into a "
            "classifier instead, e.g. create_model('hiera_base_16x224', pretrained=<mae checkpoint>)")

    def reset_classifier(self, num_classes: int) -> None:
        raise self._no_head()

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise self._no_head()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise self._no_head()

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"mask_token", "decoder_pos_embed"}

    # ------------------------------------------------------------------ shapes
    @property
    def full_tubelet(self) -> bool:
        """Whether the target is every frame of a temporal token (video with ``full_tubelet_target``)."""
        return self.config.is_video and self.config.full_tubelet_target

    @property
    def patch_dim(self) -> int:
        """Length P of one prediction vector (``decoder_pred`` outputs)."""
        spatial = math.prod(self.pred_patch[-2:])
        frames = self.pred_patch[0] if self.full_tubelet else 1
        return frames * spatial * self.config.in_chans

    def num_mask_units(self, input_size: Sequence[int] | None = None) -> int:
        return math.prod(self.mask_units_shape(input_size))

    def pred_tokens_shape(self, input_size: Sequence[int] | None = None) -> tuple[int, ...]:
        """Prediction-token grid (the final encoder resolution) for an input size."""
        cfg = self.config
        tokens = cfg.tokens_shape(tuple(input_size or cfg.input_size))
        return tuple(t // s**cfg.q_pool for t, s in zip(tokens, cfg.q_stride))

    # ------------------------------------------------------------------ masks
    def _check_ratio(self, mask_ratio: float | None) -> float:
        ratio = self.config.default_mask_ratio if mask_ratio is None else mask_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= float(ratio) < 1.0:
            raise ValueError(f"mask_ratio must be a number in [0, 1) (the fraction of mask units hidden), "
                             f"got {ratio!r}")
        return float(ratio)

    def get_random_mask(self, B: int, generator: torch.Generator | None = None,
                        mask_ratio: float | None = None, input_size: Sequence[int] | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
        """A random mask ``[B, num_mask_units]`` bool, True = visible; ``int(U * (1 - ratio))`` kept each.

        Reproducible with ``generator`` (the noise is drawn on the generator's device, then moved to
        ``device``). ``mask_ratio`` defaults to the config's (0.6 image / 0.9 video); ``input_size`` to the
        config's.
        """
        ratio = self._check_ratio(mask_ratio)
        U = self.num_mask_units(input_size)
        keep = int(U * (1 - ratio))
        if keep < 1:
            raise ValueError(
                f"mask_ratio={ratio} keeps int({U} * (1 - {ratio})) = 0 of {U} mask units; the encoder "
                "needs at least one visible unit: use a lower ratio or a larger input")
        gen_device = generator.device if generator is not None else (device or "cpu")
        noise = torch.rand(B, U, generator=generator, device=gen_device)
        # The `keep` units with the smallest noise stay visible (same rule as the original).
        ids = noise.argsort(dim=1)[:, :keep]
        mask = torch.zeros(B, U, dtype=torch.bool, device=gen_device).scatter_(1, ids, True)
        return mask.to(device) if device is not None else mask

    def _check_mask(self, mask: torch.Tensor, B: int, size: tuple[int, ...]) -> None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a bool tensor [B, num_mask_units] (True = visible), got "
                            f"{type(mask).__name__}; pass a ratio as mask_ratio=...")
        grid = self.mask_units_shape(size)
        U = math.prod(grid)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = visible), got dtype {mask.dtype}; "
                            "convert with mask.bool()")
        if tuple(mask.shape) != (B, U):
            hint = " (flatten it with mask.flatten(1))" if mask.ndim > 2 and mask.numel() == B * U else ""
            raise ValueError(f"mask must have shape [B, num_mask_units] = [{B}, {U}] (mask-unit grid {grid} "
                             f"for input size {size}), got {tuple(mask.shape)}{hint}")
        kept = mask.sum(1)
        if B > 0 and not bool((kept == kept[0]).all()):
            raise ValueError(f"every sample must keep the same number of mask units, got {kept.tolist()}")
        if B > 0 and int(kept[0]) == 0:
            raise ValueError("mask hides every mask unit; the encoder needs at least one visible unit")

    def pixel_mask(self, mask: torch.Tensor, input_size: Sequence[int] | None = None) -> torch.Tensor:
        """Mask units -> pixels: ``[B, num_mask_units]`` -> ``[B, 1, (T,) H, W]`` bool, True = visible."""
        size = tuple(input_size or self.config.input_size)
        grid = mask.view(mask.shape[0], 1, *self.mask_units_shape(size)).float()
        return F.interpolate(grid, size=size).bool()  # nearest, exactly how the encoder zeroes masked input

    # ------------------------------------------------------------------ pixel targets
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels -> prediction-target vectors ``[B, N, P]`` (unnormalised), tokens in raster order.

        Images: each vector is ``(C, ph, pw)``. Video: ``(ph, pw, C)`` of the first frame of each temporal
        token (the original's layout), or ``(pt, ph, pw, C)`` with ``full_tubelet_target``.
        """
        B, C = x.shape[:2]
        if not self.config.is_video:
            ph, pw = self.pred_patch
            H, W = x.shape[2] // ph, x.shape[3] // pw
            x = x.reshape(B, C, H, ph, W, pw).permute(0, 2, 4, 1, 3, 5)  # [B, H, W, C, ph, pw]
            return x.reshape(B, H * W, C * ph * pw)
        pt, ph, pw = self.pred_patch
        T, H, W = x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw
        if self.full_tubelet:
            x = x.reshape(B, C, T, pt, H, ph, W, pw).permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B,T,H,W,pt,ph,pw,C]
            return x.reshape(B, T * H * W, pt * ph * pw * C)
        x = x[:, :, ::pt].reshape(B, C, T, H, ph, W, pw).permute(0, 2, 3, 5, 4, 6, 1)  # [B,T,H,W,ph,pw,C]
        return x.reshape(B, T * H * W, ph * pw * C)

    def unpatchify(self, patches: torch.Tensor, input_size: Sequence[int] | None = None,
                   expand_time: bool = True) -> torch.Tensor:
        """Inverse of `patchify`: ``[B, N, P]`` -> pixels ``[B, C, (T,) H, W]``.

        With the default video target only the first frame of each temporal token exists; ``expand_time``
        repeats it over the token's ``pt`` frames (giving ``T`` frames), otherwise ``T / pt`` frames are
        returned.
        """
        size = tuple(input_size or self.config.input_size)
        B, C = patches.shape[0], self.config.in_chans
        if not self.config.is_video:
            ph, pw = self.pred_patch
            H, W = size[0] // ph, size[1] // pw
            x = patches.reshape(B, H, W, C, ph, pw).permute(0, 3, 1, 4, 2, 5)
            return x.reshape(B, C, H * ph, W * pw)
        pt, ph, pw = self.pred_patch
        T, H, W = size[0] // pt, size[1] // ph, size[2] // pw
        if self.full_tubelet:
            x = patches.reshape(B, T, H, W, pt, ph, pw, C).permute(0, 7, 1, 4, 2, 5, 3, 6)
            return x.reshape(B, C, T * pt, H * ph, W * pw)
        x = patches.reshape(B, T, H, W, ph, pw, C).permute(0, 6, 1, 2, 4, 3, 5)
        x = x.reshape(B, C, T, H * ph, W * pw)
        return x.repeat_interleave(pt, dim=2) if expand_time else x

    @staticmethod
    def patch_stats(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-vector mean and unbiased variance over the last dim (what ``norm_pix_loss`` uses)."""
        return patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)

    def get_pixel_target(self, x: torch.Tensor, norm: bool | None = None) -> torch.Tensor:
        """Targets for every token ``[B, N, P]``; normalised per patch when ``norm`` (default: config)."""
        target = self.patchify(x)
        if self.config.norm_pix_loss if norm is None else norm:
            mean, var = self.patch_stats(target)
            target = (target - mean) / (var + NORM_PIX_EPS) ** 0.5
        return target

    # ------------------------------------------------------------------ model
    def forward_encoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode the visible units and fuse the stages: ``[B, kept_units, *mask_unit_final, C_enc]``."""
        cfg = self.config
        stages = list(range(cfg.q_pool)) + [cfg.num_stages - 1]  # later stages share the final resolution
        _, outs = self.forward_tokens(x, mask, stages)
        fused = apply_fusion_head(self.multi_scale_fusion_heads[0], outs[0])
        for head, out in zip(self.multi_scale_fusion_heads[1:], outs[1:]):
            fused = fused + apply_fusion_head(head, out)
        return self.encoder_norm(fused)

    def get_decoder_pos_embed(self, grid: Sequence[int]) -> torch.Tensor:
        """``[1, prod(grid), C_dec]``, interpolated when ``grid`` is not the native prediction grid."""
        pe = self.decoder_pos_embed
        if tuple(grid) == self.tokens_final:
            return pe
        C = pe.shape[-1]
        return resize_pos_embed(pe.reshape(1, *self.tokens_final, C), grid).reshape(1, -1, C)

    def forward_decoder(self, latent: torch.Tensor, mask: torch.Tensor,
                        input_size: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``[B, kept_units, *mask_unit_final, C_enc]`` into predictions for every token.

        Returns ``pred [B, N, P]`` (tokens in raster order) and ``token_mask [B, N]`` (True = visible).
        """
        size = tuple(input_size or self.config.input_size)
        grid = self.pred_tokens_shape(size)
        B, U = mask.shape
        x = self.decoder_embed(latent)
        unit_shape, C = x.shape[2:-1], x.shape[-1]
        # Every unit starts as the mask token; the visible ones (ascending unit index, the order the encoder
        # kept them in) are overwritten with their encoded tokens.
        full = self.mask_token.to(x.dtype).view(1, 1, *([1] * len(unit_shape)), C)
        full = full.expand(B, U, *unit_shape, C).clone()
        full[mask] = x.reshape(-1, *unit_shape, C)
        x = undo_windowing(full, grid, unit_shape).reshape(B, -1, C)
        token_mask = undo_windowing(mask.view(B, U, *([1] * (len(unit_shape) + 1))).expand(
            B, U, *unit_shape, 1), grid, unit_shape).reshape(B, -1)

        x = x + self.get_decoder_pos_embed(grid).to(x.dtype)
        # fp32 CPU training: the decoder's blocks take the encoder's training path too (`fast_train`: its MLPs
        # keep one activation fewer). It runs on every token of the stage-3 grid: mae_hiera_base_16x224
        # batch 2 step peak memory 1341 -> 1127 MiB with it (Xeon AMX, 2 threads), time unchanged.
        train_fast = (fast_train.train_active(x) and self._fast_supported()
                      and all(type(b) is HieraBlock for b in self.decoder_blocks))
        for blk in self.decoder_blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, train_fast, use_reentrant=False)
            else:
                x = blk(x, train_fast)
        return self.decoder_pred(self.decoder_norm(x)), token_mask

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, token_mask: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MSE over the masked tokens. Returns ``(loss, pred [M, P], target [M, P])``.

        With nothing masked (ratio 0) the loss is defined as 0 (still attached to the graph).
        """
        target = self.get_pixel_target(x)
        hidden = ~token_mask
        pred, target = pred[hidden], target[hidden]
        if pred.numel() == 0:
            return pred.sum() * 0.0, pred, target
        return ((pred - target) ** 2).mean(), pred, target

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> MAEOutput:
        """Mask, encode, decode and score.

        Args:
            x: ``[B, C, H, W]`` or ``[B, C, T, H, W]``, normalised pixels.
            mask: ``[B, num_mask_units]`` bool, True = visible (same count per sample), units in raster
                order of the mask-unit grid (`mask_units_shape`). None: a random mask (`get_random_mask`).
            mask_ratio: fraction of units hidden by the random mask, in [0, 1); default the config's
                (0.6 image / 0.9 video). Note the original's positional order was ``(x, mask_ratio, mask)``.
            generator: a `torch.Generator` for a reproducible random mask.

        Returns:
            `MAEOutput` (unpacks as ``loss, pred, target, mask`` like the original).
        """
        size = self._check_input(x)
        B = x.shape[0]
        if mask is None:
            mask = self.get_random_mask(B, generator, mask_ratio, size, device=x.device)
        else:
            if mask_ratio is not None:
                self._check_ratio(mask_ratio)  # a bad ratio is an error even when an explicit mask wins
            self._check_mask(mask, B, size)
            mask = mask.to(x.device)
        latent = self.forward_encoder(x, mask)
        pred_full, token_mask = self.forward_decoder(latent, mask, size)
        loss, pred, target = self.forward_loss(x, pred_full, token_mask)
        return MAEOutput(loss, pred, target, mask, pred_full, token_mask)

    # ------------------------------------------------------------------ reconstructions
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, output: MAEOutput | None = None, mask: torch.Tensor | None = None,
                    stats: Literal["visible", "target"] = "visible", paste_visible: bool = False,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions back in pixel space (same normalisation as ``x``).

        Args:
            x: the input the predictions were made for, ``[B, C, (T,) H, W]``.
            output: a `forward` result for ``x``; run now (with ``mask`` / ``generator``) when None.
            stats: how to undo ``norm_pix_loss`` for masked patches. ``"visible"`` (default): their true
                statistics are unknown at inference, so each masked patch gets the mean / variance averaged
                over the same sample's visible patches (visible patches use their own, which are known).
                ``"target"``: every patch uses its true statistics (evaluation against ground truth).
            paste_visible: put the input's pixels back in the visible units.

        Returns:
            ``(reconstruction [B, C, (T,) H, W], visible_pixels [B, 1, (T,) H, W] bool)``. For the default
            video target each predicted frame is repeated over its temporal token.
        """
        if stats not in ("visible", "target"):
            raise ValueError(f"stats must be 'visible' or 'target', got {stats!r}")
        size = self._check_input(x)
        if output is None:
            output = self.forward(x, mask=mask, generator=generator)
        pred = output.pred_full.float()
        if self.config.norm_pix_loss:
            mean, var = self.patch_stats(self.patchify(x.float()))
            if stats == "visible":
                vis = output.token_mask[..., None].float()  # [B, N, 1]
                count = vis.sum(1, keepdim=True).clamp_min(1.0)
                mean_vis = (mean * vis).sum(1, keepdim=True) / count
                var_vis = (var * vis).sum(1, keepdim=True) / count
                mean = torch.where(output.token_mask[..., None], mean, mean_vis)
                var = torch.where(output.token_mask[..., None], var, var_vis)
            pred = pred * (var + NORM_PIX_EPS) ** 0.5 + mean
        recon = self.unpatchify(pred, size)
        visible = self.pixel_mask(output.mask, size)
        if paste_visible:
            recon = torch.where(visible, x.float(), recon)
        return recon.to(x.dtype), visible
