"""MixUp / CutMix on batches of images ``[B, C, H, W]`` or videos ``[B, C, T, H, W]``.

Each sample is mixed with the sample at the mirrored batch position (``batch.flip(0)``, as timm does), with
one ``λ`` per batch. For videos the CutMix box is the same in every frame (it acts on the last two dims) and
MixUp uses the same ``λ`` for all frames, so a mixed clip is still temporally coherent. Targets come back as
soft probabilities ``[B, num_classes]``; label smoothing is left to the loss
(``torch.nn.CrossEntropyLoss(label_smoothing=...)`` accepts soft targets).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MixupCutmix", "one_hot"]


def one_hot(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 ``[B]`` → float ``[B, num_classes]``; float ``[B, num_classes]`` is returned as float32."""
    if targets.ndim == 2:
        return targets.float()
    return torch.nn.functional.one_hot(targets.long(), num_classes).float()


class MixupCutmix:
    """Batch MixUp / CutMix.

    Args:
        num_classes: number of classes of the soft targets.
        mixup_alpha: Beta(α, α) for MixUp's λ; 0 disables MixUp.
        cutmix_alpha: Beta(α, α) for CutMix's λ; 0 disables CutMix.
        prob: probability of mixing a batch at all.
        switch_prob: when both are enabled, probability of CutMix instead of MixUp.
        seed: seed of the generator drawing λ, the mode and the box (``None``: nondeterministic).

    ``mixer(inputs, targets) → (mixed inputs, soft targets)``: inputs float ``[B, C, (T,) H, W]`` (modified in
    place and returned), targets int64 ``[B]`` or soft ``[B, num_classes]``.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.rng = np.random.default_rng(seed)

    def _draw(self) -> tuple[str, float]:
        """Mode (``"none"``, ``"mixup"``, ``"cutmix"``) and λ for the next batch."""
        enabled = [mode for mode, alpha in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if alpha > 0]
        if not enabled or self.rng.random() >= self.prob:
            return "none", 1.0
        if len(enabled) == 2:
            mode = "cutmix" if self.rng.random() < self.switch_prob else "mixup"
        else:
            mode = enabled[0]
        alpha = self.cutmix_alpha if mode == "cutmix" else self.mixup_alpha
        return mode, float(self.rng.beta(alpha, alpha))

    def _cutmix_box(self, height: int, width: int, lam: float) -> tuple[int, int, int, int]:
        """Box ``(top, bottom, left, right)`` of area about ``(1 - λ)·H·W``, centre uniform, clipped."""
        cut_ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
        centre_y, centre_x = int(self.rng.integers(height)), int(self.rng.integers(width))
        top, bottom = np.clip([centre_y - cut_h // 2, centre_y + cut_h // 2], 0, height)
        left, right = np.clip([centre_x - cut_w // 2, centre_x + cut_w // 2], 0, width)
        return int(top), int(bottom), int(left), int(right)

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.ndim not in (4, 5):
            raise ValueError(f"expected [B, C, H, W] or [B, C, T, H, W], got {tuple(inputs.shape)}")
        if not inputs.is_floating_point():
            raise ValueError(f"MixUp/CutMix needs float inputs, got {inputs.dtype}")
        soft = one_hot(targets, self.num_classes).to(inputs.device)
        mode, lam = self._draw()
        if mode == "mixup":
            partner = inputs.flip(0).mul_(1.0 - lam)  # flip copies, so scaling it leaves inputs intact
            inputs.mul_(lam).add_(partner)
        elif mode == "cutmix":
            height, width = inputs.shape[-2:]
            top, bottom, left, right = self._cutmix_box(height, width, lam)
            partner = inputs.flip(0)
            inputs[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
            # The box may be clipped at the border: λ is the area actually kept.
            lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        if mode != "none":
            soft = soft * lam + soft.flip(0) * (1.0 - lam)
        return inputs, soft
