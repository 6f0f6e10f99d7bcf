"""Multi-view evaluation: per-video softmax averaged over clips x crops, top-1/top-5, per-class accuracy.

A test dataset is the data layer's (``VideoDataset`` / ``ImageFolderDataset`` with ``train=False``, built by
:func:`hiera_video.engine.build.eval_dataset`): items ``(views, label, index, valid)`` with ``views``
``[V, C, T, H, W]`` (V = temporal clips x spatial crops; images ``[1, C, H, W]``), batched by the data
layer's :func:`~hiera_video.data.datasets.collate_eval`. :func:`evaluate` runs every view, averages the
softmax probabilities per video (the protocol of the Hiera / MAE-ST papers), shards the videos over ranks and
gathers the scores on every rank. Items that cannot be decoded (``valid=False``) are excluded from the
accuracy, counted and listed, so one corrupt file does not stop an evaluation of thousands.

:func:`write_report` saves ``metrics.json`` (everything, including per-class accuracy and the confusion
matrix) and ``confusion.png``; :func:`write_predictions` one JSON line per video (path, label, averaged
probabilities, top-5) for error analysis.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hiera_video.engine.distributed import DistInfo, all_gather_objects
from hiera_video.engine.logging import progress
from hiera_video.fileio import atomic_write_text

__all__ = ["EvalResult", "evaluate", "plot_confusion", "write_predictions", "write_report"]


@dataclass
class EvalResult:
    """Scores of one evaluation (identical on every rank)."""

    top1: float
    top5: float
    loss: float
    num_videos: int
    num_classes: int
    per_class: list[float | None]  # accuracy per class; None for classes absent from the split
    confusion: list[list[int]]  # [true class][predicted class] counts
    failed: list[dict[str, str]] = field(default_factory=list)  # unreadable items: index, path, error
    probs: torch.Tensor | None = None  # [N, num_classes] averaged softmax, in dataset order of `indices`
    indices: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # true labels of `indices`
    paths: list[str] = field(default_factory=list)  # files of `indices`

    def metrics(self) -> dict[str, Any]:
        """JSON-friendly summary (without the probability matrix)."""
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "num_videos": self.num_videos,
            "num_failed": len(self.failed),
            "num_classes": self.num_classes,
            "per_class_accuracy": self.per_class,
            "confusion_matrix": self.confusion,
            "failed": self.failed,
        }


@torch.no_grad()
def predict_views(
    model: nn.Module, views: torch.Tensor, video_ndim: int, view_batch: int | None = None
) -> torch.Tensor:
    """Softmax averaged over views. ``views``: ``[B, V, C, *S]`` or ``[B, C, *S]`` -> ``[B, num_classes]``.

    ``video_ndim`` is the number of spatial(-temporal) dims of one view (3 for video, 2 for images).
    """
    if views.ndim == 2 + video_ndim:
        views = views[:, None]
    B, V = views.shape[:2]
    flat = views.flatten(0, 1)
    chunk = view_batch or flat.shape[0]
    logits = torch.cat([model(flat[i : i + chunk]).float() for i in range(0, flat.shape[0], chunk)])
    return logits.softmax(-1).view(B, V, -1).mean(1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    info: DistInfo,
    num_classes: int,
    batch_size: int = 4,
    num_workers: int = 0,
    video_ndim: int = 3,
    autocast: Any = None,
    show_progress: bool = True,
    desc: str = "eval",
    input_transform: Any = None,
) -> EvalResult:
    """Evaluate ``model`` on every item of ``dataset`` (sharded over ranks, results gathered everywhere).

    ``input_transform`` (optional) maps a batch of views ``[B, V, C, *S]`` to what the model sees (e.g. the
    single-frame ablation). ``autocast`` is a context-manager factory for mixed precision.
    """
    import contextlib

    from hiera_video.data.datasets import collate_eval
    from hiera_video.engine.sampler import ResumableSampler

    was_training = model.training
    model.eval()
    sampler = ResumableSampler(
        len(dataset), shuffle=False, rank=info.rank, world_size=info.world_size, drop_last=False
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=list(sampler), num_workers=num_workers, collate_fn=collate_eval
    )
    all_probs: list[torch.Tensor] = []
    all_labels: list[torch.Tensor] = []
    all_indices: list[torch.Tensor] = []
    failed: list[int] = []
    bar = progress(
        loader, total_clips=len(sampler), desc=desc, unit="video", enabled=info.is_main and show_progress,
        clips_of=lambda b: len(b.labels) + len(b.failed),
    )
    for batch in bar:
        failed.extend(batch.failed)
        if not len(batch.labels):
            continue
        views = batch.views.to(info.device, non_blocking=True)
        if input_transform is not None:
            views = input_transform(views)
        with autocast() if autocast is not None else contextlib.nullcontext():
            probs = predict_views(model, views, video_ndim)
        all_probs.append(probs.cpu())
        all_labels.append(batch.labels)
        all_indices.append(batch.indices)
    if was_training:
        model.train()

    local = (
        torch.cat(all_probs) if all_probs else torch.empty(0, num_classes),
        torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long),
        torch.cat(all_indices) if all_indices else torch.empty(0, dtype=torch.long),
        failed,
    )
    gathered = all_gather_objects(local)
    probs = torch.cat([g[0] for g in gathered])
    labels = torch.cat([g[1] for g in gathered])
    indices = torch.cat([g[2] for g in gathered])
    order = indices.argsort()
    probs, labels, indices = probs[order], labels[order], indices[order]
    # The data layer logged each decoder error with its path; the report names the files.
    failures = [(i, _path_of(dataset, i), "unreadable (decoder error in the log)")
                for i in sorted({i for g in gathered for i in g[3]})]
    result = _score(probs, labels, indices, num_classes, failures)
    result.paths = [_path_of(dataset, i) for i in result.indices]
    return result


def _path_of(dataset: Any, index: int) -> str:
    """The file of item ``index`` of a data-layer dataset (its ``records``); ``#index`` for other datasets."""
    records = getattr(dataset, "records", None)
    return str(records[index].path) if records is not None and 0 <= index < len(records) else f"#{index}"


