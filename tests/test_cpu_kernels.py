"""The CPU capability probe (`hiera_video.models.cpu_kernels`) and the precision rule the engines follow.

The probe must answer from what really runs on this machine, including under CI's
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` run on a bigger CPU; the precision rule is tested on
both kinds of CPU by patching the probe's answer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from hiera_video.engine.loop import autocast_context
from hiera_video.models import cpu_features, cpu_kernels


@pytest.fixture(autouse=True)
def _fresh_warnings():
    cpu_kernels._WARNED.clear()
    yield
    cpu_kernels._WARNED.clear()


def _proc_flags() -> set[str]:
    """The first CPU's ``flags`` (x86) or ``Features`` (Arm) line, read here independently of the module."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_summary_reports_flags_kernels_and_speed():
    s = cpu_kernels.summary()
    assert set(s["flags"]) == set(cpu_features.FLAGS) & _proc_flags()
    assert set(s["kernels"]) == {"onednn_fp32_linear", "onednn_bf16_linear", "bf16_sdpa"}
    for name in ("bf16", "fp16"):
        speed = s[f"{name}_matmul_speedup"]
        assert speed is None or speed > 0
        assert s[f"{name}_native"] == (speed is not None and speed > cpu_kernels.NATIVE_SPEEDUP)
    assert cpu_features.cpu_info().describe().startswith(s["cpu"])
    assert s["onednn_cap"] == os.environ.get("ONEDNN_MAX_CPU_ISA")
    assert s["mkl_cap"] == os.environ.get("MKL_ENABLE_INSTRUCTIONS")


def test_probe_answers_what_onednn_accepts_not_the_cpu_flags():
    """Where oneDNN cannot run bf16 (no AVX-512 / AMX usable, e.g. capped at AVX2), the probe says so."""
    status = cpu_kernels.kernel_status()
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"
    no_bf16_isa = not ({"avx512f", "amx_bf16"} & _proc_flags()) or capped
    if no_bf16_isa and "avx_ne_convert" not in _proc_flags():
        assert status["onednn_bf16_linear"] is not None  # refused, with oneDNN's reason
        assert not cpu_kernels.native(torch.bfloat16)
    if cpu_kernels.native(torch.bfloat16):  # native means measured faster than fp32
        assert cpu_kernels.low_precision_speedup(torch.bfloat16) > 1.0
    # Kernels that pass really run: calling them again does not raise.
    if status["onednn_fp32_linear"] is None:
        x, w = torch.randn(4, 8), torch.randn(16, 8)
        torch.testing.assert_close(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""), x @ w.T)


def test_resolve_precision_where_bf16_is_not_native(monkeypatch, caplog):
    monkeypatch.setattr(cpu_kernels, "native", lambda dt: dt == torch.float32)
    with caplog.at_level("WARNING", logger="hiera_video"):
        assert cpu_kernels.resolve_precision("bf16", "cpu") == "fp32"
        assert cpu_kernels.resolve_precision("bf16", torch.device("cpu")) == "fp32"
        assert cpu_kernels.resolve_precision("fp16", "cpu") == "fp32"
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2  # one per precision, not one per call
    assert "bf16 is not native on this CPU" in msgs[0]
    assert cpu_features.missing_support("bf16", cpu_features.cpu_info()) in msgs[0]  # what this CPU lacks
    assert "than fp32" in msgs[0] or "failed" in msgs[0]  # the measured slowdown is named
    assert "train.force_precision=true" in msgs[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="hiera_video"):
        assert cpu_kernels.resolve_precision("bf16", "cpu", force=True) == "bf16"
    assert len(caplog.records) == 1 and "forced" in caplog.records[0].getMessage()
    # GPUs and fp32 are never touched.
    assert cpu_kernels.resolve_precision("bf16", "cuda") == "bf16"
    assert cpu_kernels.resolve_precision("fp16", "cuda:1") == "fp16"
    assert cpu_kernels.resolve_precision("none", "cpu") == cpu_kernels.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        cpu_kernels.resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("flags, cap, extra, expect", [
    ((), None, {}, "no AVX512-BF16 / AMX-BF16"),
    (("avx2", "avx512f", "avx512_bf16", "amx_bf16"), "AVX2", {},
     "the CPU has AVX512-BF16 / AMX-BF16, but oneDNN is capped at AVX2"),
    (("avx2", "avx512f", "avx512_bf16"), None, {}, "the CPU has AVX512-BF16, but its bf16 GEMM does not beat fp32"),
    (("asimd", "sve"), None, {"arm": True}, "no Arm BF16 instructions"),
    (("asimd", "sve", "bf16"), None, {"arm": True}, "the CPU has Arm BF16, but its bf16 GEMM does not beat fp32"),
    ((), None, {"flags_known": False}, "its bf16 GEMM does not beat fp32 (the CPU's features could not be read)"),
], ids=["avx2-only", "capped-xeon", "zen4-like", "arm-without-bf16", "arm-with-bf16", "flags-unknown"])
def test_the_bf16_warning_names_what_is_missing(flags, cap, extra, expect, monkeypatch, caplog):
    """The warning states what the flags and the cap say, not a guess: a Zen 4-like CPU whose bf16 GEMM
    loses to fp32 has bf16 instructions; a capped Xeon has them too, behind the cap; where the OS did not
    say (no /proc/cpuinfo, no sysctl), nothing is claimed absent."""
    monkeypatch.setattr(cpu_kernels, "native", lambda dt: dt == torch.float32)
    info = cpu_features.CPUInfo("Test CPU", flags, "AVX2", cap, **extra)
    monkeypatch.setattr(cpu_kernels, "cpu_info", lambda: info)
    for speedup, cls in ((0.5, "no gain over fp32"), (0.2, "2-10x slower"), (0.02, "more than 10x slower: emulated")):
        monkeypatch.setattr(cpu_kernels, "low_precision_speedup", lambda dt, _s=speedup: _s)
        monkeypatch.setattr(cpu_kernels, "_WARNED", set())
        caplog.clear()
        with caplog.at_level("WARNING", logger="hiera_video"):
            assert cpu_kernels.resolve_precision("bf16", "cpu") == "fp32"
        msg = caplog.records[0].getMessage()
        assert expect in msg and cls in msg and "Test CPU" in msg, msg


