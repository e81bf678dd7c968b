"""The score family against float64 numpy formulas, with leading batch dims."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax import scores

BATCH = [(), (3,), (2, 3)]


@pytest.fixture
def qk(rng):
    def make(batch, t=5, s=7, dq=4, dk=4):
        return rng.normal(size=batch + (t, dq)), rng.normal(size=batch + (s, dk))

    return make


@pytest.mark.parametrize("batch", BATCH)
def test_dot_and_scaled_dot(qk, batch):
    q, k = qk(batch)
    ref = np.einsum("...td,...sd->...ts", q, k)
    np.testing.assert_allclose(scores.dot(jnp.asarray(q), jnp.asarray(k)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores.scaled_dot(jnp.asarray(q), jnp.asarray(k)), ref / 2.0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", BATCH)
def test_general(qk, batch, rng):
    q, k = qk(batch, dq=3, dk=6)
    w = rng.normal(size=(3, 6))
    ref = np.einsum("...td,de,...se->...ts", q, w, k)
    out = scores.general(*(jnp.asarray(x) for x in (q, k, w)))
    assert out.shape == batch + (5, 7)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", BATCH)
def test_additive(qk, batch, rng):
    q, k = qk(batch, dq=3, dk=6)
    w_q, w_k, v = rng.normal(size=(3, 8)), rng.normal(size=(6, 8)), rng.normal(size=(8,))
    ref = np.zeros(batch + (5, 7))
    for idx in np.ndindex(*batch):
        for t in range(5):
            for s in range(7):
                ref[idx + (t, s)] = v @ np.tanh(q[idx + (t,)] @ w_q + k[idx + (s,)] @ w_k)
    out = scores.additive(*(jnp.asarray(x) for x in (q, k, w_q, w_k, v)))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", BATCH)
def test_cosine_with_key_strength(qk, batch, rng):
    q, k = qk(batch)
    beta = rng.uniform(0.5, 3.0, size=batch + (5,))
    cos = np.einsum("...td,...sd->...ts", q, k) / (
        np.linalg.norm(q, axis=-1)[..., :, None] * np.linalg.norm(k, axis=-1)[..., None, :]
    )
    out = scores.cosine(jnp.asarray(q), jnp.asarray(k), jnp.asarray(beta))
    np.testing.assert_allclose(out, beta[..., None] * cos, rtol=1e-5, atol=1e-5)
    # Scalar beta broadcasts too.
    np.testing.assert_allclose(scores.cosine(jnp.asarray(q), jnp.asarray(k), 2.0), 2 * cos, rtol=1e-5, atol=1e-5)


def test_cosine_zero_vectors_are_finite_with_finite_grads():
    q = jnp.zeros((2, 4))
    k = jnp.array([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]])
    out = scores.cosine(q, k, jnp.ones(2))
    assert np.all(np.isfinite(out)) and np.all(out == 0)
    g = jax.grad(lambda q_, k_: jnp.sum(scores.cosine(q_, k_, jnp.ones(2))), argnums=(0, 1))(q, k)
    assert all(np.all(np.isfinite(x)) for x in g)


@pytest.mark.parametrize("batch", BATCH)
def test_location(batch, rng):
    q = rng.normal(size=batch + (5, 4))
    w = rng.normal(size=(4, 9))
    out = scores.location(jnp.asarray(q), jnp.asarray(w))
    assert out.shape == batch + (5, 9)
    np.testing.assert_allclose(out, q @ w, rtol=1e-5, atol=1e-5)


def test_scores_are_jit_vmap_grad_safe(rng):
    q, k = jnp.asarray(rng.normal(size=(3, 5, 4))), jnp.asarray(rng.normal(size=(3, 7, 4)))
    for fn in (scores.dot, scores.scaled_dot, lambda a, b: scores.cosine(a, b, 1.5)):
        np.testing.assert_allclose(jax.jit(jax.vmap(fn))(q, k), fn(q, k), rtol=1e-5, atol=1e-6)
        assert np.all(np.isfinite(jax.grad(lambda a, f=fn: jnp.sum(f(a, k)))(q)))
