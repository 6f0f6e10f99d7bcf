"""torchvision's RandAugment with faster uint8 kernels for clips, same results.

:class:`FastRandAugment` is ``torchvision.transforms.v2.RandAugment`` (same op list, magnitudes, random draws
and therefore the same random stream) where the ops that are slow on a uint8 clip ``[T, C, H, W]`` are
replaced by kernels that produce **the same pixels** (tested against torchvision op by op):

* geometric ops (ShearX/Y, TranslateX/Y, Rotate; nearest interpolation, zero fill): torchvision converts
  the clip to float, builds a sampling grid and runs ``grid_sample``. Here the nearest-neighbour source of
  every output pixel is obtained once per (op, magnitude, size) by running torchvision's own op on a
  float "coordinate image" (pixel value = its flat index + 1), cached, and the clip is then a single uint8
  gather of pixel rows (channels-last), identical to the original by construction;
* Brightness, Contrast, AutoContrast, Equalize: per-pixel functions of the value (per frame, or per frame
  and channel, as torchvision computes its statistics), applied as 256-entry lookup tables built with the
  same float32 arithmetic as torchvision;
* Solarize: an XOR with the threshold mask instead of ``torch.where`` over an inverted copy.

Color and Sharpness (cross-channel / neighbourhood blends, where torchvision's float kernels were as fast as
the integer versions tried) and Posterize (already a bitwise AND) use torchvision's kernels.
Inputs that are not uint8 RGB videos/images fall back to torchvision entirely.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2 as v2
from torchvision import tv_tensors
from torchvision.transforms.v2._utils import _get_fill
from torchvision.transforms.v2.functional._color import _rgb_to_grayscale_image

__all__ = ["FastRandAugment", "apply_lut"]

_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
# Cached nearest-neighbour maps: (op, magnitude, H, W) -> (flat source index [H*W] int64, fill mask or None).
_MAP_CACHE: dict[tuple[str, float, int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
_MAP_CACHE_MAX = 4096


def _channels_last_rows(clip: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` → its pixels as a contiguous ``[N, H*W, C]`` view (copy only if needed)."""
    channels, height, width = clip.shape[-3:]
    pixels = clip.reshape(-1, channels, height, width).permute(0, 2, 3, 1)  # [N, H, W, C]
    if not pixels.is_contiguous():
        pixels = pixels.contiguous()
    return pixels.view(pixels.shape[0], height * width, channels)


