"""Composition: config -> model, datasets and checks. The one place where models meet data.

The model package knows nothing of files and the data package nothing of models; the engines need both, and
build them here from a :class:`~hiera_video.config.Config`:

* :func:`check_config` validates a run *before* anything heavy (model name, architecture vs. job, input
  size vs. patch/mask-unit grid, data root and list files) and raises :class:`ConfigError` naming the key;
* :func:`build_model` creates the registered model with the data's input size and number of classes;
* :func:`build_dataset` / :func:`read_class_names` wrap the data layer's datasets and transforms;
* :func:`prepare_synthetic` generates the demo / test sets into the data root when asked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch.nn as nn

from hiera_video.config import Config, ConfigError

__all__ = [
    "build_dataset",
    "build_model",
    "load_trained",
    "train_collate",
    "check_config",
    "input_size",
    "model_overrides",
    "prepare_synthetic",
    "read_class_names",
]

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
        import difflib

        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
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

    overrides = model_overrides(cfg, num_classes if _arch(cfg.model.name) == "hiera" else None)
    if class_names is not None:
        overrides["extra"] = {"class_names": list(class_names)}
    model = create_model(cfg.model.name, pretrained=cfg.model.pretrained, **overrides)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


# ------------------------------------------------------------------------------------------------ data


def _root(cfg: Config) -> Path:
    if cfg.data.root is None:
        raise ConfigError("data.root is not set: give the dataset folder, e.g. data.root=/data/k400")
    return Path(cfg.data.root)


def _split_source(cfg: Config, split: str) -> Path:
    """The list file (video) or class-per-folder directory (image) of ``split`` (train / val / test)."""
    root = _root(cfg)
    if cfg.data.kind == "video":
        name = {"train": cfg.data.train_list, "val": cfg.data.val_list, "test": cfg.data.test_list}[split]
        if name is None:
            raise ConfigError(f"data.{split}_list is not set")
        return root / name
    name = {"train": cfg.data.train_split, "val": cfg.data.val_split, "test": cfg.data.val_split}[split]
    return root / name


def check_data(cfg: Config, splits: tuple[str, ...]) -> None:
    """The data root and the splits' list files / folders exist (synthetic data is generated later)."""
    if cfg.data.synthetic is not None:
        return
    root = _root(cfg)
    if not root.is_dir():
        raise ConfigError(f"data.root: dataset folder {str(root)!r} does not exist")
    for split in splits:
        source = _split_source(cfg, split)
        key = f"data.{split}_list" if cfg.data.kind == "video" else f"data.{split}_split"
        if cfg.data.kind == "video" and not source.is_file():
            raise ConfigError(f"{key}: list file {str(source)!r} does not exist")
        if cfg.data.kind == "image" and not source.is_dir():
            raise ConfigError(f"{key}: image folder {str(source)!r} does not exist")


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
    if cfg.data.kind == "image" and cfg.data.repeated_aug > 1:
        raise ConfigError("data.repeated_aug > 1 is implemented for videos (K clips per decode); use 1 for images")
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
    """Class names in label order: ``classes.txt`` in the root, else the image folders, else label ids."""
    root = _root(cfg)
    listed = root / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    elif cfg.data.kind == "image":
        names = sorted(p.name for p in _split_source(cfg, "train").iterdir() if p.is_dir())
    else:
        labels = set()
        for line in _split_source(cfg, "train").read_text().splitlines():
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 2:
                labels.add(int(parts[1]))
        names = [str(i) for i in range(max(labels) + 1)] if labels else []
    if cfg.data.num_classes is not None:
        if len(names) > cfg.data.num_classes:
            raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the data has {len(names)} classes")
        names += [str(i) for i in range(len(names), cfg.data.num_classes)]
    if not names:
        raise ConfigError(f"data.root: found no classes in {str(root)!r}")
    return names


