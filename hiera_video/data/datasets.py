"""Map-style video and image datasets with reproducible per-sample randomness and failure accounting.

:class:`VideoDataset`

* training (``train=True``): ``dataset[i] → (video, label, index)`` with ``video`` float ``[C, T, H, W]``
  (``[K, C, T, H, W]`` when the clip sampler draws ``K > 1`` clips for repeated augmentation; flatten them with
  :func:`collate_repeated`). ``index`` is the index of the video actually returned (it differs from ``i`` when
  a broken video was replaced).
* testing (``train=False``): ``dataset[i] → (views, label, index, valid)`` with ``views`` float
  ``[V, C, T, H, W]``, ``V = temporal clips × spatial crops`` (clip-major). An unreadable video is never
  replaced: it yields ``valid=False`` and an empty ``views``; :func:`collate_eval` drops it from the batch and
  reports its index, so the metric excludes it and the count can be shown.

Randomness. Every random choice for sample ``i`` (clip start, crop, flip, RandAugment, erasing, replacement
video) comes from generators seeded with ``(seed, epoch, i, attempt)``, not from the worker's global state, so
``num_workers=0`` and ``num_workers=8`` give identical samples for the same seed and epoch. Call
``dataset.set_epoch(epoch)`` before each epoch; the epoch lives in shared memory, so persistent workers see it.

Failures. A video that cannot be decoded (missing, corrupt, truncated, too short with
``short_video="error"``) is logged with its path. In training it is replaced by another random video, at most
``max_retries`` times, then a ``RuntimeError`` lists the paths tried. Every failure is counted in shared memory
(visible across DataLoader worker processes): ``dataset.failures.count``, ``dataset.failure_report()`` (count
and paths) and ``dataset.log_failures()`` at the end of an epoch.

Readers are opened inside ``__getitem__`` (i.e. inside the worker), read once and closed immediately.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info
from torchvision.transforms.v2.functional import pil_to_tensor

from hiera_video.allocator import keep_freed_memory
from hiera_video.data.annotations import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoRecord,
    read_kinetics_csv,
    read_list_file,
    read_ssv2,
    scan_class_folders,
)
from hiera_video.data.clip_sampling import ClipSampler, RandomClipSampler, UniformClipSampler, VideoTooShortError
from hiera_video.data.transforms import (
    ImageEvalTransform,
    ImageTrainTransform,
    VideoEvalTransform,
    VideoTrainTransform,
)
from hiera_video.data.video_reader import VideoReader, VideoReadError, open_video

__all__ = [
    "EvalBatch",
    "FailureCounter",
    "FailureReport",
    "ImageFolderDataset",
    "VideoDataset",
    "collate_eval",
    "collate_repeated",
    "sample_rng",
    "sample_seed",
    "seeded_torch",
]

logger = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor], torch.Tensor]


def sample_seed(seed: int, epoch: int, index: int, attempt: int = 0) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, index, attempt)`` (well mixed by SeedSequence)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index, attempt]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def sample_rng(seed: int, epoch: int, index: int, attempt: int = 0) -> np.random.Generator:
    """numpy generator for one sample (clip starts, replacement choice)."""
    return np.random.default_rng(sample_seed(seed, epoch, index, attempt))


class seeded_torch:  # noqa: N801 - used like a function: ``with seeded_torch(seed): ...``
    """Context manager: run with torch's CPU generator seeded to ``seed``, then restore the previous state.

    torchvision v2 transforms draw from the global generator; seeding it per sample makes augmentation
    independent of which worker ran the sample, and restoring it leaves the caller's stream untouched
    (with ``num_workers=0`` the caller is the training loop).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._saved: torch.Tensor | None = None

    def __enter__(self) -> None:
        self._saved = torch.random.get_rng_state()
        # The CPU generator only: torch.manual_seed also seeds CUDA/XPU/MTIA lazily, which formats a stack
        # trace each call (~0.7 ms per sample).
        torch.default_generator.manual_seed(self.seed)

    def __exit__(self, *exc_info: object) -> None:
        assert self._saved is not None
        torch.random.set_rng_state(self._saved)


class FailureReport(NamedTuple):
    """Failures since the last reset: total ``count`` and the ``paths`` of the first ones (bounded)."""

    count: int
    paths: list[str]