def _from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_channels_last_rows`: ``[N, H*W, C]`` → ``like``'s shape, channels-last strides."""
    channels, height, width = like.shape[-3:]
    return rows.view(-1, height, width, channels).permute(0, 3, 1, 2).reshape(like.shape)


def apply_lut(clip: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map every uint8 value of ``clip [..., C, H, W]`` through a lookup table.

    ``lut`` is uint8 ``[256]`` (one table), ``[N, 256]`` (one per image/frame of the flattened leading dims)
    or ``[N, C, 256]`` (one per frame and channel).
    """
    rows = _channels_last_rows(clip)  # [N, P, C]
    index = rows.to(torch.int32)
    if lut.ndim == 2:  # per frame
        index += (torch.arange(lut.shape[0], dtype=torch.int32) * 256).view(-1, 1, 1)
    elif lut.ndim == 3:  # per frame and channel
        offsets = torch.arange(lut.shape[0] * lut.shape[1], dtype=torch.int32).view(lut.shape[0], 1, lut.shape[1])
        index += offsets * 256
    mapped = lut.reshape(-1).index_select(0, index.view(-1)).view(rows.shape)
    return _from_rows(mapped, clip)


def _values(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.arange(256, dtype=dtype)


def _brightness(clip: torch.Tensor, factor: float) -> torch.Tensor:
    # torchvision: image.mul(factor).clamp_(0, 255).to(uint8), elementwise in float32.
    lut = _values().mul(factor).clamp_(0, 255).to(torch.uint8)
    return apply_lut(clip, lut)


def _blend_lut(ratio: float, other: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend(image, other, ratio)`` for every uint8 value: ``[..., 256]`` uint8 tables."""
    values = _values().expand(*other.shape, 256)
    return values.mul(ratio).add_(other.unsqueeze(-1), alpha=1.0 - ratio).clamp_(0, 255).to(torch.uint8)


def _contrast(clip: torch.Tensor, factor: float) -> torch.Tensor:
    # torchvision blends each image with the mean of its floored grayscale (one mean per frame).
    frames = clip.reshape(-1, *clip.shape[-3:])
    gray = _rgb_to_grayscale_image(frames, num_output_channels=1, preserve_dtype=False).floor_()
    mean = torch.mean(gray, dim=(-3, -2, -1))  # [N]
    return apply_lut(clip, _blend_lut(factor, mean))


def _autocontrast(clip: torch.Tensor) -> torch.Tensor:
    minimum, maximum = torch.aminmax(_channels_last_rows(clip), dim=1)  # [N, C] each, one pass
    minimum, maximum = minimum.to(torch.float32), maximum.to(torch.float32)
    equal = maximum == minimum
    inv_scale = maximum.sub_(minimum).mul_(1.0 / 255.0)
    minimum[equal] = 0.0
    inv_scale[equal] = 1.0
    lut = _values().sub(minimum.unsqueeze(-1)).div_(inv_scale.unsqueeze(-1)).clamp_(0, 255).to(torch.uint8)
    return apply_lut(clip, lut)


def _equalize(clip: torch.Tensor) -> torch.Tensor:
    # torchvision's (PIL's) equalization table per frame and channel, from a bincount histogram.
    rows = _channels_last_rows(clip)  # [N, P, C]
    frames, pixels, channels = rows.shape
    offsets = torch.arange(frames * channels, dtype=torch.int32).view(frames, 1, channels) * 256
    index = rows.to(torch.int32).add_(offsets)
    hist = torch.bincount(index.view(-1), minlength=frames * channels * 256).view(frames, channels, 256)
    cum_hist = hist.cumsum(dim=-1)
    last_nonzero = cum_hist.argmax(dim=-1, keepdim=True)
    num_non_max_pixels = pixels - hist.gather(-1, last_nonzero)
    step = num_non_max_pixels.div(255, rounding_mode="floor")
    valid = step.ne(0)
    table = cum_hist[..., :-1].add(step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([torch.zeros(frames, channels, 1, dtype=table.dtype), table], dim=-1).to(torch.uint8)
    lut = torch.where(valid, lut, _values(torch.uint8).expand_as(lut))  # step == 0: unchanged
    mapped = lut.view(-1).index_select(0, index.view(-1)).view(rows.shape)
    return _from_rows(mapped, clip)


def _solarize(clip: torch.Tensor, threshold: float) -> torch.Tensor:
    # where(x >= t, 255 - x, x) == x XOR (255 if x >= t else 0) for uint8.
    mask = clip >= threshold
    return torch.bitwise_xor(clip, mask.to(torch.uint8).mul_(255))


def _nearest_map(
    transform_id: str, magnitude: float, height: int, width: int, reference: v2.RandAugment
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source pixel of every output pixel for a geometric op, computed by torchvision's own kernel."""
    key = (transform_id, magnitude, height, width)
    cached = _MAP_CACHE.get(key)
    if cached is not None:
        return cached
    # Flat index + 1 is exact in float32 below 2**24 pixels; 0 marks the zero fill outside the image.
    coordinates = torch.arange(1, height * width + 1, dtype=torch.float32).view(1, 1, height, width)
    mapped = v2.RandAugment._apply_image_or_video_transform(
        reference,
        coordinates,
        transform_id,
        magnitude,
        interpolation=v2.InterpolationMode.NEAREST,
        fill={torch.Tensor: None},
    )
    source = mapped.view(-1).round().to(torch.int64)
    fill = source == 0
    result = (source.sub(1).clamp_(min=0), fill if bool(fill.any()) else None)
    if len(_MAP_CACHE) >= _MAP_CACHE_MAX:
        _MAP_CACHE.clear()
    _MAP_CACHE[key] = result
    return result


def _geometric(clip: torch.Tensor, transform_id: str, magnitude: float, reference: v2.RandAugment) -> torch.Tensor:
    height, width = clip.shape[-2:]
    source, fill = _nearest_map(transform_id, magnitude, height, width, reference)
    rows = _channels_last_rows(clip)  # [N, P, C]
    if fill is not None:
        # An extra all-zero pixel at index P serves the fill: one gather, no masked write afterwards.
        padded = rows.new_empty(rows.shape[0], rows.shape[1] + 1, rows.shape[2])
        padded[:, :-1] = rows
        padded[:, -1] = 0
        rows, source = padded, torch.where(fill, rows.shape[1], source)
    return _from_rows(rows.index_select(1, source), clip)  # one gather of whole pixels (C bytes each)


class FastRandAugment(v2.RandAugment):
    """``torchvision.transforms.v2.RandAugment`` with fast, pixel-identical uint8 kernels (module docstring).

    Supports the default nearest interpolation and zero fill on uint8 inputs; anything else (float
    inputs, other interpolation or fill) runs torchvision's kernels unchanged.
    """

    def _apply_image_or_video_transform(self, image, transform_id, magnitude, interpolation, fill):  # noqa: ANN001, ANN201
        fast = (
            isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim >= 3 and image.shape[-3] == 3
        )
        fill_value = _get_fill(fill, type(image)) if isinstance(fill, dict) else fill
        if fast and transform_id in _GEOMETRIC:
            if v2.InterpolationMode(interpolation) != v2.InterpolationMode.NEAREST or fill_value not in (None, 0):
                fast = False
        if not fast:
            return super()._apply_image_or_video_transform(image, transform_id, magnitude, interpolation, fill)
        data = image.as_subclass(torch.Tensor)
        if transform_id in _GEOMETRIC:
            output = _geometric(data, transform_id, magnitude, self)
        elif transform_id == "Brightness":
            output = _brightness(data, 1.0 + magnitude)
        elif transform_id == "Contrast":
            output = _contrast(data, 1.0 + magnitude)
        elif transform_id == "AutoContrast":
            output = _autocontrast(data)
        elif transform_id == "Equalize":
            output = _equalize(data)
        elif transform_id == "Solarize":
            output = _solarize(data, 255.0 * magnitude)
        else:  # Identity, Color, Sharpness, Posterize: torchvision's kernels
            return super()._apply_image_or_video_transform(image, transform_id, magnitude, interpolation, fill)
        return tv_tensors.wrap(output, like=image) if isinstance(image, tv_tensors.TVTensor) else output
