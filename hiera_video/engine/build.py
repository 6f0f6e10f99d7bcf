"""Composition: config -> model, datasets and checks. The one place where models meet data.

The model package knows nothing of files and the data package nothing of models; the engines need both, and
build them here from a :class:`~hiera_video.config.Config`:

* :func:`check_config` validates a run *before* anything heavy (model name, architecture vs. job, input
  size vs. patch/mask-unit grid, data root and list files) and raises :class:`ConfigError` naming the key;
* :func:`build_model` creates the registered model with the data's input size and number of classes;
* :func:`train_pipeline` is the one builder of training data (clip sampler, augmentation, dataset, collate)
  for train and pretrain, and :func:`eval_dataset` of the multi-view test set; ``data.format`` selects how a
  split is read (``list`` files, official ``kinetics_csv``, ``ssv2_json``, ``class_folders``,
  ``image_folders``, WebDataset-style ``tar_shards`` named by ``data.{train,val,test}_shards``) and
  ``data.train_sampler`` / ``eval.sampler`` which frames make a clip; :func:`decode_device` where
  evaluation and extraction decode (``data.decode_device``);
  :func:`read_class_names` gives the label order;
* :func:`prepare_synthetic` generates the demo / test sets into the data root when asked to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch.nn as nn

from hiera_video.config import Config, ConfigError

__all__ = [
    "TrainPipeline",
    "build_model",
    "check_config",
    "dataset_format",
    "decode_device",
    "eval_dataset",
    "has_split",
    "input_size",
    "loader_workers",
    "model_overrides",
    "prepare_synthetic",
    "read_class_names",
    "train_clip_sampler",
    "train_pipeline",
    "train_transform",
]

logger = logging.getLogger(__name__)

Job = Literal["train", "pretrain", "eval", "predict"]


# ------------------------------------------------------------------------------------------------ model


def input_size(cfg: Config) -> tuple[int, ...]:
    """The model input the data pipeline produces: ``(T, H, W)`` for video, ``(H, W)`` for images."""
    crop = cfg.data.crop_size
    return (cfg.data.num_frames, crop, crop) if cfg.data.kind == "video" else (crop, crop)


def model_overrides(cfg: Config, num_classes: int | None) -> dict[str, Any]:
    """Keyword arguments for ``create_model``: the user's overrides plus what data and recipe decide."""
    out: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.overrides.items()}
    out.setdefault("input_size", input_size(cfg))
    out.setdefault("drop_path_rate", cfg.model.drop_path_rate)
    out.setdefault("head_dropout", cfg.model.head_dropout)
    if num_classes is not None:
        out.setdefault("num_classes", num_classes)
    return out


def _arch(name: str) -> str:
    from hiera_video.models.registry import model_arch

    return model_arch(name)


def check_model(cfg: Config, job: Job) -> None:
    """Model name, architecture for the job, and the input size against the patch / mask-unit grid."""
    from hiera_video.models import get_config, list_models

    name = cfg.model.name
    if name not in list_models():
        from hiera_video.fileio import did_you_mean

        hint = did_you_mean(name, list_models())
        raise ConfigError(f"model.name: unknown model {name!r}{hint}; available: {', '.join(list_models())}")
    arch = _arch(name)
    if job == "pretrain" and arch != "mae_hiera":
        raise ConfigError(f"model.name: pretraining needs an MAE model (mae_*), got {name!r}; try 'mae_{name}'")
    if job in ("train", "eval") and arch == "mae_hiera":
        raise ConfigError(
            f"model.name: {name!r} is an MAE model; supervised {job} needs a classifier "
            f"(e.g. {name.removeprefix('mae_')!r} with model.pretrained=<the MAE checkpoint>)"
        )
    want = 3 if cfg.data.kind == "video" else 2
    if get_config(name).ndim != want:  # before sizing it for the data, which would fail less clearly
        what = "a video" if want == 2 else "an image"
        raise ConfigError(
            f"model.name: {name!r} is {what} model but data.kind is {cfg.data.kind!r}; "
            f"pick a {'*_16x224' if want == 3 else '*_224'} model or change data.kind"
        )
    try:
        get_config(name, **model_overrides(cfg, None))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from err


