"""Video/image transforms and MixUp/CutMix: layouts, temporal consistency, crops, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from hiera_video.data import (
    IMAGENET_MEAN,
    ImageEvalTransform,
    ImageTrainTransform,
    MixupCutmix,
    VideoEvalTransform,
    VideoTrainTransform,
)
from hiera_video.data.datasets import seeded_torch
from hiera_video.data.transforms import NormalizeToFloat, RandomErasingSameBox, RandomShortSideScaleCrop


def _static_video(num_frames: int = 6, height: int = 60, width: int = 80, seed: int = 0) -> torch.Tensor:
    """uint8 [T, H, W, C] whose frames are all identical: any per-frame difference after a transform means
    the transform was not applied identically to every frame."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return torch.from_numpy(np.repeat(frame[None], num_frames, axis=0))


@pytest.mark.parametrize("crop", ["random_resized", "short_side_jitter"])
def test_train_transform_layout_and_temporal_consistency(crop: str) -> None:
    transform = VideoTrainTransform(crop_size=32, crop=crop, jitter_min=36, jitter_max=48, erase_prob=1.0)
    video = _static_video()
    for seed in range(12):  # many draws of RandAugment ops, flips, crops and erasing boxes
        with seeded_torch(seed):
            clip = transform(video)
        assert clip.shape == (3, 6, 32, 32) and clip.dtype == torch.float32 and clip.is_contiguous()
        for t in range(1, 6):
            assert torch.equal(clip[:, t], clip[:, 0]), f"frame {t} differs (seed {seed})"


def test_train_transform_is_reproducible_and_random() -> None:
    transform = VideoTrainTransform(crop_size=32)
    video = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 60, 80, 3), dtype=np.uint8))
    with seeded_torch(5):
        first = transform(video)
    with seeded_torch(5):
        second = transform(video)
    with seeded_torch(6):
        third = transform(video)
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_transform_without_augmentation_is_resize_and_normalise() -> None:
    transform = VideoTrainTransform(
        crop_size=40, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, rand_augment_ops=0, erase_prob=0.0
    )
    video = torch.full((2, 40, 40, 3), 115, dtype=torch.uint8)  # 115 / 255 = 0.45098
    clip = transform(video)
    assert torch.allclose(clip, torch.full_like(clip, (115 / 255 - 0.45) / 0.225), atol=1e-5)


def test_normalize_matches_reference_formula() -> None:
    video = torch.randint(0, 256, (3, 3, 5, 7), dtype=torch.uint8)  # [T, C, H, W]
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    output = NormalizeToFloat(mean, std)(video)
    expected = (video.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert output.shape == (3, 3, 5, 7)  # [C, T, H, W]
    assert torch.allclose(output, expected.permute(1, 0, 2, 3), atol=1e-5)


def test_eval_transform_three_crops_along_long_side() -> None:
    video = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (4, 48, 96, 3), dtype=np.uint8))
    views = VideoEvalTransform(crop_size=32, num_crops=3)(video)
    assert views.shape == (3, 3, 4, 32, 32)
    resized = F.resize(video.permute(0, 3, 1, 2), [32], antialias=True)  # [T, C, 32, 64]
    for view, left in zip(views, (0, 16, 32)):
        expected = NormalizeToFloat()(resized[..., left : left + 32])
        assert torch.allclose(view, expected)
    portrait = VideoEvalTransform(crop_size=32, num_crops=3)(video.transpose(1, 2))
    assert portrait.shape == (3, 3, 4, 32, 32)
    centre = VideoEvalTransform(crop_size=32, short_side=40, num_crops=1)(video)
    assert centre.shape == (1, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="num_crops"):
        VideoEvalTransform(num_crops=2)


def test_random_erasing_uses_one_box_for_all_frames() -> None:
    clip = torch.zeros(3, 5, 32, 32)
    with seeded_torch(0):
        erased = RandomErasingSameBox(p=1.0, value=7.0)(clip.clone())
    mask = erased != 0
    assert mask.any()
    assert all(torch.equal(mask[:, t], mask[:, 0]) for t in range(5))
    assert torch.equal(RandomErasingSameBox(p=0.0)(clip), clip)


