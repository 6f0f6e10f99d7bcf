"""Video and image transforms built on torchvision v2.

Video transforms take the reader's output, a uint8 tensor ``[T, H, W, C]``, and return the model layout,
float ``[C, T, H, W]`` (training, one clip) or ``[S, C, T, H, W]`` (testing, ``S`` spatial crops). Image
transforms take a uint8 ``[C, H, W]`` tensor (or a PIL image) and return float ``[C, H, W]``.

Everything that can run on uint8 does, and on the smallest tensor possible: the crop is taken before the
resize (one antialiased resize of the crop window, never of the full frame), RandAugment and the flip run on
the uint8 crop, and the float conversion happens once, fused with the normalisation and the
``[T, C, H, W] → [C, T, H, W]`` transpose. ``[T, H, W, C] → [T, C, H, W]`` is a free view whose memory is
channels-last, the fast path of torch's uint8 antialiased resize.

Randomness comes from torch's global generator (what torchvision v2 uses); datasets seed it per sample with
:func:`hiera_video.data.datasets.sample_rng` so results do not depend on the worker that ran the sample.
Temporal consistency: every random parameter (crop box, flip, RandAugment ops and magnitudes, erasing box) is
drawn once per clip and applied to all its frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision import tv_tensors

from hiera_video.constants import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD
from hiera_video.data.rand_augment import FastRandAugment, configure_cv2, split_planes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "ImageEvalTransform",
    "ImageTrainTransform",
    "NormalizeToFloat",
    "RandomErasingSameBox",
    "RandomShortSideScaleCrop",
    "ShortSideResize",
    "SpatialCrops",
    "VideoEvalTransform",
    "VideoTrainTransform",
    "to_tchw",
]


def to_tchw(video: torch.Tensor) -> tv_tensors.Video:
    """uint8 ``[T, H, W, C]`` (reader layout) → ``tv_tensors.Video`` ``[T, C, H, W]`` without copying."""
    if video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"expected a video [T, H, W, C], got shape {tuple(video.shape)}")
    return tv_tensors.Video(video.permute(0, 3, 1, 2))


def _planar(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., T, C, H, W]`` → contiguous uint8 ``[..., C, T, H, W]``.

    The crop leaves channels-last memory; OpenCV de-interleaves each frame into its planes (``cv2.split``),
    so the float conversion then streams contiguous memory: 25% faster than one strided float copy. Other
    layouts, and tensors on an accelerator, take torch's copy.
    """
    *lead, num_frames, channels, height, width = video.shape
    frames = video.reshape(-1, channels, height, width).permute(0, 2, 3, 1)  # a view for channels-last memory
    if video.device.type != "cpu" or not frames.is_contiguous() or channels > 4 or video.numel() == 0:
        return video.transpose(-4, -3).contiguous()
    configure_cv2()
    pixels = frames.numpy().reshape(-1, num_frames, height, width, channels)  # [clips, T, H, W, C]
    planes = np.empty((pixels.shape[0], channels, num_frames, height, width), dtype=np.uint8)
    for clip_pixels, clip_planes in zip(pixels, planes):
        split_planes(clip_pixels, out=clip_planes.swapaxes(0, 1))  # [C, T, H, W] written as [T, C, H, W]
    return torch.from_numpy(planes).view(*lead, channels, num_frames, height, width)


class RandomShortSideScaleCrop(torch.nn.Module):
    """Short-side jitter + random crop (SlowFast's train crop), done as one crop-then-resize.

    Equivalent to resizing the short side to ``s ~ U[min_size, max_size]`` and taking a random
    ``size × size`` crop, but only the window that becomes the crop is resized.

    Input/output: ``[..., H, W]`` tensors / tv_tensors; output ``[..., size, size]``.
    """

    def __init__(self, size: int, min_size: int = 256, max_size: int = 320) -> None:
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.size, self.min_size, self.max_size = size, min_size, max_size

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        height, width = video.shape[-2:]
        target_short = float(torch.empty(()).uniform_(self.min_size, self.max_size))
        scale = max(target_short / min(height, width), self.size / min(height, width))
        window = min(height, width, max(1, int(round(self.size / scale))))
        top = int(torch.randint(0, height - window + 1, ()))
        left = int(torch.randint(0, width - window + 1, ()))
        return F.resized_crop(video, top, left, window, window, [self.size, self.size], antialias=True)


