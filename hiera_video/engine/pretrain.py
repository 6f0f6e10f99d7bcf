"""MAE pretraining of Hiera on videos or images (no labels used).

    from hiera_video.config import load_config
    from hiera_video.engine.pretrain import pretrain
    pretrain(load_config("k400_mae_pretrain_hiera_base_16x224", ["data.root=/data/k400"]))

The recipe of the papers comes from the config (AdamW betas 0.9/0.95, no layer-wise decay, mask ratio 0.9
for video / 0.6 for images, cosine schedule with long warmup). The model draws a random mask per sample from
the global torch generator, which the checkpoints save, so resume is exact here too.

At the end of every ``mae.vis_every_epochs`` epochs the run folder gets ``recon/epoch_XXXX.png``: for a few
fixed validation clips, rows of input frames, masked input and reconstruction, drawn by
:func:`hiera_video.models.mae_visualize.save_reconstruction` (masked patches' per-patch normalisation undone
with the visible patches' statistics).
The validation MAE loss on a fixed subset with fixed masks is logged each epoch, so curves are comparable.

The encoder of the result fine-tunes with ``hiera-video train`` and
``model.pretrained=<run>/checkpoints/last.pt`` or ``<run>/model`` (encoder weights load into the classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hiera_video.config import Config
from hiera_video.engine import build
from hiera_video.engine.checkpoint import resolve_resume
from hiera_video.engine.distributed import DistInfo, barrier
from hiera_video.engine.logging import get_logger
from hiera_video.engine.loop import LoopState, autocast_context, fit, honours_deterministic
from hiera_video.engine.train import seed_everything, setup_run

__all__ = ["MAETask", "pretrain"]

_VAL_SUBSET = 32  # validation clips scored each epoch (fixed subset, fixed masks)


def _first_view(item: Any) -> torch.Tensor:
    """The clip of a dataset item; a test-mode item holds views ``[V, C, ...]``: take the first."""
    x = torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)
    return x


class MAETask:
    """MAE loss on training batches; fixed-mask validation loss and reconstruction pictures per epoch."""

    def __init__(self, cfg: Config, info: DistInfo, run_dir: Path, val_dataset: Any, ndim: int) -> None:
        self.cfg = cfg
        self.info = info
        self.run_dir = run_dir
        self.val_dataset = val_dataset
        self.ndim = ndim  # spatial(-temporal) dims of one clip: 3 video, 2 image
        self._val_batch: torch.Tensor | None = None

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        x = torch.as_tensor(batch[0] if isinstance(batch, (tuple, list)) else batch)
        x = x.to(self.info.device, non_blocking=True)
        out = model(x, mask_ratio=self.cfg.mae.mask_ratio)
        return out.loss, x.shape[0]

    def val_batch(self) -> torch.Tensor | None:
        """A fixed batch of validation clips (first view of the first items), loaded once."""
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return None
        if self._val_batch is None:
            clips = []
            for i in range(min(_VAL_SUBSET, len(self.val_dataset))):
                try:
                    clip = _first_view(self.val_dataset[i])
                except Exception:  # noqa: BLE001 - an unreadable validation video is skipped
                    continue
                if clip.numel() == 0:  # the data layer's marker for an unreadable video
                    continue
                if clip.ndim == self.ndim + 2:  # [V, C, ...]: multi-view test item
                    clip = clip[0]
                clips.append(clip)
            self._val_batch = torch.stack(clips) if clips else None
        return self._val_batch

    @torch.no_grad()
    def end_of_epoch(self, model: nn.Module, state: LoopState) -> dict[str, Any]:
        batch = self.val_batch()
        if batch is None:
            return {}
        was_training = model.training
        model.eval()
        x = batch.to(self.info.device)
        # Same masks every epoch: a generator with a fixed seed (does not touch the global RNG stream).
        gen = torch.Generator(device="cpu").manual_seed(1234)
        mask = model.get_random_mask(x.shape[0], generator=gen, mask_ratio=self.cfg.mae.mask_ratio,
                                     device=x.device)
        with autocast_context(self.info.device, self.cfg.train.precision, self.cfg.train.force_precision):
            out = model(x, mask=mask)
        metrics = {"mae_loss": float(out.loss)}
        every = self.cfg.mae.vis_every_epochs
        is_last = state.epoch + 1 == self.cfg.train.epochs
        if self.info.is_main and every > 0 and ((state.epoch + 1) % every == 0 or is_last):
            n = min(self.cfg.mae.vis_num, x.shape[0])
            path = self.run_dir / "recon" / f"epoch_{state.epoch + 1:04d}.png"
            from hiera_video.models.mae_visualize import save_reconstruction

            save_reconstruction(model, x[:n], path, mask=mask[:n], mean=self.cfg.data.mean, std=self.cfg.data.std)
            metrics["recon_picture"] = str(path)
        if was_training:
            model.train()
        return metrics


@honours_deterministic
def pretrain(cfg: Config, resume: str | None = None, on_step: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """MAE-pretrain ``cfg.model.name`` (an ``mae_*`` model) on the training split.

    ``resume`` / ``overwrite`` as in :func:`hiera_video.engine.train.train`.

    Returns ``{"run_dir", "metrics" (last epoch), "state", "train_losses", "seconds", "model_dir"}``;
    ``model_dir`` holds the final weights (``save_pretrained``), loadable into the classifier.
    """
    resume_path = resolve_resume(resume, cfg.run_dir)  # before anything is written: a bad resume stops here
    cfg, info, run_dir = setup_run(cfg, "pretrain", ("train",), resume=resume, overwrite=overwrite)
    log = get_logger(info.is_main)
    data = build.train_pipeline(cfg)
    train_set = data.dataset
    val_set = build.eval_dataset(cfg, "val", data.class_names) if build.has_split(cfg, "val") else None
    log.info("data: %d train items (labels unused), root %s", len(train_set), cfg.data.root)

    seed_everything(cfg.train.seed)
    model = build.build_model(cfg).to(info.device)
    ndim = 3 if cfg.data.kind == "video" else 2
    task = MAETask(cfg, info, run_dir, val_set, ndim)
    result = fit(
        cfg, model, train_set, task, info, run_dir, resume=resume_path, best_metric=None, layer_decay=1.0,
        extra_state={"model_name": cfg.model.name, "job": "pretrain"}, collate_fn=data.collate_fn,
        on_step=on_step,
    )
    model_dir = run_dir / "model"
    if info.is_main:
        model.save_pretrained(str(model_dir))
        log.info("pretraining done: final train loss %.4f; weights in %s",
                 result.train_losses[-1] if result.train_losses else float("nan"), model_dir)
    barrier()
    return {
        "run_dir": run_dir,
        "metrics": result.last_metrics,
        "state": result.state,
        "train_losses": result.train_losses,
        "seconds": result.seconds,
        "model_dir": model_dir,
        "model": model,
    }
