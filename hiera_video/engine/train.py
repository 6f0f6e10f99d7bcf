"""Supervised training (fine-tuning) of a Hiera classifier on videos or images.

    from hiera_video.config import load_config
    from hiera_video.engine.train import train
    result = train(load_config("k400_finetune_hiera_base_16x224", ["data.root=/data/k400"]))
    result["metrics"]["top1"]

Recipe pieces (all from the config): AdamW with layer-wise lr decay, cosine schedule with warmup
(:mod:`~hiera_video.engine.optim`), label smoothing, MixUp / CutMix, drop path (a model field), gradient
clipping and accumulation, bf16 / fp16 autocast with GradScaler for fp16 on GPU, optional ``torch.compile``
and EMA (:mod:`~hiera_video.engine.loop`). Under ``torchrun`` the same call trains with DDP.

Outputs in the run folder: ``config.yaml`` (resolved), ``checkpoints/`` (``last.pt``, ``best.pt``, step
files), ``metrics.jsonl``, ``curves.png``, ``model/`` (the best weights with class names, loadable with
``hiera_video.create_model(pretrained=...)``), ``eval_metrics.json`` and ``eval_confusion.png``. A run folder
that already holds a run is refused unless the call resumes it (``resume=``) or starts it again
(``overwrite=True``, which deletes those outputs first), so two runs never mix. Training stops with
:class:`~hiera_video.engine.loop.TrainingDiverged` when the loss or the weights become non-finite.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hiera_video.config import Config, ConfigError, save_config, validate
from hiera_video.engine import build
from hiera_video.engine.checkpoint import resolve_resume
from hiera_video.engine.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_module,
    init_distributed,
)
from hiera_video.engine.evaluate import EvalResult, evaluate, write_predictions, write_report
from hiera_video.engine.logging import get_logger
from hiera_video.engine.loop import LoopState, autocast_context, fit, honours_deterministic
from hiera_video.engine.pipeline import load_model

__all__ = ["SupervisedTask", "check_run_folder", "seed_everything", "setup_run", "single_frame", "train"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices): the model initialisation then depends on ``seed`` only."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def single_frame(x: torch.Tensor) -> torch.Tensor:
    """The repeated-single-frame ablation: ``[..., C, T, H, W]`` with every frame replaced by the first.

    A model that reaches high accuracy on real clips but only chance on these must be using motion.
    """
    return x[..., :1, :, :].expand_as(x).contiguous()


# What a run writes into its folder. The generated data (``data/``, the demo's default root) is not a run output:
# it is reused by a new run and never deleted.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "curves.png", "model", "tensorboard", "recon", "config.yaml",
               "eval_metrics.json", "eval_confusion.png")


def previous_run_outputs(run_dir: Path) -> list[str]:
    """The outputs of an earlier run found in ``run_dir`` (empty folders do not count)."""
    found = []
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def check_run_folder(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """A new run must not write into an earlier run's folder: that would mix two runs' checkpoints, best
    model and metrics. Refuse unless resuming; ``overwrite`` deletes the earlier outputs first."""
    if resume is not None and overwrite:
        raise ConfigError("--resume continues the run in its folder and --overwrite deletes it: give one of them")
    found = previous_run_outputs(run_dir)
    if resume is not None or not found:
        return
    if not overwrite:
        raise ConfigError(
            f"the run folder {run_dir} already holds a run ({', '.join(found)}): continue it with --resume, "
            "start another one with a new run.name=..., or delete its outputs and start again with --overwrite"
        )
    import shutil

    for name in found:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    get_logger().info("--overwrite: deleted the earlier run's %s in %s", ", ".join(found), run_dir)


def setup_run(
    cfg: Config, job: build.Job, splits: tuple[str, ...], resume: str | None = None, overwrite: bool = False
) -> tuple[Config, DistInfo, Path]:
    """Checks, process group, synthetic data, run folder and resolved config. Cheap checks come first.

    ``resume`` / ``overwrite`` say what may happen to an existing run folder (:func:`check_run_folder`).
    """
    validate(cfg, job)
    build.check_config(cfg, job, splits)
    info = init_distributed(cfg.train.device)
    run_dir = cfg.run_dir
    _on_main(info, lambda: check_run_folder(run_dir, resume, overwrite))
    if cfg.data.synthetic is not None:
        prepared = _on_main(info, lambda: build.prepare_synthetic(cfg, run_dir / "data"))
        cfg = prepared if info.is_main else build.prepare_synthetic(cfg, run_dir / "data")
        build.check_data(_without_synthetic(cfg), splits)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return cfg, info, run_dir


def _on_main(info: DistInfo, work: Callable[[], Any]) -> Any:
    """Run ``work`` on rank 0 while the others wait; a ConfigError it raises is raised on every rank.

    (A bare barrier would leave the other ranks waiting forever for a rank 0 that stopped with an error.)
    """
    result, error = None, None
    if info.is_main:
        try:
            result = work()
        except ConfigError as err:
            error = str(err)
    error = all_gather_objects(error)[0]
    if error is not None:
        raise ConfigError(error)
    return result


def _without_synthetic(cfg: Config) -> Config:
    import copy

    out = copy.deepcopy(cfg)
    out.data.synthetic = None
    return out


class SupervisedTask:
    """Cross-entropy (label smoothing or MixUp/CutMix soft targets) and epoch-end multi-view validation."""

    def __init__(
        self,
        cfg: Config,
        info: DistInfo,
        num_classes: int,
        val_dataset: Any,
        mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> None:
        self.cfg = cfg
        self.info = info
        self.num_classes = num_classes
        self.val_dataset = val_dataset
        self.mixup = mixup
        self.last_eval: EvalResult | None = None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.info.device, non_blocking=True)
        if self.cfg.data.repeat_single_frame and self.cfg.data.kind == "video":
            x = single_frame(x)
        return x

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        x = self.inputs(batch[0])
        y = torch.as_tensor(batch[1]).to(self.info.device, non_blocking=True)
        if self.mixup is not None:
            x, soft = self.mixup(x, y)
            logits = model(x)
            # Soft targets from mixing; label smoothing on top, as timm's SoftTargetCrossEntropy recipe.
            loss = F.cross_entropy(logits.float(), soft, label_smoothing=self.cfg.aug.label_smoothing)
        else:
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.aug.label_smoothing)
        return loss, x.shape[0]

    def validate(self, model: nn.Module, desc: str = "val") -> EvalResult:
        ndim = 3 if self.cfg.data.kind == "video" else 2
        single = self.cfg.data.repeat_single_frame and ndim == 3
        result = evaluate(
            model,
            self.val_dataset,
            self.info,
            self.num_classes,
            batch_size=self.cfg.eval.batch_size,
            num_workers=self.cfg.data.num_workers,
            video_ndim=ndim,
            autocast=lambda: autocast_context(self.info.device, self.cfg.train.precision,
                                              self.cfg.train.force_precision),
            show_progress=self.cfg.train.progress,
            desc=desc,
            input_transform=single_frame if single else None,
        )
        self.last_eval = result
        return result

    def end_of_epoch(self, model: nn.Module, state: LoopState) -> dict[str, Any]:
        if self.val_dataset is None:
            return {}
        result = self.validate(model)
        return {"top1": result.top1, "top5": result.top5, "loss": result.loss, "failed": len(result.failed)}


class SeededMixup:
    """The data layer's MixUp/CutMix with its generator reseeded per batch from the global torch RNG.

    The mixer draws lambda, mode and box from its own numpy generator; reseeding it from the torch stream
    (which every checkpoint saves) makes the draws of a resumed run identical to the uninterrupted run's.
    """

    def __init__(self, cfg: Config, num_classes: int) -> None:
        from hiera_video.data.mixup import MixupCutmix

        a = cfg.aug
        self.mixer = MixupCutmix(num_classes, mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob,
                                 switch_prob=a.switch_prob, seed=0)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.mixer.rng = np.random.default_rng(seed)
        return self.mixer(x, y)


def build_mixup(cfg: Config, num_classes: int) -> SeededMixup | None:
    """MixUp / CutMix, or None when both alphas are 0 (then plain cross-entropy with label smoothing)."""
    if cfg.aug.mixup <= 0 and cfg.aug.cutmix <= 0:
        return None
    return SeededMixup(cfg, num_classes)


@honours_deterministic
def train(
    cfg: Config,
    resume: str | None = None,
    on_step: Callable[[LoopState, float, nn.Module], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a classifier as ``cfg`` says; see the module docstring for the outputs.

    Args:
        resume: ``None``, ``"auto"`` (the run's latest checkpoint), a run folder or a checkpoint file.
        on_step: called after every optimizer step (hooks, tests).
        overwrite: delete an earlier run's outputs in the run folder first (without it, and without
            ``resume``, a run folder that holds a run is refused).

    Returns:
        ``{"run_dir", "metrics" (final evaluation), "best_metric", "state", "train_losses", "seconds",
        "eval_files", "model_dir"}``.
    """
    resume_path = resolve_resume(resume, cfg.run_dir)  # before anything is written: a bad resume stops here
    cfg, info, run_dir = setup_run(cfg, "train", ("train", "val"), resume=resume, overwrite=overwrite)
    log = get_logger(info.is_main)
    class_names = build.read_class_names(cfg)
    num_classes = len(class_names)
    data = build.train_pipeline(cfg, class_names)
    train_set = data.dataset
    val_set = build.eval_dataset(cfg, "val", class_names)
    log.info("data: %d train / %d val items, %d classes, root %s", len(train_set), len(val_set), num_classes,
             cfg.data.root)

    seed_everything(cfg.train.seed)
    model = build.build_model(cfg, num_classes, class_names).to(info.device)
    task = SupervisedTask(cfg, info, num_classes, val_set, build_mixup(cfg, num_classes))
    result = fit(
        cfg, model, train_set, task, info, run_dir, resume=resume_path, best_metric="top1",
        extra_state={"class_names": class_names, "model_name": cfg.model.name, "job": "train"},
        collate_fn=data.collate_fn, on_step=on_step,
    )

    # Final report with the best weights (EMA if enabled), multi-view as configured.
    # Rank 0 wrote the checkpoints; it loads them and broadcasts (other nodes may not share its disk).
    barrier()
    best = run_dir / "checkpoints" / "best.pt"
    best = best if best.is_file() else result.last_checkpoint
    final_model = model
    if info.is_main and best is not None and Path(best).is_file():  # the one way from a path to a model
        model.load_state_dict(load_model(best, use_ema=cfg.eval.use_ema).model.state_dict())
    broadcast_module(model)
    final = task.validate(final_model, desc="final eval")
    eval_files: dict[str, Path] = {}
    model_dir = run_dir / "model"
    if info.is_main:
        eval_files = write_report(final, class_names, run_dir, name="eval")
        eval_files["predictions"] = write_predictions(final, class_names, run_dir / "eval_predictions.jsonl")
        final_model.save_pretrained(str(model_dir))
        log.info(
            "final: top1 %.2f%% top5 %.2f%% on %d items (%d unreadable, excluded); run folder %s",
            100 * final.top1, 100 * final.top5, final.num_videos, len(final.failed), run_dir,
        )
    barrier()
    return {
        "run_dir": run_dir,
        "metrics": final.metrics(),
        "best_metric": result.state.best_metric,
        "state": result.state,
        "train_losses": result.train_losses,
        "seconds": result.seconds,
        "eval_files": eval_files,
        "model_dir": model_dir,
        "model": final_model,
        "class_names": class_names,
    }
