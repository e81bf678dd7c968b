"""dot_product_attention: every implementation against the float64 numpy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_with_inf, make_qkv, np_attention

import attn_jax
from attn_jax.attention import chunked
from attn_jax.attention.inputs import normalize

IMPLS = ["xla", "chunked", "chunked_small"]


def run(impl, q, k, v, bias=None, mask=None, **kw):
    """Call an implementation; "chunked_small" forces many small, ragged chunks."""
    if impl == "chunked_small":
        p = normalize(q, k, v, bias, mask, **kw)
        out, lse = chunked.attention(p, chunked.ChunkSizes(query=8, key=12))
        return out.reshape(q.shape[:-1] + (v.shape[-1],)), lse.reshape(q.shape[:-1]).astype(out.dtype)
    return attn_jax.dot_product_attention(q, k, v, bias, mask, implementation=impl, return_residual=True, **kw)


def mask_kwargs(case, b, t, s, rng):
    """Keyword arguments for one mask kind (and the numpy reference's names)."""
    q_len = rng.integers(1, t + 1, size=b)
    kv_len = rng.integers(1, s + 1, size=b)
    q_seg = np.sort(rng.integers(0, 3, size=(b, t)), axis=1)
    kv_seg = np.sort(rng.integers(0, 3, size=(b, s)), axis=1)
    cases = {
        "none": {},
        "causal": dict(is_causal=True),
        "window_int": dict(local_window_size=3),
        "window_pair": dict(local_window_size=(4, 1)),
        "causal_window": dict(is_causal=True, local_window_size=(5, 0)),
        "q_lengths": dict(query_seq_lengths=q_len),
        "kv_lengths": dict(key_value_seq_lengths=kv_len),
        "segments": dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg),
        "combined": dict(
            is_causal=True,
            local_window_size=(6, 2),
            key_value_seq_lengths=kv_len,
            q_segment_ids=q_seg,
            kv_segment_ids=kv_seg,
        ),
    }
    kw = cases[case]
    ref = dict(
        is_causal=kw.get("is_causal", False),
        window=kw.get("local_window_size"),
        q_len=kw.get("query_seq_lengths"),
        kv_len=kw.get("key_value_seq_lengths"),
        q_seg=kw.get("q_segment_ids"),
        kv_seg=kw.get("kv_segment_ids"),
    )
    jkw = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    return jkw, ref


MASK_CASES = [
    "none", "causal", "window_int", "window_pair", "causal_window",
    "q_lengths", "kv_lengths", "segments", "combined",
]
SHAPES = {  # (B, T, S, N, K, H, Hv)
    "mha": (2, 37, 37, 4, 4, 16, 16),
    "t1": (2, 1, 45, 8, 2, 16, 16),
    "s1": (1, 1, 1, 2, 1, 8, 8),
    "gqa_h80_tq_ne_tk": (2, 37, 61, 8, 2, 80, 80),
    "mqa_t_gt_s_hv": (1, 61, 29, 8, 1, 32, 24),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("case", MASK_CASES)
def test_matches_float64_reference(impl, shape, case, rng):
    b, t, s, n, kh, h, hv = SHAPES[shape]
    q, k, v = make_qkv(rng, b, t, s, n, kh, h, hv)
    kw, ref_kw = mask_kwargs(case, b, t, s, rng)
    out, lse = run(impl, q, k, v, **kw)
    ref_out, ref_lse = np_attention(q, k, v, **ref_kw)
    assert out.shape == (b, t, n, hv) and out.dtype == jnp.float32
    assert lse.shape == (b, t, n)
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=1e-5)
    assert_close_with_inf(lse, ref_lse, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["none", "causal", "combined"])
