"""Clip feature extraction at scale: the ``hiera-video extract`` job.

Turns a folder, a list file or a Kinetics-style CSV of videos (or images) into per-clip features of a Hiera
model, for ten videos on a laptop or a million on many GPUs::

    from hiera_video.engine.extract import extract_features
    summary = extract_features("videos/", "feats/", model="hiera_base_16x224", pretrained="k400.pth",
                               stride_seconds=2.0, outputs=("embedding", "probs"))
    feats = hiera_video.load_features("feats/")          # lazy mapping: video id -> VideoFeatures
    feats["cooking/abc123"].features["embedding"]        # [num_clips, D]

Settings are one :class:`~hiera_video.config.Config` (the ``extract:`` section plus the shared ``model.*``,
``data.*``, ``eval.num_clips`` and ``train.device`` / ``precision`` / ``progress``), see
:func:`resolve_extract_config`; the keyword names above are the command-line flags' aliases (``ALIASES``).

Pipeline (one process per rank; ``torchrun`` gives several)::

    inputs --rank shard--> DataLoader workers: data.streaming.ClipStream (each a disjoint subset of videos)
        open_media -> eval_pipeline's clip sampler -> WindowedClipReader -> FrameTransform (uint8)
        -> batches of clips mixed across videos, as uint8 [B, T, C, H, W]
    main process: normalise on the device -> model -> outputs per clip -> per-video assembly
        -> engine.feature_store.ShardWriter: complete videos only, atomic safetensors shards
    the last rank to finish: manifest (JSON lines or CSV) merged from every shard header, failures, summary

Output directory: see :mod:`hiera_video.engine.feature_store`, plus ``extract_config.json`` (the resolved
settings; a re-run with different feature-defining settings is refused), ``parts/`` (per-rank failures and
summaries of the latest run) and ``summary.json`` (done, skipped, failed, clips, clips/s, peak frames held).

Video ids are canonical: the path relative to ``extract.id_root`` (default ``extract.root``, else the input
directory or the list file's folder) after normalisation (``a/../b`` is ``b``), without the extension (kept
where two files would clash). An input outside the id root is an error naming it and a folder that holds
every input; ids never start with ``../`` (see `hiera_video.data.streaming.discover_inputs`). Tar shards
(``extract.input``: a ``.tar``, a list of them, a glob, a folder of ``*.tar`` or an fsspec URL) are read in
place, one ranged read per video; their ids are the sample keys (``abseiling/abc_000010``: independent of the
sharding, and the ids of the unpacked folder for shards ``write_shards`` made), see
`hiera_video.data.shards.shard_inputs`. A member that cannot be read or decoded is a failure, like a file.

Decoding runs where ``data.decode_device`` says (`hiera_video.engine.build.decode_device`): on the model's GPU
with torchcodec (NVDEC) when it can, in the main process (DataLoader workers are not used for GPU
decoding: CUDA does not survive ``fork``); otherwise on the CPU in ``data.num_workers`` workers.

Never losing work: a video is *done* exactly when a shard containing it is in place. A re-run of the same
command skips done videos and extracts the rest; partial shards are temporary files, removed on the next
run; a damaged shard is moved aside and its videos extracted again.

Clip timing convention: a clip's ``start_frame`` is its first sampled frame index and ``end_frame`` is one
past its last sampled frame (exclusive); times are those frame numbers divided by the video's fps.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hiera_video.config import Config, ConfigError
from hiera_video.data.shards import is_shard_input
from hiera_video.data.streaming import MediaItem as VideoItem
from hiera_video.data.streaming import discover_inputs
from hiera_video.engine.feature_store import (
    FAILURES_FILE,
    PARTS_DIR,
    SHARD_DIR,
    SHARD_NAME,
    FeatureStore,
    ShardWriter,
    VideoFeatures,
    load_features,
    merge_outputs,
    quarantine_shards,
    scan_shards,
    shard_files,
)
from hiera_video.fileio import atomic_write_bytes

logger = logging.getLogger("hiera_video.extract")

__all__ = [
    "ALIASES",
    "FeatureStore",
    "VideoFeatures",
    "VideoItem",
    "check_extract_config",
    "compute_outputs",
    "discover_inputs",
    "extract_features",
    "load_features",
    "merge_outputs",
    "parse_outputs",
    "resolve_extract_config",
    "run_extract",
]

CONFIG_FILE, SUMMARY_FILE = "extract_config.json", "summary.json"


# ============================================================================================ settings
# Flat names (the command-line flags, ``extract_features`` keywords) -> the Config key they set.
ALIASES: dict[str, str] = {
    "input": "extract.input", "output_dir": "extract.output_dir", "root": "extract.root", "id_root": "extract.id_root",
    "extensions": "extract.extensions", "model": "model.name", "pretrained": "model.pretrained",
    "model_overrides": "model.overrides", "clip_mode": "extract.clip_mode", "num_frames": "data.num_frames",
    "sampling_rate": "data.sampling_rate", "target_fps": "data.target_fps", "stride": "extract.stride",
    "stride_seconds": "extract.stride_seconds", "tail": "extract.tail", "num_clips": "eval.num_clips",
    "spatial": "extract.spatial", "crop_size": "data.crop_size", "short_side": "data.test_short_side",
    "decode_resize": "extract.decode_resize", "mean": "data.mean", "std": "data.std",
    "outputs": "extract.outputs", "pool_space": "extract.pool_space", "dtype": "extract.dtype",
    "amp": "train.precision", "precision": "train.precision", "batch_size": "extract.batch_size",
    "num_workers": "data.num_workers", "device": "train.device", "backend": "data.decoder",
    "decoder": "data.decoder", "window_frames": "extract.window_frames", "shard_size_mb": "extract.shard_size_mb",
    "shard_max_videos": "extract.shard_max_videos", "flush_seconds": "extract.flush_seconds",
    "manifest_format": "extract.manifest_format", "progress": "train.progress", "use_ema": "eval.use_ema",
}


def _dotted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Flat aliases (or dotted keys) -> dotted keys with Config-typed values."""
    from hiera_video.fileio import did_you_mean

    out: dict[str, Any] = {}
    for key, value in settings.items():
        if "." not in key and key not in ALIASES:
            raise ConfigError(f"unknown extract setting '{key}'{did_you_mean(key, ALIASES)}; valid: "
                              f"{', '.join(ALIASES)} or any section.key of the config")
        dotted = ALIASES.get(key, key)
        if dotted == "train.precision" and value == "none":  # --amp none: no autocast
            value = "fp32"
        if dotted in ("extract.outputs", "extract.extensions") and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[dotted] = value
    return out


