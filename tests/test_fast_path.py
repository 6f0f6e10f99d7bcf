"""The CPU fast paths (`hiera_video.models.fast`) give the regular path's results on every CPU.

Inference (no grad, eval): oneDNN linears with fused epilogues, fp32 or bf16 (the training path,
`fast_train`, is tested in test_fast_train.py). It must match the regular eager path, handle images, video,
masked input and intermediates, and step aside for hooked or replaced layers.

Every test asserts what must happen on the CPU it runs on, from the probe's answers (`cpu_kernels`): where
a kernel runs, the path that uses it is taken; where it is refused (an AVX2-only CPU, or CI's
``ONEDNN_MAX_CPU_ISA=AVX2`` run), the regular path runs instead and gives the same results. The "refused"
cases are also simulated by patching the probe, so both branches are covered on any machine. The linears are
run three ways: always oneDNN (where the probe passed), never, and the per-shape measured choice.
"""

from __future__ import annotations

import copy
import pickle
import time

import pytest
import torch
import torch.nn as nn
from model_helpers import FP32_OK, TINY_IMAGE, TINY_VIDEO, randomize_

import hiera_video
from hiera_video.models import cpu_attention, cpu_kernels, fast, fast_train

CONFIGS = {"image": ("hiera_tiny_224", TINY_IMAGE), "video": ("hiera_base_16x224", TINY_VIDEO)}
BF16_FAST = cpu_kernels.native(torch.bfloat16) and cpu_kernels.kernel_ok("onednn_bf16_linear") \
    and cpu_kernels.kernel_ok("bf16_sdpa")


@pytest.fixture(autouse=True)
def _fresh_choices():
    """Each test measures its own per-shape choices and sees its own precision warnings."""
    cpu_kernels.clear_choices()
    cpu_kernels._WARNED.clear()
    yield
    cpu_kernels.clear_choices()


def refuse(monkeypatch, *names: str) -> None:
    """Simulate a CPU whose oneDNN refuses the named kernels (as AVX2-only CPUs refuse bf16)."""
    status = dict(cpu_kernels.kernel_status())
    status.update({n: "RuntimeError: could not create a primitive descriptor (simulated)" for n in names})
    monkeypatch.setattr(cpu_kernels, "kernel_status", lambda: status)


def make(kind: str, **kw) -> tuple[nn.Module, torch.Tensor]:
    name, cfg = CONFIGS[kind]
    torch.manual_seed(0)
    model = randomize_(hiera_video.create_model(name, **{**cfg, **kw})).eval()
    x = torch.randn(2, 3, *model.config.input_size)
    return model, x


def run(model: nn.Module, x: torch.Tensor, use_fast: bool, **kw):
    with torch.inference_mode(), (fast.enabled() if use_fast else fast.disabled()):
        return model.forward_intermediates(x, **kw)


def count_fast_linears(monkeypatch) -> list[int]:
    calls = [0]
    orig = fast.linear

    def spy(*a, **k):
        calls[0] += 1
        return orig(*a, **k)

    monkeypatch.setattr(fast, "linear", spy)
    return calls


@pytest.mark.parametrize("kind", ["image", "video"])
def test_fp32_matches_regular_path(kind, kernel, monkeypatch):
    model, x = make(kind)
    ref_logits, ref_stages = run(model, x, use_fast=False)
    calls = count_fast_linears(monkeypatch)
    logits, stages = run(model, x, use_fast=True)
    # Taken wherever oneDNN's fp32 linears run here; the linears inside use oneDNN or F.linear per `kernel`.
    assert (calls[0] > 0) == FP32_OK, "the fast path must be taken exactly where its kernels run"
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    for a, b in zip(stages, ref_stages):
        assert a.shape == b.shape and a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def bf16_outputs(model, x):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        auto = model(x)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    with torch.inference_mode():
        weights = bf16_model(x.bfloat16())
    return auto, weights


