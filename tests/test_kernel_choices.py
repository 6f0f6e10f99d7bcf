"""Per-shape CPU kernel choices kept across processes (`cpu_kernels.export_choices` / `import_choices`).

Two kernels agree only to float rounding, so a process that adopts another's choices must compute exactly
what that process computed (bitwise), without measuring; choices made for another CPU, cap, PyTorch or probe
result, and malformed files, are never adopted. Holds on any CPU: where oneDNN is refused here, the choices
are all "regular" and everything below still applies.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hiera_video import create_model
from hiera_video.models import cpu_kernels, fast

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_choices():
    """Each test starts from no choices and leaves the process's choices as it found them."""
    before = cpu_kernels.choices()
    cpu_kernels.clear_choices()
    yield
    cpu_kernels.clear_choices()
    cpu_kernels._CHOICES.update(before)


@pytest.fixture(scope="module")
def model_and_input():
    torch.manual_seed(0)
    model = create_model("hiera_tiny_224", num_classes=10).eval()
    return model, torch.randn(2, 3, 224, 224)


def _forward(model, x) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def _fast_on(x) -> bool:
    with torch.inference_mode():
        return fast.active(x)


def _no_measuring(monkeypatch) -> None:
    def refuse(key, *a, **k):
        raise AssertionError(f"measured {key} although its choice was imported")

    monkeypatch.setattr(cpu_kernels, "choose", refuse)


def test_adopted_choices_give_the_same_computation_without_measuring(model_and_input, monkeypatch):
    model, x = model_and_input
    first = _forward(model, x)
    exported = json.loads(json.dumps(cpu_kernels.export_choices()))  # through JSON, as a file would be
    # (Where oneDNN is refused here the fast path is off and nothing is chosen: the rest holds trivially.)
    assert (len(exported["choices"]) > 0) == _fast_on(x)
    cpu_kernels.clear_choices()
    assert cpu_kernels.import_choices(exported) == len(exported["choices"])
    _no_measuring(monkeypatch)
    assert torch.equal(_forward(model, x), first)


def test_the_imported_choice_is_the_one_followed(model_and_input):
    """All-regular choices compute exactly what the regular kernels forced compute (any CPU), and where the
    probe accepts oneDNN, all-oneDNN choices compute what oneDNN forced computes: the import decides."""
    model, x = model_and_input
    _forward(model, x)
    exported = cpu_kernels.export_choices()
    options = [False] + ([True] if cpu_kernels.kernel_ok("onednn_fp32_linear") else [])
    kinds = {pair[0][0] for pair in exported["choices"]}
    assert ("infer" in kinds) == _fast_on(x)  # oneDNN refused here: the fast path is off, no choices
    for value in options:
        # Only the kernel choices: chunking choices ("samples", "mlp") stay regular (unchunked).
        flipped = dict(exported, choices=[[k, value if k[0] == "infer" else False] for k, _ in exported["choices"]])
        cpu_kernels.clear_choices()
        cpu_kernels.import_choices(flipped)
        got = _forward(model, x)
        old = fast.FORCE_ONEDNN
        fast.FORCE_ONEDNN = value
        try:
            cpu_kernels.clear_choices()
            cpu_kernels.import_choices(dict(flipped, choices=[p for p in flipped["choices"] if p[0][0] != "infer"]))
            forced = _forward(model, x)
        finally:
            fast.FORCE_ONEDNN = old
        assert torch.equal(got, forced), f"oneDNN={value}"


@pytest.mark.parametrize("field, value", [
    ("cpu", "Some Other CPU"), ("flags", ["avx2"]), ("torch", "1.0.0"), ("onednn_cap", "SSE41"),
    ("mkl_cap", "SSE4_2"), ("kernels", []),
])
def test_choices_of_another_machine_are_not_adopted(field, value, caplog):
    cpu_kernels.choose(("test", torch.float32, 8, 1), lambda: 1, lambda: 2)
    exported = cpu_kernels.export_choices()
    if exported["fingerprint"][field] == value:
        value = ["something else"]
    exported["fingerprint"][field] = value
    cpu_kernels.clear_choices()
    with caplog.at_level(logging.WARNING, logger="hiera_video"):
        assert cpu_kernels.import_choices(exported, source="their choices") == 0
    assert cpu_kernels.choices() == {}
    assert f"their choices not used: made for another {field}" in caplog.text and "measuring here" in caplog.text