def test_short_side_jitter_crop_shape() -> None:
    video = torch.zeros(2, 3, 50, 90, dtype=torch.uint8)
    assert RandomShortSideScaleCrop(32, 36, 48)(video).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError):
        RandomShortSideScaleCrop(32, 48, 36)


def test_image_transforms() -> None:
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    with seeded_torch(0):
        train = ImageTrainTransform(crop_size=32)(image)
    assert train.shape == (3, 32, 32) and train.dtype == torch.float32
    evaluation = ImageEvalTransform(crop_size=32)(image)
    assert evaluation.shape == (3, 32, 32)
    gray = torch.full((3, 40, 40), 124, dtype=torch.uint8)
    normalised = ImageEvalTransform(crop_size=32)(gray)
    assert torch.allclose(normalised[0], torch.full((32, 32), (124 / 255 - IMAGENET_MEAN[0]) / 0.229), atol=1e-5)
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    assert torch.equal(ImageEvalTransform(crop_size=32)(pil), ImageEvalTransform(crop_size=32)(image))


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixup_cutmix(mode: str) -> None:
    mixer = MixupCutmix(
        num_classes=5,
        mixup_alpha=0.8 if mode == "mixup" else 0.0,
        cutmix_alpha=1.0 if mode == "cutmix" else 0.0,
        seed=0,
    )
    # Constant videos: sample b is all b, so the mixed values reveal λ and the box.
    videos = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).expand(4, 3, 6, 16, 16).clone()
    targets = torch.tensor([0, 1, 2, 3])
    mixed, soft = mixer(videos, targets)
    assert soft.shape == (4, 5) and torch.allclose(soft.sum(1), torch.ones(4))
    lam = float(soft[0, 0])
    assert soft[0, 3] == pytest.approx(1 - lam)  # mixed with the mirrored sample
    for t in range(1, 6):  # the same λ / box in every frame
        assert torch.equal(mixed[:, :, t], mixed[:, :, 0])
    if mode == "mixup":
        assert torch.allclose(mixed[0], torch.full_like(mixed[0], 3 * (1 - lam)))
    else:
        from_partner = (mixed[0, 0, 0] == 3).float().mean()
        assert float(from_partner) == pytest.approx(1 - lam)
    images = torch.randn(4, 3, 16, 16)
    assert mixer(images, targets)[0].shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="float"):
        mixer(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), targets)


def test_mixup_disabled_returns_one_hot() -> None:
    mixer = MixupCutmix(num_classes=3, prob=0.0)
    inputs = torch.randn(2, 3, 8, 8)
    mixed, soft = mixer(inputs.clone(), torch.tensor([2, 0]))
    assert torch.equal(mixed, inputs) and soft.tolist() == [[0, 0, 1], [1, 0, 0]]


def _assert_same_pixels(
    actual: torch.Tensor, expected: torch.Tensor, op: str, context: object, clip: torch.Tensor, magnitude: float
) -> None:
    """Identical to torchvision, except Color: exact arithmetic, where torchvision can be one level low."""
    actual, expected = actual.as_subclass(torch.Tensor), expected.as_subclass(torch.Tensor)
    difference = (actual.int() - expected.int()).abs()
    if op != "Color":
        assert int(difference.max()) == 0, (op, context, float((difference > 0).float().mean()))
        return
    # torchvision computes factor·x + (1 - factor)·floor(gray) in float32 and truncates, so an exactly
    # integer result (x + m·(x - gray) for the magnitude m = 0.9) comes out 0.99999 low when m is rounded
    # to float32 and drops a level; ours floors the formula with a 1e-3 tolerance for such rounding.
    from torchvision.transforms.v2.functional._color import _rgb_to_grayscale_image

    factor = 1.0 + float(torch.tensor(magnitude, dtype=torch.float32))
    gray = _rgb_to_grayscale_image(clip.as_subclass(torch.Tensor), 1, preserve_dtype=False).floor_().double()
    exact = (factor * clip.as_subclass(torch.Tensor).double() + (1.0 - factor) * gray).add_(1e-4).floor_()
    assert torch.equal(actual, exact.clamp_(0, 255).to(torch.uint8)), context
    assert int(difference.max()) <= 1 and bool(((actual.int() - expected.int()) >= 0).all()), context


