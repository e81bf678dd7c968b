"""REINFORCE: the surrogate's gradient is an unbiased estimate of the true gradient on a toy problem."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.reinforce import ema, leave_one_out, reward_to_go, score_function_surrogate


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


def test_reward_to_go_sums_the_rewards_from_each_step_on_within_the_mask():
    r = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 7.0, 9.0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float32)
    expected = np.array([[sum(r[b, t:] * mask[b, t:]) for t in range(4)] for b in range(2)])
    np.testing.assert_allclose(reward_to_go(jnp.asarray(r), jnp.asarray(mask)), expected, rtol=1e-6)
    np.testing.assert_allclose(reward_to_go(jnp.asarray(r)), np.cumsum(r[:, ::-1], 1)[:, ::-1], rtol=1e-6)


# A two-step episode: s1 ~ softmax(theta1), s2 ~ softmax(theta2[s1]); reward r1[s1] after step 1 and
# r2[s1, s2] after step 2, as a caption's per-word log-likelihoods are. The estimator under test weights
# log p(s_t) by the reward-to-go minus a baseline that may depend on the history before s_t (b1, b2[s1]).
R1 = jnp.array([10.0, -5.0, 3.0, 0.0])  # a large, action-dependent first reward: the noise step 2's credit sheds
R2 = jnp.array([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 2.5, 1.0], [-2.0, 1.0, 1.5, 0.0], [0.0, 3.0, 1.0, 2.0]])
THETA = (jnp.array([0.2, -0.5, 0.7, 0.0]), jnp.array([[0.1, 0.4, -0.3, 0.0], [1.0, -1.0, 0.0, 0.5],
                                                      [0.0, 0.2, 0.3, -0.4], [-0.6, 0.0, 0.8, 0.1]]))


def _exact_gradient(theta):
    def value(th):
        p1 = jax.nn.softmax(th[0])
        p2 = jax.nn.softmax(th[1], axis=-1)
        return jnp.sum(p1 * R1) + jnp.sum(p1[:, None] * p2 * R2)

    return jax.grad(value)(theta)


def _episode_estimates(theta, credit, baseline, n, key):
    """n single-episode gradient estimates, flattened to [n, 4 + 16]; ``baseline(s1, s2) -> [2]``."""
    k1, k2 = jax.random.split(key)
    s1 = jax.random.categorical(k1, theta[0], shape=(n,))
    s2 = jax.random.categorical(k2, theta[1][s1])

    def one(a, b):
        def surrogate(th):
            log_p = jnp.stack([jax.nn.log_softmax(th[0])[a], jax.nn.log_softmax(th[1][a])[b]])
            rewards = jnp.stack([R1[a], R2[a, b]])
            returns = reward_to_go(rewards) if credit == "to_go" else jnp.full(2, jnp.sum(rewards))
            return jnp.sum(score_function_surrogate(log_p, returns, baseline(a, b)))

        g = jax.grad(surrogate)(theta)
        return jnp.concatenate([g[0], g[1].ravel()])

    return jax.vmap(one)(s1, s2)


def _unbiased(est, exact, k=4.5):
    stderr = np.asarray(jnp.std(est, axis=0)) / np.sqrt(est.shape[0])
    return bool(np.all(np.abs(np.asarray(jnp.mean(est, axis=0)) - exact) <= k * stderr + 1e-5))


def test_reward_to_go_with_a_history_baseline_is_unbiased_and_an_action_baseline_is_not():
    g = _exact_gradient(THETA)
    exact = np.concatenate([np.asarray(g[0]), np.asarray(g[1]).ravel()])
    n = 60_000
    history = jnp.array([2.0, -1.0, 1.5, 0.5])  # b2 may depend on s1 (what the critic sees: h_{t-1}), not on s2
    on_history = lambda a, b: jnp.stack([4.0, history[a]])  # noqa: E731
    for credit, baseline, key in (("to_go", lambda a, b: jnp.zeros(2), 0), ("to_go", on_history, 1),
                                  ("caption", on_history, 2)):
        assert _unbiased(_episode_estimates(THETA, credit, baseline, n, jax.random.key(key)), exact), credit
    # the check can fail: a baseline that peeks at the action it credits (b2 = r2 itself) is biased
    peeking = lambda a, b: jnp.stack([4.0, R2[a, b]])  # noqa: E731
    assert not _unbiased(_episode_estimates(THETA, "to_go", peeking, n, jax.random.key(3)), exact)


def test_reward_to_go_sheds_the_earlier_rewards_noise():
    zero = lambda a, b: jnp.zeros(2)  # noqa: E731
    to_go = _episode_estimates(THETA, "to_go", zero, 20_000, jax.random.key(4))[:, 4:]  # step 2's gradients
    whole = _episode_estimates(THETA, "caption", zero, 20_000, jax.random.key(4))[:, 4:]
    assert float(jnp.sum(jnp.var(to_go, axis=0))) < 0.3 * float(jnp.sum(jnp.var(whole, axis=0)))


def test_leave_one_out_baseline_is_the_other_samples_mean_and_stays_unbiased():
    v = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0], [10.0, 0.0], [20.0, 2.0], [30.0, 4.0]])  # 2 inputs x 3
    np.testing.assert_allclose(leave_one_out(v, 3), [[4.0, 6.5], [3.0, 5.5], [2.0, 3.0], [25.0, 3.0],
                                                     [20.0, 2.0], [15.0, 1.0]])
    with pytest.raises(ValueError, match=">= 2 samples"):
        leave_one_out(v, 1)
    with pytest.raises(ValueError, match="groups of 4"):
        leave_one_out(v, 4)
    # the toy episode, K = 4 episodes per "input": each episode's baseline is the others' mean reward-to-go
    g = _exact_gradient(THETA)
    exact = np.concatenate([np.asarray(g[0]), np.asarray(g[1]).ravel()])
    n, k = 15_000, 4
    k1, k2 = jax.random.split(jax.random.key(5))
    s1 = jax.random.categorical(k1, THETA[0], shape=(n * k,))
    s2 = jax.random.categorical(k2, THETA[1][s1])
    rewards = jnp.stack([R1[s1], R2[s1, s2]], axis=-1)  # [n·k, 2]
    returns = reward_to_go(rewards)
    baseline = leave_one_out(returns, k)

    def one(a, b, ret, base):
        def surrogate(th):
            log_p = jnp.stack([jax.nn.log_softmax(th[0])[a], jax.nn.log_softmax(th[1][a])[b]])
            return jnp.sum(score_function_surrogate(log_p, ret, base))

        gr = jax.grad(surrogate)(THETA)
        return jnp.concatenate([gr[0], gr[1].ravel()])

    est = jax.vmap(one)(s1, s2, returns, baseline).reshape(n, k, -1).mean(1)  # one estimate per group
    assert _unbiased(est, exact)
    # rewards far from zero (log-likelihoods are): the same episodes without a baseline are far noisier,
    # the leave-one-out estimate does not move (it is blind to a constant shift)
    shifted = reward_to_go(rewards - 10.0)
    plain = jax.vmap(one)(s1, s2, shifted, jnp.zeros_like(shifted)).reshape(n, k, -1).mean(1)
    loo = jax.vmap(one)(s1, s2, shifted, leave_one_out(shifted, k)).reshape(n, k, -1).mean(1)
    np.testing.assert_allclose(loo, est, atol=1e-4)
    assert _unbiased(plain, exact)
    assert float(jnp.sum(jnp.var(est, axis=0))) < 0.2 * float(jnp.sum(jnp.var(plain, axis=0)))
