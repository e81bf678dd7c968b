"""The Triton-style Pallas flash kernel: compiled on GPU, interpreted on CPU.

One suite for both (jax's gpu_ops_test pattern): ``INTERPRET`` is set from the
backend. Forward and gradients are compared with the kernel's jnp reference,
with attn_jax's "xla" path and with the float64 numpy reference of conftest. A
representative subset runs in CI; the full product is marked slow.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_with_inf, np_attention

import attn_jax
from attn_jax.kernels import autotune
from attn_jax.kernels.flash_triton import BlockSizes, flash_attention, flash_attention_reference

ON_GPU = jax.default_backend() == "gpu"
INTERPRET = not ON_GPU
# Small blocks on CPU so short sequences still span several blocks (and interpret mode stays fast).
BLOCKS = BlockSizes(16, 16, 16, 16, 16, 16) if INTERPRET else None
TOL = {jnp.float32: dict(atol=2e-5, rtol=1e-5), jnp.bfloat16: dict(atol=3e-2, rtol=2e-2)}
GRAD_TOL = {jnp.float32: dict(atol=1e-4, rtol=1e-4), jnp.bfloat16: dict(atol=1e-1, rtol=5e-2)}


def _inputs(rng, b, t, s, n, kh, h, hv, dtype):
    q = rng.normal(size=(b, t, n, h))
    k = rng.normal(size=(b, s, kh, h))
    v = rng.normal(size=(b, s, kh, hv))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def _mask_kwargs(case, b, t, s, rng):
    kv_len = jnp.asarray(rng.integers(1, s + 1, size=b))
    q_len = jnp.asarray(rng.integers(1, t + 1, size=b))
    q_seg = jnp.asarray(np.sort(rng.integers(0, 3, size=(b, t)), axis=1))
    kv_seg = jnp.asarray(np.sort(rng.integers(0, 3, size=(b, s)), axis=1))
    return {
        "none": {},
        "causal": dict(is_causal=True),
        "window": dict(window=(7, 3)),
        "causal_window": dict(is_causal=True, window=(9, 0)),
        "lengths": dict(query_seq_lengths=q_len, key_value_seq_lengths=kv_len),
        "segments": dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg),
        "all": dict(is_causal=True, window=(12, 0), key_value_seq_lengths=kv_len,
                    q_segment_ids=q_seg, kv_segment_ids=kv_seg),
    }[case]


def _np_kwargs(kw):
    return dict(is_causal=kw.get("is_causal", False), window=kw.get("window"),
                q_len=kw.get("query_seq_lengths"), kv_len=kw.get("key_value_seq_lengths"),
                q_seg=kw.get("q_segment_ids"), kv_seg=kw.get("kv_segment_ids"))


def _kernel(*args, **kw):
    return flash_attention(*args, block_sizes=BLOCKS, interpret=INTERPRET, **kw)


def _loss(fn, q, k, v, bias, kw, w):
    out, lse = fn(q, k, v, bias, **kw)
    return jnp.sum(out.astype(jnp.float32) * w) + jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0))


class FlashTritonTest:
    """Shared checks; parametrised below for the CI subset and the slow full product."""

    @staticmethod
    def check_forward(shape, case, dtype, bias=False, soft_cap=None, seed=0, kernel=None):
        kernel = kernel or _kernel
        rng = np.random.default_rng(seed)
        b, t, s, n, kh, h, hv = shape
        q, k, v = _inputs(rng, b, t, s, n, kh, h, hv, dtype)
        kw = _mask_kwargs(case, b, t, s, rng)
        bias_arr = jnp.asarray(rng.normal(size=(b, n, t, s)), dtype) if bias else None
        out, lse = kernel(q, k, v, bias_arr, logits_soft_cap=soft_cap, **kw)
        ref_out, ref_lse = flash_attention_reference(q, k, v, bias_arr, logits_soft_cap=soft_cap, **kw)
        assert out.shape == (b, t, n, hv) and out.dtype == dtype and lse.shape == (b, t, n)
        np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out, np.float32), **TOL[dtype])
        assert_close_with_inf(lse, ref_lse, **TOL[dtype])
        if dtype == jnp.float32:  # and against the independent float64 reference
            np_out, np_lse = np_attention(q, k, v, bias=bias_arr, softcap=soft_cap, **_np_kwargs(kw))
            np.testing.assert_allclose(out, np_out, atol=3e-5, rtol=1e-5)
            assert_close_with_inf(lse, np_lse, atol=3e-5, rtol=1e-5)

    @staticmethod
    def check_grads(shape, case, dtype, bias=False, soft_cap=None, seed=1, kernel=None):
        kernel = kernel or _kernel
        rng = np.random.default_rng(seed)
        b, t, s, n, kh, h, hv = shape
        q, k, v = _inputs(rng, b, t, s, n, kh, h, hv, dtype)
        kw = _mask_kwargs(case, b, t, s, rng)
        kw["logits_soft_cap"] = soft_cap
        bias_arr = jnp.asarray(rng.normal(size=(1, n, t, s)), dtype) if bias else None
        w = jnp.asarray(rng.normal(size=(b, t, n, hv)), jnp.float32)
        argnums = (0, 1, 2, 3) if bias else (0, 1, 2)
        g = jax.grad(lambda *a: _loss(kernel, *a, kw, w), argnums=argnums)(q, k, v, bias_arr)
        g_ref = jax.grad(lambda *a: _loss(flash_attention_reference, *a, kw, w), argnums=argnums)(q, k, v, bias_arr)
        for name, a, r in zip("q k v bias".split(), g, g_ref):
            a, r = np.asarray(a, np.float32), np.asarray(r, np.float32)
            assert np.all(np.isfinite(a)), name
            np.testing.assert_allclose(a, r, err_msg=f"d{name}", **GRAD_TOL[dtype])


# --- CI subset -----------------------------------------------------------------------------
CI_SHAPES = {  # (B, T, S, N, K, H, Hv)
    "t1": (2, 1, 37, 4, 2, 64, 64),
    "t37_gqa": (2, 37, 37, 8, 2, 64, 64),
    "t130_mqa_h80": (1, 130, 61, 8, 1, 80, 80),
    "hv_ne_h": (1, 45, 33, 4, 2, 32, 48),
    "all_ones": (1, 1, 1, 2, 1, 1, 1),
}
CASES = ["none", "causal", "window", "causal_window", "lengths", "segments", "all"]


@pytest.mark.parametrize("shape", list(CI_SHAPES))
@pytest.mark.parametrize("case", CASES)
def test_forward(shape, case):
    FlashTritonTest.check_forward(CI_SHAPES[shape], case, jnp.float32)


@pytest.mark.parametrize("case", ["causal", "all"])
@pytest.mark.parametrize("shape", ["t37_gqa", "t130_mqa_h80"])
def test_grads(shape, case):
    FlashTritonTest.check_grads(CI_SHAPES[shape], case, jnp.float32)


def test_bias_soft_cap_forward_and_grads():
    FlashTritonTest.check_forward(CI_SHAPES["t37_gqa"], "causal", jnp.float32, bias=True, soft_cap=3.0)
    FlashTritonTest.check_grads(CI_SHAPES["t37_gqa"], "window", jnp.float32, bias=True, soft_cap=3.0)


def test_bfloat16():
    FlashTritonTest.check_forward(CI_SHAPES["t37_gqa"], "causal", jnp.bfloat16)
    FlashTritonTest.check_grads(CI_SHAPES["t37_gqa"], "causal", jnp.bfloat16)


def test_boolean_mask_and_broadcast_bias_grad(rng):
    b, t, s, n, kh, h = 2, 21, 27, 4, 2, 32
    q, k, v = _inputs(rng, b, t, s, n, kh, h, h, jnp.float32)
    mask = jnp.asarray(rng.random((b, 1, t, s)) > 0.3)
    bias = jnp.asarray(rng.normal(size=(1, n, 1, s)), jnp.float32)  # per-key bias shared by queries
    out, lse = _kernel(q, k, v, bias, mask)
    ref, ref_lse = flash_attention_reference(q, k, v, bias, mask)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert_close_with_inf(lse, ref_lse, atol=2e-5)
    w = jnp.ones((b, t, n, h))
    gb = jax.grad(lambda bb: _loss(_kernel, q, k, v, bb, dict(mask=mask), w))(bias)
    gr = jax.grad(lambda bb: _loss(flash_attention_reference, q, k, v, bb, dict(mask=mask), w))(bias)
    assert gb.shape == bias.shape
    np.testing.assert_allclose(gb, gr, atol=1e-4, rtol=1e-4)


def test_fully_masked_rows_zero_output_and_grads(rng):
    b, t, s, n, kh, h = 2, 19, 23, 4, 2, 16
    q, k, v = _inputs(rng, b, t, s, n, kh, h, h, jnp.float32)
    kw = dict(query_seq_lengths=jnp.array([7, 19]), key_value_seq_lengths=jnp.array([23, 0]))
    out, lse = _kernel(q, k, v, **kw)
    assert np.all(np.asarray(out)[0, 7:] == 0) and np.all(np.asarray(out)[1] == 0)
    assert np.all(np.isneginf(lse[0, 7:])) and np.all(np.isneginf(lse[1]))
    with jax.debug_nans(True):
        dq, dk, dv = jax.grad(lambda *a: _loss(_kernel, *a, None, kw, 1.0), argnums=(0, 1, 2))(q, k, v)
    assert np.all(np.asarray(dq)[0, 7:] == 0) and np.all(np.asarray(dq)[1] == 0)
    assert np.all(np.asarray(dk)[1] == 0) and np.all(np.asarray(dv)[1] == 0)
    assert np.abs(np.asarray(dq)[0, :7]).max() > 0


def test_residual_gradient_matches_reference(rng):
    q, k, v = _inputs(rng, 1, 33, 40, 4, 2, 16, 16, jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 33, 4)), jnp.float32)
    f = lambda fn: lambda q_, k_: jnp.sum(fn(q_, k_, v, is_causal=True)[1] * w)  # noqa: E731
    g = jax.grad(f(_kernel), argnums=(0, 1))(q, k)
    g_ref = jax.grad(f(flash_attention_reference), argnums=(0, 1))(q, k)
    for a, r in zip(g, g_ref):
        assert np.abs(np.asarray(r)).max() > 1e-3
        np.testing.assert_allclose(a, r, atol=1e-5, rtol=1e-4)


def test_backward_is_deterministic(rng):
    q, k, v = _inputs(rng, 1, 40, 40, 4, 1, 16, 16, jnp.float32)
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(_kernel(*a, is_causal=True)[0] ** 2), argnums=(0, 1, 2)))
    first, second = grad(q, k, v), grad(q, k, v)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_dispatch_through_public_api(rng, caplog):
    q, k, v = _inputs(rng, 2, 37, 29, 8, 2, 80, 80, jnp.float32)
    kw = dict(is_causal=True, local_window_size=(5, 0), key_value_seq_lengths=jnp.array([29, 11]),
              logits_soft_cap=4.0)
    for name in ("pallas_triton", "pallas", "triton"):
        out, lse = attn_jax.dot_product_attention(q, k, v, implementation=name, return_residual=True, **kw)
        ref, ref_lse = attn_jax.dot_product_attention(q, k, v, implementation="xla", return_residual=True, **kw)
        np.testing.assert_allclose(out, ref, atol=2e-5)
        assert_close_with_inf(lse, ref_lse, atol=2e-5)
    if INTERPRET:  # None never picks an interpreted kernel, and says why
        from attn_jax.attention.dispatch import implementation_for

        with caplog.at_level("DEBUG", logger="attn_jax"):
            assert implementation_for(None, q, k, v) == "xla"
        assert any("interpret mode" in r.message for r in caplog.records)


def test_block_sizes_validation_and_defaults():
    with pytest.raises(ValueError, match=r"block_q=48"):
        BlockSizes(block_q=48)
    with pytest.raises(ValueError, match="num_warps"):
        BlockSizes(num_warps=3)
    for h, dt, kind in itertools.product((64, 80, 128, 256), (jnp.bfloat16, jnp.float32), ("NVIDIA H100", "A100")):
        bs = BlockSizes.get_default(h, dt, kind)  # validated in __post_init__
        assert bs.block_q >= 16 and bs.block_k >= 16


def test_autotune_caches_winner(tmp_path, rng):
    q, k, v = _inputs(rng, 1, 32, 32, 2, 1, 16, 16, jnp.float32)
    cands = [BlockSizes(16, 16, 16, 16, 16, 16), BlockSizes(32, 32, 16, 32, 32, 16)]
    path = tmp_path / "cache.json"
    best = autotune.autotune(q, k, v, candidates=cands, repeats=1, path=path, interpret=INTERPRET, progress=False)
    assert best in cands
    assert autotune.cached_block_sizes(q, k, v, False, path=path) == best
    assert autotune.cached_block_sizes(q, k, v, True, path=path) is None  # other shape class
    path.write_text("{not json")
    assert autotune.cached_block_sizes(q, k, v, False, path=path) is None


@pytest.mark.skipif(not ON_GPU, reason="needs a GPU (compiled kernel at T=8192)")
def test_bf16_backward_long_sequence_gpu():
    rng = np.random.default_rng(0)
    q, k, v = _inputs(rng, 1, 8192, 8192, 8, 2, 128, 128, jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 8192, 8, 128)) / 100, jnp.float32)

    def grads(dtype):
        args = tuple(x.astype(dtype) for x in (q, k, v))
        return jax.grad(lambda *a: _loss(_kernel, *a, None, dict(is_causal=True), w), argnums=(0, 1, 2))(*args)

    g16, g32 = grads(jnp.bfloat16), grads(jnp.float32)
    for a, r in zip(g16, g32):
        a, r = np.asarray(a, np.float32), np.asarray(r)
        assert np.all(np.isfinite(a))
        rel = np.linalg.norm(a - r) / np.linalg.norm(r)
        assert rel < 2e-2, rel


# --- slow: the full product -----------------------------------------------------------------
FULL_SHAPES = [
    (b, t, s, n, kh, h, h)
    for b, (t, s), (n, kh), h in itertools.product(
        [2], [(1, 1), (37, 37), (130, 130), (1000, 1000), (37, 130), (130, 37)], [(8, 2), (8, 1), (4, 4)],
        [64, 80, 128])
]


@pytest.mark.slow
@pytest.mark.parametrize("shape", FULL_SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_full_product(shape, case, dtype):
    if shape[1] == 1000 and (case not in ("none", "causal", "all") or shape[-1] != 64):
        pytest.skip("T=1000 only for a few cases (interpret mode is slow)")
    FlashTritonTest.check_forward(shape, case, dtype, bias=case == "causal", soft_cap=5.0 if case == "window" else None)
    FlashTritonTest.check_grads(shape, case, dtype, bias=case == "causal", soft_cap=5.0 if case == "window" else None)


LOWERING_CASES = {  # (q shape, kv heads, Hv, dtype, kwargs)
    "gqa_h80_all_masks_bias_softcap": ((2, 200, 8, 80), 2, 80, jnp.bfloat16, "all"),
    "mqa_h256_f32": ((1, 64, 4, 256), 1, 256, jnp.float32, "causal"),
    "hv_ne_h_f16": ((1, 37, 2, 64), 2, 32, jnp.float16, "none"),
    "gqa_dropout_bf16": ((2, 100, 4, 64), 2, 64, jnp.bfloat16, "dropout"),
}


@pytest.mark.parametrize("case", list(LOWERING_CASES))
def test_lowers_to_triton_ir_for_cuda(case):
    """Without a GPU, check the kernels pass Pallas' Triton lowering (forward and backward).

    jax.export lowers for the "cuda" platform on any machine; this catches what
    interpret mode cannot (one indexer per load, power-of-two tiles, supported
    primitives). It does not compile the Triton IR to PTX. The export runs on an abstract
    H200 (``kernels.lowering.export_for``): jax 0.11 refuses to lower for CUDA with no GPU otherwise.
    """
    from attn_jax.kernels.lowering import export_for

    qs, kh, hv, dtype, masks = LOWERING_CASES[case]
    b, t, n, h = qs
    s = 130
    spec = jax.ShapeDtypeStruct
    args = [spec(qs, dtype), spec((b, s, kh, h), dtype), spec((b, s, kh, hv), dtype)]
    kw = {}
    if masks == "all":
        args += [spec((1, n, t, s), dtype), spec((b, 1, t, s), jnp.bool_), spec((b,), jnp.int32),
                 spec((b, t), jnp.int32), spec((b, s), jnp.int32)]
        kw = dict(is_causal=True, window=(64, 0), logits_soft_cap=30.0)
    elif masks == "causal":
        kw = dict(is_causal=True)
    elif masks == "dropout":  # the counter-based hash (int32 shifts and wrapping multiplies) must lower too
        from attn_jax.dropout import Dropout

        kw = dict(is_causal=True, dropout=Dropout(0.1), dropout_seed=jnp.array([3, -7], jnp.int32))

    def f(q, k, v, *rest):
        if rest:
            bias, mask, lens, sq, sk = rest
            return flash_attention(q, k, v, bias, mask, key_value_seq_lengths=lens, q_segment_ids=sq,
                                   kv_segment_ids=sk, **kw)
        return flash_attention(q, k, v, **kw)

    def loss(*a):
        out, lse = f(*a)
        return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

    argnums = (0, 1, 2, 3) if masks == "all" else (0, 1, 2)
    for fn in (f, jax.grad(loss, argnums=argnums)):
        text = export_for("cuda", fn, *args).mlir_module()
        assert "__gpu$xla.gpu.triton" in text
    assert text.count("__gpu$xla.gpu.triton") >= 3  # backward: dK/dV and dQ kernels (+ dS with a bias)