def test_fast_rand_augment_matches_torchvision_op_by_op() -> None:
    """Every RandAugment op gives torchvision's pixels, on channels-last and contiguous clips and on images."""
    import torchvision.transforms.v2 as v2
    from torchvision import tv_tensors

    from hiera_video.data.rand_augment import FastRandAugment

    reference = v2.RandAugment(num_ops=1, magnitude=7, num_magnitude_bins=11)
    fast = FastRandAugment(num_ops=1, magnitude=7, num_magnitude_bins=11)
    raw = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (3, 37, 53, 3), dtype=np.uint8))
    raw[1] //= 4  # a low-contrast frame for AutoContrast / Equalize
    raw[2, :20, :30] = 77  # a flat region: blends of equal values must not drop a level
    inputs = [
        tv_tensors.Video(raw.permute(0, 3, 1, 2)),
        tv_tensors.Video(raw.permute(0, 3, 1, 2).contiguous()),
        tv_tensors.Image(raw[0].permute(2, 0, 1).contiguous()),
        raw.permute(0, 3, 1, 2).contiguous(),  # a plain tensor
    ]
    for clip in inputs:
        for name, (magnitudes_fn, signed) in reference._AUGMENTATION_SPACE.items():
            magnitudes = magnitudes_fn(11, 37, 53)
            values = [0.0] if magnitudes is None else [float(magnitudes[k]) for k in (1, 7, 10)]
            for magnitude in values + ([-v for v in values] if signed else []):
                expected = reference._apply_image_or_video_transform(
                    clip, name, magnitude, interpolation=v2.InterpolationMode.NEAREST, fill=reference._fill
                )
                actual = fast.apply_op(clip, name, magnitude)
                assert type(actual) is type(clip) and actual.shape == clip.shape
                _assert_same_pixels(actual, expected, name, (type(clip), magnitude), clip, magnitude)
    # The whole transform draws the same ops from the same stream: the same clips for the same seed (up to
    # torchvision's one-level Color drops, on a few percent of the values at most).
    full_reference = v2.RandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11)
    full_fast = FastRandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11)
    for seed in range(6):
        with seeded_torch(seed):
            expected = full_reference(tv_tensors.Video(raw.permute(0, 3, 1, 2))).as_subclass(torch.Tensor)
        with seeded_torch(seed):
            actual = full_fast(tv_tensors.Video(raw.permute(0, 3, 1, 2))).as_subclass(torch.Tensor)
        difference = (actual.int() - expected.int()).abs()
        assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 0.05, seed


def test_video_transforms_take_a_batch_of_clips() -> None:
    """``[K, T, H, W, C]`` (repeated augmentation, test views) == K separate calls with the same random stream."""
    clips = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, 4, 40, 48, 3), dtype=np.uint8))
    train = VideoTrainTransform(crop_size=32, erase_prob=0.5)
    with seeded_torch(5):
        batched = train(clips)
    with seeded_torch(5):
        separate = torch.stack([train(clip) for clip in clips])
    assert batched.shape == (2, 3, 4, 32, 32) and torch.equal(batched, separate)
    assert not torch.equal(batched[0], batched[1])  # each clip gets its own augmentation
    evaluate = VideoEvalTransform(crop_size=32, num_crops=3)
    views = evaluate(clips)
    assert views.shape == (6, 3, 4, 32, 32) and torch.equal(views, torch.cat([evaluate(clip) for clip in clips]))
    with pytest.raises(ValueError, match="out must be float32"):
        NormalizeToFloat()(clips[0].permute(0, 3, 1, 2), out=torch.empty(3, 4, 40, 40))


