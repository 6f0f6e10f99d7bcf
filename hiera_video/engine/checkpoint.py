"""Checkpoints that never lose work, exact resume, and Ctrl-C that saves before exiting.

* :func:`~hiera_video.fileio.atomic_save` writes to a temporary file in the same folder, fsyncs it and renames it
  over the target: a crash mid-write leaves the previous checkpoint intact, never half a file.
* :class:`CheckpointManager` names step checkpoints ``ckpt_<step>.pt``, keeps the last K, maintains
  ``last.pt`` (newest) and ``best.pt`` (best validation metric), and finds the checkpoint to resume from.
* :func:`rng_state` / :func:`set_rng_state` capture python, numpy, torch CPU and CUDA generators, so a
  resumed run draws the same random numbers (dropout, drop path, mixup, masks) as an uninterrupted one.
* :class:`GracefulInterrupt` turns the first SIGINT (Ctrl-C) into a flag that the training loop checks
  after each optimizer step: it saves a checkpoint and exits cleanly. A second Ctrl-C stops at once.

Everything is loaded with ``torch.load(..., weights_only=True)``: checkpoints hold only tensors and plain
python containers (the numpy RNG key is stored as a tensor for that reason).
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import zipfile
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from hiera_video.config import ConfigError
from hiera_video.fileio import atomic_save

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "GracefulInterrupt",
    "atomic_save",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "is_intact",
]

_STEP_FILE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be used (truncated, empty, not a checkpoint); the message names it."""

    kind = "checkpoint error"


def is_intact(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete torch checkpoint archive (cheap: reads the zip directory only).

    ``torch.save`` writes a zip archive whose directory sits at the end of the file, so a file cut short
    (a full disk, a copy interrupted) or left empty has no directory and fails here without being loaded.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by this module (tensors and plain containers only).

    Raises :class:`CheckpointError` naming the file when it is truncated, empty or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not is_intact(path):
        raise CheckpointError(
            f"checkpoint {path} is truncated, empty or not a torch checkpoint ({path.stat().st_size} bytes) "
            "and cannot be read; delete it, or use another checkpoint of the run"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"checkpoint {path} is damaged and cannot be read ({type(err).__name__}: {err}); "
                              "delete it, or use another checkpoint of the run") from err


# ---------------------------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Every global random generator's state, in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`. CUDA states are restored when this process has as many GPUs."""
    py = state["python"]
    # weights_only loading turns the inner tuple into a list; random.setstate needs tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


# ---------------------------------------------------------------------------------------------- manager


class CheckpointManager:
    """Step / epoch checkpoints in one run folder.

    ``save(state, step)`` writes ``ckpt_<step>.pt`` and ``last.pt`` and prunes step files beyond
    ``keep_last``; ``save_best(state)`` writes ``best.pt``. Only the main process writes: on other ranks
    every method is a no-op, so callers need no ``if rank == 0``.
    """

    def __init__(self, directory: str | os.PathLike[str], keep_last: int = 3, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.keep_last = max(1, keep_last)
        self.enabled = enabled

    def step_files(self) -> list[Path]:
        """Step checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _STEP_FILE.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state: dict[str, Any], step: int) -> Path | None:
        if not self.enabled:
            return None
        path = atomic_save(state, self.directory / f"ckpt_{step:09d}.pt")
        # last.pt is a second full copy rather than a symlink: it survives copying the folder anywhere.
        atomic_save(state, self.directory / "last.pt")
        for old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, state: dict[str, Any]) -> Path | None:
        if not self.enabled:
            return None
        return atomic_save(state, self.directory / "best.pt")

    def latest(self) -> Path | None:
        """The checkpoint to resume from: ``last.pt`` if intact, else the newest intact step file.

        A damaged file (truncated or empty: a disk filled up, a copy cut short) is skipped with a warning
        naming it, so ``--resume`` continues from the newest checkpoint that can be read.
        """
        last = self.directory / "last.pt"
        candidates = ([last] if last.is_file() else []) + self.step_files()[::-1]
        for path in candidates:
            if is_intact(path):
                if path != candidates[0]:
                    _warn(f"resuming from {path}, the newest intact checkpoint")
                return path
            _warn(f"checkpoint {path} is truncated or damaged ({path.stat().st_size} bytes): skipping it")
        return None


def _warn(message: str) -> None:
    import logging

    logging.getLogger("hiera_video").warning(message)


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """Which checkpoint ``--resume`` means.

    ``None``: no resume; ``"auto"``: the run's latest intact checkpoint; a folder: its latest; else a file
    (a damaged ``last.pt`` falls back to the newest intact ``ckpt_*.pt`` beside it). Raises
    :class:`CheckpointError` when there is nothing to resume from: a resume never silently starts afresh.
    """
    if resume is None:
        return None
    if resume == "auto":
        found = CheckpointManager(run_dir / "checkpoints").latest()
        if found is None:
            raise CheckpointError(
                f"--resume: the run folder {run_dir} has no checkpoint to resume from "
                f"({run_dir / 'checkpoints'} is missing, empty or holds only damaged files); "
                "start the run without --resume (with --overwrite if the folder holds an earlier run's outputs)"
            )
        return found
    path = Path(resume)
    if path.is_dir():
        for candidate in (path / "checkpoints", path):
            found = CheckpointManager(candidate).latest()
            if found is not None:
                return found
        raise CheckpointError(f"--resume {resume}: no intact checkpoint found in that folder")
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
    if not is_intact(path):
        _warn(f"checkpoint {path} is truncated or damaged ({path.stat().st_size} bytes)")
        if path.name == "last.pt":
            found = CheckpointManager(path.parent).latest()
            if found is not None:
                return found
        raise CheckpointError(f"--resume {resume}: the checkpoint is truncated or damaged and cannot be read")
    return path


# ---------------------------------------------------------------------------------------------- Ctrl-C


class GracefulInterrupt:
    """Context manager: the first SIGINT (Ctrl-C) or SIGTERM sets :attr:`requested`; a second one raises
    KeyboardInterrupt at once.

    SIGTERM is what torchrun sends its ranks when it is interrupted, and what cluster schedulers send before
    preempting a job, so both get the save-then-exit treatment. Handlers are only installed in the main
    thread (signal handlers cannot be set elsewhere) and the previous ones are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step "
              "(send it again to stop now)", file=sys.stderr, flush=True)

    def __enter__(self) -> GracefulInterrupt:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