def test_long_sequence_t1000(impl, case, rng):
    b, t, s, n, kh, h = 1, 1000, 1000, 2, 1, 16
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    kw, ref_kw = mask_kwargs(case, b, t, s, rng)
    out, lse = run(impl, q, k, v, **kw)
    ref_out, ref_lse = np_attention(q, k, v, **ref_kw)
    np.testing.assert_allclose(out, ref_out, atol=3e-5, rtol=1e-5)
    assert_close_with_inf(lse, ref_lse, atol=3e-5, rtol=1e-5)


BIAS_SHAPES = {
    "full": lambda b, n, t, s: (b, n, t, s),
    "shared_batch": lambda b, n, t, s: (1, n, t, s),
    "rank2": lambda b, n, t, s: (t, s),
    "per_key": lambda b, n, t, s: (b, 1, 1, s),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bias_shape", list(BIAS_SHAPES))
def test_bias_and_its_gradient(impl, bias_shape, rng):
    b, t, s, n, kh, h = 2, 19, 23, 4, 2, 8
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    bias = rng.normal(size=BIAS_SHAPES[bias_shape](b, n, t, s)).astype(np.float32)
    out, lse = run(impl, q, k, v, bias, is_causal=True)
    ref_out, ref_lse = np_attention(q, k, v, bias=bias, is_causal=True)
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=1e-5)

    def loss(impl_, bias_):
        o, l = run(impl_, q, k, v, bias_, is_causal=True)
        return jnp.sum(o * np.cos(np.arange(o.size)).reshape(o.shape)) + jnp.sum(l)

    g = jax.grad(loss, argnums=1)(impl, jnp.asarray(bias))
    g_ref = jax.grad(loss, argnums=1)("xla", jnp.asarray(bias))
    assert g.shape == bias.shape
    np.testing.assert_allclose(g, g_ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_soft_cap(impl, rng):
    b, t, s, n, kh, h = 2, 21, 17, 4, 2, 16
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    q = q * 4  # large logits so the cap matters
    bias = rng.normal(size=(b, n, t, s)).astype(np.float32)
    out, lse = run(impl, q, k, v, bias, logits_soft_cap=2.5, is_causal=True)
    ref_out, ref_lse = np_attention(q, k, v, bias=bias, softcap=2.5, is_causal=True)
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=1e-5)
    uncapped, _ = np_attention(q, k, v, bias=bias, is_causal=True)
    assert np.abs(uncapped - ref_out).max() > 1e-2  # the cap changed the answer


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mask_shape", [(2, 4, 13, 11), (1, 1, 13, 11), (2, 1, 1, 11)])
def test_boolean_mask(impl, mask_shape, rng):
    b, t, s, n, kh, h = 2, 13, 11, 4, 2, 8
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    mask = rng.random(mask_shape) > 0.4
    out, lse = run(impl, q, k, v, None, jnp.asarray(mask))
    ref_out, ref_lse = np_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=1e-5)
    assert_close_with_inf(lse, ref_lse, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_leading_batch_dims(impl, rng):
    q, k, v = make_qkv(rng, 6, 9, 7, 4, 2, 8)
    bias = rng.normal(size=(6, 4, 9, 7)).astype(np.float32)
    flat = attn_jax.dot_product_attention(q, k, v, bias, implementation=impl, is_causal=True)
    r = lambda x: x.reshape((2, 3) + x.shape[1:])  # noqa: E731
    lens = jnp.full((2, 3), 7)
    multi = attn_jax.dot_product_attention(
        r(q), r(k), r(v), r(bias), implementation=impl, is_causal=True, key_value_seq_lengths=lens
    )
    assert multi.shape == (2, 3, 9, 4, 8)
    np.testing.assert_allclose(multi.reshape(flat.shape), flat, atol=1e-6)
    # No batch dims at all.
    single, lse = attn_jax.dot_product_attention(
        q[0], k[0], v[0], bias[0], implementation=impl, is_causal=True, return_residual=True
    )
    assert single.shape == (9, 4, 8) and lse.shape == (9, 4)
    np.testing.assert_allclose(single, flat[0], atol=1e-6)


@pytest.mark.parametrize("impl", ["xla", "chunked"])
@pytest.mark.parametrize("case", ["none", "causal", "window_pair", "kv_lengths"])
@pytest.mark.parametrize("gqa", [False, True])
def test_matches_jax_nn(impl, case, gqa, rng):
    """Where the semantics coincide (no empty rows), we equal jax.nn exactly."""
    b, t, s, n, h = 2, 23, 31, 4, 16
    kh = 2 if gqa else n
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    kw, _ = mask_kwargs(case, b, t, s, rng)
    bias = jnp.asarray(rng.normal(size=(1, n, t, s)).astype(np.float32))
    ours, lse = attn_jax.dot_product_attention(q, k, v, bias, implementation=impl, return_residual=True, **kw)
    theirs, their_lse = jax.nn.dot_product_attention(q, k, v, bias, implementation="xla", return_residual=True, **kw)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(lse, their_lse, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_rows_give_zeros_minus_inf_and_zero_grads(impl, rng):
    b, t, s, n, kh, h = 2, 9, 10, 4, 2, 8
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    kw = dict(
        query_seq_lengths=jnp.array([5, 9]),
        key_value_seq_lengths=jnp.array([10, 0]),  # batch 1 sees no key at all
        is_causal=True,
    )
    bias = jnp.asarray(rng.normal(size=(b, n, t, s)).astype(np.float32))
    out, lse = run(impl, q, k, v, bias, **kw)
    assert np.all(np.asarray(out)[0, 5:] == 0) and np.all(np.asarray(out)[1] == 0)
    assert np.all(np.isneginf(lse[0, 5:])) and np.all(np.isneginf(lse[1]))
    assert np.all(np.isfinite(lse[0, :5]))

    def loss(q_, k_, v_, bias_):
        o, l = run(impl, q_, k_, v_, bias_, **kw)
        return jnp.sum(o**2) + jnp.sum(jnp.where(jnp.isfinite(l), l, 0.0))

    with jax.debug_nans(True):
        grads = jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, bias)
    for g in grads:
        assert np.all(np.isfinite(g))
    dq, dk, dv, dbias = (np.asarray(g) for g in grads)
    assert np.all(dq[0, 5:] == 0) and np.all(dq[1] == 0)
    assert np.all(dk[1] == 0) and np.all(dv[1] == 0) and np.all(dbias[1] == 0)
    assert np.abs(dq[0, :5]).max() > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_no_inf_or_nan_under_debug_flags(impl, rng):
    b, t, s, n, kh, h = 2, 17, 17, 4, 1, 8
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    # Masked, padded (17 is not a multiple of the small chunks), but no row is empty.
    kw = dict(is_causal=True, local_window_size=(10, 0), key_value_seq_lengths=jnp.array([17, 9]))

    def loss(q_):
        o, l = run(impl, q_, k, v, **kw)
        return jnp.sum(o) + jnp.sum(l)

    with jax.debug_infs(True), jax.debug_nans(True):
        jax.block_until_ready(jax.grad(loss)(q))
        jax.block_until_ready(jax.jit(jax.grad(loss))(q))


@pytest.mark.parametrize("impl", IMPLS)
def test_residual_is_differentiable(impl, rng):
    """jax.nn's xla path gives the residual a zero gradient; ours is the true one."""
    b, t, s, n, kh, h = 1, 11, 13, 2, 1, 8
    q, k, v = make_qkv(rng, b, t, s, n, kh, h, dtype=np.float64)
    w = rng.normal(size=(b, t, n))

    def lse_loss(q_, k_):
        with jax.enable_x64(True):
            _, l = run(impl, q_, k_, v, is_causal=True)
            return jnp.sum(l * w)

    with jax.enable_x64(True):
        dq, dk = jax.grad(lse_loss, argnums=(0, 1))(jnp.asarray(q), jnp.asarray(k))
        # Central differences on a few entries of q and k.
        eps = 1e-6
        for arr, grad, idx in ((q, dq, (0, 4, 1, 3)), (k, dk, (0, 2, 0, 5))):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args_p = (plus, k) if arr is q else (q, plus)
            args_m = (minus, k) if arr is q else (q, minus)
            fd = (lse_loss(*map(jnp.asarray, args_p)) - lse_loss(*map(jnp.asarray, args_m))) / (2 * eps)
            assert abs(float(fd)) > 1e-3
            np.testing.assert_allclose(grad[idx], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["causal", "combined"])
def test_check_grads_float64(impl, case, rng):
    """Finite-difference check of every input's gradient, fully masked rows included."""
    from jax.test_util import check_grads

    b, t, s, n, kh, h = 2, 7, 9, 4, 2, 4
    q, k, v = make_qkv(rng, b, t, s, n, kh, h, hv=3, dtype=np.float64)
    bias = rng.normal(size=(b, n, t, s))
    kw, _ = mask_kwargs(case, b, t, s, rng)
    kw["query_seq_lengths"] = jnp.array([t - 2, t])

    def f(q_, k_, v_, bias_):
        o, l = run(impl, q_, k_, v_, bias_, **kw)
        return o, jnp.where(jnp.isfinite(l), l, 0.0)

    with jax.enable_x64(True):
        args = tuple(jnp.asarray(x) for x in (q, k, v, bias))
        check_grads(f, args, order=1, modes=["rev"], atol=1e-6, rtol=1e-6, eps=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_keeps_dtype_and_accuracy(impl, rng):
    b, t, s, n, kh, h = 2, 33, 40, 4, 2, 16
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    qb, kb, vb = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v))
    out, lse = run(impl, qb, kb, vb, is_causal=True)
    assert out.dtype == jnp.bfloat16 and lse.dtype == jnp.bfloat16
    ref, ref_lse = np_attention(np.asarray(qb, np.float32), np.asarray(kb, np.float32),
                                np.asarray(vb, np.float32), is_causal=True)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=2e-2, rtol=2e-2)
    np.testing.assert_allclose(np.asarray(lse, np.float32), ref_lse, atol=5e-2, rtol=1e-2)


