"""tools/benchmark.py runs end to end on a tiny config and reports what it promises (no timing asserts)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("hiera_benchmark_tool", ROOT / "tools" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


TINY = ["input_size=[64,64]", "embed_dim=16", "depths=[1,1,2,1]", "num_classes=7"]


def test_tiny_run_structure(bench, tmp_path):
    pytest.importorskip("hiera")
    out = tmp_path / "BENCH.md"
    out.write_text("# Benchmarks\n\nHand-written notes stay.\n")
    raw = tmp_path / "raw.json"
    argv = ["--model", "hiera_tiny_224", "--batch-size", "2", "--override", *TINY,
            "--precision", "fp32", "bf16", "--low-precision", "autocast", "weights",
            "--mode", "infer", "train", "--refs", "original", "timm", "--reps", "2", "--warmup", "1",
            "--peak-size", "256", "--peak-reps", "2", "--threads", "1",
            "--json", str(raw), "--write", str(out), "--section", "tiny"]
    results = bench.main(argv)

    # fp32/bf16 x infer/train configurations, each with ours, the ablation row and the references.
    got = {(r["config"]["precision"], r["config"]["mode"]) for r in results}
    assert got == {("fp32", "infer"), ("fp32", "train"), ("bf16", "infer"), ("bf16", "train")}
    for res in results:
        assert res["flops"] > 0
        impls = {r["impl"] for r in res["rows"]}
        assert {"ours", "original"} <= impls
        assert res["primary"] in {r["label"] for r in res["rows"]}
        for r in res["rows"]:
            assert len(r["times_s"]) == 2 and r["median_s"] > 0 and r["items_per_s"] > 0
            assert r["speedup_of_ours"] > 0 and r["gflops"] > 0 and 0 < r["peak_fraction"]
            if res["config"]["mode"] == "infer":  # same weights: the references agree with ours
                tol = 1e-4 if res["config"]["precision"] == "fp32" else 0.1
                assert r["max_rel_diff"] < tol, (r["label"], r["max_rel_diff"])
    by = {(r["config"]["precision"], r["config"]["mode"]): r for r in results}
    labels = [r["label"] for r in by["fp32", "infer"]["rows"]]
    assert "ours (fp32, regular path)" in labels
    settings = {r["setting"] for r in by["bf16", "infer"]["rows"]}
    assert settings == {"bf16 autocast", "bf16 weights"}

    data = json.loads(raw.read_text())
    assert set(data["peaks"]) == {"fp32", "bf16"} and all(v > 0 for v in data["peaks"].values())
    assert data["machine"]["threads"] == "1"

    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written notes stay.\n")
    assert text.count("<!-- BEGIN benchmark:tiny -->") == 1 and "<!-- END benchmark:tiny -->" in text
    assert "| implementation | median ms |" in text and "speed-up of ours" in text
    assert "Dense matmul peak" in text and "Command: `python tools/benchmark.py" in text


def test_write_section_replaces_only_its_block(bench, tmp_path):
    p = tmp_path / "B.md"
    bench.write_section(p, "a", "first")
    bench.write_section(p, "b", "other")
    p.write_text(p.read_text() + "\ntrailing notes\n")
    bench.write_section(p, "a", "second")
    text = p.read_text()
    assert "second" in text and "first" not in text and "other" in text and "trailing notes" in text
    assert text.index("benchmark:a") < text.index("benchmark:b")


def test_timm_key_mapping(bench):
    sd = {"norm.weight": 1, "head.projection.bias": 2, "blocks.0.norm1.weight": 3}
    assert bench.timm_state_dict(sd) == {"head.norm.weight": 1, "head.fc.bias": 2, "blocks.0.norm1.weight": 3}
