"""The optimisation loop shared by supervised training and MAE pretraining.

:func:`fit` owns everything that is the same for both jobs: the resumable sampler and DataLoader, gradient
accumulation (with DDP's ``no_sync`` on all but the last micro-batch), autocast and GradScaler, gradient
clipping, the per-step lr schedule, EMA, progress bars, JSON-lines logging, periodic and epoch-end
checkpoints, best-checkpoint tracking, Ctrl-C handling and exact resume. What differs between jobs is a
:class:`Task`: how a batch becomes a loss, and what happens at the end of an epoch (validation metrics,
reconstruction pictures).

Resume is exact because everything random is either restored (global RNG states of every rank, saved with
each checkpoint) or a pure function of ``(seed, epoch, position / index)`` (data order:
:mod:`hiera_video.engine.sampler`; per-sample augmentation: the data layer's datasets). A run stopped after
optimizer step N and resumed therefore performs the same steps N+1, N+2, ... as the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from hiera_video.allocator import keep_freed_memory, release_freed_memory
from hiera_video.config import Config, ConfigError, config_to_dict
from hiera_video.engine.checkpoint import (
    CheckpointManager,
    GracefulInterrupt,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from hiera_video.engine.distributed import DistInfo, all_gather_objects, all_reduce_sum, unwrap, wrap_ddp
from hiera_video.engine.ema import ModelEMA
from hiera_video.engine.logging import MetricLogger, get_logger, plot_curves, progress
from hiera_video.engine.optim import CosineWarmupSchedule, build_optimizer
from hiera_video.engine.sampler import ResumableSampler
from hiera_video.fileio import remove_stale_temps
from hiera_video.models import cpu_kernels, fast, fast_train
from hiera_video.models.cpu_kernels import resolve_precision

__all__ = ["FitResult", "LoopState", "Task", "TrainingDiverged", "TrainingInterrupted", "autocast_context",
           "deterministic_run", "fit", "honours_deterministic", "make_loader"]


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once the checkpoint is written; carries its path."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became NaN / infinite: training stops before anything non-finite is saved."""


def _check_finite(loss: torch.Tensor, model: nn.Module, state: LoopState, lr: float, after_step: bool) -> None:
    """Raise :class:`TrainingDiverged` if ``loss`` (or, after a step, a weight) is not finite.

    Checking the weights after the optimizer step catches an update that blew up (a too-large lr) at the
    step it happened, before it is checkpointed, evaluated or exported.
    """
    step = state.step + 1  # the step being taken (state.step counts the finished ones)
    hint = (f"lower optim.lr (peak {lr:.3g}) or set optim.clip_grad (e.g. 1.0), and check the data for broken "
            "inputs; the run's last checkpoint is untouched, so --resume continues from before this step "
            "(with the lower lr as an override)")
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"the training loss is {loss.item()} at epoch {state.epoch + 1}, optimizer step "
                               f"{step}: {hint}")
    if after_step:
        params = [p.detach() for p in model.parameters()]
        # One reduction and one sync: the sum of the norms is finite exactly when every weight is.
        if torch.isfinite(torch.stack(torch._foreach_norm(params)).sum()):
            return
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"optimizer step {step} (epoch {state.epoch + 1}) made weights non-finite "
                                   f"({', '.join(bad[:3])}"
                                   f"{', ...' if len(bad) > 3 else ''}): {hint}")


