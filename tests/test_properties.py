"""Property tests (hypothesis): random shapes and masks, all implementations agree with float64 numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import assert_close_with_inf, np_attention
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attn_jax
from attn_jax.attention import chunked
from attn_jax.attention.inputs import normalize


@st.composite
def problems(draw):
    b = draw(st.integers(1, 2))
    t = draw(st.integers(1, 20))
    s = draw(st.integers(1, 20))
    kh = draw(st.sampled_from([1, 2]))
    g = draw(st.sampled_from([1, 2, 3]))
    h = draw(st.sampled_from([1, 4, 8]))
    hv = draw(st.sampled_from([h, 3]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kw = {}
    if draw(st.booleans()):
        kw["is_causal"] = True
    if draw(st.booleans()):
        kw["local_window_size"] = (draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    if draw(st.booleans()):
        kw["key_value_seq_lengths"] = rng.integers(0, s + 1, size=b)
    if draw(st.booleans()):
        kw["query_seq_lengths"] = rng.integers(0, t + 1, size=b)
    if draw(st.booleans()):
        kw["q_segment_ids"] = np.sort(rng.integers(0, 3, size=(b, t)), axis=1)
        kw["kv_segment_ids"] = np.sort(rng.integers(0, 3, size=(b, s)), axis=1)
    chunks = chunked.ChunkSizes(draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    q = rng.normal(size=(b, t, kh * g, h)).astype(np.float32)
    k = rng.normal(size=(b, s, kh, h)).astype(np.float32)
    v = rng.normal(size=(b, s, kh, hv)).astype(np.float32)
    return q, k, v, kw, chunks


def _ref(q, k, v, kw):
    return np_attention(
        q, k, v, is_causal=kw.get("is_causal", False), window=kw.get("local_window_size"),
        q_len=kw.get("query_seq_lengths"), kv_len=kw.get("key_value_seq_lengths"),
        q_seg=kw.get("q_segment_ids"), kv_seg=kw.get("kv_segment_ids"),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_random_problems_match_reference(problem):
    q, k, v, kw, chunks = problem
    ref_out, ref_lse = _ref(q, k, v, kw)
    out, lse = attn_jax.dot_product_attention(q, k, v, implementation="xla", return_residual=True, **kw)
    np.testing.assert_allclose(out, ref_out, atol=3e-5, rtol=1e-5)
    assert_close_with_inf(lse, ref_lse, atol=3e-5, rtol=1e-5)
    c_out, c_lse = chunked.attention(normalize(q, k, v, **kw), chunks)
    np.testing.assert_allclose(c_out.reshape(out.shape), ref_out, atol=3e-5, rtol=1e-5)
    assert_close_with_inf(c_lse.reshape(lse.shape), ref_lse, atol=3e-5, rtol=1e-5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_random_problems_chunked_gradients_match_dense(problem):
    q, k, v, kw, chunks = problem
    w = np.cos(np.arange(np.prod(q.shape[:-1]) * v.shape[-1])).reshape(q.shape[:-1] + v.shape[-1:])

    def loss(fn, q_, k_, v_):
        o, l = fn(q_, k_, v_)
        return jnp.sum(o * w) + jnp.sum(jnp.where(jnp.isfinite(l), l, 0.0))

    dense = lambda *a: attn_jax.dot_product_attention(*a, implementation="xla", return_residual=True, **kw)  # noqa: E731
    chunk = lambda *a: chunked.attention(normalize(*a, **kw), chunks)  # noqa: E731
    g1 = jax.grad(lambda *a: loss(chunk, *a), argnums=(0, 1, 2))(q, k, v)
    g2 = jax.grad(lambda *a: loss(dense, *a), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g1, g2):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