def _score(probs: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, num_classes: int,
           failures: list[tuple[int, str, str]]) -> EvalResult:
    n = labels.numel()
    failed = [{"index": str(i), "path": p, "error": e} for i, p, e in failures]
    if n == 0:
        return EvalResult(0.0, 0.0, float("nan"), 0, num_classes, [None] * num_classes,
                          [[0] * num_classes for _ in range(num_classes)], failed, probs, indices.tolist())
    k = min(5, num_classes)
    topk = probs.topk(k, dim=-1).indices
    top1 = (topk[:, 0] == labels).float().mean().item()
    top5 = (topk == labels[:, None]).any(-1).float().mean().item()
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    pred = topk[:, 0]
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    support = confusion.sum(1)
    per_class = [
        (confusion[c, c].item() / support[c].item()) if support[c] > 0 else None for c in range(num_classes)
    ]
    return EvalResult(top1, top5, loss, n, num_classes, per_class, confusion.tolist(), failed, probs,
                      indices.tolist(), labels.tolist())


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: str | os.PathLike[str]) -> Path:
    """Row-normalised confusion matrix picture (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mat = torch.tensor(confusion, dtype=torch.float64)
    norm = mat / mat.sum(1, keepdim=True).clamp_min(1)
    n = mat.shape[0]
    size = min(20.0, max(4.0, 0.35 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 40:  # beyond that the tick labels are unreadable anyway
        ax.set_xticks(range(n), class_names[:n], rotation=90)
        ax.set_yticks(range(n), class_names[:n])
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, int(mat[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(result: EvalResult, class_names: list[str], out_dir: str | os.PathLike[str],
                 name: str = "eval") -> dict[str, Path]:
    """Write ``<name>_metrics.json`` and ``<name>_confusion.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = result.metrics()
    metrics["class_names"] = class_names
    metrics["per_class_accuracy"] = {
        name_: acc for name_, acc in zip(class_names, result.per_class)
    }
    json_path = out_dir / f"{name}_metrics.json"
    atomic_write_text(json_path, json.dumps(metrics, indent=2))
    png = plot_confusion(result.confusion, class_names, out_dir / f"{name}_confusion.png")
    return {"metrics": json_path, "confusion": png}


def write_predictions(
    result: EvalResult, class_names: list[str], path: str | os.PathLike[str], split: str = "val", topk: int = 5
) -> Path:
    """One JSON line per item of the evaluation, in dataset order, written atomically to ``path``.

    Scored items: ``{"index", "path", "split", "label", "label_name", "probs" (the view-averaged softmax over
    all classes, in class order), "topk" ([[class name, probability], ...], best first)}``; unreadable items:
    ``{"index", "path", "split", "error"}``.
    """
    rows: list[tuple[int, dict[str, Any]]] = []
    if result.probs is not None and len(result.indices):
        k = min(topk, result.probs.shape[1])
        top_p, top_i = result.probs.topk(k, dim=-1)
        for row, (index, item_path, label) in enumerate(zip(result.indices, result.paths, result.labels)):
            rows.append((index, {
                "index": index, "path": item_path, "split": split, "label": label,
                "label_name": class_names[label] if 0 <= label < len(class_names) else None,
                "probs": result.probs[row].tolist(),
                "topk": [[class_names[c], p] for c, p in zip(top_i[row].tolist(), top_p[row].tolist())],
            }))
    for failure in result.failed:
        index = int(failure["index"])
        rows.append((index, {"index": index, "path": failure["path"], "split": split, "error": failure["error"]}))
    text = "".join(json.dumps(row) + "\n" for _, row in sorted(rows, key=lambda item: item[0]))
    return atomic_write_text(path, text)


