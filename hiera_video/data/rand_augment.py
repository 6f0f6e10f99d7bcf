"""RandAugment for uint8 clips: torchvision's ops and random stream, OpenCV kernels (3-8x faster), timm's mstd.

:class:`FastRandAugment` draws what ``torchvision.transforms.v2.RandAugment`` draws (same op list, magnitudes
and random calls, so a seed picks the same ops) and runs each op on the clip's pixels as one channels-last
uint8 array ``[N, H, W, C]`` through OpenCV, instead of torchvision's float round trips. It is its own
module, built on torchvision's public functional kernels only (:func:`torchvision_op`, the reference and the
fallback), so no private torchvision method is overridden. ``magnitude_std`` adds timm's magnitude noise
(``rand-m9-mstd0.5``: the level of every op application ~ ``N(m, 0.5)``, clipped to ``[0, 10]``; timm
``auto_augment.AugmentOp.__call__``). On a 16x224x224 clip an op costs 0.3-3 ms instead of 4-26 ms. What
each op gives relative to torchvision:

* **identical pixels**: ShearX/Y, TranslateX/Y, Rotate (nearest interpolation, zero fill: the source pixel
  of every output pixel is obtained once per (op, magnitude, size) by running torchvision's own op on a
  float "coordinate image" and cached; translations and shears become a few rectangle copies, rotations a
  ``cv2.remap``); Brightness, Solarize, AutoContrast,
  Equalize (256-entry lookup tables built with torchvision's float32 arithmetic from its statistics, taken
  here from per-frame histograms); Contrast (a table around the frame's mean floored grayscale); Sharpness
  (``cv2.filter2D`` blur, rounded, blended, borders kept as torchvision keeps them); Posterize and
  Identity (torchvision's kernels);
* **Color**: ``floor(factor·x + (1 - factor)·floor(gray))`` like torchvision, but torchvision evaluates it
  with float32 coefficients (1.9 is 1.8999999762) and truncates, so results that are exactly an integer
  come out 0.99999 and drop one level (about 1% of values at the largest magnitude, none at most others);
  here the floor has a 1e-3 tolerance and gives the integer. Contrast's mean and Sharpness's blur are
  float32 sums in OpenCV's order: they could in principle differ at such ties, and came out identical on
  every clip tested.

Frames are processed independently exactly where torchvision computes per-image statistics (Contrast's
mean, AutoContrast's range, Equalize's histogram), so clips get the same per-frame behaviour as
``v2.RandAugment`` on a ``tv_tensors.Video``. Inputs that are not uint8 with 3 channels, and geometric ops
with another interpolation or fill, run torchvision's kernels unchanged.

OpenCV is used single-threaded (``cv2.setNumThreads(1)`` on first use in a process): augmentation runs in
DataLoader workers, one core each, and OpenCV's thread pool is not fork-safe.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

__all__ = ["RAND_AUGMENT_OPS", "FastRandAugment", "configure_cv2", "op_magnitude", "split_planes", "torchvision_op"]

_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
# floor(y) as OpenCV's round-half-even: round(y - 0.5 + 1e-3). Without the 1e-3, an exact integer y (e.g. a
# pixel blended with an equal value) sits on a tie and half of them round down; with it only y within 1e-3
# below an integer is off by one.
_FLOOR_OFFSET = -0.5 + 1e-3
# Cached application plans of geometric ops: (op, magnitude, H, W) -> see _nearest_map.
_MAP_CACHE: dict[tuple[str, float, int, int], tuple] = {}
_MAP_CACHE_MAX = 4096
_CV2_CONFIGURED_PID: int | None = None


def configure_cv2() -> None:
    """Single-threaded OpenCV in this process (once per pid): one DataLoader worker is one core."""
    global _CV2_CONFIGURED_PID
    if _CV2_CONFIGURED_PID != os.getpid():
        cv2.setNumThreads(1)
        _CV2_CONFIGURED_PID = os.getpid()


def _frames(clip: torch.Tensor) -> np.ndarray:
    """uint8 ``[..., C, H, W]`` → numpy ``[N, H, W, C]``, a view when the memory is channels-last."""
    channels, height, width = clip.shape[-3:]
    pixels = clip.reshape(-1, channels, height, width).permute(0, 2, 3, 1)
    return pixels.contiguous().numpy()  # contiguous() is a no-op for channels-last memory


def _to_clip(frames: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_frames`: ``[N, H, W, C]`` → ``like``'s shape with channels-last strides."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).reshape(like.shape)


def _stacked(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` as one tall ``[N·H, W, C]`` image, for ops without per-frame statistics."""
    return frames.reshape(-1, *frames.shape[2:])