@pytest.mark.parametrize("kind", ["image", "video"])
def test_bf16_weights_and_autocast(kind, kernel, monkeypatch, caplog):
    """Native bf16: computed in bf16 on the fast path. Not native: fp32 after one warning. Close either way."""
    model, x = make(kind)
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    scale = ref.abs().max().item()
    with torch.no_grad():
        want = torch.bfloat16 if BF16_FAST else (torch.float32 if FP32_OK else None)
        assert fast.compute_dtype(x.bfloat16()) == want
    calls = count_fast_linears(monkeypatch)
    with caplog.at_level("WARNING", logger="hiera_video"):
        auto, weights = bf16_outputs(model, x)
    assert (calls[0] > 0) == (want is not None)
    assert weights.dtype == torch.bfloat16 and auto.dtype == torch.bfloat16
    warnings = [r for r in caplog.records if "not native" in r.getMessage()]
    assert len(warnings) == (0 if cpu_kernels.native(torch.bfloat16) else 1)  # once, not per call
    # bf16 keeps ~3 significant digits; 24 residual updates accumulate a few ulps of the logit scale.
    for out in (auto, weights):
        err = (out.float() - ref).abs().max().item()
        assert err <= 0.05 * scale + 1e-3, (err, scale)


def test_bf16_where_not_native_runs_fp32_unless_forced(monkeypatch, caplog):
    """A CPU without native bf16 (simulated on any CPU): one warning naming it, fp32 compute, same results."""
    model, x = make("image")
    monkeypatch.setattr(cpu_kernels, "native", lambda dt: dt == torch.float32)
    with caplog.at_level("WARNING", logger="hiera_video"):
        with torch.no_grad():
            assert fast.compute_dtype(x.bfloat16()) == (torch.float32 if FP32_OK else None)
        auto, weights = bf16_outputs(model, x)
    msgs = [r.getMessage() for r in caplog.records if "not native" in r.getMessage()]
    assert len(msgs) == 1 and "bf16" in msgs[0] and "fp32 instead" in msgs[0] and "FORCE" in msgs[0]
    assert weights.dtype == torch.bfloat16  # the model's dtype is kept at its boundary
    if FP32_OK:  # computed in fp32 from the bf16-rounded weights: far closer than a bf16 computation
        bf16_model = copy.deepcopy(model).to(torch.bfloat16)
        with torch.inference_mode(), fast.disabled():
            ref = copy.deepcopy(bf16_model).float()(x.bfloat16().float())
        assert (weights.float() - ref).abs().max() <= 0.01 * ref.abs().max() + 1e-3
    monkeypatch.setenv("HIERA_VIDEO_FORCE_PRECISION", "1")
    with torch.no_grad():
        forced = fast.compute_dtype(x.bfloat16())
    ok = cpu_kernels.kernel_ok("onednn_bf16_linear") and cpu_kernels.kernel_ok("bf16_sdpa")
    assert forced == (torch.bfloat16 if ok else None)


def test_refused_kernels_mean_the_regular_path(monkeypatch):
    """oneDNN refusing its kernels (as on the AVX2 CPU of issue 14) is never an error: regular path, same output."""
    model, x = make("video")
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    refuse(monkeypatch, "onednn_fp32_linear", "onednn_bf16_linear")
    # The attention's own per-shape choice (plain ATen ops, no oneDNN kernel: test_cpu_attention.py) is not
    # what this test is about: keep the fused kernel, so the output must equal the regular path's exactly.
    monkeypatch.setattr(cpu_attention, "MARGIN", float("inf"))
    calls = count_fast_linears(monkeypatch)
    with torch.no_grad():
        assert fast.compute_dtype(x) is None and fast.compute_dtype(x.bfloat16()) is None
    assert fast_train.train_active(x) and not fast_train.use_onednn(x, model.blocks[0].mlp.fc1)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
        auto, weights = bf16_outputs(model, x)
    assert calls[0] == 0 and weights.dtype == torch.bfloat16
    model.train()
    out = model(x)  # training: regular linears, autograd works
    out.sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


