"""Typed run configuration: one tree of dataclasses, loaded from YAML, overridden from the command line.

A run is described by :class:`Config`, whose sections are :class:`RunConfig` (where outputs go),
:class:`ModelConfig`, :class:`DataConfig`, :class:`AugConfig`, :class:`OptimConfig`, :class:`TrainConfig`,
:class:`MAEConfig`, :class:`EvalConfig` and :class:`ExtractConfig`. Values are resolved in this order, later wins:

1. the dataclass defaults below (for the demo: :func:`demo_config`, so the demo needs no file);
2. a YAML file (``configs/*.yaml``, or any path). A file may start from another with ``base: other.yaml``;
3. command-line overrides ``section.key=value`` (``optim.lr=1e-3``, ``model.overrides.depths=[1,1,2,1]``).
   Values are parsed as YAML scalars/lists and then coerced to the field's declared type.

Unknown keys and mistyped values raise :class:`ConfigError` naming the full dotted key, with close-match
suggestions, before any heavy work starts. The resolved tree is written to ``<run dir>/config.yaml`` by
:func:`save_config` and can be read back with :func:`load_config` to rebuild the same run.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from hiera_video.constants import KINETICS_MEAN, KINETICS_STD
from hiera_video.fileio import atomic_write_text, did_you_mean

__all__ = [
    "AugConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExtractConfig",
    "MAEConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "demo_config",
    "find_config",
    "list_configs",
    "load_config",
    "save_config",
    "update_config",
    "validate",
]


class ConfigError(ValueError):
    """A configuration problem a user can fix: unknown key, wrong type, missing file."""


# --------------------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Where a run writes its outputs: ``<output_dir>/<name>`` holds config, checkpoints, metrics, plots."""

    output_dir: str = "runs"
    name: str = "run"


@dataclass
class ModelConfig:
    """Which registered model to build (``hiera_video.list_models()``) and how.

    ``overrides`` is passed as keyword arguments to ``create_model`` (any field of the model's config,
    e.g. ``embed_dim``, ``depths``); the model validates them. ``num_classes`` and ``input_size`` are taken
    from the data section unless given here.
    """

    name: str = "hiera_base_16x224"
    pretrained: str | None = None
    drop_path_rate: float = 0.1
    head_dropout: float = 0.0
    grad_checkpointing: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyntheticConfig:
    """Generate a labelled synthetic set into ``data.root`` when it is empty (demo and tests, no downloads).

    ``kind`` ``motion``: the label is the direction a textured square moves, wrapping around the frame edges
    from a random start, so every frame has the same distribution in every class (video); ``turns``: which
    way the square moves first and which way after its turn, the order of events (video, harder); see
    :mod:`hiera_video.data.synthetic`. ``shapes``: the label is a shape (images). ``size`` is ``[H, W]``.
    Only an empty folder, or one generated before, receives the set; a folder already holding the list
    files is used as the user's own dataset.
    """

    kind: Literal["motion", "turns", "shapes"] = "motion"
    num_per_class: int = 32
    num_val_per_class: int = 16
    num_frames: int = 8
    size: list[int] = field(default_factory=lambda: [32, 32])
    fps: float = 8.0
    seed: int = 0


