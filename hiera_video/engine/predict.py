"""Top-k labels for video or image files with a trained model (``hiera-video predict``).

    from hiera_video.engine.predict import predict_files
    for r in predict_files(["a.mp4", "b.mp4"], "runs/demo", topk=3):
        print(r["path"], r["topk"])          # [("left", 0.97), ("up", 0.02), ...]

Videos go through the test pipeline of the run that trained the model (its ``config.yaml``: clip length,
sampling rate, crop, normalisation): ``num_clips`` uniformly spaced clips x ``num_crops`` crops, softmax
averaged. Images use the image test transform. A file that cannot be read gets ``{"path", "error"}`` and the
others are still predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hiera_video.engine.distributed import resolve_device

__all__ = ["predict_files"]


@torch.no_grad()
def predict_files(
    paths: Sequence[str | Path],
    model_source: str | Path,
    topk: int = 5,
    num_clips: int = 1,
    num_crops: int = 1,
    device: str = "auto",
    batch_views: int = 32,
) -> list[dict[str, Any]]:
    """Predict every file; returns ``[{"path", "topk": [(label, prob), ...]}]`` or ``{"path", "error"}``."""
    import copy

    from hiera_video.config import ConfigError, validate
    from hiera_video.data.annotations import IMAGE_EXTENSIONS, VideoRecord
    from hiera_video.data.datasets import VideoDataset
    from hiera_video.engine.evaluate import predict_views
    from hiera_video.engine.pipeline import config_for_model, eval_pipeline, load_model, require_classifier

    # Checked before the model loads, as ConfigError (the CLI prints it without a traceback).
    for name, value in (("topk", topk), ("num_clips", num_clips), ("batch_views", batch_views)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if num_crops not in (1, 3):
        raise ConfigError(f"num_crops must be 1 (centre crop) or 3 (left, centre, right), got {num_crops!r}")
    dev = resolve_device(device)
    model, cfg, names, _ = load_model(model_source, device=dev)
    require_classifier(model, model_source)
    cfg = copy.deepcopy(cfg) if cfg is not None else config_for_model(model)
    cfg.eval.num_clips, cfg.eval.num_crops = num_clips, num_crops
    validate(cfg, "predict")  # the run's own config.yaml may have been edited by hand
    pipe = eval_pipeline(cfg)
    k = min(topk, len(names))
    is_video_model = model.config.is_video
    results: list[dict[str, Any]] = []

    def top(probs: torch.Tensor) -> list[tuple[str, float]]:
        values, indices = probs.topk(k)
        return [(names[i], round(float(v), 6)) for v, i in zip(values.tolist(), indices.tolist())]

    paths = [Path(p) for p in paths]
    videos = [p for p in paths if p.suffix.lower() not in IMAGE_EXTENSIONS]
    video_views: dict[Path, torch.Tensor | None] = {}
    if videos and is_video_model:
        dataset = VideoDataset([VideoRecord(str(p)) for p in videos], train=False, clip_sampler=pipe.clip_sampler,
                               transform=pipe.transform, backend=cfg.data.decoder)
        for i, p in enumerate(videos):
            views, _, _, valid = dataset[i]
            video_views[p] = views if valid else None
    for p in paths:
        if not p.is_file():
            results.append({"path": str(p), "error": "file not found"})
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            if is_video_model:
                results.append({"path": str(p), "error": "a video model cannot classify a single image"})
                continue
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(p) as img:
                    x = pipe.transform(img.convert("RGB"))[None, None]  # [1, V=1, C, H, W]
            except (OSError, UnidentifiedImageError) as err:
                results.append({"path": str(p), "error": f"cannot read image: {err}"})
                continue
            probs = predict_views(model, x.to(dev), video_ndim=2)[0]
        else:
            if not is_video_model:
                results.append({"path": str(p), "error": "an image model cannot classify a video"})
                continue
            views = video_views.get(p)
            if views is None:
                results.append({"path": str(p), "error": "unreadable video (could not be decoded)"})
                continue
            probs = predict_views(model, views[None].to(dev), video_ndim=3, view_batch=batch_views)[0]
        results.append({"path": str(p), "topk": top(probs.cpu())})
    return results