def _layered(config: str | os.PathLike[str] | None, overrides: Sequence[str], values: Mapping[str, Any],
             defaults: Config) -> Config:
    """``defaults`` < the YAML file < ``values`` (flags, keywords) < ``key=value`` overrides."""
    from hiera_video.config import apply_overrides, load_config, update_config

    cfg = load_config(config, None, defaults=defaults)
    return apply_overrides(update_config(cfg, values), list(overrides))


def resolve_extract_config(config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                           settings: Mapping[str, Any] | None = None) -> tuple[Config, Any]:
    """The extraction's Config and its model (a :class:`~hiera_video.engine.pipeline.LoadedModel`).

    Defaults come from the model: the training run's config when ``model.name`` is a run folder or a
    training checkpoint (features then see the clips, crop and statistics the model was trained on), else
    :func:`~hiera_video.engine.pipeline.config_for_model` (the model's clip length, crop and statistics).
    On top, later wins: the YAML file ``config``, ``settings`` (flat aliases such as ``sampling_rate`` or
    dotted keys) and the ``key=value`` ``overrides``. The model is loaded on the CPU.
    """
    from hiera_video.engine.pipeline import config_for_model

    values = _dotted(settings or {})
    first = _layered(config, overrides, values, Config())  # which model: its defaults come next
    loaded = _load_extract_model(first)
    if loaded.config is not None:
        base = copy.deepcopy(loaded.config)
        base.model.pretrained = None  # the trained weights are loaded; the run's starting point is not
        base.model.overrides = {}  # (already in the trained model; they do not apply to a path)
        base.extract = Config().extract
    else:
        base = config_for_model(loaded.model)
    return _layered(config, overrides, values, base), loaded