@dataclass
class LoopState:
    """Where the loop is: the next epoch to run, optimizer steps done, micro-batches done in this epoch."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1


@dataclass
class FitResult:
    """What :func:`fit` returns: final state, last validation metrics, and where things were written."""

    state: LoopState
    last_metrics: dict[str, Any]
    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    train_losses: list[float]
    seconds: float


class Task(Protocol):
    """The job-specific part of the loop."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """Mean loss of one micro-batch (under autocast) and the number of clips it holds."""
        ...

    def end_of_epoch(self, model: nn.Module, state: LoopState) -> dict[str, Any]:
        """Called on every rank after each epoch (``model`` is the bare model, EMA weights if enabled).

        Returns metrics to log (``{"top1": ...}`` for supervised training; ``{}`` if nothing was measured).
        The metric named by ``fit(best_metric=...)`` decides ``best.pt``.
        """
        ...


def autocast_context(device: torch.device, precision: str, force: bool = False
                     ) -> contextlib.AbstractContextManager[Any]:
    """bf16 / fp16 autocast, or plain fp32, as `cpu_kernels.resolve_precision` decides for ``device``.

    GPU: as requested. CPU: bf16 / fp16 autocast only where that precision is native on this CPU (measured
    once per process; a bf16 training step of hiera_base_224 under CPU autocast ran 2-3x faster than fp32 on
    an Intel Xeon with AMX), else fp32 after one warning (bf16 is 10-100x slower where emulated), unless
    ``force`` (``train.force_precision``).
    """
    resolved = resolve_precision(precision, device, force)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def deterministic_run(enabled: bool) -> Iterator[None]:
    """``train.deterministic``: inside, a run repeated with the same config and seed on the same machine
    computes the same weights, bit for bit.

    Why it is needed: the CPU fast paths pick each layer's kernel (oneDNN or MKL, chunked or not) by timing
    both once per process (`cpu_kernels.choose`), and the two agree only to rounding, so two runs of the
    same job could train apart (the demo reached 98.4% and 97.7% top-1 on the same files). Here the fast
    paths are off (`fast.disabled`: PyTorch's regular kernels; what that costs is the fast paths' gain, a few
    percent of a training step at most and 1.1-1.2x for the evaluation's forwards, BENCHMARKS.md) and
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` is on (on a
    GPU it also needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment, and warns where an op has no
    deterministic kernel). Data order and augmentation are already pure functions of the seed. Both
    switches are restored on exit. ``enabled=False``: nothing changes.
    """
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with fast.disabled():
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def honours_deterministic(job: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a job whose first argument is its `Config` (`train`, `pretrain`): the whole job, final
    evaluation included, runs inside `deterministic_run` when ``cfg.train.deterministic``."""

    @functools.wraps(job)
    def run(cfg: Config, *args: Any, **kwargs: Any) -> Any:
        with deterministic_run(cfg.train.deterministic):
            return job(cfg, *args, **kwargs)

    return run


def _worker_init(worker_id: int) -> None:
    # Keep one BLAS thread per worker: the workers are the parallelism, more threads oversubscribe the CPU.
    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group: workers keep serving batches so the main process can finish
    # its step and write the checkpoint (it shuts the workers down afterwards).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    dataset: Any,
    sampler: ResumableSampler,
    batch_size: int,
    num_workers: int,
    drop_last: bool,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` driven by ``sampler`` (the dataset seeds each sample by epoch and index).

    An explicit ``generator`` keeps the DataLoader from drawing its worker base seed from the global torch
    RNG, which would otherwise shift the training loop's random stream when a loader is created mid-epoch.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(sampler.seed),
        persistent_workers=False,
        multiprocessing_context="spawn" if num_workers > 0 and _fork_unsafe() else None,
    )


def _fork_unsafe() -> bool:
    # Forking a process that has initialised CUDA breaks the children; spawn workers then.
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _global_batch(cfg: Config, info: DistInfo) -> int:
    """Clips per optimizer step (repeated augmentation multiplies the clips of each decoded video)."""
    return cfg.data.batch_size * max(1, cfg.data.repeated_aug) * info.world_size * cfg.optim.accum_steps


def peak_lr(cfg: Config, info: DistInfo) -> float:
    """``optim.lr``, linearly rescaled to the actual global batch when ``optim.lr_batch_size`` is set."""
    if cfg.optim.lr_batch_size:
        return cfg.optim.lr * _global_batch(cfg, info) / cfg.optim.lr_batch_size
    return cfg.optim.lr