@dataclass
class DataConfig:
    """Dataset location, clip sampling and per-GPU batching.

    ``root`` is the dataset folder. Videos are listed in ``train_list`` / ``val_list`` / ``test_list``
    (``path label`` lines, paths relative to ``root``); image sets use ``train_split`` / ``val_split``
    class-per-folder directories under ``root``. ``kind`` picks the video or image pipeline.
    """

    kind: Literal["video", "image"] = "video"
    root: str | None = None
    train_list: str = "train.txt"
    val_list: str = "val.txt"
    test_list: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int | None = None  # None: read from classes.txt / the list files / the folders
    num_frames: int = 16
    sampling_rate: int = 4  # frames between clip frames, counted at target_fps
    target_fps: float | None = 30.0  # None: count sampling_rate in the video's own frames
    crop_size: int = 224
    test_short_side: int | None = None  # None: crop_size (resize short side then centre/3-crop)
    train_crop: Literal["random_resized", "short_side_jitter"] = "random_resized"
    train_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random_resized crop area
    hflip: bool = True
    randaug_n: int = 0  # RandAugment number of ops (0: off)
    randaug_m: int = 9  # RandAugment magnitude
    erase_prob: float = 0.0  # random erasing probability (one box per clip)
    repeated_aug: int = 1  # repeated augmentation: clips drawn per decoded video (batch = batch_size x this)
    # True: the K clips share one start (frames decoded once, augmented K times; DeiT-style, ~1.2x the cost of
    # one clip); False: a random start per clip (MAE-ST's repeated sampling; decoding grows with K).
    repeated_aug_same_start: bool = False
    mean: list[float] = field(default_factory=lambda: list(KINETICS_MEAN))
    std: list[float] = field(default_factory=lambda: list(KINETICS_STD))
    batch_size: int = 8  # videos per process; global batch: batch_size * world_size * accum_steps
    num_workers: int = 4
    decoder: Literal["auto", "pyav", "torchcodec", "decord"] = "auto"
    # Where evaluation and extraction decode: auto = on the model's GPU when torchcodec can decode there
    # (NVDEC), else the CPU; cuda = GPU if possible, else the CPU with a warning. GPU decoding runs in the
    # main process (num_workers is ignored then: CUDA does not survive fork). Training always decodes on the CPU.
    decode_device: Literal["auto", "cpu", "cuda"] = "auto"
    repeat_single_frame: bool = False  # ablation: feed one frame repeated T times (kills motion cues)
    synthetic: SyntheticConfig | None = None
    # -- dataset format and clip sampler (each recipe reads its dataset as published) --------------------
    # list: `path label` files (train_list / val_list / test_list); kinetics_csv: the official Kinetics CSVs
    # (label,youtube_id,time_start,time_end,split) named by train_list / val_list / test_list, videos
    # <youtube_id>_<start:06d>_<end:06d>.mp4 under root/video_dir in per-split, per-class or flat folders;
    # ssv2_json: something-something-v2-{train,validation}.json named by the *_list keys + labels_file,
    # videos <id>.webm (or .mp4) in root/video_dir; class_folders: videos in root/<train_split|val_split>/<class>/;
    # image_folders: images in root/<train_split|val_split>/<class>/ (ImageNet). None: list for video,
    # image_folders for images; tar_shards: WebDataset-style shards (<key>.mp4 + .cls/.json) named by
    # train_shards / val_shards / test_shards (a folder of *.tar, a glob or an fsspec URL; relative to root).
    format: Literal["list", "kinetics_csv", "ssv2_json", "class_folders", "image_folders", "tar_shards"] | None = None
    train_shards: str | None = None  # tar_shards: e.g. "train/shard-*.tar" or "s3://bucket/k400/train/"
    val_shards: str | None = None
    test_shards: str | None = None
    labels_file: str | None = None  # class names: SSv2 labels.json, or a names file / JSON (relative to root)
    video_dir: str = ""  # kinetics_csv / ssv2_json: the folder (relative to root) holding the videos
    test_split: str | None = None  # class_folders / image_folders: the test folder (None: val_split)
    # random: one random clip per video; repeated: repeated_aug (>= 2) random clips per decoded video;
    # segment: TSN-style, one frame from each of num_frames equal segments of the whole video (SSv2).
    train_sampler: Literal["random", "repeated", "segment"] = "random"
    randaug_mstd: float = 0.0  # RandAugment magnitude noise: m ~ N(randaug_m, mstd) per op, clipped to [0, 10]


@dataclass
class AugConfig:
    """Batch-level regularisation for supervised training."""

    mixup: float = 0.0  # MixUp alpha (0: off)
    cutmix: float = 0.0  # CutMix alpha (0: off)
    mixup_prob: float = 1.0  # probability of applying MixUp/CutMix to a batch
    switch_prob: float = 0.5  # probability of CutMix instead of MixUp when both are on
    label_smoothing: float = 0.0