def _load_extract_model(cfg: Config) -> Any:
    """The model ``cfg.model`` names (a registry name with ``pretrained`` / ``overrides``, or a trained run,
    checkpoint or save_pretrained folder), on the CPU, checked to have features to extract."""
    from hiera_video.engine.pipeline import load_model

    m = cfg.model
    if not Path(m.name).expanduser().exists() and m.pretrained is None:
        logger.warning("extract: no pretrained weights given, features come from a randomly initialised %s "
                       "(and differ from run to run)", m.name)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in m.overrides.items()}
    loaded = load_model(m.name, use_ema=cfg.eval.use_ema, pretrained=m.pretrained, **overrides)
    if not hasattr(loaded.model, "forward_features"):
        raise ConfigError(f"model.name={m.name!r} is not a classifier/backbone (MAE models: load the checkpoint "
                          "into the classifier of the same size, e.g. model.name=hiera_base_16x224 "
                          "model.pretrained=<mae ckpt>)")
    return loaded


def _positive(cfg: Config, key: str, value: Any, *, integer: bool = False, allow_none: bool = False,
              zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= 0 if zero else value > 0)
    if not ok or (integer and int(value) != value):
        what = "a non-negative" if zero else "a positive"
        raise ConfigError(f"{key} must be {what} {'integer' if integer else 'number'}"
                          f"{' or null' if allow_none else ''}, got {value!r}")


def check_extract_config(cfg: Config) -> None:
    """Every value an extraction uses, checked before anything is read or loaded (errors name the key)."""
    e, d = cfg.extract, cfg.data
    if not e.input or not e.output_dir:
        raise ConfigError("extract needs an input (directory, list file, CSV or tar shards) and an output "
                          "directory: hiera-video extract INPUT OUTPUT_DIR, or extract.input= / extract.output_dir=")
    try:
        shards = is_shard_input(e.input)
    except ValueError as err:
        raise ConfigError(f"extract.input: {err}") from None
    if not shards and not Path(e.input).exists():
        raise FileNotFoundError(f"extract.input: {e.input!r} does not exist (a directory, list file, CSV or "
                                "tar shards)")
    for key, value, kw in [
        ("extract.stride", e.stride, dict(allow_none=True)),
        ("extract.stride_seconds", e.stride_seconds, dict(allow_none=True)),
        ("extract.batch_size", e.batch_size, dict(integer=True)),
        ("extract.window_frames", e.window_frames, dict(integer=True)),
        ("extract.shard_size_mb", e.shard_size_mb, {}),
        ("extract.shard_max_videos", e.shard_max_videos, dict(integer=True)),
        ("extract.flush_seconds", e.flush_seconds, dict(zero=True)),
        ("data.num_frames", d.num_frames, dict(integer=True)),
        ("data.sampling_rate", d.sampling_rate, dict(integer=True)),
        ("data.target_fps", d.target_fps, dict(allow_none=True)),
        ("data.crop_size", d.crop_size, dict(integer=True)),
        ("data.test_short_side", d.test_short_side, dict(integer=True, allow_none=True)),
        ("data.num_workers", d.num_workers, dict(integer=True, zero=True)),
        ("eval.num_clips", cfg.eval.num_clips, dict(integer=True)),
    ]:
        _positive(cfg, key, value, **kw)
    if not e.outputs:
        raise ConfigError("extract.outputs is empty: choose embedding, logits, probs and/or stage<k>")
    if len(d.mean) != 3 or len(d.std) != 3 or not all(s > 0 for s in d.std):
        raise ConfigError(f"data.mean / data.std must be 3 values (std > 0), got {d.mean} / {d.std}")


def _check_against_model(cfg: Config, model: nn.Module) -> None:
    """Clip length and crop against the model's patch / mask-unit grid; data.kind against the model."""
    mc = model.config
    kind = "video" if mc.is_video else "image"
    if cfg.data.kind != kind:
        raise ConfigError(f"data.kind is {cfg.data.kind!r} but the model is {'a video' if mc.is_video else 'an image'}"
                          f" model; set data.kind={kind}")
    mult = mc.size_multiple
    if mc.is_video and cfg.data.num_frames % mult[0]:
        raise ConfigError(f"data.num_frames={cfg.data.num_frames} must be a multiple of {mult[0]} for this model "
                          "(temporal patch stride)")
    crop = cfg.data.crop_size
    if cfg.extract.spatial == "center_crop":
        for m in mult[-2:]:
            if crop % m:
                lo, hi = crop // m * m, (crop // m + 1) * m
                raise ConfigError(f"data.crop_size={crop} must be a multiple of {m} for this model; use {hi}"
                                  + (f" or {lo}" if lo else ""))
        short = cfg.data.test_short_side
        if short is not None and short < crop:
            raise ConfigError(f"data.test_short_side={short} is smaller than data.crop_size={crop}")


