"""Attention dropout: one counter-based mask, the same in every implementation.

The oracle is the exposed mask (``attn_jax.dropout.dropout_mask``) applied to a
float64 numpy softmax, and, for gradients, to a plain-jnp dense attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn_jax
from attn_jax import dropout as D
from attn_jax.attention import chunked, inputs
from tests.conftest import make_qkv, np_visible

IMPLS = ("xla", "chunked", "pallas_triton")


def _np_dropped(q, k, v, keep, scale_keep, is_causal=False):
    """float64: softmax over visible keys, times the keep mask and 1/P(keep), times V (GQA-aware)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    g = n // kh
    logits = np.einsum("btnh,bsnh->bnts", q, np.repeat(k, g, 2)) / np.sqrt(h)
    vis = np_visible(b, t, s, is_causal=is_causal)[:, None]
    logits = np.where(vis, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    w = w * np.asarray(keep) * scale_keep
    return np.einsum("bnts,bsnh->btnh", w, np.repeat(v, g, 2))


def _jnp_dropped(q, k, v, keep, scale_keep, is_causal=False):
    """Plain-jnp dense attention with a given keep mask [B, N, T, S] (for gradients)."""
    b, t, n, h = q.shape
    g = n // k.shape[2]
    kr, vr = jnp.repeat(k, g, 2), jnp.repeat(v, g, 2)
    logits = jnp.einsum("btnh,bsnh->bnts", q, kr) / np.sqrt(h)
    if is_causal:
        logits = jnp.where(jnp.tril(jnp.ones((t, k.shape[1]), bool)), logits, -1e30)
    w = jax.nn.softmax(logits, axis=-1) * keep * scale_keep
    return jnp.einsum("bnts,bsnh->btnh", w, vr)


def test_keep_rate_within_three_standard_errors():
    for rate in (0.1, 0.5, 0.9):
        m = np.asarray(D.dropout_mask(jax.random.key(0), rate, (2, 3, 64, 80)))
        se = np.sqrt(rate * (1 - rate) / m.size)
        assert abs(m.mean() - (1 - rate)) < 3 * se, (rate, m.mean())


def test_mask_is_not_structured_along_rows_or_columns():
    m = np.asarray(D.dropout_mask(jax.random.key(1), 0.5, (1, 1, 256, 256))[0, 0], np.float64)
    # neighbouring rows / columns agree about half the time, as independent coins do
    for agree in ((m[1:] == m[:-1]).mean(), (m[:, 1:] == m[:, :-1]).mean()):
        assert abs(agree - 0.5) < 0.02
    assert abs(np.corrcoef(m[:-1].ravel(), m[1:].ravel())[0, 1]) < 0.03


def test_mask_is_a_function_of_the_key():
    a = D.dropout_mask(jax.random.key(2), 0.3, (1, 2, 8, 8))
    b = D.dropout_mask(jax.random.key(2), 0.3, (1, 2, 8, 8))
    c = D.dropout_mask(jax.random.key(3), 0.3, (1, 2, 8, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a raw uint32[2] key gives the mask of the typed key with the same data
    raw = jax.random.key_data(jax.random.key(2))
    np.testing.assert_array_equal(D.dropout_mask(raw, 0.3, (1, 2, 8, 8)), a)


def test_keep_scale_inverts_the_quantised_keep_probability():
    for rate in (0.1, 1 / 3, 0.5):
        thr = round(rate * 2**24)
        assert D.keep_scale(rate) == pytest.approx(2**24 / (2**24 - thr), rel=1e-12)
        assert D.keep_scale(rate) == pytest.approx(1 / (1 - rate), rel=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_equals_float64_reference_with_the_exposed_mask(rng, impl):
    b, t, s, n, kh, h = 2, 37, 37, 4, 2, 16
    q, k, v = make_qkv(rng, b, t, s, n, kh, h)
    key = jax.random.key(7)
    out = attn_jax.dot_product_attention(q, k, v, is_causal=True, dropout_rate=0.25, dropout_rng=key,
                                         implementation=impl)
    keep = D.dropout_mask(key, 0.25, (b, n, t, s))
    ref = _np_dropped(q, k, v, keep, D.keep_scale(0.25), is_causal=True)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_equal_a_dense_reference_built_from_the_same_mask(rng, impl):
    b, t, s, n, kh, h = 1, 21, 30, 4, 1, 16
    q, k, v = (jnp.asarray(x) for x in make_qkv(rng, b, t, s, n, kh, h))
    key = jax.random.key(11)
    keep = D.dropout_mask(key, 0.4, (b, n, t, s))
    cot = jnp.asarray(rng.normal(size=(b, t, n, h)), jnp.float32)

    def ours(q, k, v):
        o = attn_jax.dot_product_attention(q, k, v, is_causal=True, dropout_rate=0.4, dropout_rng=key,
                                           implementation=impl)
        return jnp.sum(o * cot)

    def ref(q, k, v):
        return jnp.sum(_jnp_dropped(q, k, v, keep, D.keep_scale(0.4), is_causal=True) * cot)

    for g_ours, g_ref in zip(jax.grad(ours, (0, 1, 2))(q, k, v), jax.grad(ref, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(g_ours, g_ref, atol=3e-5, rtol=1e-4)


def test_every_implementation_draws_the_same_mask(rng):
    """xla, chunked (several chunkings) and pallas_triton: same output and gradients for one key."""
    b, t, s, n, kh, h = 2, 37, 21, 4, 2, 8
    q, k, v = (jnp.asarray(x) for x in make_qkv(rng, b, t, s, n, kh, h))
    key = jax.random.key(5)
    kw = dict(dropout_rate=0.5, dropout_rng=key, local_window_size=(9, 3))

    def f(impl):
        fn = lambda q, k, v: attn_jax.dot_product_attention(q, k, v, implementation=impl, **kw)  # noqa: E731
        return fn(q, k, v), jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), (0, 1, 2))(q, k, v)

    ref_out, ref_grads = f("xla")
    for impl in ("chunked", "pallas_triton", None):
        out, grads = f(impl)
        np.testing.assert_allclose(out, ref_out, atol=2e-6)
        for g1, g2 in zip(grads, ref_grads):
            np.testing.assert_allclose(g1, g2, atol=1e-5)
    p = inputs.normalize(q, k, v, **kw)
    for sizes in (chunked.ChunkSizes(16, 16), chunked.ChunkSizes(8, 32)):
        out, _ = chunked.attention(p, sizes)
        np.testing.assert_allclose(out.reshape(ref_out.shape), ref_out, atol=2e-6)


def test_dropout_is_unbiased_over_keys(rng):
    q, k, v = make_qkv(rng, 1, 6, 10, 2, 2, 8)
    plain = np.asarray(attn_jax.dot_product_attention(q, k, v))
    keys = jax.random.split(jax.random.key(0), 2000)
    f = jax.jit(jax.vmap(lambda key: attn_jax.dot_product_attention(q, k, v, dropout_rate=0.3, dropout_rng=key)))
    outs = np.asarray(f(keys), np.float64)
    mean, se = outs.mean(0), outs.std(0) / np.sqrt(len(keys))
    # 96 correlated outputs: each within 4.5 standard errors of the no-dropout output
    assert np.all(np.abs(mean - plain) < 4.5 * se + 1e-6), np.max(np.abs(mean - plain) / se)
    assert np.max(np.abs(outs[0] - plain)) > 0.05  # one draw does drop something


def test_broadcast_shares_one_mask_across_batch_and_heads(rng):
    """flax's broadcast_dropout: the mask is [T, S], the same for every batch element and head."""
    q, k, v = make_qkv(rng, 1, 9, 9, 1, 1, 8)
    tile = lambda x: jnp.tile(jnp.asarray(x), (3, 1, 4, 1))  # noqa: E731 - 3 identical batch rows, 4 heads
    q, k, v = tile(q), tile(k), tile(v)
    key = jax.random.key(9)
    shared = inputs.normalize(q, k, v, dropout_rate=0.5, dropout_rng=key, dropout_broadcast=True)
    apart = inputs.normalize(q, k, v, dropout_rate=0.5, dropout_rng=key)
    from attn_jax.attention.dispatch import run_problem

    out_shared, out_apart = np.asarray(run_problem(shared)), np.asarray(run_problem(apart))
    for b in range(3):
        for n in range(4):
            np.testing.assert_allclose(out_shared[b, :, n], out_shared[0, :, 0], atol=1e-6)
    assert np.max(np.abs(out_apart[1] - out_apart[0])) > 1e-3
    assert np.max(np.abs(out_apart[0, :, 1] - out_apart[0, :, 0])) > 1e-3


def test_residual_is_the_logsumexp_before_dropout(rng):
    q, k, v = make_qkv(rng, 1, 5, 7, 2, 1, 8)
    _, lse = attn_jax.dot_product_attention(q, k, v, return_residual=True)
    _, lse_d = attn_jax.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.key(0),
                                              return_residual=True)
    np.testing.assert_allclose(lse_d, lse, rtol=1e-6)


def test_rate_zero_ignores_the_key_and_equals_no_dropout(rng):
    q, k, v = make_qkv(rng, 1, 5, 7, 2, 1, 8)
    a = attn_jax.dot_product_attention(q, k, v)
    b = attn_jax.dot_product_attention(q, k, v, dropout_rate=0.0, dropout_rng=jax.random.key(0))
    np.testing.assert_array_equal(a, b)


def test_dropout_under_jit_with_a_traced_key(rng):
    q, k, v = make_qkv(rng, 1, 5, 7, 2, 1, 8)
    f = jax.jit(lambda key: attn_jax.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=key,
                                                           implementation="chunked"))
    eager = attn_jax.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.key(4),
                                           implementation="chunked")
    np.testing.assert_allclose(f(jax.random.key(4)), eager, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(dropout_rate=0.5), ValueError, "dropout_rng"),
        (dict(dropout_rate=1.0, dropout_rng=jax.random.key(0)), ValueError, r"\[0, 1\)"),
        (dict(dropout_rate=-0.1, dropout_rng=jax.random.key(0)), ValueError, r"\[0, 1\)"),
        (dict(dropout_rate="0.1", dropout_rng=jax.random.key(0)), TypeError, "dropout_rate"),
        (dict(dropout_rate=0.1, dropout_rng=jax.random.split(jax.random.key(0), 2)), ValueError, "one jax.random"),
        (dict(dropout_rate=0.1, dropout_rng=3), TypeError, "dropout_rng"),
    ],
)
def test_bad_dropout_arguments_raise(rng, kwargs, error, match):
    q, k, v = make_qkv(rng, 1, 5, 7, 2, 1, 8)
    with pytest.raises(error, match=match):
        attn_jax.dot_product_attention(q, k, v, **kwargs)


def test_traced_rate_raises_type_error(rng):
    q, k, v = make_qkv(rng, 1, 5, 7, 2, 1, 8)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda r: attn_jax.dot_product_attention(q, k, v, dropout_rate=r, dropout_rng=jax.random.key(0)))(0.1)


@pytest.mark.parametrize("impl, match", [("pallas_mosaic_tpu", "dropout"), ("cudnn", "GPU|dropout")])
def test_implementations_without_dropout_decline_with_a_reason(rng, impl, match):
    q, k, v = make_qkv(rng, 1, 5, 7, 2, 1, 8)
    with pytest.raises(attn_jax.UnsupportedError, match=match):
        attn_jax.dot_product_attention(q, k, v, dropout_rate=0.2, dropout_rng=jax.random.key(0), implementation=impl)