def build_model(cfg: Config, num_classes: int | None = None, class_names: list[str] | None = None) -> nn.Module:
    """Create ``cfg.model.name`` (loading ``cfg.model.pretrained`` if set) sized for the data."""
    from hiera_video.models import create_model

    overrides = model_overrides(cfg, num_classes if _arch(cfg.model.name) in ("hiera", "hieradet") else None)
    if class_names is not None:
        overrides["extra"] = {"class_names": list(class_names)}
    # the normalisation / eval resize it is trained with travel with the weights (HF / timm exports use them)
    overrides["extra"] = {**overrides.get("extra", {}), "mean": list(cfg.data.mean), "std": list(cfg.data.std),
                          "resize_size": cfg.data.test_short_side or cfg.data.crop_size}
    model = create_model(cfg.model.name, pretrained=cfg.model.pretrained, **overrides)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


# ------------------------------------------------------------------------------------------------ data

#: ``data.format`` values whose splits are annotation files named by ``data.{train,val,test}_list``; the
#: others are folders named by ``data.{train,val,test}_split``.
FILE_FORMATS = ("list", "kinetics_csv", "ssv2_json")
_FILE_KIND = {"list": "list file", "kinetics_csv": "Kinetics CSV", "ssv2_json": "SSv2 annotation JSON"}


def dataset_format(cfg: Config) -> str:
    """``data.format``, or its default: ``list`` for videos, ``image_folders`` for images."""
    return cfg.data.format or ("list" if cfg.data.kind == "video" else "image_folders")


def _root(cfg: Config) -> Path:
    if cfg.data.root is None:
        raise ConfigError("data.root is not set: give the dataset folder, e.g. data.root=/data/k400")
    return Path(cfg.data.root)


def _split_key(cfg: Config, split: str) -> str:
    if dataset_format(cfg) == "tar_shards":
        return f"data.{split}_shards"
    return f"data.{split}_list" if dataset_format(cfg) in FILE_FORMATS else f"data.{split}_split"


def _shard_location(cfg: Config, split: str) -> str:
    """``data.<split>_shards`` (tar_shards): an fsspec URL or absolute path as given, else below ``data.root``."""
    from hiera_video.data.video_reader import is_url

    value = {"train": cfg.data.train_shards, "val": cfg.data.val_shards, "test": cfg.data.test_shards}[split]
    if value is None:
        raise ConfigError(f"data.{split}_shards is not set: with data.format=tar_shards give the {split} shards "
                          f"(a folder of *.tar, a glob or a URL), e.g. data.{split}_shards={split}/shard-*.tar")
    if is_url(value) or Path(value).is_absolute():
        return value
    return str(_root(cfg) / value)


def _list_split_shards(cfg: Config, split: str) -> list[str]:
    from hiera_video.data.shards import list_shards

    location = _shard_location(cfg, split)
    try:
        return list_shards(location)
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(f"data.{split}_shards: no tar shards at {location!r} ({err})") from err


def _split_source(cfg: Config, split: str) -> Path:
    """The annotation file (list, Kinetics CSV, SSv2 JSON) or folder (class / image folders) of ``split``."""
    d, root = cfg.data, _root(cfg)
    if dataset_format(cfg) in FILE_FORMATS:
        name = {"train": d.train_list, "val": d.val_list, "test": d.test_list}[split]
        if name is None:
            raise ConfigError(f"data.{split}_list is not set")
        return root / name
    folder = {"train": d.train_split, "val": d.val_split, "test": d.test_split or d.val_split}[split]
    return root / folder


def _video_dir(cfg: Config) -> Path:
    return _root(cfg) / cfg.data.video_dir


def has_split(cfg: Config, split: str) -> bool:
    """Whether the dataset has ``split`` on disk (e.g. an optional validation set for pretraining)."""
    try:
        if dataset_format(cfg) == "tar_shards":
            return bool(_list_split_shards(cfg, split))
        source = _split_source(cfg, split)
    except ConfigError:
        return False
    return source.is_file() if dataset_format(cfg) in FILE_FORMATS else source.is_dir()