@dataclass
class OptimConfig:
    """AdamW with layer-wise lr decay and a cosine schedule with linear warmup (per step).

    ``lr`` is the peak learning rate for ``lr_batch_size`` samples per optimizer step; when
    ``lr_batch_size`` is set the peak is scaled linearly to the actual global batch (the MAE papers' rule).
    """

    lr: float = 1e-3
    lr_batch_size: int | None = None
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    layer_decay: float = 1.0  # 1.0: off; lr of layer i = lr * decay ** (num_layers - i)
    warmup_epochs: float = 5.0
    clip_grad: float | None = None  # max global grad norm (None: off)
    accum_steps: int = 1


@dataclass
class TrainConfig:
    """Loop length, precision, checkpoints and logging."""

    epochs: int = 100
    max_steps: int | None = None  # stop after this many optimizer steps (debugging / tests)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on a GPU, fp32 on a CPU (CPU results then never depend on which CPU it is); bf16 /
    # fp16 on a CPU run only where native there (else fp32 after one warning, see README "Precision").
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    force_precision: bool = False  # CPU: run bf16 / fp16 even where it is not native (much slower)
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.9999
    log_every_steps: int = 20
    eval_every_epochs: int = 1
    ckpt_every_steps: int = 1000  # 0: only at epoch ends
    keep_last: int = 3
    progress: bool = True
    tensorboard: bool = True  # used when installed


@dataclass
class MAEConfig:
    """Masked-autoencoder pretraining knobs (the model holds the architecture)."""

    mask_ratio: float | None = None  # None: the model default (0.9 video, 0.6 image)
    vis_every_epochs: int = 1  # reconstruction pictures every N epochs (0: off)
    vis_num: int = 2  # samples per picture


@dataclass
class EvalConfig:
    """Multi-view testing: ``num_clips`` temporal clips x ``num_crops`` spatial crops per video."""

    num_clips: int = 1
    num_crops: int = 1
    batch_size: int = 4  # videos per batch (each holds num_clips * num_crops views)
    split: Literal["val", "test"] = "val"
    checkpoint: str | None = None  # run folder or .pt file; None: the current run's best/last
    use_ema: bool = True  # evaluate EMA weights when the checkpoint has them
    # Test views in time: uniform (num_clips evenly spaced clips, SlowFast / MAE-ST multi-view) or segment
    # (num_clips views of one frame per segment; SSv2). auto: segment when data.train_sampler is segment.
    sampler: Literal["auto", "uniform", "segment"] = "auto"


@dataclass
class ExtractConfig:
    """Feature extraction (``hiera-video extract``): the settings only extraction has.

    What extraction shares with the other jobs lives in their sections under the same names: the model in
    ``model.name`` / ``model.pretrained`` / ``model.overrides`` (``model.name`` may also be a run folder, a
    training checkpoint or a ``save_pretrained`` folder); clip length, rate, crop, short side, statistics,
    decoder and workers in ``data.*``; the clips of ``clip_mode: uniform`` in ``eval.num_clips``; device,
    precision (autocast on GPU) and the progress bar in ``train.*``. ``batch_size`` here counts *clips*
    per forward pass, mixed across videos (``eval.batch_size`` counts videos of ``num_clips x num_crops``
    views). Feature-defining settings are stored in ``<output_dir>/extract_config.json``; a re-run into the
    same folder with other values is refused.
    """

    # directory (recursive), list file ("path [label]" lines), Kinetics-style CSV, or tar shards (a .tar, a
    # list of them, a glob, a folder of *.tar or an fsspec URL; ids are the shards' sample keys)
    input: str | list[str] | None = None
    output_dir: str | None = None  # shards, manifest, failures, summary
    root: str | None = None  # base of relative paths in a list / CSV (default: the file's folder)
    id_root: str | None = None  # video ids are paths relative to it (default: root, else the input / its folder)
    extensions: list[str] | None = None  # directory scan; default: the data layer's video + image extensions
    clip_mode: Literal["sliding", "uniform"] = "sliding"  # uniform: eval.num_clips clips like evaluation
    stride: float | None = None  # sliding: source frames between clip starts (default: clips tile time)
    stride_seconds: float | None = None  # sliding: the same in seconds (overrides stride)
    tail: Literal["drop", "pad", "align"] = "drop"  # sliding: frames after the last full clip
    spatial: Literal["center_crop", "full"] = "center_crop"  # full: whole frames, sides to the patch grid
    decode_resize: bool = False  # let the decoder's scaler do the short-side resize (faster, not bitwise)
    outputs: list[str] = field(default_factory=lambda: ["embedding"])  # embedding, logits, probs, stage<k>
    pool_space: bool = False  # stage maps: average over H, W (keeps time for video models)
    dtype: Literal["fp32", "fp16"] = "fp32"  # storage dtype of the features
    batch_size: int = 8  # clips per forward pass (mixed across videos)
    window_frames: int = 64  # most new frames decoded per read of a video (bounds memory per worker)
    shard_size_mb: float = 512.0  # close a shard once it holds this much
    shard_max_videos: int = 1000  # ... or this many videos
    flush_seconds: float = 300.0  # ... or when its first video finished this long ago
    manifest_format: Literal["jsonl", "csv"] = "jsonl"


