"""The package's one atomic writer, and the "did you mean" hint every named error uses.

Every file this library writes (checkpoints, configs, metrics, shards, manifests, pictures, weights) goes
through :func:`atomic_write`: the bytes land in a hidden temporary file in the destination folder, are
flushed to disk, and the temporary file is renamed over the destination. A crash (even ``kill -9``) leaves
either the old file or the new one, never half a file; the only debris is a ``.<name>.*.tmp`` file that
:func:`remove_stale_temps` clears on the next start.

Files are created with mode ``0o666 & ~umask`` like ``open()`` would (``tempfile.mkstemp`` alone gives
``0600``, which hides checkpoints from a group sharing a run folder).
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_save", "atomic_write", "atomic_write_bytes", "atomic_write_text", "did_you_mean",
           "remove_stale_temps", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary file object whose contents replace ``path`` atomically.

    The temporary name starts with a dot and ends with ``.tmp``, so scans for real outputs never see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows when on the same filesystem
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(directory: str | os.PathLike[str], names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files a killed writer left in ``directory`` (not recursive); returns them.

    ``names`` limits the clean-up to temporaries of those destination names (e.g. ``["last.pt"]``).
    Only call it where no other process is writing into ``directory`` at the same time.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    wanted = None if names is None else {f".{n}." for n in names}
    removed = []
    for p in directory.iterdir():
        if not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file()):
            continue
        if wanted is not None and not any(p.name.startswith(w) for w in wanted):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def did_you_mean(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``" (did you mean 'a' or 'b'?)"`` for the close matches of ``name`` in ``choices``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