def split_planes(frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` → de-interleaved ``[N, C, H, W]`` (``cv2.split``: ~0.15 ms for a 16x224² clip).

    ``out``: an ``[N, C, H, W]`` array or view to write into (each ``[H, W]`` plane contiguous).
    """
    if out is None:
        out = np.empty((frames.shape[0], frames.shape[3], *frames.shape[1:3]), dtype=np.uint8)
    for frame, frame_planes in zip(frames, out):
        cv2.split(frame, list(frame_planes))
    return out


def _lut_per_frame(frames: np.ndarray, luts: np.ndarray, planes: np.ndarray | None = None) -> np.ndarray:
    """Apply ``luts`` uint8 ``[N, 256]`` or ``[N, C, 256]`` (one table per frame, or per frame and channel).

    Per-channel tables run as 1-channel tables on the planes (``planes``, if already split), then
    ``cv2.merge``: ~1.2x faster than one 3-channel table per frame.
    """
    output = np.empty_like(frames)
    if luts.ndim == 2:
        for frame, lut, out in zip(frames, luts, output):
            cv2.LUT(frame, lut, dst=out)
        return output
    planes = split_planes(frames) if planes is None else planes
    for frame_planes, lut, out in zip(planes, luts, output):
        cv2.merge([cv2.LUT(plane, table) for plane, table in zip(frame_planes, lut)], out)
    return output


def _values() -> torch.Tensor:
    return torch.arange(256, dtype=torch.float32)


def _blend_lut(ratio: float, other: torch.Tensor) -> np.ndarray:
    """torchvision's ``_blend(image, other, ratio)`` for every uint8 value: ``[..., 256]`` uint8 tables."""
    values = _values().expand(*other.shape, 256)
    return values.mul(ratio).add_(other.unsqueeze(-1), alpha=1.0 - ratio).clamp_(0, 255).to(torch.uint8).numpy()


def _histograms(frames: np.ndarray) -> torch.Tensor:
    """Per-frame, per-channel value histograms, int64 ``[N, C, 256]``."""
    channels = frames.shape[-1]
    counts = [
        cv2.calcHist([frame], [channel], None, [256], [0, 256]).reshape(256)
        for frame in frames
        for channel in range(channels)
    ]
    return torch.from_numpy(np.stack(counts)).round_().to(torch.int64).view(len(frames), channels, 256)


def _brightness(frames: np.ndarray, factor: float) -> np.ndarray:
    # torchvision: image.mul(factor).clamp_(0, 255).to(uint8), elementwise in float32.
    lut = _values().mul(factor).clamp_(0, 255).to(torch.uint8).numpy()
    return cv2.LUT(_stacked(frames), lut).reshape(frames.shape)


def _solarize(frames: np.ndarray, threshold: float) -> np.ndarray:
    values = _values()
    lut = torch.where(values >= threshold, 255 - values, values).to(torch.uint8).numpy()
    return cv2.LUT(_stacked(frames), lut).reshape(frames.shape)


def _floor_gray(frames: np.ndarray) -> np.ndarray:
    """torchvision's floored float32 grayscale ``[N, H, W]`` (same weights, float32 arithmetic)."""
    gray = cv2.transform(_stacked(frames).astype(np.float32), np.array([_GRAY], dtype=np.float32))
    return np.floor(gray, out=gray).reshape(frames.shape[:3])


def _contrast(frames: np.ndarray, factor: float) -> np.ndarray:
    # torchvision blends each frame with the mean of its floored grayscale.
    means = torch.tensor([cv2.mean(gray)[0] for gray in _floor_gray(frames)], dtype=torch.float32)  # [N]
    return _lut_per_frame(frames, _blend_lut(factor, means))


def _color(frames: np.ndarray, factor: float) -> np.ndarray:
    # torchvision: trunc(factor·x + (1 - factor)·floor(gray)); OpenCV rounds, the offset makes it floor.
    stacked = _stacked(frames)
    gray = cv2.cvtColor(_floor_gray(frames).reshape(stacked.shape[:2]).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(stacked, factor, gray, 1.0 - factor, _FLOOR_OFFSET).reshape(frames.shape)


def _sharpness(frames: np.ndarray, factor: float) -> np.ndarray:
    # torchvision: trunc(blend(x, round(blur(x)), factor)), blur = [[1,1,1],[1,5,1],[1,1,1]]/13 on the
    # interior, borders kept. Frames are filtered stacked: rows at frame seams are borders, restored from
    # the input below, so neighbouring frames never mix.
    stacked = _stacked(frames)
    kernel = np.full((3, 3), 1.0 / 13.0, dtype=np.float32)
    kernel[1, 1] = 5.0 / 13.0
    blurred = cv2.filter2D(stacked, -1, kernel)
    output = cv2.addWeighted(stacked, factor, blurred, 1.0 - factor, _FLOOR_OFFSET).reshape(frames.shape)
    output[:, 0], output[:, -1] = frames[:, 0], frames[:, -1]
    output[:, :, 0], output[:, :, -1] = frames[:, :, 0], frames[:, :, -1]
    return output


def _autocontrast(frames: np.ndarray) -> np.ndarray:
    planes = split_planes(frames)  # [N, C, H, W]: the per-frame, per-channel range is a contiguous reduction
    flat = planes.reshape(*planes.shape[:2], -1)
    minimum = torch.from_numpy(flat.min(axis=2)).to(torch.float32)
    maximum = torch.from_numpy(flat.max(axis=2)).to(torch.float32)
    equal = maximum == minimum
    inv_scale = maximum.sub(minimum).mul_(1.0 / 255.0)
    minimum[equal] = 0.0
    inv_scale[equal] = 1.0
    lut = _values().sub(minimum.unsqueeze(-1)).div_(inv_scale.unsqueeze(-1)).clamp_(0, 255).to(torch.uint8)
    return _lut_per_frame(frames, lut.numpy(), planes)


def _equalize(frames: np.ndarray) -> np.ndarray:
    # torchvision's (PIL's) equalization table per frame and channel.
    hist = _histograms(frames)  # [N, C, 256]
    pixels = frames.shape[1] * frames.shape[2]
    cum_hist = hist.cumsum(dim=-1)
    last_nonzero = cum_hist.argmax(dim=-1, keepdim=True)
    num_non_max_pixels = pixels - hist.gather(-1, last_nonzero)
    step = num_non_max_pixels.div(255, rounding_mode="floor")
    valid = step.ne(0)
    table = cum_hist[..., :-1].add(step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([torch.zeros(*table.shape[:2], 1, dtype=table.dtype), table], dim=-1).to(torch.uint8)
    lut = torch.where(valid, lut, _values().to(torch.uint8).expand_as(lut))  # step == 0: unchanged
    return _lut_per_frame(frames, lut.numpy())


def _shift_blocks(map_x: np.ndarray, map_y: np.ndarray) -> list[tuple[int, ...]] | None:
    """Express a nearest-neighbour map whose rows are shifted copies of source rows as rectangle copies.

    Returns ``(y0, y1, x0, x1, src_y0, src_x0)`` blocks (output ``[y0:y1, x0:x1]`` ← source rectangle at
    ``(src_y0, src_x0)``, everything else filled) or ``None`` when some row is not a contiguous shifted run.
    Translations are one block, ShearX one block per distinct shift; Rotate is not of this form.
    """
    blocks: list[list[int]] = []
    columns = np.arange(map_x.shape[1])
    for y in range(map_x.shape[0]):
        valid = np.flatnonzero(map_x[y] >= 0)
        if valid.size == 0:
            continue
        x0, x1 = int(valid[0]), int(valid[-1]) + 1
        if x1 - x0 != valid.size:
            return None
        shift, source_row = map_x[y, x0:x1] - columns[x0:x1], map_y[y, x0:x1]
        if (shift != shift[0]).any() or (source_row != source_row[0]).any():
            return None
        block = [y, y + 1, x0, x1, int(source_row[0]), x0 + int(shift[0])]
        last = blocks[-1] if blocks else None
        same_columns = last is not None and last[2:4] == block[2:4] and last[5] == block[5]
        if same_columns and last[1] == y and last[4] + y - last[0] == block[4]:
            last[1] = y + 1  # the next source row continues the same rectangle
        else:
            blocks.append(block)
    return [tuple(block) for block in blocks]


def _nearest_map(transform_id: str, magnitude: float, height: int, width: int) -> tuple:
    """How to apply a geometric op, derived from torchvision's own kernel and cached per (op, magnitude, size).

    ``("rows", blocks)`` / ``("columns", blocks)``: rectangle copies (see :func:`_shift_blocks`; columns for
    ShearY, on the transposed frame); ``("remap", map_x, map_y)``: a general ``cv2.remap`` (Rotate).
    """
    key = (transform_id, magnitude, height, width)
    cached = _MAP_CACHE.get(key)
    if cached is not None:
        return cached
    # Flat index + 1 is exact in float32 below 2**24 pixels; 0 marks the zero fill outside the image.
    coordinates = torch.arange(1, height * width + 1, dtype=torch.float32).view(1, 1, height, width)
    mapped = torchvision_op(coordinates, transform_id, magnitude, v2.InterpolationMode.NEAREST, None)
    source = mapped.view(height, width).round().to(torch.int64) - 1
    fill = source < 0
    # Fill pixels point outside the image, where cv2.remap's constant border (0) applies.
    map_x = torch.where(fill, -1, source % width).to(torch.float32).numpy()
    map_y = torch.where(fill, -1, source // width).to(torch.float32).numpy()
    if (rows := _shift_blocks(map_x, map_y)) is not None:
        result: tuple = ("rows", rows)
    elif (columns := _shift_blocks(map_y.T, map_x.T)) is not None:
        result = ("columns", columns)
    else:
        result = ("remap", map_x, map_y)
    if len(_MAP_CACHE) >= _MAP_CACHE_MAX:
        _MAP_CACHE.clear()
    _MAP_CACHE[key] = result
    return result


def _geometric(frames: np.ndarray, transform_id: str, magnitude: float) -> np.ndarray:
    plan = _nearest_map(transform_id, magnitude, frames.shape[1], frames.shape[2])
    if plan[0] == "remap":
        output = np.empty_like(frames)
        for frame, out in zip(frames, output):
            cv2.remap(frame, plan[1], plan[2], cv2.INTER_NEAREST, dst=out, borderMode=cv2.BORDER_CONSTANT)
        return output
    if plan[0] == "columns":  # shifted columns: shifted rows of the transposed frames
        return _transpose_frames(_copy_blocks(_transpose_frames(frames), plan[1]))
    return _copy_blocks(frames, plan[1])


def _copy_blocks(frames: np.ndarray, blocks: list[tuple[int, ...]]) -> np.ndarray:
    output = np.zeros_like(frames)  # the zero fill
    for y0, y1, x0, x1, source_y, source_x in blocks:
        output[:, y0:y1, x0:x1] = frames[:, source_y : source_y + y1 - y0, source_x : source_x + x1 - x0]
    return output


def _transpose_frames(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` → contiguous ``[N, W, H, C]`` (OpenCV's transpose is ~10x numpy's copy)."""
    output = np.empty((frames.shape[0], frames.shape[2], frames.shape[1], frames.shape[3]), dtype=frames.dtype)
    for frame, out in zip(frames, output):
        cv2.transpose(frame, dst=out)
    return output



# --------------------------------------------------------------------------------------------------------
# The op table and torchvision's kernels (the reference, and the path for inputs the fast kernels skip)
# --------------------------------------------------------------------------------------------------------

# torchvision.transforms.v2.RandAugment's ops in its order (the order the random op choice indexes):
# name -> (largest magnitude, signed). Level L of B bins gives linspace(0, largest, B)[L]; "translate" is a
# fraction 150/331 of the side. Posterize (bits 8 -> 4) and Solarize (threshold 1 -> 0) grow in severity
# with the level, as timm's "inc1" variants do. Source: torchvision/transforms/v2/_auto_augment.py.
_OPS: dict[str, tuple[float | None, bool]] = {
    "Identity": (None, False),
    "ShearX": (0.3, True),
    "ShearY": (0.3, True),
    "TranslateX": (150.0 / 331.0, True),
    "TranslateY": (150.0 / 331.0, True),
    "Rotate": (30.0, True),
    "Brightness": (0.9, True),
    "Color": (0.9, True),
    "Contrast": (0.9, True),
    "Sharpness": (0.9, True),
    "Posterize": (4.0, False),
    "Solarize": (1.0, False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}
RAND_AUGMENT_OPS: tuple[str, ...] = tuple(_OPS)


def op_magnitude(name: str, level: float, num_bins: int, height: int, width: int) -> float:
    """The unsigned magnitude of op ``name`` at ``level`` (``0 .. num_bins - 1``, fractional with mstd).

    Integer levels give torchvision's float32 ``linspace`` values exactly (the same pixels as
    ``v2.RandAugment``); fractional levels interpolate between its neighbours.
    """
    largest, _ = _OPS[name]
    if largest is None:
        return 0.0
    if name == "Posterize":  # torchvision: (8 - level / ((bins - 1) / 4)).round().int(), in float32
        return float((8 - torch.tensor(level, dtype=torch.float32) / ((num_bins - 1) / 4)).round().int())
    if name == "Solarize":
        values = torch.linspace(1.0, 0.0, num_bins)
    else:
        side = width if name == "TranslateX" else height
        values = torch.linspace(0.0, largest * side if name.startswith("Translate") else largest, num_bins)
    low = min(int(math.floor(level)), num_bins - 1)
    high = min(low + 1, num_bins - 1)
    fraction = level - low
    value = float(values[low])
    return value if fraction == 0 else value + (float(values[high]) - value) * fraction


def _max_value(image: Any) -> float:
    if isinstance(image, torch.Tensor):
        return 1.0 if image.is_floating_point() else float(torch.iinfo(image.dtype).max)
    return 255.0  # PIL


def torchvision_op(image: Any, name: str, magnitude: float, interpolation: Any, fill: Any) -> Any:
    """Op ``name`` with signed ``magnitude`` through torchvision's public functional kernels, exactly as
    ``v2.RandAugment`` applies it (shears about the top-left corner with ``tan``-converted angles, integer
    translations, ``1 + magnitude`` enhancement factors)."""
    if name == "Identity":
        return image
    if name in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(magnitude))
        shear = [angle, 0.0] if name == "ShearX" else [0.0, angle]
        return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=interpolation,
                        fill=fill, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        translate = [int(magnitude), 0] if name == "TranslateX" else [0, int(magnitude)]
        return F.affine(image, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0],
                        interpolation=interpolation, fill=fill)
    if name == "Rotate":
        return F.rotate(image, angle=magnitude, interpolation=interpolation, fill=fill)
    if name == "Brightness":
        return F.adjust_brightness(image, brightness_factor=1.0 + magnitude)
    if name == "Color":
        return F.adjust_saturation(image, saturation_factor=1.0 + magnitude)
    if name == "Contrast":
        return F.adjust_contrast(image, contrast_factor=1.0 + magnitude)
    if name == "Sharpness":
        return F.adjust_sharpness(image, sharpness_factor=1.0 + magnitude)
    if name == "Posterize":
        return F.posterize(image, bits=int(magnitude))
    if name == "Solarize":
        return F.solarize(image, threshold=_max_value(image) * magnitude)
    if name == "AutoContrast":
        return F.autocontrast(image)
    if name == "Equalize":
        return F.equalize(image)
    raise ValueError(f"unknown RandAugment op {name!r}; expected one of {RAND_AUGMENT_OPS}")


class FastRandAugment(torch.nn.Module):
    """RandAugment with torchvision's ops, magnitudes and random stream, OpenCV uint8 kernels, and timm's
    magnitude noise.

    Args:
        num_ops: ops applied in sequence, each drawn uniformly from :data:`RAND_AUGMENT_OPS`.
        magnitude: level ``m`` in ``0 .. num_magnitude_bins - 1`` (with 11 bins, timm's ``m`` of 10).
        num_magnitude_bins: levels of the magnitude scale.
        magnitude_std: timm's ``mstd`` (``rand-m9-mstd0.5``): each op application draws its level from
            ``N(m, mstd)`` clipped to ``[0, num_magnitude_bins - 1]`` (timm: ``[0, 10]``); above 100 (or inf)
            the level is uniform in ``[0, m]``, as timm's ``rand_augment_transform``. 0: the fixed level ``m``.
        interpolation, fill: for the geometric ops (fast kernels for nearest / zero fill).

    Random stream, per op: ``torch.randint`` picks the op; with ``magnitude_std > 0``, ``torch.randn`` (or
    ``torch.rand`` for the uniform variant) draws the level; a signed op then flips its sign when
    ``torch.rand() <= 0.5``. With ``magnitude_std=0`` these are exactly ``v2.RandAugment``'s draws, so a
    seed picks the same ops and magnitudes. Input: uint8 ``[..., 3, H, W]`` tensor, ``tv_tensors.Image`` or
    ``tv_tensors.Video`` (every frame gets the same ops and magnitudes); output: the same shape and type,
    channels-last memory. Other inputs (float, grayscale, PIL) and geometric ops with another interpolation
    or fill run torchvision's kernels.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
        magnitude_std: float = 0.0,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.NEAREST,
        fill: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops must be a non-negative integer, got {num_ops!r}")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be in [0, {num_magnitude_bins - 1}], got {magnitude}")
        if not magnitude_std >= 0:
            raise ValueError(f"magnitude_std must be >= 0, got {magnitude_std}")
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins
        self.magnitude_std = magnitude_std
        self.interpolation = v2.InterpolationMode(interpolation)
        self.fill = fill

    def draw_level(self) -> float:
        """The level of one op application: ``m``, or timm's noisy ``m`` (see the class docstring)."""
        if self.magnitude_std <= 0:
            return float(self.magnitude)
        if self.magnitude_std > 100:  # timm: mstd > 100 means uniform sampling in [0, m]
            return float(torch.rand(())) * self.magnitude
        level = self.magnitude + self.magnitude_std * float(torch.randn(()))
        return min(max(level, 0.0), float(self.num_magnitude_bins - 1))

    def forward(self, image: Any) -> Any:
        height, width = F.get_size(image)
        for _ in range(self.num_ops):
            name = RAND_AUGMENT_OPS[int(torch.randint(len(RAND_AUGMENT_OPS), ()))]
            largest, signed = _OPS[name]
            magnitude = 0.0
            if largest is not None:
                magnitude = op_magnitude(name, self.draw_level(), self.num_magnitude_bins, height, width)
                if signed and torch.rand(()) <= 0.5:
                    magnitude = -magnitude
            image = self.apply_op(image, name, magnitude)
        return image

    def apply_op(self, image: Any, name: str, magnitude: float) -> Any:
        """Op ``name`` with signed ``magnitude``: torchvision's pixels (see the module docstring)."""
        fast = (
            isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim >= 3 and image.shape[-3] == 3
        )
        if fast and name in _GEOMETRIC:
            fast = self.interpolation == v2.InterpolationMode.NEAREST and self.fill in (None, 0)
        if not fast or name in ("Identity", "Posterize") or image.numel() == 0:
            return torchvision_op(image, name, magnitude, self.interpolation, self.fill)
        configure_cv2()
        data = image.as_subclass(torch.Tensor)
        frames = _frames(data)
        if name in _GEOMETRIC:
            result = _geometric(frames, name, magnitude)
        elif name == "Brightness":
            result = _brightness(frames, 1.0 + magnitude)
        elif name == "Color":
            result = _color(frames, 1.0 + magnitude)
        elif name == "Contrast":
            result = _contrast(frames, 1.0 + magnitude)
        elif name == "Sharpness":
            if frames.shape[1] <= 2 or frames.shape[2] <= 2:
                return image  # torchvision leaves images this small unchanged
            result = _sharpness(frames, 1.0 + magnitude)
        elif name == "AutoContrast":
            result = _autocontrast(frames)
        elif name == "Equalize":
            result = _equalize(frames)
        elif name == "Solarize":
            result = _solarize(frames, 255.0 * magnitude)
        else:
            raise ValueError(f"unknown RandAugment op {name!r}; expected one of {RAND_AUGMENT_OPS}")
        output = _to_clip(result, data)
        return tv_tensors.wrap(output, like=image) if isinstance(image, tv_tensors.TVTensor) else output