@dataclass
class Config:
    """The whole run. See the module docstring for how values are resolved."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name


def demo_config() -> Config:
    """The embedded defaults of ``hiera-video demo`` (identical to ``configs/demo_tiny_cpu.yaml``).

    A tiny video Hiera (~1.2M parameters) trained from scratch on a generated set where the label is the
    direction (8 of them) in which a textured square drifts across a noisy background, wrapping around the
    edges: every single frame has the same distribution in every class, only motion tells them apart.
    Also the starting point for a small video set of one's own: ``hiera-video train demo_tiny_cpu
    data.root=/my/videos data.synthetic=null`` (a root that holds list files is used as it is anyway).
    """
    return Config(
        run=RunConfig(output_dir="runs", name="demo"),
        model=ModelConfig(
            name="hiera_base_16x224",
            drop_path_rate=0.0,
            # Spatial size 32 = patch stride 4 x mask unit 8. Two changes from the shipped video models, both
            # for tasks where the order of events is the label (synthetic kind "turns": same motions, other
            # order), measured on it: a temporal patch kernel of 7 frames (3 in the shipped models), so a
            # first-layer token sees the motion over most of the clip, and global attention in every stage
            # (mask-unit attention keeps the first stages within one time step; at 8x8 tokens per frame
            # global attention costs about the same). Top-1 after 20 epochs (chance 25%, motion without
            # its order 50%): kernel 3 + mask units 50%; kernel 7: 72-78%; kernel 7 + global attention:
            # 98%, 94% and 67% in three runs (the order is found in a symmetry-breaking jump whose epoch
            # varies). Direction tasks learn as fast with these settings.
            overrides={"embed_dim": 32, "num_heads": 1, "depths": [1, 1, 2, 1],
                       "patch_kernel": [7, 7, 7], "patch_padding": [3, 3, 3],
                       "mask_unit_attn": [False, False, False, False]},
        ),
        data=DataConfig(
            kind="video",
            root=None,  # the demo generates its data into <run dir>/data
            # 8 frames every 4th at 30 fps: a clip spans ~1 s of any video, whatever its frame rate. Motion
            # that is slow per frame (a person, a full-resolution video shrunk to 32 px) moves several
            # pixels between clip frames; raise sampling_rate when the actions of your videos take longer.
            num_frames=8,
            sampling_rate=4,
            target_fps=30.0,
            crop_size=32,
            train_scale=[0.8, 1.0],
            hflip=False,  # a horizontal flip would swap the "left" and "right" labels
            batch_size=16,
            num_workers=0,
            synthetic=SyntheticConfig(
                kind="motion", num_per_class=32, num_val_per_class=16, num_frames=32, size=[32, 32], fps=30.0
            ),
        ),
        aug=AugConfig(label_smoothing=0.0),
        # 5e-4: 1e-3 learns the direction tasks slower, and at 2e-3 this tiny model settles on a diagonal
        # (left/down vs right/up) and stalls at 50%.
        optim=OptimConfig(lr=5e-4, min_lr=1e-5, weight_decay=0.05, warmup_epochs=1.0, clip_grad=1.0),
        train=TrainConfig(
            epochs=20,  # the direction task is learned in ~3; order-of-events tasks need ~20
            precision="fp32",
            device="cpu",
            log_every_steps=5,
            ckpt_every_steps=0,
            keep_last=1,
        ),
        eval=EvalConfig(num_clips=1, num_crops=1, batch_size=16),
    )


# --------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking
# --------------------------------------------------------------------------------------------------------

_NONE_TYPE = type(None)


def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves the string annotations that `from __future__ import annotations` produces.
    return typing.get_type_hints(cls)


def _suggest(key: str, valid: list[str]) -> str:
    return did_you_mean(key, valid)


def _unknown_key(key: str, near: str, valid: list[str]) -> ConfigError:
    """The error for an unknown key: the key as written, close matches of ``near`` and the valid keys."""
    return ConfigError(f"unknown config key '{key}'{_suggest(near, valid)}; valid keys: {', '.join(valid)}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if origin is dict:
        return "mapping"
    if tp is _NONE_TYPE:
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and _NONE_TYPE in args:
            return None
        errors = []
        for arg in args:
            if arg is _NONE_TYPE:
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        # bool is an int subclass in Python; `epochs: true` is a typo, not 1.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it for floats.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover - a bug in this file


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) dict; missing fields keep their defaults."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise _unknown_key(full, full, valid)
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a nested dict (e.g. a parsed YAML file), checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    return _from_dict(Config, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-python dict of a config (tuples become lists so YAML stays portable)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """Parse an override's right-hand side as YAML (``1e-3``, ``true``, ``[1,2]``, ``null``)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text  # not YAML: keep it as a plain string


