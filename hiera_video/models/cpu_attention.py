"""Attention on the CPU: PyTorch's fused kernel or the plain ``softmax(q kᵀ / √d) v``, whichever is faster
for the shape on this CPU, measured at first use.

Why a choice: PyTorch's CPU flash-attention kernel is not the faster one everywhere. On an AMD EPYC Zen 4
(AVX-512 and AVX512-BF16, no AMX; 2 threads, torch 2.14.1), the sums over Hiera-B's attention calls
(`hiera_base_224`) were, fused vs plain:

* training (forward + backward), batch 4: bf16 251 vs 74 ms, fp32 174 vs 134 ms; batch 8: bf16 691 vs
  183 ms, fp32 398 vs 297 ms. The bf16 training step took 1272 ms against the original Hiera's 1133 ms,
  whose attention is the plain form.
* forward only, batch 8: bf16 144 vs 90 ms, fp32 118 vs 114 ms.

On the Intel Xeon with AMX (BENCHMARKS.md, seventh session), the plain form forced everywhere was no faster
for a training step and made the inference forward 5% slower. So, like the GEMMs (`cpu_kernels.choose`),
the two are timed on the first call of each shape (forward only without grad, forward + backward with it)
and the faster is cached for the process (and kept with the other choices: `cpu_kernels.export_choices`).
The plain form must be `MARGIN` faster: the fused one keeps less memory and is PyTorch's default.

Memory rule: the plain form makes (and, for the backward, keeps) the ``[..., L, Lk]`` probabilities,
where the fused kernel keeps only the output and one value per row. It is a candidate only where that
matrix is no larger than q, k and v together (``L * Lk <= (L + 2 * Lk) * head_dim``): every attention of
Hiera-B on images (at most 196 tokens); not the global attentions of a 16-frame video model (1568 and 392
tokens), where it would add ~80 MB per block.

Both forms compute the same function (the plain one in the original Hiera's order: ``(q * scale) @ kᵀ``,
softmax, ``@ v``); they agree to float rounding (tests). Off the CPU, with fast paths disabled
(``HIERA_VIDEO_FAST=0``), under torch.compile (Inductor picks its own) or inside a torch.func transform,
the fused kernel runs, as ``F.scaled_dot_product_attention`` always did here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hiera_video.models import cpu_kernels, fast
from hiera_video.models.fast_train import _functorch_active

__all__ = ["MARGIN", "attention", "plain_attention", "plain_allowed"]

MARGIN = 1.05  # the plain form must be this much faster than the fused kernel to be used
_BUDGET_S = 0.1  # measuring time per variant and shape


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q kᵀ / √d) v`` in plain ops. q ``[..., L, d]``, k and v ``[..., Lk, d]`` -> ``[..., L, d]``."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


def plain_allowed(q: torch.Tensor, k: torch.Tensor) -> bool:
    """The memory rule: the ``[L, Lk]`` probabilities no larger than q, k and v together."""
    L, Lk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    return L * Lk <= (L + 2 * Lk) * d


def _applies(q: torch.Tensor) -> bool:
    return (
        q.device.type == "cpu"
        and q.numel() > 0
        and fast.is_enabled()
        and not torch.compiler.is_compiling()
        and not _functorch_active()
    )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v)`` (no mask, no dropout, default scale), run by the kernel
    measured faster for this shape on this CPU (module docstring).

    q ``[B, H, L, d]``, k and v ``[B, H, Lk, d]`` -> ``[B, H, L, d]``."""
    if not (_applies(q) and plain_allowed(q, k)):
        return F.scaled_dot_product_attention(q, k, v)
    train = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    key = cpu_kernels.shape_key("attention", q, q.shape[-2], k.shape[-2], q.shape[-1], train,
                                torch.is_autocast_enabled("cpu"))
    use = cpu_kernels.cached_choice(key)
    if use is None:
        if not train:  # time the calls themselves; the winner's output is the result
            return cpu_kernels.run_faster(key, lambda: F.scaled_dot_product_attention(q, k, v),
                                          lambda: plain_attention(q, k, v), MARGIN, _BUDGET_S)
        use = _measure_training(key, q, k, v)
    return plain_attention(q, k, v) if use else F.scaled_dot_product_attention(q, k, v)


def _measure_training(key: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Time forward + backward of both forms on detached copies of q, k, v (the graph being built is not
    touched; the gradients go nowhere) and cache the choice.

    Pass-through saved-tensor hooks shield the measuring from the caller's: inside gradient checkpointing
    (`torch.utils.checkpoint`, non-reentrant), the checkpoint's hooks would count the measurement's saved
    tensors, which its recomputation (the choice then cached) does not save again."""
    gen = torch.Generator().manual_seed(0)  # a private generator: measuring must not move the global RNG
    grad = torch.randn(q.shape[:-1] + v.shape[-1:], generator=gen)

    def timed(fn):
        def run() -> None:
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            with torch.enable_grad():
                out = fn(*leaves)
                torch.autograd.grad(out, leaves, grad.to(out.dtype))
        return run

    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        use, _ = cpu_kernels.choose(key, timed(F.scaled_dot_product_attention), timed(plain_attention), MARGIN,
                                    _BUDGET_S)
    return bool(use)
