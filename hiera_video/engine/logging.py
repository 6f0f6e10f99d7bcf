"""What a run shows and records: progress bars, JSON-lines metrics, TensorBoard, a curves plot.

* :func:`progress` wraps an iterable in a tqdm bar counting *clips* (or images), so the bar shows
  throughput in clips/s and an ETA. Disabled on non-main ranks and when ``enabled=False``. Where stderr is
  not a terminal (``> log``, nohup, SLURM, CI), see `hiera_video.progress_bars`.
* :class:`MetricLogger` appends one JSON object per record to ``<run>/metrics.jsonl`` (easy to load with
  pandas or ``json``), mirrors scalars to TensorBoard when it is installed, and draws
  ``<run>/curves.png`` (training loss and lr per step, validation metrics per epoch) with matplotlib's
  non-interactive Agg backend.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hiera_video.fileio import atomic_write, atomic_write_text
from hiera_video.progress_bars import bar_options

__all__ = ["MetricLogger", "get_logger", "plot_curves", "progress", "read_metrics"]

T = TypeVar("T")


def get_logger(is_main: bool = True) -> logging.Logger:
    """The engines' logger: INFO on rank 0, WARNING elsewhere so ranks don't repeat lines.

    When the application has not configured logging (no handler on the root logger, the CLI case), a
    stderr handler is attached to the ``hiera_video`` logger; otherwise records simply propagate to the
    application's handlers (and to pytest's capture), so nothing is printed twice or swallowed.
    """
    logger = logging.getLogger("hiera_video")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False  # the root has no handler: propagating would only reach the last resort
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    return logger


class _Bar:
    """A tqdm bar advanced by the number of clips in each batch (so the rate reads clips/s)."""

    def __init__(self, iterable: Iterable[T], total: int | None, desc: str, unit: str, enabled: bool,
                 clips_of: Any) -> None:
        from tqdm.auto import tqdm

        self._iterable = iterable
        self._clips_of = clips_of
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, **bar_options())

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self._iterable:
                yield item
                self.bar.update(self._clips_of(item))
        finally:
            self.bar.close()

    def set_postfix(self, **kwargs: Any) -> None:
        self.bar.set_postfix(**kwargs, refresh=False)


def _batch_size(item: Any) -> int:
    first = item[0] if isinstance(item, (tuple, list)) else item
    return int(first.shape[0]) if hasattr(first, "shape") else 1


def progress(iterable: Iterable[T], total_clips: int | None = None, desc: str = "", unit: str = "clip",
             enabled: bool = True, clips_of: Any = _batch_size) -> _Bar:
    """Iterate ``iterable`` (batches) with a progress bar whose unit is clips (``clips_of(batch)`` each)."""
    return _Bar(iterable, total_clips, desc, unit, enabled, clips_of)


class MetricLogger:
    """JSON-lines (+ TensorBoard) metrics of one run; every method is a no-op when ``enabled=False``."""

    def __init__(
        self, run_dir: str | os.PathLike[str], enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
                except (ImportError, ModuleNotFoundError):
                    self._tb = None  # TensorBoard is optional; JSON lines always work

    def truncate_after(self, step: int) -> None:
        """Drop records beyond ``step`` (a resumed run rewrites them, so the file holds one curve)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict[str, Any], step: int, kind: str = "train") -> None:
        """Append ``{"kind", "step", "time", **record}``; numbers go to TensorBoard as ``kind/key``."""
        if not self.enabled:
            return
        row = {"kind": kind, "step": int(step), "time": round(time.time(), 3), **_plain(record)}
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
            value = value.item()
        out[key] = value
    return out


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a truncated last line, from a crash, is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_curves(metrics_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path | None:
    """Draw training loss / lr per step and validation metrics per step into a PNG; None if no data."""
    rows = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    train = [r for r in rows if r.get("kind") == "train" and "loss" in r]
    val = [r for r in rows if r.get("kind") == "val"]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    val_keys = [k for k in ("top1", "top5", "loss") if any(k in r for r in val)]
    panels = 2 + (1 if val_keys else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.5))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], lw=1)
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(steps, [r.get("lr", float("nan")) for r in train], lw=1, color="tab:orange")
    axes[1].set(title="learning rate", xlabel="step")
    if val_keys:
        styles = {"top1": dict(marker="o"), "top5": dict(marker="x", linestyle="--"), "loss": dict(marker=".")}
        for key in val_keys:
            pts = [(r["step"], r[key]) for r in val if key in r]
            axes[2].plot([p[0] for p in pts], [p[1] for p in pts], label=key, **styles[key])
        axes[2].set(title="validation", xlabel="step")
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    atomic_write(out_path, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)
    return out_path
