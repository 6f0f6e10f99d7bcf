"""``tools/benchmark.py --isolate ROUNDS``: every implementation timed in its own fresh process.

Why: in one process the implementations share glibc's heap, the caches and the kernel choices, and one
model's run changes the next one's conditions. A `hiera_base_224` b4 fp32 training step of the original
took 1334 ms alone in its process and 1393 ms interleaved with ours (its backward 775 vs 822 ms), while ours
took 1267 vs 1288: the in-process ratio was 1.08x where separate processes gave 1.05x (Intel Xeon with AMX,
2 threads, 2026-12-03). Users run one model per process, so that is the comparison that counts.

How: ``ROUNDS`` rounds; in each, every variant (in an order rotated by one per round, so slow phases of the
machine hit all alike) runs in a new ``python tools/benchmark.py ... --only LABEL`` process. That process
builds only the model it needs, warms up (``--warmup``), times ``--reps`` steps and prints their times as one
JSON line. A variant's "repetition" is then one round: the median of its steps in that round's process.
The speed-up is paired per round, as it is per repetition without ``--isolate``. FLOPs, the output check
and peak memory are still measured in the parent process, on the variants it builds and warms up
(``--warmup`` steps each: optimizer state allocated and kernels chosen, as in a timed run) but does not time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmark_measure import Variant

__all__ = ["CHILD_TIMEOUT_S", "child_report", "time_isolated"]

CHILD_TIMEOUT_S = 3600
_SCRIPT = Path(__file__).resolve().parent / "benchmark.py"


def child_report(label: str, rows: list[dict[str, Any]]) -> str:
    """The one JSON line a ``--only LABEL`` process prints: its pid and that variant's row."""
    row = next((r for r in rows if r.get("label") == label), None)
    if row is None:
        row = {"label": label, "status": "failed", "reason": f"no variant labelled {label!r} in this process"}
    return json.dumps({"pid": os.getpid(), "row": row}, default=str)


def _child_argv(argv: list[str], cfg: Any, label: str) -> list[str]:
    """The parent's arguments (its ``--override`` included) with this configuration's single values appended
    (argparse keeps the last), and ``--only``: the child times that one variant and writes nothing."""
    return [sys.executable, str(_SCRIPT), *argv, "--model", cfg.model, "--batch-size", str(cfg.batch_size),
            "--mode", cfg.mode, "--precision", cfg.precision, "--no-memory", "--only", label]


def _run_child(argv: list[str]) -> tuple[int | None, list[float], str | None]:
    """``(pid, step times, error)`` of one child process."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, [], f"the child process ran over {CHILD_TIMEOUT_S} s"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return None, [], f"child process exited with {proc.returncode}: {tail[0][:300]}"
    report = json.loads(lines[-1])
    row = report["row"]
    if row.get("status", "ok") != "ok":
        return report["pid"], [], row.get("reason", "failed")
    return report["pid"], [float(t) for t in row["times_s"]], None


def time_isolated(variants: list[Variant], cfg: Any, rounds: int, argv: list[str]) -> dict[str, list[int]]:
    """Fill each variant's ``times`` with one median per round, each round's from a fresh process (see the
    module docstring); a variant whose process fails gets ``error`` and is left out of later rounds.
    Returns the pid of every process per label (each must differ: that is the isolation)."""
    pids: dict[str, list[int]] = {v.label: [] for v in variants}
    for r in range(rounds):
        alive = [v for v in variants if v.error is None]
        for j in range(len(alive)):
            v = alive[(r + j) % len(alive)]
            pid, times, error = _run_child(_child_argv(argv, cfg, v.label))
            if error is not None:
                v.error = error
                continue
            pids[v.label].append(pid)
            v.times.append(statistics.median(times))
            print(f"  round {r + 1}/{rounds}: {v.label} {1e3 * v.times[-1]:.0f} ms (process {pid})",
                  file=sys.stderr, flush=True)
    return pids