def test_measured_choice_is_made_once_per_shape_and_kept():
    """The per-shape choice: measured on the first call, cached, and a candidate that raises loses."""
    calls = {"regular": 0, "candidate": 0}

    def regular():
        calls["regular"] += 1
        return "regular"

    def slow():
        calls["candidate"] += 1
        time.sleep(0.002)
        return "candidate"

    use, out = cpu_kernels.choose(("test", 1), regular, slow)
    assert use is False and out == "regular" and calls["candidate"] >= 2
    n = dict(calls)
    assert cpu_kernels.choose(("test", 1), regular, slow) == (False, None) and calls == n  # cached, no run

    def fast_candidate():
        return "candidate"

    def slow_regular():
        time.sleep(0.002)
        return "regular"

    assert cpu_kernels.choose(("test", 2), slow_regular, fast_candidate) == (True, "candidate")

    def broken():
        raise RuntimeError("could not create a primitive descriptor")

    assert cpu_kernels.choose(("test", 3), regular, broken) == (False, "regular")
    assert cpu_kernels.cached_choice(("test", 3)) is False


def test_model_records_one_choice_per_layer_shape(monkeypatch):
    model, x = make("image")
    with torch.inference_mode():
        first = model(x)
    made = {k: v for k, v in cpu_kernels.choices().items() if k[0] == "infer"}
    assert (len(made) > 0) == FP32_OK  # qkv, proj, fc1 (gelu), fc2 (add) per stage width
    assert all(k[1] == torch.float32 and k[3] == torch.get_num_threads() for k in made)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), first, rtol=0, atol=0)  # the kept kernels give the same output
    assert {k: v for k, v in cpu_kernels.choices().items() if k[0] == "infer"} == made


def test_masked_input_matches_and_ignores_hidden_units():
    model, x = make("image")
    n_units = int(torch.tensor(model.mask_units_shape()).prod())
    mask = torch.zeros(2, n_units, dtype=torch.bool)
    mask[:, : n_units // 2] = True
    mask[1] = mask[1][torch.randperm(n_units)]
    ref = run(model, x, use_fast=False, mask=mask)
    out = run(model, x, use_fast=True, mask=mask)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # Pixels of hidden units must not leak into the encoding (the patch embedding zeroes them first).
    hidden = ~mask.view(2, *model.mask_units_shape())
    pix = torch.nn.functional.interpolate(hidden[:, None].float(), size=x.shape[2:]).bool().expand_as(x)
    x2 = torch.where(pix, torch.randn_like(x) * 10, x)
    for a, b in zip(run(model, x2, use_fast=True, mask=mask), out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_grad_enabled_or_train_mode_uses_regular_inference(monkeypatch):
    model, x = make("image")
    calls = count_fast_linears(monkeypatch)
    out = model(x)  # eval, grad enabled: autograd must work, so no inference fast path
    assert out.requires_grad and calls[0] == 0
    model.train()
    with torch.no_grad():
        model(x)  # train mode (drop path / dropout semantics): regular path
    assert calls[0] == 0


def test_hooks_and_replaced_layers_disable_the_fast_path(monkeypatch):
    model, x = make("image")
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    calls = count_fast_linears(monkeypatch)
    seen = []
    h = model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-6)
    assert seen and calls[0] == 0  # the hook fired, the fast path stepped aside
    h.remove()

    class Doubled(nn.Linear):  # a replaced layer (think LoRA) must keep its own forward
        def forward(self, inp):
            return 2 * super().forward(inp)

    fc = model.blocks[0].mlp.fc2
    model.blocks[0].mlp.fc2 = Doubled(fc.in_features, fc.out_features)
    model.blocks[0].mlp.fc2.load_state_dict(fc.state_dict())
    with torch.inference_mode(), fast.disabled():
        want = model(x)
    with torch.inference_mode():
        got = model(x)
    assert calls[0] == 0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (want - ref).abs().max() > 1e-4  # the replacement does change the output


def test_weight_updates_invalidate_the_cache():
    model, x = make("image")
    with torch.inference_mode():
        model(x)  # fills the packed-weight cache
    with torch.no_grad():
        model.blocks[-1].mlp.fc2.weight.mul_(3.0)  # in place: same storage, new version
        model.blocks[0].attn.qkv.weight = nn.Parameter(model.blocks[0].attn.qkv.weight * 0.5)  # re-assigned
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)
    fast.clear_cache()  # dropping the cache only costs a re-pack
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)
    sd = {k: v * 1.1 for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    with torch.inference_mode(), fast.disabled():
        ref = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)