def _field_type(cfg: Any, parts: list[str], key: str) -> tuple[Any, Any]:
    """Walk ``parts[:-1]`` from ``cfg``; return (parent object, annotated type of the last part)."""
    obj = cfg
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if isinstance(obj, dict):
            if depth == len(parts) - 1:
                return obj, Any
            obj = obj.setdefault(part, {})
            continue
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"unknown config key '{key}': '{prefix}' is not a section")
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            full = ".".join(parts[: depth + 1])
            raise _unknown_key(key, full, valid)
        tp = _hints(type(obj))[part]
        if depth == len(parts) - 1:
            return obj, tp
        child = getattr(obj, part)
        if child is None:
            # An optional section that is off (e.g. data.synthetic): turning one field on creates it.
            inner = [a for a in typing.get_args(tp) if a is not _NONE_TYPE]
            if inner and dataclasses.is_dataclass(inner[0]):
                child = inner[0]()
                setattr(obj, part, child)
            else:
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"unknown config key '{key}': '{section}' is not a section")
        obj = child
    raise ConfigError(f"empty config key in override '{key}'")  # pragma: no cover


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (types checked)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-3)")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: malformed key {key!r}")
        parent, tp = _field_type(cfg, parts, key)
        # String fields keep the raw text ("001" stays "001"); everything else is parsed as YAML.
        raw: Any = text if tp is str else _parse_value(text)
        if isinstance(parent, dict):
            parent[parts[-1]] = raw
        else:
            setattr(parent, parts[-1], _coerce(raw, tp, key))
    return cfg