def test_auto_precision_is_bf16_on_gpus_and_fp32_on_any_cpu(monkeypatch):
    """The default (``train.precision: auto``) never makes CPU results depend on the CPU's bf16 support."""
    for is_native in (True, False):
        monkeypatch.setattr(cpu_kernels, "native", lambda dtype, _n=is_native: _n)
        assert cpu_kernels.resolve_precision("auto", "cpu") == "fp32"
        assert cpu_kernels.resolve_precision("auto", "cuda") == "bf16"


def test_resolve_precision_where_bf16_is_native(monkeypatch, caplog):
    monkeypatch.setattr(cpu_kernels, "native", lambda dt: True)
    with caplog.at_level("WARNING", logger="hiera_video"):
        assert cpu_kernels.resolve_precision("bf16", "cpu") == "bf16"
    assert not caplog.records


@pytest.mark.parametrize("native", [False, True])
def test_engine_autocast_follows_the_rule(native, monkeypatch):
    monkeypatch.setattr(cpu_kernels, "native", lambda dt: native or dt == torch.float32)
    cpu = torch.device("cpu")
    with autocast_context(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") == native
        if native:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_context(cpu, "bf16", force=True):
        assert torch.is_autocast_enabled("cpu")
    with autocast_context(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_real_answer_for_this_cpu_is_consistent():
    """Whatever this CPU is: the engine's choice equals the probe's, and running it works."""
    want = "bf16" if cpu_kernels.native(torch.bfloat16) else "fp32"
    assert cpu_kernels.resolve_precision("bf16", "cpu") == want
    lin = torch.nn.Linear(8, 4)
    with autocast_context(torch.device("cpu"), "bf16"):
        out = lin(torch.randn(2, 8))
    assert out.dtype == (torch.bfloat16 if want == "bf16" else torch.float32)


def test_run_faster_measures_once_then_runs_only_the_choice():
    """`run_faster`: the first call measures both and returns the winner's output; later calls run only the
    chosen one (``regular_later`` in place of ``regular`` once measured)."""
    cpu_kernels.clear_choices()
    calls = []

    def slow():
        calls.append("slow")
        time.sleep(0.002)
        return "slow"

    def quick():
        calls.append("quick")
        return "quick"

    try:
        assert cpu_kernels.run_faster(("run_faster", 1), slow, quick) == "quick"
        assert calls.count("slow") >= 2 and calls.count("quick") >= 2
        calls.clear()
        assert cpu_kernels.run_faster(("run_faster", 1), slow, quick) == "quick" and calls == ["quick"]
        assert cpu_kernels.run_faster(("run_faster", 2), quick, slow) == "quick"
        calls.clear()
        later = cpu_kernels.run_faster(("run_faster", 2), quick, slow, regular_later=lambda: "in place")
        assert later == "in place" and calls == []
    finally:
        cpu_kernels.clear_choices()