def build_dataset(cfg: Config, split: str, train: bool, class_names: list[str] | None = None) -> Any:
    """A data-layer dataset for ``split`` configured from ``cfg.data`` (and ``cfg.eval`` for test views).

    ``train=True``: items ``(clip [C, T, H, W], label, index)`` (``[K, C, T, H, W]`` with repeated
    augmentation K, see :func:`train_collate`); ``train=False``: ``(views [V, C, T, H, W], label, index,
    valid)`` with ``V = eval.num_clips x eval.num_crops``. Images: ``[C, H, W]`` (one view at test time).
    Per-sample randomness is seeded by ``(train.seed, epoch, index)`` inside the data layer.
    """
    from hiera_video.data.datasets import ImageFolderDataset, VideoDataset
    from hiera_video.data.transforms import (
        ImageEvalTransform,
        ImageTrainTransform,
        VideoEvalTransform,
        VideoTrainTransform,
    )

    d = cfg.data
    names = class_names if class_names is not None else read_class_names(cfg)
    source = _split_source(cfg, split)
    mean, std = tuple(d.mean), tuple(d.std)
    if d.kind == "image":
        if train:
            transform: Any = ImageTrainTransform(
                crop_size=d.crop_size, scale=(d.train_scale[0], d.train_scale[1]), hflip=0.5 if d.hflip else 0.0,
                rand_augment_ops=d.randaug_n, rand_augment_magnitude=d.randaug_m, erase_prob=d.erase_prob,
                mean=mean, std=std,
            )
        else:
            transform = ImageEvalTransform(crop_size=d.crop_size, resize_size=d.test_short_side, mean=mean, std=std)
        return ImageFolderDataset(source, train=train, transform=transform, classes=names, seed=cfg.train.seed)

    from hiera_video.data.clip_sampling import RandomClipSampler, UniformClipSampler

    geometry = dict(num_frames=d.num_frames, sampling_rate=d.sampling_rate, target_fps=d.target_fps)
    if train:
        sampler: Any = RandomClipSampler(
            **geometry, num_clips=max(1, d.repeated_aug), same_start=d.repeated_aug_same_start
        )
        transform = VideoTrainTransform(
            crop_size=d.crop_size, crop=d.train_crop, scale=(d.train_scale[0], d.train_scale[1]),
            hflip=0.5 if d.hflip else 0.0, rand_augment_ops=d.randaug_n, rand_augment_magnitude=d.randaug_m,
            erase_prob=d.erase_prob, mean=mean, std=std,
        )
    else:
        sampler = UniformClipSampler(**geometry, num_clips=cfg.eval.num_clips)
        transform = VideoEvalTransform(
            crop_size=d.crop_size, short_side=d.test_short_side, num_crops=cfg.eval.num_crops, mean=mean, std=std
        )
    return VideoDataset.from_list_file(
        source, root=_root(cfg), train=train, clip_sampler=sampler, transform=transform, backend=d.decoder,
        seed=cfg.train.seed, classes=names,
    )


def train_collate(cfg: Config) -> Any:
    """The training collate function: repeated-augmentation clips flattened into the batch when K > 1."""
    if cfg.data.kind == "video" and cfg.data.repeated_aug > 1:
        from hiera_video.data.datasets import collate_repeated

        return collate_repeated
    return None


# ------------------------------------------------------------------------------------------------ trained


def load_trained(
    source: str | Path, device: Any = "cpu", use_ema: bool = True
) -> tuple[nn.Module, Config | None, list[str]]:
    """A trained classifier from a run folder, a training checkpoint (.pt) or a ``save_pretrained`` folder.

    Returns ``(model in eval mode, the run's Config or None, class names)``. A run folder uses its
    ``checkpoints/best.pt`` (else ``last.pt``) and its ``config.yaml``; EMA weights are preferred when the
    checkpoint has them and ``use_ema``.
    """
    from hiera_video.config import config_from_dict, load_config
    from hiera_video.engine.checkpoint import load_checkpoint
    from hiera_video.models import create_model

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"model {str(source)!r} does not exist (a run folder, .pt file or model folder)")
    ckpt_path: Path | None = None
    cfg: Config | None = None
    if source.is_dir():
        for candidate in (source / "checkpoints" / "best.pt", source / "checkpoints" / "last.pt"):
            if candidate.is_file():
                ckpt_path = candidate
                break
        if ckpt_path is None:
            export = source / "model" if (source / "model" / "config.json").is_file() else source
            if not (export / "config.json").is_file():
                raise FileNotFoundError(f"{source}: no checkpoints/best.pt, checkpoints/last.pt or config.json")
            model = create_model(None, pretrained=str(export))
            names = list(model.config.extra.get("class_names") or [])
            cfg_file = source / "config.yaml"
            cfg = load_config(cfg_file) if cfg_file.is_file() else None
            return model.to(device).eval(), cfg, names or [str(i) for i in range(model.config.num_classes)]
        if (source / "config.yaml").is_file():
            cfg = load_config(source / "config.yaml")
    else:
        ckpt_path = source
    saved = load_checkpoint(ckpt_path, map_location="cpu")
    if "model" not in saved or "config" not in saved:
        raise ValueError(f"{ckpt_path} is not a hiera-video training checkpoint (no 'model' / 'config' entries)")
    if cfg is None:
        cfg = config_from_dict(saved["config"])
    names = list(saved.get("class_names") or [])
    state = saved["ema"]["module"] if use_ema and "ema" in saved else saved["model"]
    head = state.get("head.projection.weight")
    num_classes = int(head.shape[0]) if head is not None else None
    import copy

    plain = copy.deepcopy(cfg)
    plain.model.pretrained = None  # the checkpoint holds all weights
    model = build_model(plain, num_classes, names or None)
    model.load_state_dict(state)
    if not names and num_classes:
        names = [str(i) for i in range(num_classes)]
    return model.to(device).eval(), cfg, names