def check_data_config(cfg: Config) -> None:
    """Format, kind and clip-sampler settings agree (no file access)."""
    d, fmt = cfg.data, dataset_format(cfg)
    if d.kind == "image" and fmt != "image_folders":
        raise ConfigError(f"data.format: {fmt!r} holds videos but data.kind is 'image'; use image_folders")
    if d.kind == "video" and fmt == "image_folders":
        raise ConfigError("data.format: image_folders holds images but data.kind is 'video'; set data.kind=image")
    if d.kind == "image":
        if d.train_sampler != "random" or d.repeated_aug > 1:
            raise ConfigError("data.train_sampler / data.repeated_aug choose clips of videos; for images use "
                              "data.train_sampler=random and data.repeated_aug=1")
        if cfg.eval.sampler == "segment":
            raise ConfigError("eval.sampler=segment chooses frames of videos; use auto or uniform for images")
    if d.train_sampler == "random" and d.repeated_aug > 1:
        raise ConfigError(f"data.repeated_aug={d.repeated_aug} draws several clips per video: set "
                          "data.train_sampler=repeated (or segment), or data.repeated_aug=1")
    if d.train_sampler == "repeated" and d.repeated_aug < 2:
        raise ConfigError(f"data.train_sampler=repeated needs data.repeated_aug >= 2 clips per video, got "
                          f"{d.repeated_aug}; use data.train_sampler=random for one clip")
    if not 0.0 <= d.randaug_mstd:
        raise ConfigError(f"data.randaug_mstd must be >= 0 (0: fixed magnitude), got {d.randaug_mstd}")
    if fmt == "ssv2_json" and d.labels_file is None:
        raise ConfigError("data.labels_file: the ssv2_json format needs the class file, e.g. "
                          "data.labels_file=labels/something-something-v2-labels.json")


def check_data(cfg: Config, splits: tuple[str, ...]) -> None:
    """The data root and the splits' annotation files / folders exist (synthetic data is generated later)."""
    check_data_config(cfg)
    if cfg.data.synthetic is not None:
        return
    if dataset_format(cfg) == "tar_shards":  # data.root is optional: shards may be absolute paths or URLs
        for split in splits:
            _list_split_shards(cfg, split)
        labels = Path(cfg.data.root or ".") / str(cfg.data.labels_file)
        if cfg.data.labels_file is not None and not labels.is_file():
            raise ConfigError(f"data.labels_file: {str(labels)!r} does not exist")
        return
    root = _root(cfg)
    if not root.is_dir():
        raise ConfigError(f"data.root: dataset folder {str(root)!r} does not exist")
    fmt = dataset_format(cfg)
    for split in splits:
        source = _split_source(cfg, split)
        if fmt in FILE_FORMATS and not source.is_file():
            raise ConfigError(f"{_split_key(cfg, split)}: {_FILE_KIND[fmt]} {str(source)!r} does not exist")
        if fmt not in FILE_FORMATS and not source.is_dir():
            what = "image folder" if fmt == "image_folders" else "video folder"
            raise ConfigError(f"{_split_key(cfg, split)}: {what} {str(source)!r} does not exist")
    if fmt in ("kinetics_csv", "ssv2_json") and not _video_dir(cfg).is_dir():
        raise ConfigError(f"data.video_dir: video folder {str(_video_dir(cfg))!r} does not exist")
    if cfg.data.labels_file is not None and not (root / cfg.data.labels_file).is_file():
        raise ConfigError(f"data.labels_file: {str(root / cfg.data.labels_file)!r} does not exist")


def check_config(cfg: Config, job: Job, splits: tuple[str, ...] = ()) -> None:
    """Everything that can be checked cheaply, before datasets are read or models built."""
    check_model(cfg, job)
    if cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be at least 1, got {cfg.data.batch_size}")
    if cfg.optim.accum_steps < 1:
        raise ConfigError(f"optim.accum_steps must be at least 1, got {cfg.optim.accum_steps}")
    if cfg.train.epochs < 1 and job in ("train", "pretrain"):
        raise ConfigError(f"train.epochs must be at least 1, got {cfg.train.epochs}")
    if cfg.data.kind == "video" and cfg.data.num_frames < 1:
        raise ConfigError(f"data.num_frames must be at least 1, got {cfg.data.num_frames}")
    if cfg.eval.num_crops not in (1, 3):
        raise ConfigError(f"eval.num_crops must be 1 or 3, got {cfg.eval.num_crops}")
    if cfg.model.pretrained is not None and not _looks_remote(cfg.model.pretrained):
        if not Path(cfg.model.pretrained).exists():
            raise ConfigError(f"model.pretrained: {cfg.model.pretrained!r} does not exist")
    check_data(cfg, splits)


