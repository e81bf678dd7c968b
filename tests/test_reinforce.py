"""REINFORCE: the surrogate's gradient is an unbiased estimate of the true gradient on a toy problem."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.reinforce import ema, score_function_surrogate


def _estimates(theta, reward, baseline, n, key):
    """n single-sample REINFORCE gradients of E_{s ~ softmax(theta)}[reward[s]]: [n, K]."""
    samples = jax.random.categorical(key, theta, shape=(n,))

    def one(s):
        return jax.grad(lambda t: score_function_surrogate(jax.nn.log_softmax(t)[s], reward[s], baseline))(theta)

    return jax.vmap(one)(samples)


def test_score_function_estimator_is_unbiased_and_the_baseline_cuts_variance():
    theta = jnp.array([0.3, -1.0, 0.8, 0.0])
    reward = jnp.array([5.0, 3.0, 4.5, 6.0])  # all large and positive: a baseline helps
    p = jax.nn.softmax(theta)
    exact = jax.grad(lambda t: jnp.sum(jax.nn.softmax(t) * reward))(theta)
    np.testing.assert_allclose(exact, p * (reward - jnp.sum(p * reward)), atol=1e-6)
    n = 40_000
    plain = _estimates(theta, reward, 0.0, n, jax.random.key(0))
    based = _estimates(theta, reward, float(jnp.sum(p * reward)), n, jax.random.key(1))
    for est in (plain, based):
        stderr = np.asarray(jnp.std(est, axis=0)) / np.sqrt(n)
        assert np.all(np.abs(np.asarray(jnp.mean(est, axis=0) - exact)) < 4 * stderr + 1e-6)
    assert float(jnp.sum(jnp.var(based, axis=0))) < 0.2 * float(jnp.sum(jnp.var(plain, axis=0)))


def test_surrogate_value_is_zero_and_ema():
    v = score_function_surrogate(jnp.log(jnp.array([0.2, 0.5])), jnp.array([1.0, -2.0]), 0.5)
    np.testing.assert_array_equal(v, 0.0)
    assert float(ema(1.0, 2.0, 0.9)) == pytest.approx(1.1)
