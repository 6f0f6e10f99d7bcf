"""Shared helpers for model tests: reference models from the original implementation and tiny configs."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from hiera_video.models import cpu_kernels

TINY_IMAGE = dict(input_size=(64, 64), embed_dim=16, num_heads=1, depths=(1, 1, 2, 1), num_classes=7)
TINY_VIDEO = dict(input_size=(4, 64, 64), embed_dim=16, num_heads=1, depths=(1, 1, 2, 1), num_classes=5)
FP32_OK = cpu_kernels.kernel_ok("onednn_fp32_linear")  # oneDNN's fp32 linears run on this CPU
# The fast paths' linears three ways (`kernel` fixture, conftest.py): fast.FORCE_ONEDNN for each.
KERNELS = {"onednn": True, "regular": False, "measured": None}


def original_model(name: str, **kwargs) -> torch.nn.Module:
    """The original implementation's model (pip hiera-transformer) returning logits in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hiera
    factory = getattr(hiera, name)
    ref = (factory(**kwargs) if name == "Hiera" else factory(pretrained=False, **kwargs)).eval()
    if hasattr(ref, "head"):
        ref.head.act_func = lambda x: x  # the original applies softmax in eval mode; compare logits
    return ref


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter distinct random values (the default init has constant biases that hide bugs).

    LayerNorm scales stay near 1 so activations keep a realistic range through deep models.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm_scale = p.ndim == 1 and "norm" in name and name.endswith("weight")
            p.copy_(1 + 0.1 * noise if is_norm_scale else 0.02 * noise)
    return model


@contextlib.contextmanager
def choices_must_be_adopted(exported: dict[str, Any]) -> Iterator[set[tuple]]:
    """Within: this process's CPU kernel choices are forgotten (as in a new process) and measuring any shape
    that ``exported`` (`cpu_kernels.export_choices`) holds fails, so the code under test must adopt them.
    Yields those keys; the process's own choices are back afterwards."""
    adopted = {cpu_kernels._decode(k) for k, _ in exported["choices"]}
    measure = cpu_kernels.choose

    def choose(key, *args, **kwargs):
        assert key not in adopted, f"measured {key} again instead of adopting its saved choice"
        return measure(key, *args, **kwargs)

    before = cpu_kernels.choices()
    cpu_kernels.clear_choices()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cpu_kernels, "choose", choose)
            yield adopted
    finally:
        cpu_kernels.clear_choices()
        cpu_kernels._CHOICES.update(before)
