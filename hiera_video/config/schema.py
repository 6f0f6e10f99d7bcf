"""The configuration tree: one dataclass per section, their defaults, and the demo's embedded config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from hiera_video.constants import KINETICS_MEAN, KINETICS_STD

Decoder = Literal["auto", "pyav", "torchcodec", "decord"]  # data.decoder (hiera_video.data.video_reader)
DECODERS: tuple[str, ...] = get_args(Decoder)  # its values, for command-line choices


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
    decoder: Decoder = "auto"
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
    # The same run twice (same config, seed, machine) gives the same weights: the CPU fast paths, whose kernels
    # are chosen by timing in each process, are off, and PyTorch's deterministic algorithms on (README).
    deterministic: bool = False
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
            deterministic=True,  # the same accuracy every run; the fast paths gain nothing at this size
            device="cpu",
            log_every_steps=5,
            ckpt_every_steps=0,
            keep_last=1,
        ),
        eval=EvalConfig(num_clips=1, num_crops=1, batch_size=16),
    )