class ShortSideResize(torch.nn.Module):
    """Resize so that the short side is ``size`` (aspect ratio kept, antialiased)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        height, width = video.shape[-2:]
        if min(height, width) == self.size:
            return video
        return F.resize(video, [self.size], antialias=True)


class SpatialCrops(torch.nn.Module):
    """``num_crops`` square crops of side ``size``: 1 = centre; 3 = start, centre, end of the long side.

    Input ``[..., H, W]`` with ``min(H, W) >= size``; output ``[num_crops, ..., size, size]``.
    """

    def __init__(self, size: int, num_crops: int = 1) -> None:
        super().__init__()
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.size, self.num_crops = size, num_crops

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        height, width = video.shape[-2:]
        if min(height, width) < self.size:
            raise ValueError(f"cannot take {self.size}px crops from a {height}x{width} frame")
        centre_top, centre_left = (height - self.size) // 2, (width - self.size) // 2
        if self.num_crops == 1:
            offsets = [(centre_top, centre_left)]
        elif height > width:  # portrait: crops along the height
            offsets = [(0, centre_left), (centre_top, centre_left), (height - self.size, centre_left)]
        else:
            offsets = [(centre_top, 0), (centre_top, centre_left), (centre_top, width - self.size)]
        crops = [video[..., top : top + self.size, left : left + self.size] for top, left in offsets]
        return torch.stack([c.as_subclass(torch.Tensor) for c in crops])


class NormalizeToFloat(torch.nn.Module):
    """uint8 ``[T, C, H, W]`` → normalised float ``[C, T, H, W]`` in one pass (``channels_first=True``),
    or uint8 ``[C, H, W]`` → float ``[C, H, W]`` for images (``channels_first=False`` keeps the layout).

    ``(x / 255 - mean) / std`` computed as ``(x - 255·mean) · 1/(255·std)`` in place on the output buffer;
    uint8 video is de-interleaved to ``[C, T, H, W]`` first (cheap on uint8), so the conversion is contiguous.
    """

    def __init__(
        self,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        video_to_cthw: bool = True,
    ) -> None:
        super().__init__()
        self.video_to_cthw = video_to_cthw
        self.register_buffer("offset", torch.tensor(mean, dtype=torch.float32) * 255.0, persistent=False)
        self.register_buffer("scale", 1.0 / (torch.tensor(std, dtype=torch.float32) * 255.0), persistent=False)

    def forward(self, video: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: optional float32 buffer of the output shape to write into (e.g. a slice of a batch)."""
        data = video.as_subclass(torch.Tensor)
        if self.video_to_cthw:  # [..., T, C, H, W] → [..., C, T, H, W]
            data = _planar(data) if data.dtype == torch.uint8 else data.transpose(-4, -3)
            shape = (-1, 1, 1, 1)
        else:
            shape = (-1, 1, 1)
        # On the input's device: frames decoded on a GPU (torchcodec + NVDEC) are normalised there.
        output = torch.empty(data.shape, dtype=torch.float32, device=data.device) if out is None else out
        if output.shape != data.shape or output.dtype != torch.float32:
            raise ValueError(f"out must be float32 {tuple(data.shape)}, got {output.dtype} {tuple(output.shape)}")
        output.copy_(data)  # the single uint8 → float conversion, writing the contiguous target layout
        offset, scale = self.offset.to(output.device), self.scale.to(output.device)
        output.sub_(offset.view(shape)).mul_(scale.view(shape))
        return output


class RandomErasingSameBox(torch.nn.Module):
    """Random erasing (Zhong et al.) with one box for the whole clip.

    With probability ``p`` one rectangle covering ``scale`` of the area with aspect ratio in ``ratio`` is
    replaced, in every frame and channel, by ``value``: ``"random"`` (standard normal noise, timm's "pixel"
    mode; sensible after normalisation) or a number (``0`` = the dataset mean after normalisation).

    Input/output: float ``[..., H, W]`` (any leading dims, e.g. ``[C, T, H, W]``).
    """

    def __init__(
        self,
        p: float = 0.25,
        scale: tuple[float, float] = (0.02, 1 / 3),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float | str = "random",
    ) -> None:
        super().__init__()
        self.p, self.scale, self.ratio, self.value = p, scale, ratio, value
        self._log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return video
        height, width = video.shape[-2:]
        area = height * width
        for _ in range(10):
            erase_area = area * float(torch.empty(()).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(()).uniform_(*self._log_ratio)))
            box_h = int(round(math.sqrt(erase_area * aspect)))
            box_w = int(round(math.sqrt(erase_area / aspect)))
            if 0 < box_h < height and 0 < box_w < width:
                break
        else:
            return video
        top = int(torch.randint(0, height - box_h + 1, ()))
        left = int(torch.randint(0, width - box_w + 1, ()))
        region = video[..., top : top + box_h, left : left + box_w]
        if self.value == "random":
            # Per-channel noise shared by all frames (leading dims after the first are broadcast): the box is a
            # static occluder, not flicker.
            noise_shape = (region.shape[0],) + (1,) * (region.ndim - 3) + tuple(region.shape[-2:])
            noise = torch.randn(noise_shape, dtype=video.dtype)
            region.copy_(noise.expand_as(region))
        else:
            region.fill_(float(self.value))
        return video