def parse_outputs(outputs: Sequence[str], num_stages: int, num_classes: int) -> list[tuple[str, int | None]]:
    """``["embedding", "stage2"]`` -> ``[("embedding", None), ("stage2", 2)]``, validated."""
    parsed = []
    for name in outputs:
        name = name.strip()
        m = re.fullmatch(r"stage[_:]?(-?\d+)", name)
        if m:
            s = int(m.group(1))
            if not -num_stages <= s < num_stages:
                raise ConfigError(f"extract.outputs: '{name}': the model has stages 0..{num_stages - 1}")
            parsed.append((f"stage{s % num_stages}", s % num_stages))
        elif name in ("embedding", "logits", "probs"):
            if name != "embedding" and num_classes <= 0:
                raise ConfigError(f"extract.outputs: '{name}' needs a classification head (the model has "
                                  "num_classes=0)")
            parsed.append((name, None))
        else:
            raise ConfigError(f"extract.outputs: unknown output '{name}' (expected embedding, logits, probs or "
                              "stage<k>)")
    if not parsed:
        raise ConfigError("extract.outputs: no outputs selected")
    if len({n for n, _ in parsed}) != len(parsed):
        raise ConfigError(f"extract.outputs: duplicates in {list(outputs)}")
    return parsed


@torch.inference_mode()
def compute_outputs(model: nn.Module, x: torch.Tensor, outputs: Sequence[tuple[str, int | None]],
                    pool_space: bool = False) -> dict[str, torch.Tensor]:
    """The selected outputs for a batch ``x`` ``[B, C, (T,) H, W]``.

    embedding ``[B, D]`` (pooled pre-head), logits / probs ``[B, K]``, stage<k> ``[B, (T,) H, W, C]``
    (rerolled) or, with ``pool_space``, ``[B, (T,) C]``. Only the passes that are needed run: one forward
    for any mix of embedding / logits / probs, one more when stage maps are asked for too.
    """
    out: dict[str, torch.Tensor] = {}
    names = {n for n, _ in outputs}
    stages = [s for _, s in outputs if s is not None]
    if names & {"embedding", "logits", "probs"}:
        emb = model.forward_features(x)
        if "embedding" in names:
            out["embedding"] = emb
        if names & {"logits", "probs"}:
            logits = model.forward_head(emb)
            if "logits" in names:
                out["logits"] = logits
            if "probs" in names:
                out["probs"] = logits.float().softmax(-1)
    if stages:
        maps = model.forward_intermediates(x, stages=stages, intermediates_only=True)
        for s, fmap in zip(stages, maps):
            if pool_space:  # [B, (T,) H, W, C]: average the two spatial axes before the channels
                fmap = fmap.mean(dim=(-3, -2))
            out[f"stage{s}"] = fmap
    return out


def _feature_settings(cfg: Config, pipe_settings: dict[str, Any], precision: str) -> dict[str, Any]:
    """What decides the features (stored in extract_config.json; a re-run must match)."""
    from hiera_video.config import config_to_dict

    plain = config_to_dict(cfg)
    out = {"model.name": plain["model"]["name"], "model.pretrained": plain["model"]["pretrained"],
           "model.overrides": plain["model"]["overrides"], "extract.clip_mode": cfg.extract.clip_mode,
           **pipe_settings, "extract.outputs": list(cfg.extract.outputs), "extract.pool_space": cfg.extract.pool_space,
           "extract.dtype": cfg.extract.dtype, "train.precision": precision}
    return json.loads(json.dumps(out))  # tuples -> lists, as read back


def _check_or_save_config(out: Path, cfg: Config, features: dict[str, Any], is_main: bool) -> None:
    """Refuse to mix features made with different settings in one directory; save the settings."""
    from hiera_video.config import config_to_dict

    path = out / CONFIG_FILE
    if path.is_file():
        old = json.loads(path.read_text()).get("features", {})
        keys = sorted(set(old) | set(features))
        if old and not any("." in k for k in old):  # written before settings were Config keys: map the names
            old = {ALIASES.get(k, k): ("fp32" if k == "amp" and v == "none" else v) for k, v in old.items()}
            keys = sorted(set(old) & set(features))
        diff = [k for k in keys if old.get(k) != features.get(k)]
        if diff and shard_files(out):
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {features.get(k)!r}" for k in diff)
            raise ConfigError(f"{out} holds features extracted with other settings ({detail}); use another "
                              "output directory or delete it")
    if is_main:
        atomic_write_bytes(path, json.dumps({"features": features, "run": config_to_dict(cfg)}, indent=2).encode())