class FailureCounter:
    """Failure count and failed sample indices in shared memory, written by any DataLoader worker.

    Created in the main process with the dataset. The buffers are torch shared-memory tensors, which
    DataLoader workers inherit (fork) or receive as shared handles (spawn / forkserver), so the main process
    reads what the workers recorded. No lock is needed: every process writes only its own slot (slot 0 for
    the main process, ``1 + worker id`` for workers). Each slot keeps its first ``capacity_per_slot`` indices;
    the count is exact.
    """

    def __init__(self, capacity_per_slot: int = 256, num_slots: int = 65) -> None:
        self.capacity_per_slot = capacity_per_slot
        self.num_slots = num_slots
        self._counts = torch.zeros(num_slots, dtype=torch.int64).share_memory_()
        self._indices = torch.full((num_slots, capacity_per_slot), -1, dtype=torch.int64).share_memory_()

    def _slot(self) -> int:
        info = get_worker_info()
        # More workers than slots share slots modulo (counts may then undercount by races; still bounded).
        return 0 if info is None else 1 + info.id % (self.num_slots - 1)

    def record(self, index: int) -> None:
        slot = self._slot()
        position = int(self._counts[slot])
        if position < self.capacity_per_slot:
            self._indices[slot, position] = index
        self._counts[slot] = position + 1

    @property
    def count(self) -> int:
        return int(self._counts.sum())

    def indices(self) -> list[int]:
        kept = self._counts.clamp(max=self.capacity_per_slot).tolist()
        return [int(i) for slot, n in enumerate(kept) for i in self._indices[slot, :n].tolist()]

    def reset(self) -> None:
        self._counts.zero_()
        self._indices.fill_(-1)


class _SharedEpoch:
    """The epoch number in shared memory, so ``set_epoch`` reaches persistent DataLoader workers."""

    def __init__(self) -> None:
        self._value = torch.zeros(1, dtype=torch.int64).share_memory_()

    def get(self) -> int:
        return int(self._value[0])

    def set(self, epoch: int) -> None:
        self._value[0] = int(epoch)


