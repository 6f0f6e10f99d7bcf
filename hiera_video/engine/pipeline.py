"""The one way from a path or name to a model, and the one evaluation pipeline (eval, predict, extract).

    loaded = load_model("runs/demo")                  # run folder / last.pt / best.pt / save_pretrained / name
    loaded.model, loaded.config, loaded.class_names   # eval-mode model, the run's Config (or None), labels
    pipe = eval_pipeline(loaded.config or config_for_model(loaded.model))
    pipe.clip_sampler(len(reader), reader.fps)        # [num_clips, T] frame indices
    pipe.transform(frames)                            # float views [num_clips * num_crops, C, T, H, W]

Every job that evaluates a trained model goes through these two functions, so ``hiera-video eval``,
``predict``, ``extract`` and a user's own Python see the same weights (EMA when the checkpoint has them)
and the same frames for the same settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn as nn

from hiera_video.config import Config, ConfigError

__all__ = ["EvalPipeline", "LoadedModel", "config_for_model", "eval_pipeline", "eval_sampler_kind", "load_model",
           "require_classifier"]

logger = logging.getLogger("hiera_video")


# ============================================================================================ models
class LoadedModel(NamedTuple):
    """What :func:`load_model` returns."""

    model: nn.Module  # in eval mode, on the requested device, gradients off
    config: Config | None  # the training run's Config (a run folder / training checkpoint), else None
    class_names: list[str]  # label order of the head ("0", "1", ... when the source names none)
    description: str  # what was loaded, e.g. "runs/x/checkpoints/best.pt (EMA weights)"


def load_model(source: str | Path, *, device: str | torch.device = "cpu", use_ema: bool = True,
               pretrained: str | None = None, **overrides: Any) -> LoadedModel:
    """A model for inference from a trained run or a registry name.

    ``source`` is an existing path, loaded as what it is:

    * a training run folder: its ``checkpoints/best.pt`` (else ``last.pt``) and its ``config.yaml``; a run
      folder without checkpoints uses its exported ``model/`` folder;
    * a training checkpoint (``last.pt``, ``best.pt``, ``ckpt_*.pt``): the weights and the config it carries;
    * a ``save_pretrained`` folder (``config.json`` + weights);

    EMA weights are taken when the checkpoint has them and ``use_ema`` (the description says which). Or
    ``source`` is a registry name (``hiera_video.list_models()``), built by ``create_model`` with
    ``pretrained`` weights (file, folder or hub id) and ``overrides`` (config fields); these two apply only
    to a registry name.
    """
    path = Path(source).expanduser()
    if path.exists():
        if pretrained is not None or overrides:
            raise ConfigError(f"model {str(source)!r} is a trained model: pretrained weights and model "
                              "overrides do not apply to it (give a registry name to use them)")
        model, cfg, names, description = _load_trained(path, use_ema)
    else:
        from hiera_video.fileio import did_you_mean
        from hiera_video.models import create_model, list_models

        name = str(source)
        if "/" in name or name.endswith((".pt", ".pth", ".safetensors")):  # (registry names have no "/")
            raise FileNotFoundError(f"model {name!r} does not exist (a run folder, a training checkpoint .pt, "
                                    "a save_pretrained folder or a registry name)")
        if name not in list_models():
            raise ConfigError(f"model {name!r} is neither a registered model{did_you_mean(name, list_models())} "
                              "nor an existing run folder, training checkpoint or save_pretrained folder")
        model = create_model(name, pretrained=pretrained, **overrides)
        cfg = None
        names = list(model.config.extra.get("class_names") or [])
        description = f"{name} with weights from {pretrained}" if pretrained else f"{name} (random weights)"
    if not names and getattr(model.config, "num_classes", 0):
        names = [str(i) for i in range(model.config.num_classes)]
    model = model.to(device).eval().requires_grad_(False)
    return LoadedModel(model, cfg, names, description)


def require_classifier(model: nn.Module, source: str | Path) -> None:
    """Refuse a pretraining (MAE) model where a classifier is needed, saying what to do with it instead."""
    if getattr(model, "arch", "hiera") == "mae_hiera" or getattr(model.config, "num_classes", 1) == 0:
        mae = getattr(model, "arch", "") == "mae_hiera"
        what = "a pretraining (MAE) checkpoint" if mae else "a model without a classifier head"
        raise ConfigError(
            f"{source} is {what}: it has no classifier to predict labels with. Fine-tune it on labelled videos "
            f"first (hiera-video train <config> model.pretrained={source} data.root=<your data>), then use "
            "that run; or take its encoder's features with hiera-video extract"
        )


def _load_trained(source: Path, use_ema: bool) -> tuple[nn.Module, Config | None, list[str], str]:
    """(model, run config, class names, description) of a run folder, training checkpoint or export.

    The weights come through ``create_model(pretrained=...)``, the one way from a path to a model (EMA
    weights preferred when ``use_ema``); the run's Config is read here, for the clip and crop settings.
    """
    from hiera_video.config import config_from_dict, load_config
    from hiera_video.models import create_model

    cfg: Config | None = None
    ckpt_path: Path | None = source
    if source.is_dir():
        ckpt_path = next((c for c in (source / "checkpoints" / "best.pt", source / "checkpoints" / "last.pt")
                          if c.is_file()), None)
        if (source / "config.yaml").is_file():
            cfg = load_config(source / "config.yaml")
        if ckpt_path is None:
            export = source / "model" if (source / "model" / "config.json").is_file() else source
            if not (export / "config.json").is_file():
                raise FileNotFoundError(f"{source}: no checkpoints/best.pt, checkpoints/last.pt or config.json "
                                        "(a run folder, a training checkpoint or a save_pretrained folder)")
            model = create_model(None, pretrained=str(export))
            return model, cfg, list(model.config.extra.get("class_names") or []), f"{export} (save_pretrained)"
    from hiera_video.models.weights import read_checkpoint

    ckpt = read_checkpoint(ckpt_path, use_ema=None if use_ema else False)  # read once: weights + run config
    if ckpt.run_config is None:
        raise ValueError(f"{ckpt_path} is not a hiera-video training checkpoint (no 'model' / 'config' entries)")
    if cfg is None:
        cfg = config_from_dict(ckpt.run_config)
    model = create_model(None, pretrained=ckpt)
    names = list(model.config.extra.get("class_names") or [])
    return model, cfg, names, f"{ckpt_path} ({'EMA' if '(EMA)' in ckpt.format else 'model'} weights)"


def config_for_model(model: nn.Module) -> Config:
    """A Config whose data section fits ``model``, for a model that came without its training run.

    The model fixes what it can: the kind (video / image), the clip length and the crop (its input size),
    and the statistics by kind (Kinetics for video, ImageNet for images, the conventions of the published
    Hiera weights). Everything else keeps the :class:`~hiera_video.config.Config` defaults.
    """
    from hiera_video.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    size = tuple(model.config.input_size)
    out = Config()
    if len(size) == 3:
        out.data.kind, out.data.num_frames, out.data.crop_size = "video", int(size[0]), int(size[1])
    else:
        out.data.kind, out.data.crop_size = "image", int(size[0])
        out.data.mean, out.data.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    return out


# ============================================================================================ data
class EvalPipeline(NamedTuple):
    """How videos (or images) become model input for evaluation, prediction and extraction."""

    kind: str  # "video" or "image" (an image model reads a video frame by frame: 1-frame clips)
    clip_sampler: Any  # UniformClipSampler (eval / predict / uniform extraction) or SlidingClipSampler
    transform: Any  # VideoEvalTransform (uint8 [T, H, W, C] -> float [views, C, T, h, w]) or ImageEvalTransform
    frame_transform: Any  # FrameTransform: uint8 [t, H, W, 3] -> uint8 [t, 3, h, w] (the spatial part)
    normalize: Any  # NormalizeToFloat: uint8 [B, T, C, h, w] -> float [B, C, T, h, w] (images: [B, C, h, w])
    settings: dict[str, Any]  # the resolved values (defaults filled in), e.g. for extract_config.json


def eval_sampler_kind(cfg: Config) -> str:
    """``eval.sampler`` resolved: ``segment`` follows a segment-trained recipe, otherwise ``uniform``."""
    if cfg.eval.sampler != "auto":
        return cfg.eval.sampler
    return "segment" if cfg.data.train_sampler == "segment" else "uniform"


def eval_pipeline(cfg: Config, clips: Literal["uniform", "sliding"] = "uniform",
                  size_multiple: tuple[int, int] = (1, 1)) -> EvalPipeline:
    """The evaluation pipeline of ``cfg``: clip sampler + spatial transform + normalisation.

    ``clips="uniform"``: ``eval.num_clips`` evenly spaced clips (multi-view testing; ``eval.num_crops``
    crops in ``transform``). ``clips="sliding"``: every clip at ``extract.stride`` / ``stride_seconds`` with
    ``extract.tail`` (feature extraction). Clips are ``data.num_frames`` frames every ``data.sampling_rate``
    (at ``data.target_fps``); images and image models use one frame, every frame, no frame rate. The crop is
    ``data.crop_size`` after a short-side resize to ``data.test_short_side`` (default: the crop for video,
    ``crop / 0.875`` for images). ``frame_transform`` follows ``extract.spatial`` (``full``: frame sides
    rounded to ``size_multiple``, the model's patch grid) and ``extract.decode_resize``.
    """
    from hiera_video.data.clip_sampling import SegmentClipSampler, SlidingClipSampler, UniformClipSampler
    from hiera_video.data.streaming import FrameTransform
    from hiera_video.data.transforms import ImageEvalTransform, NormalizeToFloat, VideoEvalTransform

    d, video = cfg.data, cfg.data.kind == "video"
    T, rate = (d.num_frames, d.sampling_rate) if video else (1, 1)
    target_fps = d.target_fps if video else None
    crop, mean, std = d.crop_size, tuple(d.mean), tuple(d.std)
    short = d.test_short_side if d.test_short_side is not None else (crop if video else int(round(crop / 0.875)))
    geometry = dict(num_frames=T, sampling_rate=rate, target_fps=target_fps)
    if clips == "uniform" and video and eval_sampler_kind(cfg) == "segment":  # TSN-style test views (SSv2)
        sampler: Any = SegmentClipSampler(num_frames=T, random=False, num_clips=cfg.eval.num_clips)
    elif clips == "uniform":
        sampler = UniformClipSampler(**geometry, num_clips=cfg.eval.num_clips)
    elif clips == "sliding":
        e = cfg.extract
        sampler = SlidingClipSampler(**geometry, stride=e.stride, stride_seconds=e.stride_seconds, tail=e.tail)
    else:
        raise ValueError(f"clips must be 'uniform' or 'sliding', got {clips!r}")
    if video:
        transform: Any = VideoEvalTransform(crop_size=crop, short_side=short, num_crops=cfg.eval.num_crops,
                                            mean=mean, std=std)
    else:
        transform = ImageEvalTransform(crop_size=crop, resize_size=short, mean=mean, std=std)
    spatial = cfg.extract.spatial
    frame_short = short if spatial == "center_crop" else d.test_short_side
    frame_transform = FrameTransform(spatial, crop, frame_short, (int(size_multiple[0]), int(size_multiple[1])),
                                     resize_in_decoder=cfg.extract.decode_resize and frame_short is not None)
    settings = {"data.kind": d.kind, "data.num_frames": T, "data.sampling_rate": rate, "data.target_fps": target_fps,
                "data.crop_size": crop, "data.test_short_side": frame_short, "data.mean": list(mean),
                "data.std": list(std), "extract.spatial": spatial, "extract.decode_resize":
                frame_transform.resize_in_decoder}
    if clips == "uniform":
        settings.update({"eval.num_clips": cfg.eval.num_clips})
    else:
        settings.update({"extract.stride": cfg.extract.stride, "extract.stride_seconds": cfg.extract.stride_seconds,
                         "extract.tail": cfg.extract.tail})
    return EvalPipeline(d.kind, sampler, transform, frame_transform,
                        NormalizeToFloat(mean, std, video_to_cthw=video), settings)