def update_config(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with Python values set by dotted key (``{"data.num_frames": 8}``), types checked.

    The programmatic twin of :func:`apply_overrides` (whose values are text): used where settings arrive
    as Python objects (keyword arguments, parsed command-line flags).
    """
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *sections, name = key.split(".")
        node = nested
        for part in sections:
            node = node.setdefault(part, {})
        node[name] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(_deep_merge(config_to_dict(cfg), nested))


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------

_PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def list_configs() -> list[str]:
    """Names of the configs shipped with the package (``hiera_video/configs/*.yaml``)."""
    return sorted(p.stem for p in _PACKAGE_CONFIGS.glob("*.yaml"))


def find_config(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve a config file: an existing path, else a shipped config name (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    shipped = _PACKAGE_CONFIGS / f"{stem}.yaml"
    if shipped.is_file():
        return shipped
    shipped_names = list_configs()
    prefixed = [n for n in shipped_names if n.startswith(stem)]
    hint = _suggest(stem, shipped_names)
    if prefixed:
        hint = f" (did you mean {' or '.join(map(repr, prefixed))}?)"
    raise ConfigError(
        f"config {str(name_or_path)!r} not found (neither a file nor a shipped config){hint}; "
        f"shipped configs: {', '.join(shipped_names)}"
    )


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following ``base:`` (relative to the file, or a shipped name)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} includes itself through 'base:'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = path.parent / str(base)
    base_path = base_path if base_path.is_file() else find_config(str(base))
    return _deep_merge(_read_yaml(base_path, (*seen, path)), data)


def load_config(
    name_or_path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    defaults: Config | None = None,
) -> Config:
    """Defaults, then the YAML file (if any), then overrides. Raises :class:`ConfigError` on any problem."""
    base = defaults if defaults is not None else Config()
    data = config_to_dict(base)
    if name_or_path is not None:
        data = _deep_merge(data, _read_yaml(find_config(name_or_path)))
    cfg = config_from_dict(data)
    return apply_overrides(cfg, list(overrides or []))


def save_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file)."""
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None))


# --------------------------------------------------------------------------------------------------------
# Value checks (types are checked on loading; these are the ranges a job needs)
# --------------------------------------------------------------------------------------------------------


def _check(ok: bool, key: str, value: Any, need: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {need}")


def _finite(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and math.isfinite(value)


def validate(cfg: Config, job: str = "train") -> None:
    """Check every value's range before any work, raising :class:`ConfigError` naming the key.

    ``job`` is ``train``, ``pretrain``, ``eval``, ``predict`` or ``extract``: the training-only sections
    (optimiser, augmentation, loop) are checked for ``train`` / ``pretrain``. Architecture values
    (``model.overrides``) are the model's own to check (``hiera_video.engine.build.check_model``).
    """

    def positive_int(key: str, value: Any, minimum: int = 1) -> None:
        _check(isinstance(value, int) and value >= minimum, key, value, f"must be an integer >= {minimum}")

    def fraction(key: str, value: Any, high_open: bool = False) -> None:
        ok = _finite(value) and 0 <= value and (value < 1 if high_open else value <= 1)
        _check(ok, key, value, f"must be a number in [0, 1{')' if high_open else ']'}")

    d, e = cfg.data, cfg.eval
    positive_int("data.batch_size", d.batch_size)
    positive_int("data.num_workers", d.num_workers, 0)
    positive_int("data.crop_size", d.crop_size)
    positive_int("data.num_frames", d.num_frames)
    positive_int("data.repeated_aug", d.repeated_aug)
    positive_int("data.randaug_n", d.randaug_n, 0)
    _check(_finite(d.randaug_m) and d.randaug_m >= 0, "data.randaug_m", d.randaug_m, "must be >= 0")
    _check(_finite(d.sampling_rate) and d.sampling_rate > 0, "data.sampling_rate", d.sampling_rate, "must be > 0")
    _check(d.target_fps is None or (_finite(d.target_fps) and d.target_fps > 0), "data.target_fps", d.target_fps,
           "must be > 0, or null to count frames as they are")
    _check(d.test_short_side is None or d.test_short_side >= 1, "data.test_short_side", d.test_short_side,
           "must be >= 1, or null for crop_size")
    _check(d.num_classes is None or d.num_classes >= 1, "data.num_classes", d.num_classes,
           "must be >= 1, or null to read the classes from the data")
    scale = d.train_scale
    _check(len(scale) == 2 and all(_finite(v) for v in scale) and 0 < scale[0] <= scale[1] <= 1,
           "data.train_scale", scale, "must be [min, max] with 0 < min <= max <= 1 (fractions of the frame area)")
    fraction("data.erase_prob", d.erase_prob)
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        _check(len(values) == 3 and all(_finite(v) for v in values), key, values, "must be 3 numbers (RGB)")
    _check(all(v > 0 for v in d.std), "data.std", d.std, "must be > 0 (the inputs are divided by it)")
    positive_int("eval.batch_size", e.batch_size)
    positive_int("eval.num_clips", e.num_clips)
    _check(e.num_crops in (1, 3), "eval.num_crops", e.num_crops, "must be 1 (centre) or 3 (left/centre/right)")
    syn = d.synthetic
    if syn is not None:
        positive_int("data.synthetic.num_per_class", syn.num_per_class)
        positive_int("data.synthetic.num_val_per_class", syn.num_val_per_class)
        positive_int("data.synthetic.num_frames", syn.num_frames, 3 if syn.kind == "turns" else 1)
        _check(len(syn.size) == 2 and all(v >= 8 and v % 2 == 0 for v in syn.size), "data.synthetic.size",
               syn.size, "must be [H, W], even numbers >= 8")
        _check(_finite(syn.fps) and syn.fps > 0, "data.synthetic.fps", syn.fps, "must be > 0")
    fraction("model.drop_path_rate", cfg.model.drop_path_rate, high_open=True)
    fraction("model.head_dropout", cfg.model.head_dropout, high_open=True)
    if job not in ("train", "pretrain"):
        return

    o, a, t = cfg.optim, cfg.aug, cfg.train
    _check(_finite(o.lr) and o.lr > 0, "optim.lr", o.lr, "must be a finite number > 0")
    _check(_finite(o.min_lr) and 0 <= o.min_lr <= o.lr, "optim.min_lr", o.min_lr, f"must be in [0, optim.lr={o.lr}]")
    _check(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0")
    _check(len(o.betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in o.betas), "optim.betas", o.betas,
           "must be two numbers in [0, 1)")
    _check(_finite(o.eps) and o.eps > 0, "optim.eps", o.eps, "must be > 0")
    _check(_finite(o.layer_decay) and 0 < o.layer_decay <= 1, "optim.layer_decay", o.layer_decay,
           "must be in (0, 1] (1: off)")
    _check(_finite(o.warmup_epochs) and o.warmup_epochs >= 0, "optim.warmup_epochs", o.warmup_epochs,
           "must be a number >= 0")
    _check(o.clip_grad is None or (_finite(o.clip_grad) and o.clip_grad > 0), "optim.clip_grad", o.clip_grad,
           "must be > 0, or null for no clipping")
    _check(o.lr_batch_size is None or o.lr_batch_size >= 1, "optim.lr_batch_size", o.lr_batch_size,
           "must be >= 1, or null to use optim.lr as it is")
    positive_int("optim.accum_steps", o.accum_steps)
    for key, value in (("aug.mixup", a.mixup), ("aug.cutmix", a.cutmix)):
        _check(_finite(value) and value >= 0, key, value, "must be >= 0 (the Beta distribution's alpha; 0: off)")
    fraction("aug.mixup_prob", a.mixup_prob)
    fraction("aug.switch_prob", a.switch_prob)
    fraction("aug.label_smoothing", a.label_smoothing, high_open=True)
    positive_int("train.epochs", t.epochs)
    _check(t.max_steps is None or t.max_steps >= 1, "train.max_steps", t.max_steps, "must be >= 1, or null")
    fraction("train.ema_decay", t.ema_decay, high_open=True)
    positive_int("train.log_every_steps", t.log_every_steps)
    positive_int("train.eval_every_epochs", t.eval_every_epochs, 0)
    positive_int("train.ckpt_every_steps", t.ckpt_every_steps, 0)
    positive_int("train.keep_last", t.keep_last)
    if job == "pretrain":
        m = cfg.mae
        _check(m.mask_ratio is None or (_finite(m.mask_ratio) and 0 < m.mask_ratio < 1), "mae.mask_ratio",
               m.mask_ratio, "must be in (0, 1), or null for the model's default")
        positive_int("mae.vis_every_epochs", m.vis_every_epochs, 0)
        positive_int("mae.vis_num", m.vis_num, 0)
