"""additive_attention (Bahdanau) against float64 numpy, both implementations, with grads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import np_additive

import attn_jax

IMPLS = ["xla", "chunked", "chunked_small", "pallas"]


def run(impl, *args, **kw):
    if impl == "chunked_small":
        return attn_jax.additive_attention(*args, implementation="chunked", chunk_size=4, **kw)
    return attn_jax.additive_attention(*args, implementation=impl, **kw)


@pytest.fixture
def inputs(rng):
    b, t, s, dq, dk, dv, a = 2, 9, 13, 5, 6, 3, 7
    arrs = [rng.normal(size=shape) for shape in [(b, t, dq), (b, s, dk), (b, s, dv), (dq, a), (dk, a), (a,)]]
    return [np.asarray(x, np.float32) for x in arrs]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["none", "lengths", "causal", "mask", "all"])
def test_matches_numpy(impl, case, inputs, rng):
    q, k, val, w_q, w_k, v = inputs
    b, t, s = q.shape[0], q.shape[1], k.shape[1]
    kw, vis = {}, np.ones((b, t, s), bool)
    if case in ("lengths", "all"):
        lens = np.array([4, 0])  # batch 1: nothing to attend
        kw["key_value_seq_lengths"] = jnp.asarray(lens)
        vis &= np.arange(s)[None, None] < lens[:, None, None]
    if case in ("causal", "all"):
        kw["is_causal"] = True
        vis &= (np.arange(s)[None, :] <= np.arange(t)[:, None])[None]
    if case in ("mask", "all"):
        m = rng.random((1, t, s)) > 0.3
        kw["mask"] = jnp.asarray(m)
        vis &= m
    ctx, lse, wts = run(impl, q, k, val, w_q, w_k, v, return_residual=True, return_weights=True, **kw)
    rctx, rlse, rwts = np_additive(*(x.astype(np.float64) for x in inputs), vis)
    assert ctx.shape == (b, t, 3) and lse.shape == (b, t) and wts.shape == (b, t, s)
    np.testing.assert_allclose(ctx, rctx, atol=1e-5)
    np.testing.assert_allclose(wts, rwts, atol=1e-5)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(rlse))
    fin = np.isfinite(rlse)
    np.testing.assert_allclose(np.asarray(lse)[fin], rlse[fin], atol=1e-5)


@pytest.mark.parametrize("impl", ["chunked", "chunked_small", "pallas"])
def test_gradients_match_dense(impl, inputs):
    q, k, val, w_q, w_k, v = (jnp.asarray(x) for x in inputs)
    lens = jnp.array([13, 5])
    target = jnp.array([[1, 2, 0, 4, 3, 3, 2, 1, 0]] * 2)

    def loss(impl_, *args):
        ctx, lse, wts = run(impl_, *args, key_value_seq_lengths=lens, return_residual=True, return_weights=True)
        # pointer-network style NLL, plus terms on context and weights
        e_target = jnp.log(jnp.take_along_axis(wts, target[..., None], -1)[..., 0] + 1e-9) + lse
        return jnp.sum(ctx**2) - jnp.mean(e_target - lse) + jnp.sum(lse) * 0.1

    g = jax.grad(loss, argnums=tuple(range(1, 7)))(impl, q, k, val, w_q, w_k, v)
    g_ref = jax.grad(loss, argnums=tuple(range(1, 7)))("xla", q, k, val, w_q, w_k, v)
    for a, r in zip(g, g_ref):
        np.testing.assert_allclose(a, r, atol=2e-4, rtol=1e-4)


# The Pallas kernel computes in float32 (a GPU kernel): test_additive_triton compares its gradients
# with float64 autodiff of the dense path instead of finite differences.
@pytest.mark.parametrize("impl", ["xla", "chunked", "chunked_small"])
def test_check_grads_float64_with_empty_rows(impl, inputs):
    from jax.test_util import check_grads

    lens = jnp.array([6, 0])

    def f(*args):
        ctx, lse = run(impl, *args, key_value_seq_lengths=lens, is_causal=True, return_residual=True)
        return ctx, jnp.where(jnp.isfinite(lse), lse, 0.0)

    with jax.enable_x64(True):
        args = tuple(jnp.asarray(x, jnp.float64) for x in inputs)
        check_grads(f, args, order=1, modes=["rev"], atol=1e-6, rtol=1e-6, eps=1e-5)


def test_chunked_never_builds_full_features():
    """The chunked path's compiled temporaries stay far below the dense [B,T,S,A] tensor."""
    b, t, s, d, a = 1, 256, 2048, 16, 64
    args = [jnp.zeros(x, jnp.float32) for x in [(b, t, d), (b, s, d), (b, s, d), (d, a), (d, a), (a,)]]

    def temp_bytes(impl):
        def loss(*xs):
            return jnp.sum(attn_jax.additive_attention(*xs, implementation=impl, chunk_size=128))

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    full = 4 * b * t * s * a  # 128 MiB
    assert temp_bytes("xla") >= full
    assert temp_bytes("chunked") < full / 8


def test_errors(inputs):
    q, k, val, w_q, w_k, v = inputs
    with pytest.raises(ValueError, match=r"w_q must be \[Dq, A\]"):
        attn_jax.additive_attention(q, k, val, w_k, w_k, v)
    with pytest.raises(ValueError, match="key and value lengths differ"):
        attn_jax.additive_attention(q, k, val[:, :3], w_q, w_k, v)
    with pytest.raises(TypeError, match="mask must be boolean"):
        attn_jax.additive_attention(q, k, val, w_q, w_k, v, mask=jnp.ones((9, 13)))
    with pytest.raises(ValueError, match="not broadcastable"):
        attn_jax.additive_attention(q, k, val, w_q, w_k, v, mask=jnp.ones((9, 12), bool))
    with pytest.raises(ValueError, match="key_value_seq_lengths"):
        attn_jax.additive_attention(q, k, val, w_q, w_k, v, key_value_seq_lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="unknown implementation"):
        attn_jax.additive_attention(q, k, val, w_q, w_k, v, implementation="magic")
    with pytest.raises(ValueError, match="chunk_size"):
        attn_jax.additive_attention(q, k, val, w_q, w_k, v, implementation="chunked", chunk_size=0)


def test_leading_batch_dims_and_unbatched(inputs):
    q, k, val, w_q, w_k, v = inputs
    flat = attn_jax.additive_attention(q, k, val, w_q, w_k, v)
    single = attn_jax.additive_attention(q[0], k[0], val[0], w_q, w_k, v)
    np.testing.assert_allclose(single, flat[0], atol=1e-6)
    r = lambda x: x.reshape((1, 2) + x.shape[1:])  # noqa: E731
    multi = attn_jax.additive_attention(r(q), r(k), r(val), w_q, w_k, v, implementation="chunked")
    np.testing.assert_allclose(multi.reshape(flat.shape), flat, atol=1e-5)


def test_chunked_with_one_chunk_runs_the_dense_form(inputs):
    """Every key in one chunk: no loop (the dense form, autodiff keeps the features); several chunks: the loop."""
    q, k, val, w_q, w_k, v = inputs

    def hlo(chunk_size):
        f = lambda *xs: attn_jax.additive_attention(*xs, implementation="chunked", chunk_size=chunk_size)  # noqa: E731
        return jax.jit(jax.grad(lambda *xs: jnp.sum(f(*xs)), argnums=(0, 1))).lower(q, k, val, w_q, w_k, v).as_text()

    s = k.shape[-2]
    assert "while" not in hlo(s) and "while" not in hlo(4 * s)
    assert "while" in hlo(max(1, s // 3))
