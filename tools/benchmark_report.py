"""Reporting for tools/benchmark.py: the machine line, the Markdown tables and the in-place section writer.

Split from the benchmark itself (which measures) so that each file keeps to one concept; `benchmark.py`
re-exports these names.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import shlex
from pathlib import Path
from typing import Any

import torch

from hiera_video.fileio import atomic_write_text
from hiera_video.models import cpu_features, cpu_kernels

__all__ = ["machine_info", "markdown", "markdown_config", "markdown_header", "write_section"]

def machine_info(device: torch.device) -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    cpu = cpu_features.cpu_info()
    info["cpu"] = f"{cpu.describe()}, {os.cpu_count()} logical CPUs"
    probe = cpu_kernels.summary()
    kern = "; ".join(f"{k} {v if v == 'ok' else 'refused (' + v + ')'}" for k, v in probe["kernels"].items())
    info["cpu_kernels"] = (
        f"{kern}; bf16 matmul {probe['bf16_matmul_speedup']}x fp32 speed "
        f"({'native' if probe['bf16_native'] else 'not native'})"
    )
    info["threads"] = str(torch.get_num_threads())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for mod, dist in (("hiera", "hiera-transformer"), ("transformers", "transformers"), ("timm", "timm")):
        try:
            from importlib.metadata import version

            info[mod] = version(dist)
        except Exception:  # noqa: BLE001 - any failure just means "not installed"
            info[mod] = "not installed"
    with contextlib.suppress(Exception):
        info["load_before"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return info


def _num(v: float) -> str:
    """Three significant digits, without scientific notation for the usual ranges."""
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _mb(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def markdown_header(peaks: dict[str, float], info: dict[str, str], argv: list[str]) -> str:
    lines = [f"Command: `{' '.join(shlex.quote(a) for a in argv)}`", ""]
    lines.append(
        f"Machine: {info['cpu']}; {info['threads']} threads; torch {info['torch']}; "
        f"hiera-transformer {info['hiera']}; transformers {info['transformers']}; "
        f"timm {info['timm']}; "
        f"Python {info['python']}"
        + (f"; GPU {info['gpu']}" if "gpu" in info else "")
        + f". Load average before the run: {info.get('load_before', '?')}"
        + (f", after: {info['load_after']}" if "load_after" in info else "")
        + f"; finished {info.get('finished', '?')}."
    )
    lines.append("")
    lines.append(f"CPU kernels (probe): {info.get('cpu_kernels', '?')}.")
    lines.append("")
    peak_txt = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()) or "none measured"
    lines.append(
        f"Dense matmul peak measured in this run ({info.get('peak_size', '?')}² GEMM, best of repetitions "
        f"and kernels): {peak_txt} (per kernel, GFLOP/s: {info.get('peak_detail', '?')})."
    )
    lines.append("")
    return "\n".join(lines)


def markdown_config(res: dict[str, Any]) -> str:
    """The table of one configuration (printed as soon as it is measured, and in the final report)."""
    c = res["config"]
    lines = []
    ov = f", overrides {c['overrides']}" if c["overrides"] else ""
    what = "forward (inference)" if c["mode"] == "infer" else "training step (fwd + bwd + AdamW)"
    comp = {"off": "", "on": ", torch.compile", "both": ", eager and torch.compile"}[c["compiled"]]
    comp += " (Inductor freezing)" if c.get("freezing") else ""
    ok = [r for r in res["rows"] if r.get("status", "ok") == "ok"]
    shape = f"; input {tuple(res['input_shape'])}" if res.get("input_shape") else ""
    flops = f"; {_num(res['flops'] / 1e9)} GFLOP per step" if res.get("flops") else ""
    iso = res.get("isolated")
    reps = "" if not ok else (
        f"; {len(ok[0]['times_s'])} rounds, each implementation in its own fresh process "
        f"({iso['steps_per_process']} timed steps each, median)" if iso else
        f"; {len(ok[0]['times_s'])} interleaved repetitions")
    lines.append(
        f"**{c['model']}**, batch {c['batch_size']}, {c['precision']}, {what}{comp}{ov}{shape}{flops}{reps}."
    )
    lines.append("")
    acc = c["mode"] == "infer"
    head = (
        "| implementation | median ms | min ms | items/s | speed-up of ours (ref ÷ ours) | GFLOP/s "
        "| % of peak | peak mem MiB |"
        + (" max abs Δ / max abs logit (vs ours fp32) | top-1 agree |" if acc else "")
    )
    ncol = head.count("|") - 1
    lines.append(head)
    lines.append("|" + "---|" * ncol)
    for r in res["rows"]:
        if r.get("status", "ok") != "ok":
            lines.append(f"| {r['label']} | {r['status']}: {r['reason']} |" + " |" * (ncol - 2))
            continue
        pf = r["peak_fraction"]
        frac = "n/a" if pf is None else f"{100 * pf:.0f}% ({r['peak_key']})"
        mine = r["label"] == res["primary"]
        sp = "—" if mine else f"{r['speedup_of_ours']:.2f}×"
        label = f"**{r['label']}**" if mine else r["label"]
        cells = [
            label,
            _num(1e3 * r["median_s"]),
            _num(1e3 * r["min_s"]),
            _num(r["items_per_s"]),
            sp,
            _num(r["gflops"]),
            frac,
            _mb(r["mem_bytes"]),
        ]
        if acc:
            cells += [f"{r.get('max_rel_diff', math.nan):.1e}", f"{100 * r.get('top1_agree', 0):.0f}%"]
        if r["compile_s"] is not None:
            cells[0] += f" (compile+1st call {r['compile_s']:.0f} s)"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def markdown(
    results: list[dict[str, Any]], peaks: dict[str, float], info: dict[str, str], argv: list[str]
) -> str:
    return markdown_header(peaks, info, argv) + "\n" + "\n".join(markdown_config(r) for r in results)


def write_section(path: Path, section: str, body: str) -> None:
    """Replace (or append) the ``section`` block in ``path``; everything outside it is kept verbatim."""
    begin, end = f"<!-- BEGIN benchmark:{section} -->", f"<!-- END benchmark:{section} -->"
    note = "<!-- generated by tools/benchmark.py: re-run the command below instead of editing -->"
    block = f"{begin}\n{note}\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)