class _RobustDataset(Dataset):
    """Shared machinery: per-sample seeds, failure counting and bounded replacement."""

    records: list[VideoRecord]

    def __init__(self, seed: int, max_retries: int, failure_capacity: int) -> None:
        self.seed = seed
        self.max_retries = max_retries
        self.failures = FailureCounter(failure_capacity)
        self._epoch = _SharedEpoch()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random stream the next samples use (call before iterating an epoch)."""
        self._epoch.set(epoch)

    def failure_report(self) -> FailureReport:
        """Failures recorded (by any worker) since the last reset."""
        return FailureReport(self.failures.count, [self.records[i].path for i in self.failures.indices()])

    def log_failures(self, reset: bool = True) -> FailureReport:
        """Log the failures of the epoch (count and paths) and reset the counter; returns the report."""
        report = self.failure_report()
        if report.count:
            shown = ", ".join(report.paths[:20]) + (" ..." if len(report.paths) > 20 else "")
            logger.warning("%d samples failed to load in epoch %d: %s", report.count, self.epoch, shown)
        concealed = getattr(self, "concealed", None)
        if concealed is not None and concealed.count:
            paths = [self.records[i].path for i in concealed.indices()]
            logger.warning("%d samples used concealed damaged frames in epoch %d: %s", concealed.count, self.epoch,
                           ", ".join(paths[:20]) + (" ..." if len(paths) > 20 else ""))
        if reset:
            self.failures.reset()
            if concealed is not None:
                concealed.reset()
        return report

    def reset_failures(self) -> None:
        self.failures.reset()

    def _note_failure(self, index: int, error: BaseException) -> None:
        self.failures.record(index)
        logger.warning("failed to load sample %d ('%s'): %s", index, self.records[index].path, error)

    def _load_with_replacement(self, index: int, load: Callable[[int, int], Any], errors: tuple[type, ...]) -> Any:
        """Try ``load(index, attempt)``; on a load error try random other samples, ``max_retries`` times."""
        epoch = self.epoch
        candidate = index
        tried: list[str] = []
        for attempt in range(self.max_retries + 1):
            try:
                return load(candidate, attempt)
            except errors as error:
                self._note_failure(candidate, error)
                tried.append(self.records[candidate].path)
            # Replacement drawn from the sample's own stream: the same across worker counts and runs.
            candidate = int(sample_rng(self.seed, epoch, index, attempt + 1).integers(len(self.records)))
        raise RuntimeError(f"{len(tried)} consecutive samples failed to load (max_retries={self.max_retries}): {tried}")


_LOAD_ERRORS: tuple[type[BaseException], ...] = (VideoReadError, VideoTooShortError)


class VideoDataset(_RobustDataset):
    """Clips (training) or all test views (testing) of a list of videos.

    Args:
        records: the videos (:class:`~hiera_video.data.annotations.VideoRecord`), e.g. from the ``from_*``
            constructors.
        train: training (random clips, replacement of broken videos) or testing (all views, no replacement).
        clip_sampler: default ``RandomClipSampler()`` (16×4 at 30 fps, one clip) for training,
            ``UniformClipSampler(num_clips=5)`` for testing.
        transform: applied to each clip's uint8 ``[T, H, W, C]`` frames. ``"default"``:
            ``VideoTrainTransform()`` / ``VideoEvalTransform(num_crops=3)``; ``None``: clips are returned as
            uint8 ``[T, H, W, C]`` (stacked to ``[K, T, H, W, C]`` / ``[V, T, H, W, C]``).
        backend, short_side: passed to :func:`~hiera_video.data.video_reader.open_video`.
        on_corrupt: damaged data the decoder detects. ``"raise"`` (default): the video fails like an
            unreadable one (training: replaced and counted; testing: excluded and counted). ``"count"``: the
            decoder's concealed frames are used, and the video is counted in ``dataset.concealed`` (logged by
            ``log_failures``).
        seed: base seed of all per-sample randomness.
        max_retries: replacements tried for a broken training video before giving up.
        classes: class names (label order), for reference.
        device: ``"cuda"``: torchcodec decodes on the GPU where it can (frames, and so the transformed clips,
            are then GPU tensors: use such a dataset with ``num_workers=0``, CUDA does not survive ``fork``);
            other backends, or no usable GPU, decode on the CPU.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        train: bool = True,
        clip_sampler: ClipSampler | None = None,
        transform: Transform | str | None = "default",
        backend: str = "auto",
        short_side: int | None = None,
        seed: int = 0,
        max_retries: int = 10,
        classes: Sequence[str] | None = None,
        failure_capacity: int = 256,
        on_corrupt: str = "raise",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(seed, max_retries, failure_capacity)
        self.records = list(records)
        if not self.records:
            raise ValueError("VideoDataset needs at least one video")
        if on_corrupt not in ("raise", "count"):
            raise ValueError(f"on_corrupt must be 'raise' or 'count', got {on_corrupt!r}")
        self.on_corrupt = on_corrupt
        self.concealed = FailureCounter(failure_capacity)  # videos read with concealed damage ("count")
        self.train = train
        self.clip_sampler = clip_sampler or (RandomClipSampler() if train else UniformClipSampler(num_clips=5))
        if transform == "default":
            transform = VideoTrainTransform() if train else VideoEvalTransform(num_crops=3)
        elif isinstance(transform, str):
            raise ValueError(f"transform must be a callable, None or 'default', got {transform!r}")
        self.transform = transform
        self.backend = backend
        self.short_side = short_side
        self.device = device
        self.classes = list(classes) if classes is not None else None

    # -- constructors for the supported annotation formats ------------------------------------------------
    @classmethod
    def from_list_file(
        cls, list_file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> VideoDataset:
        """From a ``path label`` list file (paths relative to ``root``, default the list file's folder)."""
        return cls(read_list_file(list_file, root), **kwargs)

    @classmethod
    def from_folder(
        cls, root: str | os.PathLike[str], extensions: Sequence[str] = VIDEO_EXTENSIONS, **kwargs: Any
    ) -> VideoDataset:
        """From a class-per-folder tree ``root/<class>/<video>`` (labels from sorted class names)."""
        records, classes = scan_class_folders(root, extensions, kwargs.pop("classes", None))
        return cls(records, classes=classes, **kwargs)

    @classmethod
    def from_kinetics_csv(
        cls,
        csv_path: str | os.PathLike[str],
        root: str | os.PathLike[str],
        classes: Sequence[str] | str | os.PathLike[str] | None = None,
        layout: str = "auto",
        missing: str = "skip",
        **kwargs: Any,
    ) -> VideoDataset:
        """From an official Kinetics CSV (see :func:`~hiera_video.data.annotations.read_kinetics_csv`)."""
        records, class_names = read_kinetics_csv(csv_path, root, classes, layout=layout, missing=missing)
        return cls(records, classes=class_names, **kwargs)

    @classmethod
    def from_ssv2(
        cls,
        annotation_json: str | os.PathLike[str],
        labels_json: str | os.PathLike[str],
        root: str | os.PathLike[str],
        **kwargs: Any,
    ) -> VideoDataset:
        """From Something-Something v2's JSON files.

        The default training transform has **no horizontal flip** (SSv2 labels such as "moving something
        from left to right" change under a flip). A custom transform with a flip logs a warning.
        """
        records, class_names = read_ssv2(annotation_json, labels_json, root)
        train = kwargs.get("train", True)
        transform = kwargs.pop("transform", "default")
        if transform == "default":
            transform = VideoTrainTransform(hflip=0.0) if train else VideoEvalTransform(num_crops=3)
        elif getattr(transform, "hflip", None) is not None:
            logger.warning("SSv2 with a horizontally flipping transform: flips change SSv2 labels")
        return cls(records, classes=class_names, transform=transform, **kwargs)

    # -- loading ------------------------------------------------------------------------------------------
    def _open_reader(self, index: int) -> VideoReader:
        """The reader of video ``index`` (the tar-shard dataset overrides this to read from its shards)."""
        record = self.records[index]
        return open_video(record.path, backend=self.backend, short_side=self.short_side, on_corrupt=self.on_corrupt,
                          device=self.device)

    def _read_clips(self, index: int, attempt: int) -> tuple[list[torch.Tensor], int]:
        """Decode all clips of one video in one read → K uint8 ``[T, H, W, C]`` clips (views into the decoded
        union of their frames where possible) and K."""
        record = self.records[index]
        rng = sample_rng(self.seed, self.epoch, index, attempt)
        with self._open_reader(index) as reader:
            clip_indices = self.clip_sampler(len(reader), reader.fps, rng)  # [K, T]
            clips = reader.get_clips(clip_indices)
            if reader.corrupt_frames:
                self.concealed.record(index)
                logger.warning("'%s': concealed damage at frames %s used", record.path, reader.corrupt_frames[:8])
        return clips, len(clips)

    def _transform_clips(self, clips: list[torch.Tensor], index: int, attempt: int) -> torch.Tensor:
        """K uint8 clips ``[T, H, W, C]`` → the transform's views ``[V, ...]`` (V = K, or K·crops at test time)."""
        if self.transform is None:
            return torch.stack(clips)
        with seeded_torch(sample_seed(self.seed, self.epoch, index, attempt) ^ 0x5EED):
            if isinstance(self.transform, (VideoTrainTransform, VideoEvalTransform)):
                return self.transform(clips)  # all clips into one output buffer, no stacking copy
            outputs = [self.transform(clip) for clip in clips]
        if len(outputs) == 1:  # no stack: avoids copying the float clip
            return outputs[0] if outputs[0].ndim == 5 else outputs[0].unsqueeze(0)
        if outputs[0].ndim == 5:  # eval transform with spatial crops: [S, C, T, H, W] per clip
            return torch.cat(outputs)
        return torch.stack(outputs)

    def _load_train(self, index: int, attempt: int) -> tuple[torch.Tensor, int, int]:
        clips, num_clips = self._read_clips(index, attempt)
        video = self._transform_clips(clips, index, attempt)
        if num_clips == 1:
            video = video[0]
        return video, self.records[index].label, index

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"sample index {index} out of range for a dataset of {len(self.records)}")
        keep_freed_memory()  # once per process: no page faults on the per-sample buffers (allocator.py)
        if self.train:
            return self._load_with_replacement(index, self._load_train, _LOAD_ERRORS)
        record = self.records[index]
        try:
            clips, _ = self._read_clips(index, 0)
        except _LOAD_ERRORS as error:
            # Test time: never replaced (that would bias the metric); reported and excluded instead.
            self._note_failure(index, error)
            return torch.empty(0), record.label, index, False
        return self._transform_clips(clips, index, 0), record.label, index, True


