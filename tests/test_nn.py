"""NNX attention modules: shapes, exact-zero attention on padding, agreement with the primitives' formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn import AdditiveAttention, LocalAttention, LuongAttention

B, T, S, DQ, DK, DV = 2, 5, 7, 6, 6, 3


@pytest.fixture
def xs(rng):
    return tuple(jnp.asarray(rng.normal(size=sh), jnp.float32) for sh in [(B, T, DQ), (B, S, DK), (B, S, DV)])


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_additive_shapes_padding_and_implementations(xs, impl):
    attn = AdditiveAttention(DQ, DK, 8, rngs=nnx.Rngs(0), implementation=impl)
    lens = jnp.array([7, 3])
    ctx, w = attn(*xs, key_value_seq_lengths=lens, return_weights=True)
    assert ctx.shape == (B, T, DV) and w.shape == (B, T, S)
    assert np.all(np.asarray(w)[1, :, 3:] == 0)  # padding gets exactly zero
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
    ref = AdditiveAttention(DQ, DK, 8, rngs=nnx.Rngs(0), implementation="xla")
    np.testing.assert_allclose(ctx, ref(*xs, key_value_seq_lengths=lens), atol=1e-5)


@pytest.mark.parametrize("score", LuongAttention.SCORES)
def test_luong_scores(score, xs):
    attn = LuongAttention(score, DQ, DK, rngs=nnx.Rngs(1), max_source_length=10)
    q, k, v = xs
    mask = jnp.ones((B, T, S), bool).at[0, :, -2:].set(False)
    ctx, w = attn(q, k, v, mask=mask, key_value_seq_lengths=jnp.array([7, 4]), return_weights=True)
    assert ctx.shape == (B, T, DV)
    assert np.all(np.asarray(w)[0, :, -2:] == 0) and np.all(np.asarray(w)[1, :, 4:] == 0)
    s = np.asarray(attn.scores(q, k))
    expected = {"dot": lambda: np.einsum("btd,bsd->bts", q, k),
                "general": lambda: np.einsum("btd,de,bse->bts", q, attn.w[...], k),
                "concat": lambda: np.tanh((q @ attn.w_q[...])[:, :, None] + (k @ attn.w_k[...])[:, None]) @ attn.v[...],
                "location": lambda: np.asarray(q @ attn.w[...])[..., :S]}[score]()
    np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-5)
    e = np.where(np.asarray(mask)[1] & (np.arange(S) < 4), s[1], -np.inf)
    ref = np.exp(e - e.max(-1, keepdims=True))
    np.testing.assert_allclose(w[1], ref / ref.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_luong_errors():
    with pytest.raises(ValueError, match="unknown score"):
        LuongAttention("cosine", 4, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dot score needs"):
        LuongAttention("dot", 4, 5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="max_source_length"):
        LuongAttention("location", 4, 4, rngs=nnx.Rngs(0))


def test_local_p_matches_design_formula(xs):
    q, k, v = xs
    attn = LocalAttention("local-p", 2, DQ, DK, rngs=nnx.Rngs(2))
    lens = jnp.array([7, 5])
    ctx, w = attn(q, k, v, key_value_seq_lengths=lens, return_weights=True)
    p = np.asarray(lens)[:, None] / (1 + np.exp(-(np.tanh(np.asarray(q) @ attn.w_p[...]) @ attn.v_p[...])))
    s = np.asarray(attn.luong.scores(q, k))
    pos = np.arange(S)
    inside = (np.abs(pos - p[..., None]) <= 2) & (pos < np.asarray(lens)[:, None, None])
    e = np.where(inside, s, -np.inf)
    soft = np.where(inside, np.exp(e - np.max(e, -1, keepdims=True, initial=-1e30)), 0)
    soft = soft / np.maximum(soft.sum(-1, keepdims=True), 1e-30)
    expected = soft * np.exp(-((pos - p[..., None]) ** 2) / (2 * 1.0**2))
    np.testing.assert_allclose(w, expected, atol=1e-6)
    np.testing.assert_allclose(ctx, np.einsum("bts,bsd->btd", expected, v), atol=1e-5)


def test_local_m_window_and_grads(xs):
    q, k, v = xs
    attn = LocalAttention("local-m", 1, DQ, DK, rngs=nnx.Rngs(3), score="dot")
    _, w = attn(q, k, v, return_weights=True)
    far = np.abs(np.arange(S)[None, :] - np.arange(T)[:, None]) > 1
    assert np.all(np.asarray(w)[:, far] == 0)

    def loss(model):
        return jnp.sum(model(q, k, v) ** 2)

    grads = nnx.grad(loss)(LocalAttention("local-p", 2, DQ, DK, rngs=nnx.Rngs(4)))
    leaves = jax.tree.leaves(nnx.state(grads))
    assert leaves and all(np.all(np.isfinite(x)) for x in leaves)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_birnn_encoder_ignores_padding(cell, rng):
    from attn_jax.nn import BiRNNEncoder

    enc = BiRNNEncoder(20, 8, 6, rngs=nnx.Rngs(0), cell=cell)
    tokens = jnp.asarray(rng.integers(1, 20, size=(2, 9)))
    lengths = jnp.array([9, 5])
    ann, first = enc(tokens, lengths)
    assert ann.shape == (2, 9, 12) and first.shape == (2, 6)
    assert np.all(np.asarray(ann)[1, 5:] == 0)
    # The annotations of the 5 real tokens do not depend on what the padding holds.
    other = tokens.at[1, 5:].set(3)
    ann2, first2 = enc(other, lengths)
    np.testing.assert_allclose(ann2[1, :5], ann[1, :5], atol=1e-6)
    np.testing.assert_allclose(first2[1], first[1], atol=1e-6)
    # And equal the unpadded sequence run alone.
    alone, first_alone = enc(tokens[1:, :5], jnp.array([5]))
    np.testing.assert_allclose(alone[0], ann[1, :5], atol=1e-5)
    np.testing.assert_allclose(first_alone[0], first[1], atol=1e-5)
    with pytest.raises(ValueError, match="unknown cell"):
        BiRNNEncoder(20, 8, 6, rngs=nnx.Rngs(0), cell="rnn")
