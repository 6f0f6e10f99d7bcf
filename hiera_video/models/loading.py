"""Loading a `Checkpoint` into a model: the config to build, strict key matching, the safe adaptations.

Adapted (and reported): another number of classes (head re-initialised), another input size (position
embeddings interpolated), another position-embedding layout (joint or separate -> abswin, see `pos_embed`),
MAE weights into a classifier (decoder ignored; final norm and head fresh). Anything else that does not
match raises with the offending key names.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from .config import HieraConfig
from .pos_embed import joint_pos_embed_grid, resize_background, resize_pos_embed, to_abswin
from .registry import _entry, config_class, is_registered, model_arch
from .sources import license_of
from .weights import MAE_ONLY_PREFIXES, Checkpoint, read_checkpoint

logger = logging.getLogger("hiera_video")

__all__ = ["LoadReport", "load_pretrained", "read_checkpoint", "resolve_model_config", "source_license"]


@dataclass
class LoadReport:
    """What `load_pretrained` adapted. Empty lists mean an exact load."""

    reinitialized: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def source_license(ckpt: Checkpoint) -> str | None:
    """The licence of the weights, when the source states it or is a known published checkpoint."""
    for meta in (ckpt.extra, (ckpt.config or {}).get("extra") or {}):  # stated by the source / carried along
        if meta.get("license"):
            return str(meta["license"])
    known = license_of(ckpt.source)
    return known.license if known is not None else None


def resolve_model_config(ckpt: Checkpoint, name: str | None, overrides: dict[str, Any],
                         arch: str | None = None) -> tuple[str, HieraConfig]:
    """The architecture and config to build for ``ckpt``: ``name`` (a registry name) decides the
    architecture; a config saved with the weights describes them better than the registry entry (custom
    depths, input sizes, ...); ``overrides`` win. ``arch`` forces the architecture (``Cls.from_pretrained``)."""
    if name is None and ckpt.config is None:
        if ckpt.model_name is not None and is_registered(ckpt.model_name):
            name = ckpt.model_name
        else:
            src = ckpt.source
            example = "sam2_hiera_tiny" if ckpt.arch == "hieradet" else "hiera_base_224"
            raise ValueError(f"{src} carries no config; pass a model name, e.g. "
                             f"create_model({example!r}, pretrained={src!r})")
    named_by_source = ckpt.model_name if ckpt.model_name is not None and is_registered(ckpt.model_name) else None
    if arch is None:  # the name's architecture, else the one the source names (timm's), else the weights'
        arch = model_arch(name) if name is not None else (
            model_arch(named_by_source) if named_by_source and ckpt.arch != "mae_hiera" else ckpt.arch or "hiera")
    base = dict(ckpt.config) if ckpt.config is not None else dict(_entry(name)[1])
    if name is not None and ckpt.config is not None and ckpt.arch not in (None, arch):
        # MAE encoders pool twice, classifiers three times: the pooling schedule is the target's, not the
        # checkpoint's (it has no weights, so the encoder weights fit either way).
        base["q_pool"] = _entry(name)[1].get("q_pool", HieraConfig.q_pool)
    named = _entry(name)[1] if name is not None else {}
    if name is not None and ckpt.config is not None and bool(named.get("abs_win_pos_embed")) != bool(
            base.get("abs_win_pos_embed")):
        # Another position-embedding layout by name (e.g. an abswin model from a video checkpoint's separate
        # embeddings): the layout is the named model's; `load_pretrained` converts the weights into it.
        for k in ("abs_win_pos_embed", "sep_pos_embed", "global_pos_size"):
            base[k] = named.get(k, getattr(HieraConfig, k, ()))
    if "num_classes" not in overrides and arch in ("hiera", "hieradet"):
        head = ckpt.state_dict.get("head.projection.weight")
        if head is not None:  # keep the checkpoint's classes unless the user asks for others
            overrides["num_classes"] = head.shape[0]
        elif any(k.startswith("norm.") for k in ckpt.state_dict) and not any(
                k.startswith(MAE_ONLY_PREFIXES) for k in ckpt.state_dict):
            overrides["num_classes"] = 0  # a headless backbone (timm's ".mae" tags, HF's HieraModel)
    extra = {**(base.get("extra") or {}), **ckpt.extra, **(overrides.pop("extra", None) or {})}
    licence = source_license(ckpt)
    if licence:
        extra["license"] = licence
    base["extra"] = extra
    return arch, config_class(arch).from_dict(base, **overrides)


def load_pretrained(model: nn.Module, ckpt: Checkpoint | str | os.PathLike, strict: bool = True) -> LoadReport:
    """Load ``ckpt`` (a `Checkpoint` or any source `read_checkpoint` takes) into ``model``, adapting what can
    be adapted safely and reporting it. When ``strict``, missing, unexpected or mis-shaped keys raise."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = read_checkpoint(ckpt)
    sd = dict(ckpt.state_dict)
    own = model.state_dict()
    report = LoadReport()
    is_mae_ckpt = any(k.startswith(MAE_ONLY_PREFIXES) for k in sd)
    if is_mae_ckpt and not any(k.startswith(MAE_ONLY_PREFIXES) for k in own):
        report.ignored += [k for k in sd if k.startswith(MAE_ONLY_PREFIXES)]
        sd = {k: v for k, v in sd.items() if not k.startswith(MAE_ONLY_PREFIXES)}
        for k in [k for k in own if k.startswith(("norm.", "head."))]:
            if k not in sd:
                report.reinitialized.append(k)
    for k in ("head.projection.weight", "head.projection.bias"):
        if k in sd and k in own and sd[k].shape != own[k].shape:
            report.reinitialized.append(k)
            report.ignored.append(f"{k} {tuple(sd.pop(k).shape)}")
    report.ignored += ckpt.ignored  # e.g. SAM 2's neck, decoders and memory modules
    if ckpt.trunk_only:  # SAM 2 trunks have no final norm / head: the model's start fresh
        report.reinitialized += [k for k in own if k.startswith(("norm.", "head.")) and k not in sd]
    _adapt_pos_embeds(model, sd, own, ckpt.config, report)

    missing = [k for k in own if k not in sd and k not in report.reinitialized]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or shapes):
        lines = [f"checkpoint {ckpt.source} ({ckpt.format} format) does not match the model:"]
        if missing:
            more = " ..." if len(missing) > 20 else ""
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:20])}{more}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}"
                         f"{' ...' if len(unexpected) > 20 else ''}")
        if shapes:
            lines.append(f"  mis-shaped keys ({len(shapes)}): {'; '.join(shapes[:10])}")
        lines.append("  Is this the right model name / config (depths, embed_dim, input_size)? "
                     "Pass strict=False to load what matches.")
        raise RuntimeError("\n".join(lines))
    sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(sd, strict=False)
    if any(k.startswith("head.") for k in report.reinitialized) and hasattr(model, "init_head"):
        model.init_head()
    if report.reinitialized:
        logger.warning("re-initialised from scratch (not in %s): %s", ckpt.source, ", ".join(report.reinitialized))
    if report.interpolated:
        logger.warning("interpolated to the model's input size: %s", "; ".join(report.interpolated))
    if report.ignored:
        logger.info("ignored checkpoint entries: %s", ", ".join(report.ignored[:10]))
    if not strict and (missing or unexpected or shapes):
        logger.warning("non-strict load: missing %s, unexpected %s, mis-shaped %s", missing, unexpected, shapes)
    licence = source_license(ckpt)
    if licence:
        logger.info("loaded %s (%s format); licence of these weights: %s", ckpt.source, ckpt.format, licence)
    return report


