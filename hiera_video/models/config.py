"""The one configuration object shared by every Hiera variant (image, video, classifier, MAE)."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from hiera_video.fileio import did_you_mean

# Names used by other code bases for the same field; accepted as overrides and in loaded configs.
FIELD_ALIASES = {
    "stages": "depths",
    "image_size": "input_size",
    "num_channels": "in_chans",
    "masked_unit_size": "mask_unit_size",
    "masked_unit_attention": "mask_unit_attn",
    "query_stride": "q_stride",
    "num_query_pool": "q_pool",
    "embed_dim_multiplier": "dim_mul",
    "patch_size": "patch_kernel",
    # timm's `Hiera` constructor names (timm/models/hiera.py)
    "img_size": "input_size",
    "init_values": "layer_scale_init",
    "use_expand_proj": "expand_proj",
    "drop_rate": "head_dropout",
}


@dataclass
class HieraConfig:
    """Every hyper-parameter of a Hiera model. Defaults are the original `hiera_base_224`.

    Spatial tuples have one entry per input dimension: `(H, W)` for images, `(T, H, W)` for video.
    The decoder fields and `mask_ratio` are used by the MAE model only.
    """

    input_size: tuple[int, ...] = (224, 224)
    in_chans: int = 3
    embed_dim: int = 96
    num_heads: int = 1
    num_classes: int = 1000
    depths: tuple[int, ...] = (2, 3, 16, 3)
    q_pool: int = 3
    q_stride: tuple[int, ...] = (2, 2)
    mask_unit_size: tuple[int, ...] = (8, 8)
    mask_unit_attn: tuple[bool, ...] = (True, True, False, False)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    patch_kernel: tuple[int, ...] = (7, 7)
    patch_stride: tuple[int, ...] = (4, 4)
    patch_padding: tuple[int, ...] = (3, 3)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    head_dropout: float = 0.0
    head_init_scale: float = 0.001
    sep_pos_embed: bool = False
    # "abswin" position embedding (Bolya et al. 2023, "Window Attention is Bugged", arXiv:2311.05613; timm's
    # `hiera_*_abswin_256`): a global embedding of grid `global_pos_size` interpolated to the token grid plus
    # one mask-unit-sized embedding tiled over every window. Any number of dims (video: (T, H, W) both).
    abs_win_pos_embed: bool = False
    global_pos_size: tuple[int, ...] = ()
    layer_scale_init: float | None = None  # LayerScale on both residual branches (timm `init_values`)
    expand_proj: bool = True  # False: a widening block's residual is [max-pool, avg-pool] (timm, no weights)
    norm_eps: float = 1e-6
    # MAE only.
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mask_ratio: float | None = None  # None: 0.6 for images, 0.9 for video (the papers' defaults)
    norm_pix_loss: bool = True
    full_tubelet_target: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata (e.g. class names)

    def __post_init__(self) -> None:
        for name in ("input_size", "depths", "q_stride", "mask_unit_size", "patch_kernel", "patch_stride",
                     "patch_padding", "global_pos_size"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.mask_unit_attn = tuple(bool(v) for v in self.mask_unit_attn)
        self.validate()

    # ------------------------------------------------------------------ derived quantities
    @property
    def ndim(self) -> int:
        """Number of input dimensions: 2 (image) or 3 (video)."""
        return len(self.input_size)

    @property
    def is_video(self) -> bool:
        return self.ndim == 3

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_ends(self) -> list[int]:
        """Index of the last block of each stage."""
        return [sum(self.depths[: i + 1]) - 1 for i in range(self.num_stages)]

    @property
    def stage_dims(self) -> list[int]:
        return [int(self.embed_dim * self.dim_mul**i) for i in range(self.num_stages)]

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Each input dimension must be a multiple of this: patch stride x lcm(mask unit, unroll strides)."""
        unroll = [s ** (self.num_stages - 1) for s in self.q_stride]
        return tuple(p * math.lcm(m, u) for p, m, u in zip(self.patch_stride, self.mask_unit_size, unroll))

    def tokens_shape(self, input_size: tuple[int, ...] | None = None) -> tuple[int, ...]:
        return tuple(i // s for i, s in zip(input_size or self.input_size, self.patch_stride))

    def mask_units_shape(self, input_size: tuple[int, ...] | None = None) -> tuple[int, ...]:
        return tuple(t // m for t, m in zip(self.tokens_shape(input_size), self.mask_unit_size))

    @property
    def default_mask_ratio(self) -> float:
        if self.mask_ratio is not None:
            return self.mask_ratio
        return 0.9 if self.is_video else 0.6

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        n = self.ndim
        # Sizes that must be positive: a zero or negative one otherwise fails deep inside torch.
        for name in ("in_chans", "embed_dim", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.num_classes < 0:
            raise ValueError(f"num_classes={self.num_classes} must be >= 0 (0: no classifier head)")
        if not self.depths or min(self.depths) < 1:
            raise ValueError(f"depths={self.depths}: every stage needs at least one block")
        for name in ("q_stride", "mask_unit_size", "patch_kernel", "patch_stride"):
            if min(getattr(self, name), default=1) < 1:
                raise ValueError(f"{name}={getattr(self, name)} entries must be at least 1")
        if n not in (2, 3):
            raise ValueError(f"input_size must be (H, W) or (T, H, W), got {self.input_size}")
        for name in ("q_stride", "mask_unit_size", "patch_kernel", "patch_stride", "patch_padding"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name}={getattr(self, name)} has {len(getattr(self, name))} entries but input_size="
                    f"{self.input_size} has {n}; give one entry per input dimension"
                )
        if not 0 <= self.q_pool < self.num_stages:
            raise ValueError(f"q_pool={self.q_pool} must be in [0, number of stages={self.num_stages})")
        if len(self.mask_unit_attn) != self.num_stages:
            raise ValueError(
                f"mask_unit_attn has {len(self.mask_unit_attn)} entries but there are {self.num_stages} stages"
            )
        if self.abs_win_pos_embed:
            if self.sep_pos_embed:
                raise ValueError("abs_win_pos_embed and sep_pos_embed exclude each other; choose one")
            if len(self.global_pos_size) != n:
                raise ValueError(f"abs_win_pos_embed needs global_pos_size with one entry per input dimension "
                                 f"({n}), got {self.global_pos_size}")
        if not self.expand_proj and self.dim_mul != 2.0:
            raise ValueError(f"expand_proj=False widens by concatenating max- and avg-pooling, so it needs "
                             f"dim_mul=2.0, got {self.dim_mul}")
        check_input_size(self, self.input_size)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> HieraConfig:
        """Build a config from a dict (ours or with alias names); unknown keys are an error."""
        merged = normalize_keys({**d, **overrides})
        return cls(**merged)

    def replace(self, **overrides: Any) -> HieraConfig:
        return HieraConfig.from_dict(self.to_dict(), **overrides)


def normalize_keys(d: dict[str, Any]) -> dict[str, Any]:
    """Map alias names to ours and reject unknown keys with a helpful message."""
    import difflib

    valid = {f.name for f in fields(HieraConfig)}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = FIELD_ALIASES.get(k, k)
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid | set(FIELD_ALIASES)), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown Hiera config field '{k}'{hint} Valid fields: {', '.join(sorted(valid))}")
        out[key] = v
    return out


def check_input_size(cfg: HieraConfig, size: tuple[int, ...]) -> None:
    """Raise a clear error when an input size cannot be split into patches, mask units and pooling windows."""
    names = ("frames", "height", "width")[-len(size):] if len(size) <= 3 else [f"dim{i}" for i in range(len(size))]
    for name, s, m, p in zip(names, size, cfg.size_multiple, cfg.patch_stride):
        if s % m != 0:
            lo, hi = (s // m) * m, (s // m + 1) * m
            what = f"temporal patch stride {p}" if (name == "frames" and m == p) else (
                f"patch stride {p} x mask unit / query-pool windows ({m // p} tokens)")
            raise ValueError(
                f"input {name}={s} is not divisible by {m} ({what}); use {hi}"
                + (f" or {lo}" if lo > 0 else "") + f" instead (input size {tuple(size)})"
            )


# Other code bases' names for HieraDet's own fields (timm's `HieraDet` calls the background size
# `global_pos_size`); HieraConfig's aliases (`stages` for `depths`, ...) apply too.
DET_FIELD_ALIASES = {"global_pos_size": "window_pos_embed_bkg_spatial_size"}


@dataclass
class HieraDetConfig(HieraConfig):
    """`HieraConfig` plus HieraDet's windows. Defaults are SAM 2's `Hiera` constructor defaults (the base+
    trunk, ``sam2/modeling/backbones/hieradet.py``) at SAM 2's 1024² input, with no classifier.

    The mask-unit fields of `HieraConfig` (``mask_unit_size``, ``mask_unit_attn``, ``sep_pos_embed``) and the
    MAE decoder fields are not used by HieraDet.
    """

    input_size: tuple[int, ...] = (1024, 1024)
    num_classes: int = 0
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # window side per stage, in tokens of that stage
    global_att_blocks: tuple[int, ...] = (12, 16, 20)  # blocks with global attention instead of windows
    window_pos_embed_bkg_spatial_size: tuple[int, ...] = (14, 14)  # background position embedding grid

    def __post_init__(self) -> None:
        for name in ("window_spec", "global_att_blocks", "window_pos_embed_bkg_spatial_size"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        super().__post_init__()  # tuples for the inherited fields, then `validate`

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Each input side must be a multiple of this: patch stride x lcm(first window, all pooling strides).

        The first window must tile the token grid (the window embedding is tiled, not padded, as in SAM 2) and
        every pooling halves an even grid (SAM 2's max-pool would silently drop a row otherwise).
        """
        pools = [s ** self.q_pool for s in self.q_stride]
        return tuple(p * math.lcm(self.window_spec[0], q) for p, q in zip(self.patch_stride, pools))

    def q_pool_blocks(self) -> list[int]:
        """The first block of each of the first ``q_pool`` later stages pools its queries."""
        return [end + 1 for end in self.stage_ends[: self.q_pool]]

    def validate(self) -> None:
        if self.ndim != 2:
            raise ValueError(f"HieraDet (SAM 2's trunk) is an image model: input_size must be (H, W), got "
                             f"{self.input_size}")
        for name in ("q_stride", "patch_kernel", "patch_stride", "patch_padding",
                     "window_pos_embed_bkg_spatial_size"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name}={getattr(self, name)} must have 2 entries (height, width)")
        if len(self.window_spec) != self.num_stages:
            raise ValueError(f"window_spec={self.window_spec} has {len(self.window_spec)} entries but there are "
                             f"{self.num_stages} stages (depths={self.depths}); give one window per stage")
        if not 0 <= self.q_pool < self.num_stages:
            raise ValueError(f"q_pool={self.q_pool} must be in [0, number of stages={self.num_stages})")
        depth = sum(self.depths)
        bad = [b for b in self.global_att_blocks if not 0 <= b < depth]
        if bad:
            raise ValueError(f"global_att_blocks {bad} are outside the {depth} blocks (0..{depth - 1}) of "
                             f"depths={self.depths}")
        if self.window_spec[0] < 1:
            raise ValueError(f"window_spec[0]={self.window_spec[0]} must be >= 1: it is the size of the tiled "
                             "window position embedding")
        for b in self.q_pool_blocks():
            w = self.window_spec[self.stage_ends.index(b - 1)]  # a pooling block keeps the previous window
            if b not in self.global_att_blocks and any(w % s for s in self.q_stride):
                raise ValueError(f"block {b} pools queries by {self.q_stride} inside windows of {w} tokens; the "
                                 "window must be a multiple of q_stride")
        self.check_size(self.input_size)

    def check_size(self, size: tuple[int, ...]) -> None:
        """Raise a clear error when an ``(H, W)`` input cannot be embedded, tiled and pooled exactly."""
        for name, s, m in zip(("height", "width"), size, self.size_multiple):
            if s % m != 0 or s == 0:
                lo, hi = (s // m) * m, (s // m + 1) * m
                raise ValueError(
                    f"input {name}={s} is not divisible by {m} (patch stride {self.patch_stride} x lcm(first "
                    f"window {self.window_spec[0]}, {self.q_pool} poolings by {self.q_stride})); use {hi}"
                    + (f" or {lo}" if lo > 0 else "") + f" instead (input size {tuple(size)})")

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> HieraDetConfig:
        """Like `HieraConfig.from_dict`, also accepting SAM 2's YAML trunk names (``stages``, ``window_spec``,
        ``global_att_blocks``, ``window_pos_embed_bkg_spatial_size``) and timm's ``global_pos_size``."""
        merged = {DET_FIELD_ALIASES.get(k, k): v for k, v in {**d, **overrides}.items()}
        valid = {f.name for f in fields(cls)}
        for k in merged:
            if FIELD_ALIASES.get(k, k) not in valid:
                raise TypeError(f"unknown HieraDet config field '{k}'"
                                f"{did_you_mean(k, sorted(valid | set(FIELD_ALIASES)))}; valid fields: "
                                f"{', '.join(sorted(valid))}")
        own = valid - {f.name for f in fields(HieraConfig)}
        det = {k: merged.pop(k) for k in own if k in merged}
        return cls(**normalize_keys(merged), **det)

    def replace(self, **overrides: Any) -> HieraDetConfig:
        return type(self).from_dict(self.to_dict(), **overrides)


def stage_indices(stages: Sequence[int], num_stages: int, name: str = "stages") -> list[int]:
    """Validate stage indices: integers in ``[-num_stages, num_stages)``, negatives counting from the end
    (like Python's). Anything else raises instead of being wrapped around to some other stage."""
    out = []
    for s in stages:
        if isinstance(s, bool) or not hasattr(s, "__index__"):  # 1.5, "1", True are not stage indices
            raise TypeError(f"{name} must be integer stage indices, got {s!r} in {list(stages)!r}")
        i = operator.index(s)
        if not -num_stages <= i < num_stages:
            raise IndexError(f"stage index {i} in {name}={list(stages)!r} is out of range for a model with "
                             f"{num_stages} stages (valid: 0..{num_stages - 1}, or -{num_stages}..-1)")
        out.append(i % num_stages)
    return out
