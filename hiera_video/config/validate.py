"""Value checks a job needs before any work (types are checked on loading; these are the ranges)."""

from __future__ import annotations

from typing import Any

from .schema import Config, ConfigError

# --------------------------------------------------------------------------------------------------------
# Value checks (types are checked on loading; these are the ranges a job needs)
# --------------------------------------------------------------------------------------------------------


def _check(ok: bool, key: str, value: Any, need: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {need}")


def _finite(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and math.isfinite(value)


def validate(cfg: Config, job: str = "train") -> None:
    """Check every value's range before any work, raising :class:`ConfigError` naming the key.

    ``job`` is ``train``, ``pretrain``, ``eval``, ``predict`` or ``extract``: the training-only sections
    (optimiser, augmentation, loop) are checked for ``train`` / ``pretrain``. Architecture values
    (``model.overrides``) are the model's own to check (``hiera_video.engine.build.check_model``).
    """

    def positive_int(key: str, value: Any, minimum: int = 1) -> None:
        _check(isinstance(value, int) and value >= minimum, key, value, f"must be an integer >= {minimum}")

    def fraction(key: str, value: Any, high_open: bool = False) -> None:
        ok = _finite(value) and 0 <= value and (value < 1 if high_open else value <= 1)
        _check(ok, key, value, f"must be a number in [0, 1{')' if high_open else ']'}")

    d, e = cfg.data, cfg.eval
    positive_int("data.batch_size", d.batch_size)
    positive_int("data.num_workers", d.num_workers, 0)
    positive_int("data.crop_size", d.crop_size)
    positive_int("data.num_frames", d.num_frames)
    positive_int("data.repeated_aug", d.repeated_aug)
    positive_int("data.randaug_n", d.randaug_n, 0)
    _check(_finite(d.randaug_m) and d.randaug_m >= 0, "data.randaug_m", d.randaug_m, "must be >= 0")
    _check(_finite(d.sampling_rate) and d.sampling_rate > 0, "data.sampling_rate", d.sampling_rate, "must be > 0")
    _check(d.target_fps is None or (_finite(d.target_fps) and d.target_fps > 0), "data.target_fps", d.target_fps,
           "must be > 0, or null to count frames as they are")
    _check(d.test_short_side is None or d.test_short_side >= 1, "data.test_short_side", d.test_short_side,
           "must be >= 1, or null for crop_size")
    _check(d.num_classes is None or d.num_classes >= 1, "data.num_classes", d.num_classes,
           "must be >= 1, or null to read the classes from the data")
    scale = d.train_scale
    _check(len(scale) == 2 and all(_finite(v) for v in scale) and 0 < scale[0] <= scale[1] <= 1,
           "data.train_scale", scale, "must be [min, max] with 0 < min <= max <= 1 (fractions of the frame area)")
    fraction("data.erase_prob", d.erase_prob)
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        _check(len(values) == 3 and all(_finite(v) for v in values), key, values, "must be 3 numbers (RGB)")
    _check(all(v > 0 for v in d.std), "data.std", d.std, "must be > 0 (the inputs are divided by it)")
    positive_int("eval.batch_size", e.batch_size)
    positive_int("eval.num_clips", e.num_clips)
    _check(e.num_crops in (1, 3), "eval.num_crops", e.num_crops, "must be 1 (centre) or 3 (left/centre/right)")
    syn = d.synthetic
    if syn is not None:
        positive_int("data.synthetic.num_per_class", syn.num_per_class)
        positive_int("data.synthetic.num_val_per_class", syn.num_val_per_class)
        positive_int("data.synthetic.num_frames", syn.num_frames, 3 if syn.kind == "turns" else 1)
        _check(len(syn.size) == 2 and all(v >= 8 and v % 2 == 0 for v in syn.size), "data.synthetic.size",
               syn.size, "must be [H, W], even numbers >= 8")
        _check(_finite(syn.fps) and syn.fps > 0, "data.synthetic.fps", syn.fps, "must be > 0")
    fraction("model.drop_path_rate", cfg.model.drop_path_rate, high_open=True)
    fraction("model.head_dropout", cfg.model.head_dropout, high_open=True)
    if job not in ("train", "pretrain"):
        return

    o, a, t = cfg.optim, cfg.aug, cfg.train
    _check(_finite(o.lr) and o.lr > 0, "optim.lr", o.lr, "must be a finite number > 0")
    _check(_finite(o.min_lr) and 0 <= o.min_lr <= o.lr, "optim.min_lr", o.min_lr, f"must be in [0, optim.lr={o.lr}]")
    _check(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0")
    _check(len(o.betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in o.betas), "optim.betas", o.betas,
           "must be two numbers in [0, 1)")
    _check(_finite(o.eps) and o.eps > 0, "optim.eps", o.eps, "must be > 0")
    _check(_finite(o.layer_decay) and 0 < o.layer_decay <= 1, "optim.layer_decay", o.layer_decay,
           "must be in (0, 1] (1: off)")
    _check(_finite(o.warmup_epochs) and o.warmup_epochs >= 0, "optim.warmup_epochs", o.warmup_epochs,
           "must be a number >= 0")
    _check(o.clip_grad is None or (_finite(o.clip_grad) and o.clip_grad > 0), "optim.clip_grad", o.clip_grad,
           "must be > 0, or null for no clipping")
    _check(o.lr_batch_size is None or o.lr_batch_size >= 1, "optim.lr_batch_size", o.lr_batch_size,
           "must be >= 1, or null to use optim.lr as it is")
    positive_int("optim.accum_steps", o.accum_steps)
    for key, value in (("aug.mixup", a.mixup), ("aug.cutmix", a.cutmix)):
        _check(_finite(value) and value >= 0, key, value, "must be >= 0 (the Beta distribution's alpha; 0: off)")
    fraction("aug.mixup_prob", a.mixup_prob)
    fraction("aug.switch_prob", a.switch_prob)
    fraction("aug.label_smoothing", a.label_smoothing, high_open=True)
    positive_int("train.epochs", t.epochs)
    _check(t.max_steps is None or t.max_steps >= 1, "train.max_steps", t.max_steps, "must be >= 1, or null")
    fraction("train.ema_decay", t.ema_decay, high_open=True)
    positive_int("train.log_every_steps", t.log_every_steps)
    positive_int("train.eval_every_epochs", t.eval_every_epochs, 0)
    positive_int("train.ckpt_every_steps", t.ckpt_every_steps, 0)
    positive_int("train.keep_last", t.keep_last)
    if job == "pretrain":
        m = cfg.mae
        _check(m.mask_ratio is None or (_finite(m.mask_ratio) and 0 < m.mask_ratio < 1), "mae.mask_ratio",
               m.mask_ratio, "must be in (0, 1), or null for the model's default")
        positive_int("mae.vis_every_epochs", m.vis_every_epochs, 0)
        positive_int("mae.vis_num", m.vis_num, 0)