def test_jit_vmap_grad_compose(rng):
    q, k, v = make_qkv(rng, 3, 8, 8, 2, 1, 4)

    def f(q_, k_, v_):  # unbatched [T, N, H]
        return attn_jax.dot_product_attention(q_, k_, v_, is_causal=True, implementation="chunked")

    batched = jax.jit(jax.vmap(f))(q, k, v)
    direct = attn_jax.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    np.testing.assert_allclose(batched, direct, atol=1e-6)
    g1 = jax.jit(jax.grad(lambda q_: jnp.sum(jax.vmap(f)(q_, k, v) ** 2)))(q)
    g2 = jax.grad(lambda q_: jnp.sum(attn_jax.dot_product_attention(
        q_, k, v, is_causal=True, implementation="xla") ** 2))(q)
    np.testing.assert_allclose(g1, g2, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", MASK_CASES)
@pytest.mark.parametrize("shape", [(1, 1000, 1000, 8, 2, 80, 80), (2, 1000, 333, 8, 1, 64, 48)])
def test_full_product_long_sequences(impl, case, shape, rng):
    b, t, s, n, kh, h, hv = shape
    q, k, v = make_qkv(rng, b, t, s, n, kh, h, hv)
    kw, ref_kw = mask_kwargs(case, b, t, s, rng)
    out, lse = run(impl, q, k, v, **kw)
    ref_out, ref_lse = np_attention(q, k, v, **ref_kw)
    np.testing.assert_allclose(out, ref_out, atol=5e-5, rtol=1e-5)
    assert_close_with_inf(lse, ref_lse, atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("length, target, expected", [(300, 256, 152), (256, 256, 256), (100, 256, 256),
                                                      (1000, 256, 256), (513, 256, 176), (4096, 256, 256)])
def test_chunk_sizes_cut_each_axis_into_equal_multiples_of_8(length, target, expected):
    cs = chunked.ChunkSizes.for_problem(length, length, backend="cpu")
    assert cs == chunked.ChunkSizes(expected, expected)
    assert chunked._cdiv(length, cs.query) == max(1, chunked._cdiv(length, target))  # no extra chunk
    assert chunked.ChunkSizes.for_problem(length, 7, backend="gpu") == chunked.ChunkSizes(
        chunked._even_chunk(512, length), 1024)


DENSE_VJP_CASES = {
    "gqa_causal": dict(n=4, kh=2, bias=None, kw=dict(is_causal=True)),
    "mha_bias_softcap": dict(n=2, kh=2, bias=(2, 2, 7, 9), kw=dict(logits_soft_cap=2.0)),
    "mqa_broadcast_bias_empty_rows": dict(
        n=4, kh=1, bias=(1, 4, 1, 9), kw=dict(is_causal=True, query_seq_lengths=np.array([5, 7]))),
    "gqa_mask_dropout": dict(n=4, kh=2, bias=(2, 1, 7, 9), mask=(2, 4, 7, 9), kw=dict(dropout_rate=0.3)),
    "neg_inf_bias_windowed": dict(n=2, kh=1, bias="neg_inf", kw=dict(local_window_size=(2, 1))),
}


@pytest.mark.parametrize("case", list(DENSE_VJP_CASES))
def test_dense_hand_written_vjp_matches_autodiff(case, rng):
    """The "xla" path's custom VJP (saved weights, FlashAttention-2's dS) equals autodiff of the same forward.

    float64; cotangents on both outputs (the logsumexp residual's included), GQA,
    bias broadcast over heads and queries, soft-cap, dropout, -inf bias, empty rows.
    """
    from attn_jax.attention import xla

    c = DENSE_VJP_CASES[case]
    b, t, s, h = 2, 7, 9, 5
    with jax.enable_x64(True):
        q, k, v = (jnp.asarray(x) for x in make_qkv(rng, b, t, s, c["n"], c["kh"], h, hv=3, dtype=np.float64))
        if c["bias"] == "neg_inf":
            shape = (b, c["n"], t, s)
            bias = jnp.asarray(np.where(rng.random(shape) < 0.3, -np.inf, rng.normal(size=shape)))
        else:
            bias = None if c["bias"] is None else jnp.asarray(rng.normal(size=c["bias"]))
        mask = None if "mask" not in c else jnp.asarray(rng.random(c["mask"]) < 0.8)
        kw = {key: (jnp.asarray(x) if isinstance(x, np.ndarray) else x) for key, x in c["kw"].items()}
        if "dropout_rate" in kw:
            kw["dropout_rng"] = jax.random.key(3)

        def make(fn):
            def f(q_, k_, v_, bias_):
                return fn(normalize(q_, k_, v_, bias_, mask, **kw))
            return f

        args = (q, k, v, bias)
        (out, lse), vjp = jax.vjp(make(xla.attention), *args)
        (out_ref, lse_ref), vjp_ref = jax.vjp(make(xla.attention_autodiff), *args)
        np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(np.isinf(lse), np.isinf(lse_ref))
        dout = jnp.asarray(rng.normal(size=out.shape))
        dlse = jnp.asarray(rng.normal(size=lse.shape))
        grads, grads_ref = vjp((dout, dlse)), vjp_ref((dout, dlse))
        for name, g, g_ref in zip("q k v bias".split(), grads, grads_ref):
            if g_ref is None:
                continue
            assert np.all(np.isfinite(g)), name
            np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-11, err_msg=name)
        if case == "mqa_broadcast_bias_empty_rows":
            assert np.isneginf(np.asarray(lse)).any()  # the case really has empty rows