def _source_grid(n: int, src_tokens: list[int] | None, ndim: int) -> list[int] | None:
    """The token grid of a flattened embedding with ``n`` tokens: from the source config, else square."""
    if src_tokens is not None and math.prod(src_tokens[-ndim:]) == n:
        return src_tokens[-ndim:]
    if ndim == 2 and math.isqrt(n) ** 2 == n:
        return [math.isqrt(n)] * 2
    return None


def _adapt_pos_embeds(model: nn.Module, sd: dict, own: dict, src_cfg: dict | None, report: LoadReport) -> None:
    cfg: HieraConfig = model.config
    src_tokens = None
    if src_cfg is not None and "input_size" in src_cfg:
        src_tokens = [i // s for i, s in zip(src_cfg["input_size"], src_cfg.get("patch_stride", cfg.patch_stride))]
    if "pos_embed_abs" in own and "pos_embed_abs" not in sd:
        _to_abswin(cfg, sd, own, src_tokens, report)
    if "pos_embed_abs" in sd and "pos_embed_abs" in own and sd["pos_embed_abs"].shape != own["pos_embed_abs"].shape:
        src = sd["pos_embed_abs"]
        if src.shape[:2] == own["pos_embed_abs"].shape[:2]:  # another background grid: resample it
            sd["pos_embed_abs"] = resize_background(src.float(), cfg.global_pos_size).to(src.dtype)
            report.interpolated.append(f"pos_embed_abs {tuple(src.shape)} -> {tuple(own['pos_embed_abs'].shape)}")
    for key, tgt in (("pos_embed", cfg.tokens_shape()), ("pos_embed_spatial", cfg.tokens_shape()[-2:]),
                     ("pos_embed_temporal", cfg.tokens_shape()[:1])):
        if key not in sd or key not in own or sd[key].shape == own[key].shape:
            continue
        src, C = sd[key], sd[key].shape[-1]
        if C != own[key].shape[-1] or src.ndim != 3:
            continue  # left for the strict check to report
        if key == "pos_embed_temporal":
            new = resize_pos_embed(src.float(), tgt)  # [1, T, C]
        else:
            grid = _source_grid(src.shape[1], src_tokens, len(tgt))
            if grid is None:
                continue
            new = resize_pos_embed(src.reshape(1, *grid, C).float(), tgt)
        sd[key] = new.reshape(own[key].shape).to(src.dtype)
        report.interpolated.append(f"{key} {tuple(src.shape)} -> {tuple(own[key].shape)}")


def _to_abswin(cfg: HieraConfig, sd: dict, own: dict, src_tokens: list[int] | None, report: LoadReport) -> None:
    """Joint / separate embeddings -> abswin background + zero window (`pos_embed.to_abswin`)."""
    C = own["pos_embed_abs"].shape[1]
    if "pos_embed" in sd and sd["pos_embed"].ndim == 3 and sd["pos_embed"].shape[-1] == C:
        src = sd.pop("pos_embed")
        grid = _source_grid(src.shape[1], src_tokens, cfg.ndim)
        if grid is None:
            sd["pos_embed"] = src  # unknown grid: left for the strict check to report
            return
        grid_pe = joint_pos_embed_grid(None, None, src.float(), grid)
        what = f"pos_embed {tuple(src.shape)}"
    elif "pos_embed_spatial" in sd and "pos_embed_temporal" in sd and cfg.ndim == 3:
        sp, tp = sd.pop("pos_embed_spatial"), sd.pop("pos_embed_temporal")
        hw = _source_grid(sp.shape[1], src_tokens, 2) or []
        if not hw:
            sd["pos_embed_spatial"], sd["pos_embed_temporal"] = sp, tp
            return
        grid_pe = joint_pos_embed_grid(sp.float(), tp.float(), None, [tp.shape[1], *hw])
        what, src = f"pos_embed_spatial {tuple(sp.shape)} + pos_embed_temporal {tuple(tp.shape)}", sp
    else:
        return
    bkg, win = to_abswin(grid_pe, cfg.global_pos_size, cfg.mask_unit_size)
    sd["pos_embed_abs"], sd["pos_embed_win"] = bkg.to(src.dtype), win.to(src.dtype)
    report.interpolated.append(f"{what} -> abswin pos_embed_abs {tuple(bkg.shape)} + zero pos_embed_win "
                               f"{tuple(win.shape)}")