def _looks_remote(source: str) -> bool:
    # A hub repo id "org/name" that is not a local path.
    return source.count("/") == 1 and not Path(source).exists() and not source.startswith((".", "/"))


def prepare_synthetic(cfg: Config, default_root: Path) -> Config:
    """Generate ``cfg.data.synthetic`` into ``data.root`` (default: ``default_root``) unless already there.

    Returns the config with ``data.root`` set. Only an empty folder or one generated before (its marker file
    records the settings) receives the set; a folder that already holds the configured list files is a
    dataset of the user's own and is used as it is; anything else is refused with a :class:`ConfigError`
    (see :func:`hiera_video.data.synthetic.prepare_synthetic_root`).
    """
    import copy

    from hiera_video.data.synthetic import SyntheticRootError, prepare_synthetic_root

    syn = cfg.data.synthetic
    if syn is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    root = Path(cfg.data.root) if cfg.data.root is not None else default_root
    cfg.data.root = str(root)
    lists = [cfg.data.train_list, cfg.data.val_list] if cfg.data.kind == "video" else []
    try:
        outcome = prepare_synthetic_root(root, {**syn.__dict__, "size": list(syn.size)}, dataset_files=lists)
    except SyntheticRootError as err:
        raise ConfigError(str(err)) from err
    if outcome == "existing":
        from hiera_video.engine.logging import get_logger

        get_logger().info("data.root %s holds a dataset of your own (%s): using it; nothing generated",
                          root, ", ".join(lists))
        cfg.data.synthetic = None
    return cfg


def read_class_names(cfg: Config) -> list[str]:
    """Class names in label order.

    ``data.labels_file`` when set (SSv2's ``labels.json``, a names file, SlowFast's ``classids.json``), else
    ``classes.txt`` in the root, else by format: the sorted class folders of the training split (class /
    image folders), the sorted labels of the training CSV (Kinetics: the SlowFast / MAE-ST / Hiera
    convention), label ids up to the largest in the training list (list files).
    """
    from hiera_video.data.annotations import read_class_names as read_names_file

    fmt = dataset_format(cfg)
    if fmt == "tar_shards" and cfg.data.root is None:
        root = Path(".")
        listed = None  # no root: names come from data.labels_file (relative to the working folder) or labels
    else:
        root = _root(cfg)
        listed = root / "classes.txt"
    if cfg.data.labels_file is not None:
        names = read_names_file(root / cfg.data.labels_file)
    elif listed is not None and listed.is_file():
        names = read_names_file(listed)
    elif fmt in ("image_folders", "class_folders"):
        names = sorted(p.name for p in _split_source(cfg, "train").iterdir() if p.is_dir())
    elif fmt == "kinetics_csv":
        import csv

        with open(_split_source(cfg, "train"), newline="", encoding="utf-8") as handle:
            names = sorted({row["label"] for row in csv.DictReader(handle) if row.get("label")})
    elif fmt == "ssv2_json":  # pragma: no cover - check_data_config requires data.labels_file
        raise ConfigError("data.labels_file is required for ssv2_json")
    elif fmt == "tar_shards":  # the labels of the training shards' .cls / .json members: ids 0..max
        from hiera_video.data.shards import index_shard

        labels = {label for shard in _list_split_shards(cfg, "train") for _, label, _ in index_shard(shard)
                  if label >= 0}
        names = [str(i) for i in range(max(labels) + 1)] if labels else []
    else:
        labels = {record.label for record in _records(cfg, "train", None) if record.label >= 0}
        names = [str(i) for i in range(max(labels) + 1)] if labels else []
    if cfg.data.num_classes is not None:
        if len(names) > cfg.data.num_classes:
            raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the data has {len(names)} classes")
        names += [str(i) for i in range(len(names), cfg.data.num_classes)]
    if not names:
        raise ConfigError(f"data.root: found no classes in {str(root)!r}")
    return names