def _with(**fields):
    return lambda good: dict(good, **fields)


def _pair(pair):
    return lambda good: dict(good, choices=[pair])


@pytest.mark.parametrize("make", [
    lambda good: None, lambda good: [], lambda good: {"format": 99}, lambda good: {"format": 1},
    _with(format=2), _with(fingerprint="x"), _with(choices="not a list"),
    _pair([["infer", 1], "yes"]),  # the choice is not a bool
    _pair([["infer", 1]]), _pair(["infer", True]),  # not a [key, choice] pair / the key is not a list
    _pair([[{"dtype": "os.system"}, 8], True]),  # not a dtype
    _pair([["infer", {"dtype": "float32", "x": 1}], True]), _pair([["infer", {"eval": "1"}], True]),
], ids=lambda f: "")
def test_malformed_choices_are_refused_with_a_warning(make, caplog):
    payload = make(cpu_kernels.export_choices())
    with caplog.at_level(logging.WARNING, logger="hiera_video"):
        assert cpu_kernels.import_choices(payload, source="bad choices") == 0
    assert cpu_kernels.choices() == {}
    assert "bad choices not used" in caplog.text


def test_files_missing_unreadable_or_valid(tmp_path, caplog):
    assert cpu_kernels.load_choices(tmp_path / "none.json") == 0  # missing: nothing, silently
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff{ not json")
    with caplog.at_level(logging.WARNING, logger="hiera_video"):
        assert cpu_kernels.load_choices(bad) == 0
    assert f"kernel choices {bad} not used: cannot read it" in caplog.text
    cpu_kernels.choose(("test", torch.bfloat16, 16, 2, "gelu", True), lambda: 1, lambda: 2)
    path = cpu_kernels.save_choices(tmp_path / "sub" / "choices.json")
    assert cpu_kernels.save_choices(path, if_changed=True) is None  # nothing new since
    key = next(iter(cpu_kernels.choices()))
    cpu_kernels._CHOICES[key] = not cpu_kernels._CHOICES[key]  # a changed value, the same count
    assert cpu_kernels.save_choices(path, if_changed=True) == path
    cpu_kernels._CHOICES[key] = not cpu_kernels._CHOICES[key]
    cpu_kernels.save_choices(path)
    saved = cpu_kernels.choices()
    cpu_kernels.clear_choices()
    assert cpu_kernels.load_choices(path) == 1 and cpu_kernels.choices() == saved  # dtype, str, bool keys
    assert not [p for p in path.parent.iterdir() if p.name != "choices.json"]  # no temporaries left


def test_env_file_makes_a_second_process_compute_what_the_first_did(tmp_path):
    """``HIERA_VIDEO_KERNEL_CHOICES``: the first process saves its choices at exit, the second adopts them,
    measures nothing and computes the same logits bitwise."""
    script = textwrap.dedent("""
        import sys, torch
        from hiera_video import create_model
        from hiera_video.models import cpu_kernels
        second = sys.argv[2] == "second"
        if second:
            def refuse(key, *a, **k):
                raise AssertionError(f"measured {key}")
            cpu_kernels.choose = refuse
        torch.manual_seed(0)
        model = create_model("hiera_tiny_224", num_classes=10).eval()
        with torch.inference_mode():
            out = model(torch.randn(2, 3, 224, 224))
        torch.save(out, sys.argv[1])
    """)
    env = dict(os.environ, HIERA_VIDEO_KERNEL_CHOICES=str(tmp_path / "choices.json"))
    for run in ("first", "second"):
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{run}.pt"), run], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if run == "first":
            assert len(json.loads((tmp_path / "choices.json").read_text())["choices"]) > 0
    first, second = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in ("first", "second"))
    assert torch.equal(first, second)


def test_a_key_json_cannot_hold_is_left_out_not_fatal():
    cpu_kernels.choose(("test", torch.float32, 8, 1), lambda: 1, lambda: 2)
    cpu_kernels.choose(("test", object()), lambda: 1, lambda: 2)
    exported = json.loads(json.dumps(cpu_kernels.export_choices()))
    assert [k for k, _ in exported["choices"]] == [["test", {"dtype": "float32"}, 8, 1]]
