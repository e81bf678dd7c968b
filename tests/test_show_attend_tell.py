"""Show, Attend and Tell: attention weights, soft context with the gate, hard sampling, the penalty."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn.show_attend_tell import GridEncoder, ShowAttendTell, doubly_stochastic_penalty

KW = dict(features=8, hidden=16, embed=8, attention_features=8, encoder_blocks=2)


def _model(attention):
    return ShowAttendTell(11, attention=attention, rngs=nnx.Rngs(0), **KW)


def test_grid_encoder_widths_grid_and_coordinate_channels():
    enc = GridEncoder(16, rngs=nnx.Rngs(0))  # 3 blocks of 2 convs, widths 4, 8, 16
    assert [c.out_features for c in enc.convs] == [4, 4, 8, 8, 16, 16] and enc.convs[0].in_features == 3
    blank = jnp.zeros((1, 32, 64))
    a = enc(blank)
    assert a.shape == (1, 4 * 8, 16) and enc.grid(32, 64) == (4, 8)
    grid = np.asarray(a).reshape(4, 8, 16)
    # a blank canvas: without coordinates the interior cells (away from the zero padding) are identical;
    # with them every cell differs, so annotations say where they are
    assert not np.allclose(grid[1, 3], grid[1, 4])
    plain = GridEncoder(16, rngs=nnx.Rngs(0), coords=False)
    g = np.asarray(plain(jax.random.uniform(jax.random.key(0), (1, 32, 64)) * 0 + 0.5)).reshape(4, 8, 16)
    np.testing.assert_allclose(g[1, 3], g[1, 4], atol=1e-6)
    assert plain.convs[0].in_features == 1


def test_soft_context_is_the_gated_expectation_and_weights_are_distributions():
    m = _model("soft")
    images = jax.random.uniform(jax.random.key(1), (2, 16, 32))
    a = m.encoder(images)
    assert a.shape == (2, 4 * 8, 8) and m.encoder.grid(16, 32) == (4, 8)
    keys = m.w_a(a)
    carry = m.initial_state(a)
    _, logits, (alpha, loc, logp, ent, beta, h_prev) = m.step(carry, jnp.array([1, 1]), a, keys)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, atol=1e-6)
    # recompute eq. 4 and the gated context by hand
    c, h = carry
    e = np.asarray(m.v(jnp.tanh(keys + m.w_h(h)[:, None])))[..., 0]
    ref = np.exp(e - e.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(alpha, ref, atol=1e-6)
    np.testing.assert_allclose(beta, jax.nn.sigmoid(m.f_beta(h))[:, 0], atol=1e-6)
    assert np.all(np.asarray(loc) == -1) and np.all(np.asarray(logp) == 0)
    lg, trace = m(images, jnp.array([[1, 3, 4], [1, 5, 6]]))
    assert lg.shape == (2, 3, 11) and trace.alphas.shape == (2, 3, 32)
    np.testing.assert_allclose(lg[:, 0], logits, atol=1e-5)


def test_hard_attention_samples_locations_half_the_time_and_reports_their_log_probability():
    m = _model("hard")
    images = jax.random.uniform(jax.random.key(2), (256, 16, 32))
    tokens = jnp.ones((256, 4), jnp.int32)
    _, tr = m(images, tokens, rng=jax.random.key(3))
    sampled = np.asarray(tr.locations) >= 0
    assert 0.4 < sampled.mean() < 0.6  # the paper's 0.5 probability of the expected context
    alphas, locs = np.asarray(tr.alphas), np.asarray(tr.locations)
    picked = np.take_along_axis(alphas, np.maximum(locs, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(tr.log_p_locations)[sampled], np.log(picked[sampled]), atol=1e-5)
    assert np.all(np.asarray(tr.log_p_locations)[~sampled] == 0)
    with pytest.raises(ValueError, match="rng"):
        m(images[:1], tokens[:1])


def test_no_attention_ignores_the_attention_parameters():
    m = _model("none")
    images = jax.random.uniform(jax.random.key(4), (2, 16, 32))
    grads = nnx.grad(lambda m: jnp.sum(m(images, jnp.array([[1, 2], [3, 4]]))[0] ** 2))(m)
    assert float(jnp.abs(grads["w_a"]["kernel"][...]).sum()) == 0.0
    assert float(jnp.abs(grads["encoder"]["convs"][0]["kernel"][...]).sum()) > 0.0
    with pytest.raises(ValueError, match="unknown attention"):
        ShowAttendTell(5, attention="local", rngs=nnx.Rngs(0))


def test_doubly_stochastic_penalty_by_hand():
    alphas = jnp.array([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])  # [1, T=3, L=3]
    mask = jnp.array([[1.0, 1.0, 0.0]])  # the third step is padding
    # coverage = [0.5, 1.5, 0] -> (0.5)^2 + (-0.5)^2 + 1^2
    np.testing.assert_allclose(doubly_stochastic_penalty(alphas, mask), [1.5])


def test_samples_share_one_encoding_and_the_trace_holds_the_state_before_each_draw():
    m = _model("hard")
    images = jax.random.uniform(jax.random.key(5), (2, 16, 32))
    tokens = jnp.array([[1, 3, 4], [1, 5, 6]])
    lg, tr = m(images, tokens, rng=jax.random.key(6), samples=8)
    assert lg.shape == (16, 3, 11) and tr.hidden.shape == (16, 3, 16) and tr.locations.shape == (16, 3)
    # rows 0-7 are image 0's samples: one initial state, h_{t-1} of step 0 is its h, and the draws differ
    a = m.encoder(images)
    _, h0 = m.initial_state(a)
    np.testing.assert_allclose(tr.hidden[:, 0], jnp.repeat(h0, 8, axis=0), atol=1e-6)
    assert len({tuple(np.asarray(tr.locations[k])) for k in range(8)}) > 1
    with pytest.raises(ValueError, match="samples"):
        m(images, tokens, rng=jax.random.key(6), samples=0)
    # step t's trace state is what step t-1 produced (soft: deterministic), before step t's context is formed
    soft = _model("soft")
    a = soft.encoder(images)
    (_, h1), _, _ = soft.step(soft.initial_state(a), tokens[:, 0], a, soft.w_a(a))
    _, tr = soft(images, tokens)
    np.testing.assert_allclose(tr.hidden[:, 1], h1, atol=1e-5)
