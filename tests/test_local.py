"""Luong local attention: predictive centre and windowed (Gaussian) weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn_jax


def test_predictive_center_formula(rng):
    h, w_p, v_p = rng.normal(size=(2, 5, 4)), rng.normal(size=(4, 3)), rng.normal(size=(3,))
    lengths = np.array([7, 12])
    out = attn_jax.predictive_center(*(jnp.asarray(x) for x in (h, w_p, v_p, lengths)))
    ref = lengths[:, None] / (1 + np.exp(-(np.tanh(h @ w_p) @ v_p)))
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    assert np.all((out >= 0) & (out <= lengths[:, None]))
    with pytest.raises(ValueError, match="source_lengths"):
        attn_jax.predictive_center(jnp.asarray(h), jnp.asarray(w_p), jnp.asarray(v_p), jnp.ones(3))


def np_local(scores, center, d, gaussian, lengths=None):
    b, t, s = scores.shape
    out = np.zeros_like(scores)
    for bi in range(b):
        for ti in range(t):
            c = center[bi, ti]
            keep = np.array([abs(j - c) <= d and (lengths is None or j < lengths[bi]) for j in range(s)])
            if not keep.any():
                continue
            e = np.exp(scores[bi, ti][keep] - scores[bi, ti][keep].max())
            out[bi, ti, keep] = e / e.sum()
            if gaussian:
                out[bi, ti] *= np.exp(-((np.arange(s) - c) ** 2) / (2 * (d / 2) ** 2))
    return out


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("kind", ["local_m", "local_p"])
def test_local_weights(gaussian, kind, rng):
    b, t, s, d = 2, 6, 15, 3
    scores = rng.normal(size=(b, t, s))
    center = (np.broadcast_to(np.arange(t) * 2.0, (b, t)) if kind == "local_m"
              else rng.uniform(0, s, size=(b, t)))
    lengths = np.array([15, 8])
    out = attn_jax.local_attention_weights(jnp.asarray(scores), jnp.asarray(center), d, gaussian,
                                           key_value_seq_lengths=jnp.asarray(lengths))
    ref = np_local(scores, center, d, gaussian, lengths)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert np.all(np.asarray(out)[np.abs(np.arange(s) - center[..., None]) > d] == 0)
    if not gaussian:
        sums = np.asarray(out).sum(-1)
        np.testing.assert_allclose(sums[sums > 0], 1.0, rtol=1e-5)


def test_empty_window_gives_zeros_and_finite_grads():
    scores = jnp.ones((1, 2, 5))
    center = jnp.array([[20.0, 2.0]])  # first window lies past the sequence
    out = attn_jax.local_attention_weights(scores, center, 2, True)
    assert np.all(out[0, 0] == 0) and float(out[0, 1].sum()) > 0
    g = jax.grad(lambda s_, c_: jnp.sum(attn_jax.local_attention_weights(s_, c_, 2, True) ** 2),
                 argnums=(0, 1))(scores, center)
    assert all(np.all(np.isfinite(x)) for x in g)
    assert float(jnp.abs(g[1][0, 1])) > 0  # local-p centre is trained through the Gaussian


def test_bad_half_window():
    with pytest.raises(ValueError, match="half_window"):
        attn_jax.local_attention_weights(jnp.ones((1, 2, 5)), jnp.zeros((1, 2)), -1, False)
