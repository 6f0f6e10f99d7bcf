"""`hiera_video.models.cpu_features`: the CPU's name and features as each OS reports them (x86 and Arm
Linux, macOS, others), without claiming a feature absent where the OS did not say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hiera_video.models import cpu_features

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Some Other CPU
flags\t\t: fpu sse
"""

GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve svebf16 i8mm bf16 rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""


def test_x86_linux_first_cpu_name_and_flags():
    name, flags, arm = cpu_features.parse_proc_cpuinfo(XEON)
    assert name == "Intel(R) Xeon(R) Platinum 8488C" and not arm
    assert {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} <= flags and "Some" not in " ".join(flags)


def test_arm_linux_is_named_from_its_part_ids():
    name, flags, arm = cpu_features.parse_proc_cpuinfo(GRAVITON3)
    assert arm and name == "Arm Neoverse-V1"
    assert {"asimd", "sve", "bf16"} <= flags
    unknown = GRAVITON3.replace("0xd40", "0xabc").replace("0x41", "0x99")
    assert cpu_features.parse_proc_cpuinfo(unknown)[0] == "implementer 0x99 CPU (part 0xabc)"
    assert cpu_features.parse_proc_cpuinfo("Features\t: fp asimd\n")[0] == "Arm CPU"


def _fake_os(monkeypatch, system: str, machine: str, processor: str = "") -> None:
    """Pretend to be another machine: its OS answers, and none of this process's ISA caps (the suite may
    run under `.ci/run`'s AVX2 caps, which the faked machine does not have)."""
    for var in cpu_features.CAP_VARIABLES:
        monkeypatch.delenv(var, raising=False)

    def no_proc(self, *a, **k):
        raise FileNotFoundError(self)

    monkeypatch.setattr(Path, "read_text", no_proc)
    monkeypatch.setattr(cpu_features.platform, "system", lambda: system)
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu_features.platform, "processor", lambda: processor)
    cpu_features.cpu_info.cache_clear()


@pytest.fixture
def fresh_info():
    cpu_features.cpu_info.cache_clear()
    yield
    cpu_features.cpu_info.cache_clear()


def test_macos_reads_sysctl(monkeypatch, fresh_info):
    answers = {"machdep.cpu.brand_string": "Apple M2", "hw.optional.neon": "1", "hw.optional.arm.FEAT_BF16": "1",
               "hw.optional.avx2_0": None}
    _fake_os(monkeypatch, "Darwin", "arm64")
    monkeypatch.setattr(cpu_features, "_sysctl", lambda key: answers.get(key))
    info = cpu_features.cpu_info()
    assert info.model_name == "Apple M2" and info.flags == ("asimd", "bf16") and info.flags_known and info.arm
    assert info.describe().startswith("Apple M2 (ASIMD, BF16; PyTorch kernels ")
    assert cpu_features.missing_support("bf16", info) == "the CPU has Arm BF16, but its bf16 GEMM does not beat fp32"


def test_unreadable_features_are_said_unknown_not_absent(monkeypatch, fresh_info):
    _fake_os(monkeypatch, "Windows", "AMD64", "Intel64 Family 6 Model 143 Stepping 8, GenuineIntel")
    info = cpu_features.cpu_info()
    assert info.model_name.startswith("Intel64 Family 6") and info.flags == () and not info.flags_known
    assert "features not readable on this system" in info.describe()
    assert "none of" not in info.describe()
    assert "no AVX512-BF16" not in cpu_features.missing_support("bf16", info)


def test_ci_caps_every_library_the_stand_in_names():
    """`.ci/run`'s capped run sets every one of `CAP_VARIABLES` (the benchmark's Command line shows them)."""
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    capped = [ln for ln in ci.splitlines() if "ONEDNN_MAX_CPU_ISA=" in ln]
    assert capped, ".ci/run has no capped run"
    for var in cpu_features.CAP_VARIABLES:
        assert re.search(rf"\b{var}=\w+", capped[0]), var