def _records(cfg: Config, split: str, class_names: list[str] | None) -> list[Any]:
    """The videos of ``split`` as :class:`~hiera_video.data.annotations.VideoRecord` s, read in its format."""
    from hiera_video.data import annotations

    source, fmt = _split_source(cfg, split), dataset_format(cfg)
    try:
        if fmt == "list":
            return annotations.read_list_file(source, _root(cfg))
        if fmt == "kinetics_csv":
            return annotations.read_kinetics_csv(source, _video_dir(cfg), class_names)[0]
        if fmt == "ssv2_json":
            return annotations.read_ssv2(source, _root(cfg) / str(cfg.data.labels_file), _video_dir(cfg))[0]
        return annotations.scan_class_folders(
            source, annotations.VIDEO_EXTENSIONS, class_names, allow_missing=True
        )[0]
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{_split_key(cfg, split)}: cannot read the {fmt} split {str(source)!r}: {err}") from err


def _geometry(cfg: Config) -> dict[str, Any]:
    d = cfg.data
    return dict(num_frames=d.num_frames, sampling_rate=d.sampling_rate, target_fps=d.target_fps)


def train_clip_sampler(cfg: Config) -> Any:
    """``data.train_sampler``: which frames of a video make up its training clip(s).

    ``random``: one uniformly random 16x4-style clip; ``repeated``: ``data.repeated_aug`` clips per decoded
    video (MAE-ST's repeated sampling; one shared start with ``repeated_aug_same_start``); ``segment``: one
    random frame from each of ``num_frames`` equal segments of the whole video (TSN; the SSv2 recipes),
    ``repeated_aug`` such draws per video.
    """
    from hiera_video.data.clip_sampling import RandomClipSampler, SegmentClipSampler

    d = cfg.data
    if d.train_sampler == "segment":
        return SegmentClipSampler(num_frames=d.num_frames, random=True, num_clips=max(1, d.repeated_aug))
    if d.train_sampler == "repeated":
        return RandomClipSampler(**_geometry(cfg), num_clips=d.repeated_aug, same_start=d.repeated_aug_same_start)
    return RandomClipSampler(**_geometry(cfg), num_clips=1)


def train_transform(cfg: Config) -> Any:
    """The training augmentation of ``cfg.data`` (crop, flip, RandAugment with mstd, erasing, normalisation)."""
    from hiera_video.data.transforms import ImageTrainTransform, VideoTrainTransform

    d = cfg.data
    common = dict(
        crop_size=d.crop_size, scale=(d.train_scale[0], d.train_scale[1]), hflip=0.5 if d.hflip else 0.0,
        rand_augment_ops=d.randaug_n, rand_augment_magnitude=d.randaug_m, rand_augment_mstd=d.randaug_mstd,
        erase_prob=d.erase_prob, mean=tuple(d.mean), std=tuple(d.std),
    )
    if d.kind == "image":
        return ImageTrainTransform(**common)
    if d.hflip and dataset_format(cfg) == "ssv2_json":
        logger.warning("data.hflip=true on SSv2: flips swap labels such as 'left to right'; the recipes use false")
    return VideoTrainTransform(crop=d.train_crop, **common)


@dataclass
class TrainPipeline:
    """What a training job iterates: the dataset with its clip sampler and transform, and the collate.

    ``dataset[i]`` is ``(clip [C, T, H, W], label, index)`` (``[K, C, T, H, W]`` with K clips per video, which
    ``collate_fn`` flattens into the batch); images ``[C, H, W]``. Per-sample randomness is seeded inside the
    data layer by ``(train.seed, epoch, index)``; the loop calls ``dataset.set_epoch``.
    """

    dataset: Any
    collate_fn: Callable[[list[Any]], Any] | None
    clip_sampler: Any  # None for images
    transform: Any
    class_names: list[str]


def train_pipeline(cfg: Config, class_names: list[str] | None = None) -> TrainPipeline:
    """The one builder of training data (train and pretrain): sampler + transform + dataset + collate."""
    from hiera_video.data.datasets import ImageFolderDataset, VideoDataset, collate_repeated

    names = class_names if class_names is not None else read_class_names(cfg)
    transform = train_transform(cfg)
    if cfg.data.kind == "image":
        dataset = ImageFolderDataset(_split_source(cfg, "train"), train=True, transform=transform, classes=names,
                                     seed=cfg.train.seed, allow_missing_classes=True)
        return TrainPipeline(dataset, None, None, transform, names)
    sampler = train_clip_sampler(cfg)
    common = dict(train=True, clip_sampler=sampler, transform=transform, backend=cfg.data.decoder,
                  seed=cfg.train.seed, classes=names)
    if dataset_format(cfg) == "tar_shards":
        dataset: Any = _shard_dataset(cfg, "train", common)
    else:
        dataset = VideoDataset(_records(cfg, "train", names), **common)
    collate = collate_repeated if sampler.num_clips > 1 else None
    return TrainPipeline(dataset, collate, sampler, transform, names)