def fit(
    cfg: Config,
    model: nn.Module,
    train_dataset: Any,
    task: Task,
    info: DistInfo,
    run_dir: Path,
    resume: Path | None = None,
    best_metric: str | None = "top1",
    layer_decay: float | None = None,
    extra_state: dict[str, Any] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    on_step: Callable[[LoopState, float, nn.Module], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train_dataset`` with the optimisation settings of ``cfg``.

    Args:
        model: the bare model, already on ``info.device``. It is wrapped in DDP (and compiled) here.
        train_dataset: yields training samples; ``task.loss`` interprets the collated batches.
        task: loss and end-of-epoch hooks.
        run_dir: the run folder (checkpoints go to ``run_dir/checkpoints``; rank 0 writes).
        resume: a checkpoint to continue from (model, optimizer, schedule, scaler, EMA, RNG, position).
        best_metric: key of ``task.end_of_epoch`` metrics whose maximum selects ``best.pt`` (None: off).
        layer_decay: overrides ``cfg.optim.layer_decay`` (MAE pretraining uses none).
        extra_state: stored in every checkpoint (class names, model name...), for evaluation and predict.
        on_step: called after every optimizer step with the state, the step's loss and the bare model.

    Returns:
        :class:`FitResult`. Raises :class:`TrainingInterrupted` after saving when Ctrl-C was pressed.
    """
    log = get_logger(info.is_main)
    device = info.device
    t_start = time.time()
    if device.type == "cpu":
        # A CPU training step frees its large activations after the backward; glibc hands them back to the
        # kernel and the next step faults them in again (hiera_video/allocator.py). The models' fp32 training
        # fast path applies this on its first forward too; here it also covers runs without that path.
        keep_freed_memory()
    if info.is_main:
        # A writer killed mid-write (kill -9, power loss) leaves its hidden temporary file behind; nothing else
        # writes into this run folder now (an existing run folder needs --resume), so they are debris.
        stale = remove_stale_temps(run_dir / "checkpoints") + remove_stale_temps(run_dir)
        if stale:
            log.info("removed %d temporary file(s) left by an interrupted write: %s", len(stale),
                     ", ".join(p.name for p in stale))
    sampler = ResumableSampler(
        len(train_dataset),
        shuffle=True,
        seed=cfg.train.seed,
        rank=info.rank,
        world_size=info.world_size,
        drop_last=True,  # repeated augmentation happens inside the dataset (K clips per decoded video)
    )
    micro_batches = sampler.per_rank() // cfg.data.batch_size
    steps_per_epoch = micro_batches // cfg.optim.accum_steps
    if steps_per_epoch == 0:
        raise ConfigError(
            f"the training set has {len(train_dataset)} samples: too few for one optimizer step of "
            f"{cfg.data.batch_size} x {info.world_size} ranks x {cfg.optim.accum_steps} accumulation steps; "
            "lower data.batch_size or optim.accum_steps"
        )
    total_steps = steps_per_epoch * cfg.train.epochs
    clips_per_batch = cfg.data.batch_size * max(1, cfg.data.repeated_aug)
    lr = peak_lr(cfg, info)

    optimizer = build_optimizer(
        model,
        lr=lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        layer_decay=cfg.optim.layer_decay if layer_decay is None else layer_decay,
    )
    schedule = CosineWarmupSchedule(
        optimizer,
        peak_lr=lr,
        total_steps=total_steps,
        warmup_steps=int(round(cfg.optim.warmup_epochs * steps_per_epoch)),
        min_lr=cfg.optim.min_lr,
    )
    use_scaler = resolve_precision(cfg.train.precision, device, cfg.train.force_precision) == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ema = ModelEMA(model, cfg.train.ema_decay) if cfg.train.ema else None
    state = LoopState()
    ckpt = CheckpointManager(run_dir / "checkpoints", keep_last=cfg.train.keep_last, enabled=info.is_main)
    metrics_log = MetricLogger(run_dir, enabled=info.is_main, tensorboard=cfg.train.tensorboard)

    if resume is not None:
        saved = load_checkpoint(resume, map_location=device)
        unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["scheduler"])
        if use_scaler and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            if "ema" not in saved:
                raise ValueError(f"{resume} has no EMA weights but train.ema=true; resume with train.ema=false "
                                 "or from a checkpoint of a run with EMA")
            ema.load_state_dict(saved["ema"])
        state = LoopState(**saved["loop"])
        rngs = saved["rng"]
        set_rng_state(rngs[info.rank] if len(rngs) == info.world_size else rngs[0])
        metrics_log.truncate_after(state.step)
        # The CPU kernels the interrupted run measured (cpu_kernels): the same computation, not one equal
        # to float rounding. Checkpoints of other machines or older versions have none or are refused.
        if saved.get("kernel_choices"):
            cpu_kernels.import_choices(saved["kernel_choices"], source=f"kernel choices in {resume}")
        log.info("resumed from %s at epoch %d, step %d", resume, state.epoch, state.step)

    step_model = wrap_ddp(model, info)
    if cfg.train.compile:
        step_model = torch.compile(step_model)

    def checkpoint_state() -> dict[str, Any]:
        # Gathered on every rank (a collective), written by rank 0 only.
        rngs = all_gather_objects(rng_state())
        return {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if use_scaler else {},
            **({"ema": ema.state_dict()} if ema is not None else {}),
            "rng": rngs,
            "loop": asdict(state),
            "config": config_to_dict(cfg),
            # the resolved model config: create_model(pretrained=<this file>) rebuilds the exact architecture
            "model_config": unwrap(model).config.to_dict(),
            "kernel_choices": cpu_kernels.export_choices(),  # rank 0's: a resume makes every rank use them
            **(extra_state or {}),
        }

    last_metrics: dict[str, Any] = {}
    losses: list[float] = []
    last_path: Path | None = None
    stop = False
    log.info(
        "training: %d epochs x %d steps (global batch %d, peak lr %.3g, %d parameters) on %s x%d",
        cfg.train.epochs, steps_per_epoch, _global_batch(cfg, info), lr,
        sum(p.numel() for p in model.parameters()), device, info.world_size,
    )
    with GracefulInterrupt() as interrupt:
        while state.epoch < cfg.train.epochs and not stop:
            sampler.set_epoch(state.epoch)
            if hasattr(train_dataset, "set_epoch"):
                train_dataset.set_epoch(state.epoch)  # the data layer seeds each sample by (epoch, index)
            sampler.set_start(state.batch_in_epoch * cfg.data.batch_size)
            loader = make_loader(
                train_dataset, sampler, cfg.data.batch_size, cfg.data.num_workers, drop_last=True,
                collate_fn=collate_fn, pin_memory=device.type == "cuda",
            )
            step_model.train()
            bar = progress(
                loader,
                total_clips=(micro_batches - state.batch_in_epoch) * clips_per_batch,
                desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}",
                enabled=info.is_main and cfg.train.progress,
            )
            window_loss = torch.zeros((), device=device)
            window_count = 0
            for batch in bar:
                if state.batch_in_epoch >= steps_per_epoch * cfg.optim.accum_steps:
                    break  # the tail that does not fill an accumulation cycle
                last_micro = (state.batch_in_epoch + 1) % cfg.optim.accum_steps == 0
                sync = contextlib.nullcontext()
                if info.distributed and not last_micro and hasattr(step_model, "no_sync"):
                    sync = step_model.no_sync()
                with sync:
                    with autocast_context(device, cfg.train.precision):
                        loss, _ = task.loss(step_model, batch)
                    _check_finite(loss, model, state, lr, after_step=False)
                    scaler.scale(loss / cfg.optim.accum_steps).backward()
                window_loss += loss.detach()
                window_count += 1
                state.batch_in_epoch += 1
                if not last_micro:
                    continue

                if cfg.optim.clip_grad:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                if ema is not None:
                    ema.update(model)
                _check_finite(loss, model, state, lr, after_step=True)
                state.step += 1
                step_loss = loss.item()
                losses.append(step_loss)
                if on_step is not None:
                    on_step(state, step_loss, model)

                if state.step % cfg.train.log_every_steps == 0:
                    mean = all_reduce_sum(window_loss.clone()) / (window_count * info.world_size)
                    metrics_log.log(
                        {"loss": mean.item(), "lr": schedule.lr_at(state.step - 1), "epoch": state.epoch},
                        state.step,
                    )
                    bar.set_postfix(loss=f"{mean.item():.4f}", lr=f"{schedule.lr_at(state.step - 1):.2e}")
                    window_loss.zero_()
                    window_count = 0

                interrupted = interrupt.requested
                if info.distributed:  # stop on every rank at the same step
                    flag = torch.tensor([float(interrupted)], device=device)
                    interrupted = bool(all_reduce_sum(flag).item() > 0)
                reached_max = cfg.train.max_steps is not None and state.step >= cfg.train.max_steps
                periodic = cfg.train.ckpt_every_steps > 0 and state.step % cfg.train.ckpt_every_steps == 0
                if interrupted or reached_max or periodic:
                    # Saved mid-epoch, the position says which batches are done. When they all are, a
                    # resumed run meets an empty epoch remainder and goes straight to the epoch-end work,
                    # which draws no random numbers, exactly as the uninterrupted run does next.
                    last_path = ckpt.save(checkpoint_state(), state.step) or last_path
                if interrupted:
                    metrics_log.close()
                    raise TrainingInterrupted(last_path)
                if reached_max:
                    stop = True
                    break

            if state.batch_in_epoch < steps_per_epoch * cfg.optim.accum_steps:
                break  # stopped early (max_steps) inside the epoch: no epoch-end work
            eval_model = ema.module if ema is not None else unwrap(model)
            epoch_metrics: dict[str, Any] = {}
            is_last = state.epoch + 1 == cfg.train.epochs
            every = cfg.train.eval_every_epochs
            if is_last or (every > 0 and (state.epoch + 1) % every == 0):
                # The training path's pooled activations (`fast_train`) would sit idle beside evaluation's
                # own buffers: released, so evaluation's peak memory does not add to them (one step re-makes them).
                fast_train.clear_pool()
                epoch_metrics = task.end_of_epoch(eval_model, state)
            state.epoch += 1
            state.batch_in_epoch = 0
            if epoch_metrics:
                last_metrics = epoch_metrics
                metrics_log.log({**_scalars(epoch_metrics), "epoch": state.epoch}, state.step, kind="val")
                log.info("epoch %d: %s", state.epoch, _fmt(epoch_metrics))
            new_best = (
                best_metric is not None
                and best_metric in epoch_metrics
                and float(epoch_metrics[best_metric]) > state.best_metric
            )
            if new_best:
                state.best_metric = float(epoch_metrics[best_metric])
                state.best_epoch = state.epoch
            # Epoch-end checkpoint (always): the state says "start the next epoch from its beginning".
            full = checkpoint_state()
            last_path = ckpt.save(full, state.step) or last_path
            if new_best:
                ckpt.save_best(full)
            if info.is_main:
                plot_curves(metrics_log.path, run_dir / "curves.png")
            if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
                break

    metrics_log.close()
    fast_train.clear_pool()  # the CPU training path's activation buffers (tens to hundreds of MB) are done
    release_freed_memory()  # ... and the steps' freed memory, kept mapped while training, goes back
    if info.is_main:
        plot_curves(metrics_log.path, run_dir / "curves.png")
    best_path = run_dir / "checkpoints" / "best.pt"
    return FitResult(
        state=state,
        last_metrics=last_metrics,
        run_dir=run_dir,
        last_checkpoint=last_path,
        best_checkpoint=best_path if best_path.is_file() else None,
        train_losses=losses,
        seconds=time.time() - t_start,
    )


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in _scalars(metrics).items())