def evaluate_run(
    config: str,
    overrides: list[str] | None = None,
    checkpoint: str | None = None,
    print_config: bool = False,
) -> dict[str, Any] | None:
    """The ``eval`` job: multi-view test of a trained model, report written next to the run.

    Args:
        config: a run folder (its ``config.yaml`` is the base) or a config name / YAML path.
        overrides: ``key=value`` overrides (e.g. ``eval.num_clips=5 eval.num_crops=3 eval.split=test``).
        checkpoint: run folder, ``.pt`` or ``save_pretrained`` folder; default the run folder given as
            ``config``, else ``eval.checkpoint``.

    Returns:
        ``{"metrics", "files", "result"}`` (None when only printing the config).
    """
    import yaml

    from hiera_video.config import ConfigError, config_to_dict, load_config, validate
    from hiera_video.engine import build
    from hiera_video.engine.distributed import init_distributed
    from hiera_video.engine.logging import get_logger
    from hiera_video.engine.loop import autocast_context

    path = Path(config)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"{config}: a run folder must contain config.yaml")
        cfg = load_config(path / "config.yaml", overrides)
        source = checkpoint or cfg.eval.checkpoint or str(path)
    else:
        cfg = load_config(config, overrides)
        source = checkpoint or cfg.eval.checkpoint
        if source is None:
            raise ConfigError("no model to evaluate: pass --checkpoint or eval.checkpoint=<run folder or .pt>")
    if print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None), end="")
        return None
    split = cfg.eval.split
    validate(cfg, "eval")
    build.check_model(cfg, "eval")
    build.check_data(cfg if cfg.data.root is None else _no_synthetic(cfg), (split,))
    if not Path(source).exists():
        raise FileNotFoundError(f"checkpoint {source!r} does not exist")
    info = init_distributed(cfg.train.device)
    log = get_logger(info.is_main)
    from hiera_video.engine.pipeline import load_model, require_classifier

    model, _, names, what = load_model(source, device=info.device, use_ema=cfg.eval.use_ema)
    require_classifier(model, source)
    data_names = build.read_class_names(cfg)
    _check_classes(names, data_names, source, cfg.data.root)
    decode_on = build.decode_device(cfg, info.device)  # data.decode_device: GPU decoding in this process
    dataset = build.eval_dataset(cfg, split, data_names, device=decode_on)
    log.info("evaluating %s on %d %s items (%d clips x %d crops, decoded on %s)", what, len(dataset), split,
             cfg.eval.num_clips, cfg.eval.num_crops, decode_on)
    result = evaluate(
        model, dataset, info, len(names), batch_size=cfg.eval.batch_size,
        num_workers=build.loader_workers(cfg, decode_on),
        video_ndim=3 if cfg.data.kind == "video" else 2,
        autocast=lambda: autocast_context(info.device, cfg.train.precision, cfg.train.force_precision),
        show_progress=cfg.train.progress,
        desc=f"eval {split}",
    )
    out_dir = path if path.is_dir() else cfg.run_dir
    files: dict[str, Path] = {}
    if info.is_main:
        files = write_report(result, names, out_dir, name=f"eval_{split}")
        files["predictions"] = write_predictions(result, names, Path(out_dir) / "eval_predictions.jsonl", split)
    return {"metrics": result.metrics(), "files": files, "result": result}


def _check_classes(model_names: list[str], data_names: list[str], source: str, root: Any) -> None:
    """The model must score the data's classes: same number, and the same names where both have names.

    A model with more classes would be scored on a subset (top-5 trivially high), one with fewer would index
    past its outputs; class names in another order would silently permute the labels.
    """
    from hiera_video.config import ConfigError

    def named(names: list[str]) -> bool:
        return any(not n.isdigit() for n in names)

    if len(model_names) != len(data_names):
        raise ConfigError(
            f"the model {source} predicts {len(model_names)} classes but the data in {root} has "
            f"{len(data_names)} ({', '.join(data_names[:6])}{', ...' if len(data_names) > 6 else ''}): evaluate "
            "it on the dataset it was trained for (data.root=...), or fine-tune a model on these classes"
        )
    if named(model_names) and named(data_names) and model_names != data_names:
        diff = next(i for i, (a, b) in enumerate(zip(model_names, data_names)) if a != b)
        raise ConfigError(
            f"the model {source} and the data in {root} name their classes differently (label {diff}: model "
            f"{model_names[diff]!r}, data {data_names[diff]!r}): the labels would be scored against the wrong "
            "classes; use the data's classes.txt the model was trained with"
        )


def _no_synthetic(cfg: Any) -> Any:
    import copy

    out = copy.deepcopy(cfg)
    out.data.synthetic = None
    return out
