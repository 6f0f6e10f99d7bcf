"""Normalisation statistics shared by the model layer (reconstruction pictures, exports) and the data layer.

Video Hiera / MAE-ST checkpoints were trained on Kinetics with mean 0.45 / std 0.225 per channel (PySlowFast's
``DATA.MEAN`` / ``DATA.STD``); image Hiera on ImageNet with timm's ``IMAGENET_DEFAULT_MEAN`` / ``STD``.
"""

from __future__ import annotations

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
KINETICS_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
KINETICS_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)