def _shard_dataset(cfg: Config, split: str, kwargs: dict[str, Any]) -> Any:
    from hiera_video.data.shards import TarShardVideoDataset

    shards = _list_split_shards(cfg, split)
    try:
        return TarShardVideoDataset(shards, require_labels=True, **kwargs)
    except (ValueError, OSError) as err:
        raise ConfigError(f"data.{split}_shards: {err}") from err


def eval_dataset(cfg: Config, split: str, class_names: list[str] | None = None,
                 device: Any = "cpu") -> Any:
    """The test-view dataset of ``split``: items ``(views [V, C, T, H, W], label, index, valid)`` (images
    ``[1, C, H, W]``), ``V = eval.num_clips x eval.num_crops``; collate with ``data.datasets.collate_eval``.

    ``device``: where videos are decoded (:func:`decode_device`); with ``"cuda"`` the views are GPU tensors
    and the dataset must be read in the main process (``num_workers=0``)."""
    from hiera_video.data.datasets import ImageFolderDataset, VideoDataset
    from hiera_video.engine.pipeline import eval_pipeline

    names = class_names if class_names is not None else read_class_names(cfg)
    pipe = eval_pipeline(cfg)
    sampler, transform = pipe.clip_sampler, pipe.transform
    if cfg.data.kind == "image":
        return ImageFolderDataset(_split_source(cfg, split), train=False, transform=transform, classes=names,
                                  seed=cfg.train.seed, allow_missing_classes=True)
    common = dict(train=False, clip_sampler=sampler, transform=transform, backend=cfg.data.decoder,
                  seed=cfg.train.seed, classes=names, device=device)
    if dataset_format(cfg) == "tar_shards":
        return _shard_dataset(cfg, split, common)
    return VideoDataset(_records(cfg, split, names), **common)


def decode_device(cfg: Config, model_device: Any) -> Any:
    """Where evaluation and extraction decode videos: ``data.decode_device`` resolved (a ``torch.device``).

    ``cpu``: the CPU. ``auto``: the model's device when it is a GPU and torchcodec can decode there (NVDEC;
    ``data.decoder`` auto or torchcodec, the only backend with a GPU decoder), else the CPU. ``cuda``: the
    model's GPU (``cuda`` if the model is on the CPU) when torchcodec can, else the CPU with a warning.
    Decoding on a GPU happens in the main process: callers use ``num_workers=0`` then (see
    :func:`loader_workers`), because CUDA cannot be used in forked DataLoader workers and spawned workers
    would each hold a CUDA context and send GPU tensors through inter-process queues.
    """
    import torch

    from hiera_video.data.reader_torchcodec import cuda_decoding_available

    setting, model_device = cfg.data.decode_device, torch.device(model_device)
    cpu = torch.device("cpu")
    if setting == "cpu":
        return cpu
    if setting == "auto" and model_device.type != "cuda":
        return cpu
    target = model_device if model_device.type == "cuda" else torch.device("cuda")
    if cfg.data.decoder not in ("auto", "torchcodec"):
        if setting == "cuda":
            logger.warning("data.decode_device=cuda but data.decoder=%s decodes only on the CPU (only torchcodec "
                           "decodes on the GPU); decoding on the CPU", cfg.data.decoder)
        return cpu
    if not cuda_decoding_available():
        if setting == "cuda":
            logger.warning("data.decode_device=cuda but %s; decoding on the CPU",
                           "CUDA is not available" if not torch.cuda.is_available()
                           else "torchcodec (with its FFmpeg libraries) is not installed")
        return cpu
    return target


def loader_workers(cfg: Config, device: Any) -> int:
    """DataLoader workers for data decoded on ``device``: ``data.num_workers`` on the CPU, 0 on a GPU."""
    import torch

    if torch.device(device).type == "cuda":
        if cfg.data.num_workers > 0:
            logger.info("decoding on %s in the main process (data.num_workers=%d ignored: CUDA does not survive "
                        "fork); set data.decode_device=cpu to decode in workers", device, cfg.data.num_workers)
        return 0
    return cfg.data.num_workers