class ImageFolderDataset(_RobustDataset):
    """Class-per-folder images (``root/<class>/<image>``, the ImageNet layout) for the 2D configs.

    The same sample format as :class:`VideoDataset`, with one view:

    * training: ``dataset[i] → (image float [C, H, W], label, index)``; an unreadable image is logged,
      counted and replaced like a broken training video;
    * testing: ``dataset[i] → (views float [1, C, H, W], label, index, valid)``; an unreadable image gives
      ``valid=False`` and empty views (never replaced, never raised), which :func:`collate_eval` drops and
      reports.

    ``transform="default"`` uses ``ImageTrainTransform()`` / ``ImageEvalTransform()``; ``None`` returns
    uint8 ``[C, H, W]``. ``allow_missing_classes``: a class of ``classes`` without a folder has no images
    (see :func:`~hiera_video.data.annotations.scan_class_folders`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | str | None = "default",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        classes: Sequence[str] | str | os.PathLike[str] | None = None,
        seed: int = 0,
        max_retries: int = 10,
        failure_capacity: int = 256,
        allow_missing_classes: bool = False,
    ) -> None:
        super().__init__(seed, max_retries, failure_capacity)
        self.records, self.classes = scan_class_folders(root, extensions, classes, allow_missing_classes)
        if not self.records:
            raise ValueError(f"no images with extensions {tuple(extensions)} under '{root}'")
        self.train = train
        if transform == "default":
            transform = ImageTrainTransform() if train else ImageEvalTransform()
        elif isinstance(transform, str):
            raise ValueError(f"transform must be a callable, None or 'default', got {transform!r}")
        self.transform = transform

    def _load(self, index: int, attempt: int) -> tuple[torch.Tensor, int, int]:
        record = self.records[index]
        try:
            # Pillow (torchvision.io's image decoders are deprecated); uint8 [C, H, W] RGB.
            with Image.open(record.path) as handle:
                image = pil_to_tensor(handle.convert("RGB"))
        except (OSError, ValueError) as error:  # includes PIL.UnidentifiedImageError and truncated files
            raise VideoReadError(record.path, f"cannot decode image ({error})") from error
        if self.transform is not None:
            with seeded_torch(sample_seed(self.seed, self.epoch, index, attempt) ^ 0x5EED):
                image = self.transform(image)
        return image, record.label, index

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"sample index {index} out of range for a dataset of {len(self.records)}")
        keep_freed_memory()
        if self.train:
            return self._load_with_replacement(index, self._load, (VideoReadError,))
        try:
            image, label, _ = self._load(index, 0)
        except VideoReadError as error:
            self._note_failure(index, error)  # as a test video: reported and excluded, never replaced
            return torch.empty(0), self.records[index].label, index, False
        return image.unsqueeze(0), label, index, True


class EvalBatch(NamedTuple):
    """A test batch without its unreadable videos / images.

    ``views`` float ``[B, V, C, T, H, W]`` (images ``[B, V, C, H, W]``), ``labels`` int64 ``[B]``,
    ``indices`` int64 ``[B]`` of the valid samples, and ``failed`` the dataset indices dropped from this batch.
    """

    views: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    failed: list[int]


def collate_eval(batch: Sequence[tuple[torch.Tensor, int, int, bool]]) -> EvalBatch:
    """Collate test samples of :class:`VideoDataset` / :class:`ImageFolderDataset` (``train=False``), dropping
    invalid ones (reported in ``failed``)."""
    valid = [sample for sample in batch if sample[3]]
    failed = [int(sample[2]) for sample in batch if not sample[3]]
    if not valid:
        return EvalBatch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), failed)
    return EvalBatch(
        torch.stack([sample[0] for sample in valid]),
        torch.tensor([sample[1] for sample in valid], dtype=torch.long),
        torch.tensor([sample[2] for sample in valid], dtype=torch.long),
        failed,
    )


def collate_repeated(batch: Sequence[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collate repeated-augmentation samples (``video [K, C, T, H, W]``) into ``[B·K, C, T, H, W]`` with labels
    and indices repeated ``K`` times (clips of one video are adjacent)."""
    videos = torch.stack([sample[0] for sample in batch])
    if videos.ndim != 6:
        raise ValueError(f"collate_repeated expects videos [K, C, T, H, W], got {tuple(videos.shape[1:])}")
    repeats = videos.shape[1]
    labels = torch.tensor([sample[1] for sample in batch], dtype=torch.long).repeat_interleave(repeats)
    indices = torch.tensor([sample[2] for sample in batch], dtype=torch.long).repeat_interleave(repeats)
    return videos.flatten(0, 1), labels, indices