def test_model_stays_copyable_and_picklable_after_fast_inference():
    model, x = make("image")
    with torch.inference_mode():
        out = model(x)
    clone = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    assert set(clone.state_dict()) == set(model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(clone(x), out, rtol=0, atol=0)


@pytest.mark.skipif(not FP32_OK, reason="covered by test_refused_kernels_mean_the_regular_path")
def test_switches():
    model, x = make("image")
    assert fast.is_enabled()
    with torch.no_grad():
        assert fast.active(x) and fast.compute_dtype(x) == torch.float32
        with fast.disabled():
            assert not fast.active(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast.compute_dtype(x) == (torch.bfloat16 if BF16_FAST else torch.float32)
        assert fast.compute_dtype(x.half()) is None  # no fast fp16 GEMM on CPU: regular path
    assert not fast.active(x)  # grad enabled
    fast.set_enabled(False)
    try:
        with torch.no_grad():
            assert not fast.active(x)
    finally:
        fast.set_enabled(True)


def test_min_activation_floor_keeps_the_regular_path(monkeypatch):
    model, x = make("image")
    monkeypatch.setattr(fast, "MIN_ACTIVATION", 1 << 16)  # TINY_IMAGE at batch 2: 8192 elements
    calls = count_fast_linears(monkeypatch)
    with torch.inference_mode():
        model(x)
    assert calls[0] == 0


def test_probing_and_measuring_leave_the_global_rng_alone():
    """Exact resume and drop path depend on the global RNG: the probe and the per-shape timing never touch it."""
    model, x = make("image", drop_path_rate=0.0)
    state = torch.get_rng_state()
    cpu_kernels.kernel_status.cache_clear()
    cpu_kernels._speedup.cache_clear()
    cpu_kernels.summary()
    with torch.inference_mode():
        model(x)  # first call: measures every linear shape
    model.train()
    model(x).sum().backward()  # and the training linears
    assert any(k[0] == "train" for k in cpu_kernels.choices()) == FP32_OK
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("chunk", [True, False])
def test_chunked_mlp_matches_regular_path(chunk, kernel, monkeypatch):
    """The first stage's MLP over row chunks (where measured faster) gives the unchunked result."""
    model, x = make("video")
    with torch.inference_mode(), fast.disabled():
        ref = model.forward_intermediates(x)
    monkeypatch.setattr(fast, "MLP_CHUNK_ROWS", 16)  # TINY_VIDEO at batch 2: 512 rows in stage 1
    real = cpu_kernels.cached_choice
    monkeypatch.setattr(cpu_kernels, "cached_choice", lambda key: chunk if key[0] == "mlp" else real(key))
    calls = count_fast_linears(monkeypatch)
    with torch.inference_mode():
        out = model.forward_intermediates(x)
    if FP32_OK:
        # per block: qkv + proj, and fc1 + fc2 once (unchunked) or once per chunk of rows
        assert calls[0] > (100 if chunk else 0)
    for a, b in zip([out[0], *out[1]], [ref[0], *ref[1]]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("q_stride", "window", "mask_unit"), [(1, 16, True), (4, 4, True), (1, 0, False),
                                                               (4, 0, False)])
def test_head_major_attention_equals_the_checkpoint_order(q_stride, window, mask_unit):
    """`_attend` on qkv in head-major order (a copy-free strided view) equals the checkpoint order's."""
    from hiera_video.models.hiera import MaskUnitAttention

    attn = MaskUnitAttention(32, 48, heads=3, q_stride=q_stride, window_size=window, use_mask_unit_attn=mask_unit)
    qkv = torch.randn(2, 256, 3 * 48)
    rows = fast.head_major(3, 16)
    assert sorted(rows.index.tolist()) == list(range(3 * 48))  # a permutation
    want = attn._attend(qkv)
    got = attn._attend(qkv[..., rows.index], head_major=True)
    assert got.shape == want.shape == (2, 256 // q_stride, 48)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # the state dict keeps the checkpoint order: nothing of the reordering is saved
    assert set(attn.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}


@pytest.mark.parametrize("chunked", [True, False])
def test_blocks_over_sample_chunks_match_regular_path(chunked, kernel, monkeypatch):
    """Whole blocks run over chunks of samples (where measured faster) give the unchunked result."""
    model, x = make("image")
    x = torch.cat([x, x.flip(0), x * 0.5])  # 6 samples
    with torch.inference_mode(), fast.disabled():
        ref = model.forward_intermediates(x)
    monkeypatch.setattr(fast, "SAMPLE_CHUNK_ROWS", 1)  # one sample per chunk
    real = cpu_kernels.cached_choice
    monkeypatch.setattr(cpu_kernels, "cached_choice", lambda key: chunked if key[0] == "samples" else real(key))
    blocks = [0]
    orig = type(model.blocks[0])._forward_fast

    def spy(self, h, owned):
        blocks[0] += 1
        return orig(self, h, owned)

    monkeypatch.setattr(type(model.blocks[0]), "_forward_fast", spy)
    with torch.inference_mode():
        out = model.forward_intermediates(x)
    if FP32_OK:
        assert blocks[0] == len(model.blocks) * (6 if chunked else 1)
    for a, b in zip([out[0], *out[1]], [ref[0], *ref[1]]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_reused_buffers_never_leak_into_results_or_inputs(kernel):
    """The MKL path's per-thread scratch (MLP hidden, qkv) and in-place residual never alias what a call
    returns or what it was given: a second call leaves the first call's outputs and its input untouched."""
    model, x = make("image")
    x0 = x.clone()
    with torch.inference_mode():
        first = model.forward_intermediates(x)
        kept = [first[0].clone(), *[s.clone() for s in first[1]]]
        second = model.forward_intermediates(x * -1.0)
    assert torch.equal(x, x0)
    for a, b in zip([first[0], *first[1]], kept):
        assert torch.equal(a, b)
    assert not torch.equal(second[0], first[0])
    with torch.inference_mode(), fast.disabled():
        ref = model.forward_intermediates(x)
    torch.testing.assert_close(first[0], ref[0], rtol=0, atol=1e-5)


def test_scratch_buffers_are_bounded_and_reused():
    """Per-thread scratch: the same shape gets the same buffer; at most SCRATCH_SHAPES shapes are kept."""
    fast.clear_cache()
    a = fast._scratch((4, 8), torch.float32)
    assert fast._scratch((4, 8), torch.float32) is a and fast._scratch((4, 8), torch.bfloat16) is not a
    for n in range(fast.SCRATCH_SHAPES + 10):
        fast._scratch((n + 1, 3), torch.float32)
    assert len(fast._SCRATCH.bufs) == fast.SCRATCH_SHAPES
    assert (fast.SCRATCH_SHAPES + 10, 3) in {k[0] for k in fast._SCRATCH.bufs}  # the newest kept
    fast.clear_cache()
    assert not getattr(fast._SCRATCH, "bufs", None)



def _ln_linear(x, norm, lin, act, order):
    y = torch.nn.functional.linear(norm(x), lin.weight, lin.bias)
    y = torch.nn.functional.gelu(y) if act == "gelu" else y
    return y if order is None else y[..., order.index]


@pytest.mark.parametrize("folded", [True, False])
@pytest.mark.parametrize("act, rows, scratch", [("none", False, False), ("gelu", False, True), ("none", True, True)])
def test_norm_linear_equals_layer_norm_then_linear(folded, act, rows, scratch, monkeypatch):
    """`fast.norm_linear`, with the bias folded into the GEMM or not, is ``linear(layer_norm(x))`` to
    rounding, and follows in-place updates of the bias (the folded weight is a cached copy)."""
    torch.manual_seed(0)
    norm, lin = randomize_(nn.LayerNorm(96, eps=1e-6)), randomize_(nn.Linear(96, 288))
    order = fast.head_major(3, 32) if rows else None
    x = torch.randn(2, 50, 96)
    real = cpu_kernels.cached_choice
    monkeypatch.setattr(cpu_kernels, "cached_choice", lambda key: folded if key[0] == "folded" else real(key))
    with torch.inference_mode():
        got, x_norm = fast.norm_linear(x, norm, lin, act, rows=order, scratch=scratch)
        torch.testing.assert_close(got, _ln_linear(x, norm, lin, act, order), rtol=0, atol=1e-5)
        torch.testing.assert_close(x_norm, norm(x), rtol=0, atol=1e-6)  # the LayerNorm output, also given
        got = got.clone()
    with torch.no_grad():
        lin.bias.add_(1.0)  # an optimizer step or load_state_dict in between
    with torch.inference_mode():
        again = fast.norm_linear(x, norm, lin, act, rows=order, scratch=scratch)[0]
        torch.testing.assert_close(again, _ln_linear(x, norm, lin, act, order), rtol=0, atol=1e-5)


@pytest.mark.parametrize("winner", [False, True])
def test_norm_linear_keeps_the_folded_weight_only_where_chosen(winner, monkeypatch):
    torch.manual_seed(0)
    norm, lin = nn.LayerNorm(64), nn.Linear(64, 128)
    x = torch.randn(4, 40, 64)

    def choose(key, regular, candidate, *args, **kwargs):  # both run, as when measuring; the winner is set
        regular(), candidate()
        cpu_kernels._CHOICES[key] = winner
        return winner, None

    monkeypatch.setattr(cpu_kernels, "choose", choose)
    with torch.inference_mode():
        got = fast.norm_linear(x, norm, lin)[0]
        torch.testing.assert_close(got, _ln_linear(x, norm, lin, "none", None), rtol=0, atol=1e-5)
    assert ("w" in fast._CACHE[id(lin.weight)][1][("folded", torch.float32, None)]) == winner


def test_block_input_is_consumed_in_place_only_outside_measurements():
    """With nothing measured yet, choices (blocks over sample chunks included) are measured by repeating
    calls on one block input: the in-place residual add into an owned input must wait until they are made,
    else the repeated calls would see an input already overwritten."""
    model, x = make("image")
    x = torch.cat([x, x.flip(0), x * 0.5])
    with torch.inference_mode(), fast.disabled():
        ref = model.forward_intermediates(x)
    old = fast.SAMPLE_CHUNK_ROWS
    fast.SAMPLE_CHUNK_ROWS = 1  # one sample per chunk: a measured chunking choice at every block
    try:
        for _ in range(2):  # measuring, then measured
            with torch.inference_mode():
                out = model.forward_intermediates(x)
            for a, b in zip([out[0], *out[1]], [ref[0], *ref[1]]):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    finally:
        fast.SAMPLE_CHUNK_ROWS = old
    assert any(k[0] == "samples" for k in cpu_kernels.choices()) == FP32_OK
