"""What this CPU is: its model name, the instruction-set features that decide how fast its kernels can be,
and the caps set on the libraries. For logs, benchmark reports, warnings and the kernel-choice fingerprint
(`cpu_kernels`); no decision is taken from these flags (`cpu_kernels` probes what really runs).

Read where the operating system tells, never by running CPU instructions:

* Linux (x86-64 and Arm): ``/proc/cpuinfo``, its ``flags`` line (x86) or ``Features`` line (Arm). Arm has no
  "model name" there: the core is named from its ``CPU implementer`` / ``CPU part`` ids (the ids of
  util-linux's ``sys-utils/lscpu-arm.c``; an unknown pair is shown as the ids).
* macOS: ``sysctl`` (``machdep.cpu.brand_string``; ``hw.optional.*`` for the features).
* anything else (Windows, ...): ``platform.processor()``, with the features unknown -- and then said to be
  unknown, not reported as absent.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CAP_VARIABLES", "CPUInfo", "FLAGS", "cpu_info", "missing_support", "parse_proc_cpuinfo"]

# The caps that make a bigger CPU run its lesser code paths (CI's AVX2 stand-in): oneDNN's, PyTorch's own
# kernels' and MKL's (MKL's GEMMs, the regular path's, ignore the other two).
CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")

X86_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
ARM_FLAGS = ("asimd", "sve", "sve2", "bf16")  # NEON, the scalable vectors, Armv8.6's BF16 dot products
FLAGS = X86_FLAGS + ARM_FLAGS
_BF16_UNITS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16"}

# (implementer, part) -> core, from util-linux's lscpu-arm.c; the implementer alone -> vendor.
_ARM_PARTS = {(0x41, 0xD0C): "Neoverse-N1", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD49): "Neoverse-N2",
              (0x41, 0xD4F): "Neoverse-V2", (0x48, 0xD01): "TaiShan-v110", (0xC0, 0xAC3): "Ampere-1"}
_ARM_VENDORS = {0x41: "Arm", 0x48: "HiSilicon", 0x61: "Apple", 0xC0: "Ampere", 0x46: "Fujitsu",
                0x51: "Qualcomm", 0x4E: "NVIDIA"}

# macOS sysctl keys (1 = present) -> our flag names.
_SYSCTL_FLAGS = {"hw.optional.avx2_0": "avx2", "hw.optional.avx512f": "avx512f", "hw.optional.neon": "asimd",
                 "hw.optional.arm.FEAT_BF16": "bf16"}


@dataclass(frozen=True)
class CPUInfo:
    model_name: str
    flags: tuple[str, ...]  # those of `FLAGS` the CPU reports
    aten_isa: str  # the vector ISA PyTorch's own kernels use (ATEN_CPU_CAPABILITY caps it)
    onednn_cap: str | None  # ONEDNN_MAX_CPU_ISA, when set
    mkl_cap: str | None = None  # MKL_ENABLE_INSTRUCTIONS: MKL's GEMMs (the regular path's) ignore the caps above
    flags_known: bool = True  # False: the OS did not say (then `flags` is empty, not "none of them")
    arm: bool = False

    def describe(self) -> str:
        if not self.flags_known:
            have = "instruction-set features not readable on this system"
        else:
            have = ", ".join(f.upper().replace("_", "-") for f in self.flags) or (
                "none of SVE/BF16" if self.arm else "none of AVX2/AVX-512/AMX")
        cap = f"; oneDNN capped at {self.onednn_cap}" if self.onednn_cap else ""
        cap += f"; MKL capped at {self.mkl_cap}" if self.mkl_cap else ""
        return f"{self.model_name} ({have}; PyTorch kernels {self.aten_isa}{cap})"


def parse_proc_cpuinfo(text: str) -> tuple[str, set[str], bool]:
    """Linux ``/proc/cpuinfo`` -> ``(model name, reported features, is Arm)`` (first CPU's entries)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, val = line.partition(":")
        key = key.strip()
        if sep and key not in fields:
            fields[key] = val.strip()
    arm = "Features" in fields and "flags" not in fields
    flags = set(fields.get("Features" if arm else "flags", "").split())
    name = fields.get("model name") or fields.get("Model name") or ""
    if arm and not name:
        try:
            impl, part = int(fields["CPU implementer"], 16), int(fields["CPU part"], 16)
        except (KeyError, ValueError):
            name = "Arm CPU"
        else:
            vendor = _ARM_VENDORS.get(impl, f"implementer {impl:#x}")
            core = _ARM_PARTS.get((impl, part))
            name = f"{vendor} {core}" if core else f"{vendor} CPU (part {part:#x})"
    return name or "unknown CPU", flags, arm


def _sysctl(key: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _read() -> tuple[str, set[str], bool, bool]:
    """``(model name, features, features known, is Arm)`` from what this OS offers (see the module doc)."""
    machine = platform.machine().lower()
    arm = machine.startswith(("arm", "aarch64"))
    try:
        name, flags, arm_ = parse_proc_cpuinfo(Path("/proc/cpuinfo").read_text())
        return name, flags, True, arm_ or arm
    except OSError:
        pass
    if platform.system() == "Darwin":
        name = _sysctl("machdep.cpu.brand_string") or "unknown CPU"
        flags = {flag for key, flag in _SYSCTL_FLAGS.items() if _sysctl(key) == "1"}
        return name, flags, bool(flags), arm
    return platform.processor() or "unknown CPU", set(), False, arm


@functools.cache
def cpu_info() -> CPUInfo:
    """The CPU model and which of `FLAGS` it reports, PyTorch's kernel ISA and the caps (`CAP_VARIABLES`)."""
    name, flags, known, arm = _read()
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older builds
        isa = "unknown"
    return CPUInfo(name, tuple(f for f in FLAGS if f in flags), isa, os.environ.get("ONEDNN_MAX_CPU_ISA"),
                   os.environ.get("MKL_ENABLE_INSTRUCTIONS"), known, arm)


def missing_support(req: str, info: CPUInfo) -> str:
    """Why ``req`` (``"bf16"`` / ``"fp16"``) lacks hardware support here, from the flags and the oneDNN cap."""
    if not info.flags_known:
        return f"its {req} GEMM does not beat fp32 (the CPU's features could not be read)"
    units = [f for f in _BF16_UNITS if f in info.flags] if req == "bf16" else []  # (no fp16 flags kept)
    if not units:
        if req == "bf16":
            return "no Arm BF16 instructions" if info.arm else "no AVX512-BF16 / AMX-BF16"
        return f"its {req} GEMM does not beat fp32" if info.arm else "no AMX-FP16 / AVX512-FP16"
    have = " / ".join(_BF16_UNITS[f] for f in units)
    why = f"oneDNN is capped at {info.onednn_cap}" if info.onednn_cap else f"its {req} GEMM does not beat fp32"
    return f"the CPU has {have}, but {why}"