# ============================================================================================ the run
@dataclass
class _Pending:
    """Outputs of a video's clips as they come back from the model (clips of one video may span batches)."""

    record: dict[str, Any]
    num_clips: int
    parts: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def run_extract(cfg: Config, loaded: Any = None,
                on_shard: Callable[[Path, list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Extract features as ``cfg`` says (a resolved Config, see :func:`resolve_extract_config`).

    ``loaded``: the model (a ``LoadedModel``; default: loaded from ``cfg.model``). Under ``torchrun`` each
    rank takes videos ``rank, rank + world, ...`` of the input list, writes its own shards, and the last
    rank to finish merges the manifests. Returns the summary of this process (of the whole run on the rank
    that merged): ``done`` (extracted now), ``skipped`` (already done), ``failed``, ``clips``, ``seconds``,
    ``clips_per_s``, ``peak_frames_held``, ``frames_decoded``, ``shards``, ``damaged_shards``.
    """
    from torch.utils.data import DataLoader

    from hiera_video.data.streaming import ClipStream
    from hiera_video.engine import distributed as hd
    from hiera_video.engine.build import decode_device, loader_workers
    from hiera_video.engine.loop import autocast_context
    from hiera_video.engine.pipeline import eval_pipeline
    from hiera_video.models import cpu_kernels
    from hiera_video.models.cpu_kernels import resolve_precision

    check_extract_config(cfg)
    e = cfg.extract
    loaded = loaded if loaded is not None else _load_extract_model(cfg)
    model = loaded.model
    _check_against_model(cfg, model)
    pipe = eval_pipeline(cfg, clips=e.clip_mode, size_multiple=tuple(model.config.size_multiple[-2:]))
    outputs = parse_outputs(e.outputs, model.config.num_stages, model.config.num_classes)
    try:
        items = discover_inputs(e.input, e.root, e.extensions, e.id_root)
    except ValueError as err:
        raise ConfigError(f"extract.input: {err}") from None

    started_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    # Long timeout: the only collective is this start-up broadcast, but ranks may start far apart.
    info = hd.init_distributed(cfg.train.device, timeout_minutes=24 * 60)
    run_id = hd.broadcast_object(uuid.uuid4().hex if info.is_main else None)
    model = model.to(info.device)
    # bf16 / fp16 on the GPU as asked; on a CPU only where native, else fp32 after one warning (cpu_kernels)
    precision = resolve_precision(cfg.train.precision, info.device, cfg.train.force_precision)
    out = Path(e.output_dir)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    _check_or_save_config(out, cfg, _feature_settings(cfg, pipe.settings, precision), info.is_main)

    # Shard the *full* list by rank before skipping done videos: every rank then agrees on who owns what
    # even if another rank finishes a shard while this one is still scanning.
    mine = items[info.rank::info.world_size]
    done, damaged = scan_shards(out)
    quarantine_shards(out, damaged)  # their videos are not in `done`: extracted again below
    todo = [it for it in mine if it.video_id not in done]
    skipped = len(mine) - len(todo)
    prefix = f"r{info.rank:05d}-"
    for tmp in (out / SHARD_DIR).glob(f".{prefix}*.tmp"):  # partial shards of a killed run of this rank
        tmp.unlink(missing_ok=True)
    existing = [int(SHARD_NAME.match(p.name).group(2)) for p in shard_files(out) if p.name.startswith(prefix)]
    # The CPU kernel choices travel with the features (cpu_kernels): a resumed run uses the same kernels.
    choices = out / PARTS_DIR / f"kernel_choices.r{info.rank:05d}.json"
    cpu_kernels.load_choices(choices)

    def shard_written(path: Path, records: list[dict[str, Any]]) -> None:
        cpu_kernels.save_choices(choices, if_changed=True)  # with its shard, before a hook can stop the run
        if on_shard is not None:
            on_shard(path, records)

    writer = ShardWriter(out / SHARD_DIR, info.rank, max(existing, default=-1) + 1, e.shard_size_mb * 2**20,
                         e.shard_max_videos, e.flush_seconds, shard_written)
    failures_path = out / PARTS_DIR / f"failures.r{info.rank:05d}.jsonl"
    failures_path.write_text("")  # this run's failures (failed videos are retried by a re-run)
    dtype = torch.float16 if e.dtype == "fp16" else torch.float32

    # GPU decoding (data.decode_device) runs in this process; CPU decoding in data.num_workers workers.
    decode_on = decode_device(cfg, info.device)
    stream = ClipStream([it.source for it in todo], pipe.clip_sampler, pipe.frame_transform, e.batch_size,
                        e.window_frames, cfg.data.decoder, device=decode_on)
    workers = loader_workers(cfg, decode_on)
    # Fork is unsafe once CUDA is initialised (the model is already on the GPU): spawn workers then.
    spawn = workers > 0 and torch.cuda.is_available() and torch.cuda.is_initialized()
    loader = DataLoader(stream, batch_size=None, collate_fn=ClipStream.collate_fn, num_workers=workers,
                        pin_memory=info.device.type == "cuda" and decode_on.type == "cpu", persistent_workers=False,
                        prefetch_factor=2 if workers > 0 else None,
                        multiprocessing_context="spawn" if spawn else None)
    normalize = pipe.normalize.to(info.device)
    video = model.config.is_video

    pending: dict[int, _Pending] = {}
    stats = {"done": 0, "failed": 0, "clips": 0, "peak_frames_held": 0, "frames_decoded": 0}
    bar = _progress(len(todo), enabled=cfg.train.progress and info.is_main, skipped=skipped)
    t0 = time.perf_counter()

    def fail(index: int, error: str) -> None:
        pending.pop(index, None)
        it = todo[index]
        with open(failures_path, "a") as f:
            f.write(json.dumps({"video_id": it.video_id, "path": it.path, "error": error, "rank": info.rank})
                    + "\n")
        logger.warning("failed: %s (%s)", it.path, error)
        stats["failed"] += 1
        bar.update(1)

    def finish(index: int) -> None:
        p = pending.pop(index)
        tensors = {name: torch.stack([p.parts[i][name] for i in range(p.num_clips)]) for name, _ in outputs}
        p.record["outputs"] = {k: list(v.shape) for k, v in tensors.items()}
        writer.add(p.record, tensors)
        stats["done"] += 1
        bar.update(1)

    try:
        for packet in loader:
            for ev in packet["events"]:
                i = ev["index"]
                if ev["type"] == "video":
                    it, fps = todo[i], ev["fps"]
                    sf = [s for s, _ in ev["clips"]]
                    ef = [t for _, t in ev["clips"]]
                    rec = {"video_id": it.video_id, "path": it.path, "num_frames": ev["num_frames"], "fps": fps,
                           "duration": ev["num_frames"] / fps if fps > 0 else 0.0,
                           "clips": {"start_frame": sf, "end_frame": ef,
                                     "start_time": [s / fps if fps > 0 else 0.0 for s in sf],
                                     "end_time": [t / fps if fps > 0 else 0.0 for t in ef]}}
                    pending[i] = _Pending(rec, len(ev["clips"]))
                elif ev["type"] == "failed":
                    fail(i, ev["error"])
                elif ev["type"] == "stats":
                    stats["peak_frames_held"] = max(stats["peak_frames_held"], ev["peak"])
                    stats["frames_decoded"] += ev["decoded"]
            touched = set()
            if packet["clips"] is not None:
                x = packet["clips"].to(info.device, non_blocking=True)
                x = normalize(x if video else x[:, 0])
                with autocast_context(info.device, precision):
                    res = compute_outputs(model, x, outputs, e.pool_space)
                res = {k: v.to("cpu", dtype) for k, v in res.items()}
                for j, (i, ci) in enumerate(packet["keys"]):
                    if i in pending:  # (clips of a video that failed later are dropped)
                        # Clone: a view would keep the whole batch output alive until this video is done.
                        pending[i].parts[ci] = {k: v[j].clone() for k, v in res.items()}
                        touched.add(i)
                stats["clips"] += len(packet["keys"])
            for i in touched | {ev["index"] for ev in packet["events"] if ev["type"] == "video"}:
                if i in pending and len(pending[i].parts) == pending[i].num_clips:
                    finish(i)
            rate = stats["clips"] / (time.perf_counter() - t0)
            bar.set_postfix(clips=stats["clips"], clips_s=f"{rate:.2f}", failed=stats["failed"], refresh=False)
        for i in list(pending):  # the stream ended without all clips of a video: a bug, never silent
            fail(i, "internal error: stream ended before all clips were extracted")
    finally:
        # Whatever stopped the loop (Ctrl-C, a crash, a hook), finished videos are written, never lost.
        writer.flush()
        cpu_kernels.save_choices(choices, if_changed=True)
        bar.close()

    seconds = time.perf_counter() - t0
    summary = {"rank": info.rank, "done": stats["done"], "skipped": skipped, "failed": stats["failed"],
               "clips": stats["clips"], "seconds": round(seconds, 3),
               "clips_per_s": round(stats["clips"] / seconds, 4) if seconds > 0 else 0.0,
               "peak_frames_held": stats["peak_frames_held"], "frames_decoded": stats["frames_decoded"],
               "shards": len(writer.written), "damaged_shards": len(damaged), "run_id": run_id,
               "decode_device": str(decode_on)}
    atomic_write_bytes(out / PARTS_DIR / f"summary.r{info.rank:05d}.json", json.dumps(summary).encode())
    # The last rank to finish merges (no barrier: ranks may finish hours apart, and a finished rank should
    # not wait on a collective's timeout). Two ranks finishing together may both merge: it is idempotent.
    parts = [json.loads(p.read_text()) for p in sorted((out / PARTS_DIR).glob("summary.r*.json"))]
    parts = [p for p in parts if p.get("run_id") == run_id]
    if len(parts) == info.world_size:
        merge_outputs(out, e.manifest_format, [it.video_id for it in items])
        summary = _combine(parts)
        atomic_write_bytes(out / SUMMARY_FILE, json.dumps(summary, indent=2).encode())
        if cfg.train.progress:
            print(_format_summary(summary, out), file=sys.stderr)
    if started_group and info.distributed:
        hd.cleanup_distributed()
    return summary


def _combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {k: sum(p.get(k, 0) for p in parts)
                             for k in ("done", "skipped", "failed", "clips", "frames_decoded", "shards",
                                       "damaged_shards")}
    seconds = max(p["seconds"] for p in parts)
    total.update(ranks=len(parts), seconds=seconds,
                 peak_frames_held=max(p["peak_frames_held"] for p in parts),
                 clips_per_s=round(total["clips"] / seconds, 4) if seconds > 0 else 0.0,
                 decode_device=",".join(sorted({str(p.get("decode_device", "cpu")) for p in parts})))
    return total


def _format_summary(s: dict[str, Any], out: Path) -> str:
    damaged = f", {s['damaged_shards']} damaged shard(s) redone" if s.get("damaged_shards") else ""
    return (f"extract: {s['done']} done, {s['skipped']} skipped (already done), {s['failed']} failed"
            f"{f' (see {out / FAILURES_FILE})' if s['failed'] else ''}{damaged}; {s['clips']} clips in "
            f"{s['seconds']:.1f}s ({s['clips_per_s']:.2f} clips/s) -> {out}")


def _progress(total: int, enabled: bool, skipped: int) -> Any:
    from tqdm.auto import tqdm

    from hiera_video.progress_bars import bar_options

    return tqdm(total=total, unit="video", desc=f"extract ({skipped} already done)" if skipped else "extract",
                disable=not enabled, **bar_options())


def extract_features(input: str | os.PathLike[str] | Sequence[str] | None = None,
                     output_dir: str | os.PathLike[str] | None = None,
                     on_shard: Callable[[Path, list[dict[str, Any]]], None] | None = None, *,
                     config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                     **settings: Any) -> dict[str, Any]:
    """Python entry point: ``extract_features("videos/", "feats/", model=..., sampling_rate=2, ...)``.

    ``settings``: the flat aliases of :data:`ALIASES` (the command-line flags' names) or dotted keys passed
    as a dict (``**{"data.num_frames": 8}``); ``config``: a YAML file or shipped config name; ``overrides``:
    ``key=value`` strings. Returns the run summary (see :func:`run_extract`).
    """
    values = dict(settings)
    if input is not None:  # a list: tar shards
        values["input"] = [str(i) for i in input] if isinstance(input, (list, tuple)) else str(input)
    if output_dir is not None:
        values["output_dir"] = str(output_dir)
    cfg, loaded = resolve_extract_config(config, overrides, values)
    return run_extract(cfg, loaded, on_shard=on_shard)