def test_normalisation_of_every_uint8_layout_matches_the_formula() -> None:
    """Channels-last clips take the OpenCV de-interleave path, others torch's copy: the same numbers."""
    raw = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (2, 5, 9, 11, 3), dtype=np.uint8))
    layouts = {
        "channels-last clip [T, C, H, W]": raw[0].permute(0, 3, 1, 2),
        "contiguous clip": raw[0].permute(0, 3, 1, 2).contiguous(),
        "channels-last views [S, T, C, H, W]": raw.permute(0, 1, 4, 2, 3),
        "strided (cropped) channels-last clip": raw[0].permute(0, 3, 1, 2)[..., 1:8, 2:9],
    }
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    shape = (-1, 1, 1, 1)
    for name, clip in layouts.items():
        output = NormalizeToFloat(mean, std)(clip)
        expected = clip.transpose(-4, -3).float().sub(torch.tensor(mean).view(shape) * 255)
        expected = expected.mul(1.0 / (torch.tensor(std).view(shape) * 255))
        assert output.is_contiguous() and output.shape == expected.shape, name
        assert torch.equal(output, expected), name


def test_rand_augment_op_magnitudes_are_torchvisions_and_mstd_follows_timm() -> None:
    """Integer levels give v2.RandAugment's magnitudes; mstd draws N(m, mstd) clipped to [0, bins - 1]."""
    import torchvision.transforms.v2 as v2

    from hiera_video.data.rand_augment import RAND_AUGMENT_OPS, FastRandAugment, op_magnitude

    space = v2.RandAugment._AUGMENTATION_SPACE
    assert RAND_AUGMENT_OPS == tuple(space)  # same order: the same op for the same random draw
    for name, (magnitudes_fn, _) in space.items():
        magnitudes = magnitudes_fn(11, 37, 53)
        for level in range(11):
            expected = 0.0 if magnitudes is None else float(magnitudes[level])
            assert op_magnitude(name, level, 11, 37, 53) == expected, (name, level)
        if magnitudes is not None and name != "Posterize":  # fractional levels interpolate
            between = op_magnitude(name, 6.5, 11, 37, 53)
            assert between == pytest.approx((float(magnitudes[6]) + float(magnitudes[7])) / 2)

    def levels(magnitude: int, mstd: float, n: int = 4000) -> np.ndarray:
        augment = FastRandAugment(num_ops=1, magnitude=magnitude, num_magnitude_bins=11, magnitude_std=mstd)
        with seeded_torch(0):
            return np.array([augment.draw_level() for _ in range(n)])

    noisy = levels(7, 0.5)
    assert abs(noisy.mean() - 7) < 0.03 and abs(noisy.std() - 0.5) < 0.03  # N(7, 0.5), never clipped here
    top = levels(10, 0.5)
    assert top.max() == 10.0 and abs((top == 10.0).mean() - 0.5) < 0.05  # half the draws clipped at 10
    assert (levels(9, 0.0) == 9.0).all()  # mstd 0: the fixed level, no random draw
    uniform = levels(9, 1000.0)  # timm: mstd > 100 means uniform in [0, m]
    assert uniform.min() >= 0 and uniform.max() <= 9 and abs(uniform.mean() - 4.5) < 0.15


def test_rand_augment_mstd_is_one_draw_per_clip_and_reaches_the_transform() -> None:
    """Every frame of a clip gets the same noisy magnitude; the config key reaches the training transform."""
    from hiera_video.config import load_config
    from hiera_video.engine.build import train_transform

    frame = torch.from_numpy(np.random.default_rng(6).integers(0, 256, (1, 36, 44, 3), dtype=np.uint8))
    clip = frame.expand(6, -1, -1, -1).contiguous()  # six identical frames
    transform = VideoTrainTransform(crop_size=32, rand_augment_ops=3, rand_augment_magnitude=7,
                                    rand_augment_mstd=0.5, erase_prob=0.0)
    outputs = []
    for seed in range(8):
        with seeded_torch(seed):
            out = transform(clip)
        assert all(torch.equal(out[:, t], out[:, 0]) for t in range(6)), seed
        outputs.append(out)
    assert not torch.equal(outputs[0], outputs[1])
    cfg = load_config("in1k_finetune_hiera_base_224", ["data.randaug_mstd=0.25"])
    augment = train_transform(cfg).rand_augment
    assert (augment.num_ops, augment.magnitude, augment.magnitude_std) == (2, 9, 0.25)