def _rand_augment(num_ops: int, magnitude: int, num_magnitude_bins: int, mstd: float) -> FastRandAugment | None:
    if num_ops <= 0:
        return None
    # torchvision's RandAugment (same ops, magnitudes, random stream and pixels) with faster uint8 kernels,
    # plus timm's magnitude noise when mstd > 0.
    return FastRandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins,
                           magnitude_std=mstd)


class VideoTrainTransform(torch.nn.Module):
    """Training augmentation for one clip: crop → flip → RandAugment → normalise → random erasing.

    Args:
        crop_size: output side (224).
        crop: ``"random_resized"`` (Inception-style, area ``scale`` and aspect ``ratio``; Hiera/MAE-ST
            fine-tuning) or ``"short_side_jitter"`` (short side ``U[jitter_min, jitter_max]`` + random crop;
            SlowFast).
        hflip: probability of a horizontal flip; 0 for Something-Something (flips swap "left"/"right").
        rand_augment_ops, rand_augment_magnitude, rand_augment_bins: torchvision RandAugment, applied to the
            uint8 clip as one ``tv_tensors.Video`` so every frame gets the same ops and magnitudes. Defaults
            follow Hiera's ``rand-m7-n4`` (4 ops, magnitude 7 of 10). ``rand_augment_ops=0`` disables it.
        rand_augment_mstd: timm's magnitude noise (``mstd``): each op's level ~ N(m, mstd) clipped to
            [0, 10]; drawn once per clip and op, so all frames still share it (0: the fixed level).
        erase_prob: random erasing probability (one box for the whole clip).
        mean, std: normalisation (Kinetics defaults 0.45 / 0.225).

    Input uint8 ``[T, H, W, C]``; output float ``[C, T, crop_size, crop_size]``. Several clips of one video
    (repeated augmentation), uint8 ``[K, T, H, W, C]`` or a list of K ``[T, H, W, C]``, give
    ``[K, C, T, crop_size, crop_size]``: each clip is augmented independently (the same random draws as K
    separate calls), straight into one output buffer.
    """

    def __init__(
        self,
        crop_size: int = 224,
        crop: str = "random_resized",
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter_min: int = 256,
        jitter_max: int = 320,
        hflip: float = 0.5,
        rand_augment_ops: int = 4,
        rand_augment_magnitude: int = 7,
        rand_augment_bins: int = 11,
        rand_augment_mstd: float = 0.0,
        erase_prob: float = 0.25,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        super().__init__()
        self.crop_size = crop_size
        if crop == "random_resized":
            self.crop: torch.nn.Module = v2.RandomResizedCrop(crop_size, scale=scale, ratio=ratio, antialias=True)
        elif crop == "short_side_jitter":
            self.crop = RandomShortSideScaleCrop(crop_size, jitter_min, jitter_max)
        else:
            raise ValueError(f"crop must be 'random_resized' or 'short_side_jitter', got {crop!r}")
        self.hflip = v2.RandomHorizontalFlip(hflip) if hflip > 0 else None
        self.rand_augment = _rand_augment(
            rand_augment_ops, rand_augment_magnitude, rand_augment_bins, rand_augment_mstd
        )
        self.normalize = NormalizeToFloat(mean, std, video_to_cthw=True)
        self.erase = RandomErasingSameBox(erase_prob) if erase_prob > 0 else None

    def forward(self, video: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(video, torch.Tensor) or video.ndim == 5:
            num_clips, (num_frames, *_, channels), size = len(video), video[0].shape, self.crop_size
            output = torch.empty((num_clips, channels, num_frames, size, size), dtype=torch.float32)
            for clip, out in zip(video, output):
                self._augment(clip, out)
            return output
        return self._augment(video, None)

    def _augment(self, video: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        clip = self.crop(to_tchw(video))
        if self.hflip is not None:
            clip = self.hflip(clip)
        if self.rand_augment is not None:
            clip = self.rand_augment(clip)
        output = self.normalize(clip, out)
        if self.erase is not None:
            output = self.erase(output)
        return output


class VideoEvalTransform(torch.nn.Module):
    """Test transform: short-side resize, then 1 centre crop or 3 crops along the long side.

    Args:
        crop_size: crop side (224).
        short_side: short side after resizing; default ``crop_size`` (SlowFast/MAE-ST multi-view testing,
            the 3 crops then cover the whole frame).
        num_crops: 1 or 3 spatial views.
        mean, std: normalisation.

    Input uint8 ``[T, H, W, C]``; output float ``[num_crops, C, T, crop_size, crop_size]``. ``K`` clips
    (``[K, T, H, W, C]`` or a list of K ``[T, H, W, C]``) give ``[K · num_crops, C, T, crop_size, crop_size]``
    (clip-major), in one buffer.
    """

    def __init__(
        self,
        crop_size: int = 224,
        short_side: int | None = None,
        num_crops: int = 1,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        super().__init__()
        self.resize = ShortSideResize(short_side if short_side is not None else crop_size)
        self.crops = SpatialCrops(crop_size, num_crops)
        self.normalize = NormalizeToFloat(mean, std, video_to_cthw=True)
        self.num_crops, self.crop_size = num_crops, crop_size

    def forward(self, video: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(video, torch.Tensor) or video.ndim == 5:
            num_clips, (num_frames, *_, channels) = len(video), video[0].shape
            views, size = num_clips * self.num_crops, self.crop_size
            output = torch.empty((views, channels, num_frames, size, size), dtype=torch.float32,
                                 device=video[0].device)  # GPU-decoded clips stay on the GPU
            for clip, out in zip(video, output.split(self.num_crops)):
                self._views(clip, out)
            return output
        return self._views(video, None)

    def _views(self, video: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        resized = self.resize(to_tchw(video))
        return self.normalize(self.crops(resized), out)  # [S, T, C, h, w] uint8 → [S, C, T, h, w] float


def _image_tensor(image: torch.Tensor | Image.Image) -> tv_tensors.Image:
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image.convert("RGB"))
    if image.ndim != 3:
        raise ValueError(f"expected an image [C, H, W], got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    return tv_tensors.Image(image)


class ImageTrainTransform(torch.nn.Module):
    """Training augmentation for images (2D configs), same blocks as the video pipeline.

    random resized crop → flip → RandAugment (default ``rand-m9-n2``) → normalise (ImageNet) → erasing.
    Input uint8 ``[C, H, W]`` tensor or PIL image; output float ``[C, crop_size, crop_size]``.
    """

    def __init__(
        self,
        crop_size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        rand_augment_ops: int = 2,
        rand_augment_magnitude: int = 9,
        rand_augment_bins: int = 11,
        rand_augment_mstd: float = 0.0,
        erase_prob: float = 0.25,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.crop = v2.RandomResizedCrop(crop_size, scale=scale, ratio=ratio, antialias=True)
        self.hflip = v2.RandomHorizontalFlip(hflip) if hflip > 0 else None
        self.rand_augment = _rand_augment(
            rand_augment_ops, rand_augment_magnitude, rand_augment_bins, rand_augment_mstd
        )
        self.normalize = NormalizeToFloat(mean, std, video_to_cthw=False)
        self.erase = RandomErasingSameBox(erase_prob) if erase_prob > 0 else None

    def forward(self, image: torch.Tensor | Image.Image) -> torch.Tensor:
        crop = self.crop(_image_tensor(image))
        if self.hflip is not None:
            crop = self.hflip(crop)
        if self.rand_augment is not None:
            crop = self.rand_augment(crop)
        output = self.normalize(crop)
        if self.erase is not None:
            output = self.erase(output)
        return output


class ImageEvalTransform(torch.nn.Module):
    """Test transform for images: short side to ``resize_size`` (default ``crop_size / 0.875``), centre crop.

    Input uint8 ``[C, H, W]`` tensor or PIL image; output float ``[C, crop_size, crop_size]``.
    """

    def __init__(
        self,
        crop_size: int = 224,
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.resize = ShortSideResize(resize_size if resize_size is not None else int(round(crop_size / 0.875)))
        self.crop_size = crop_size
        self.normalize = NormalizeToFloat(mean, std, video_to_cthw=False)

    def forward(self, image: torch.Tensor | Image.Image) -> torch.Tensor:
        resized = self.resize(_image_tensor(image))
        return self.normalize(F.center_crop(resized, [self.crop_size, self.crop_size]))
