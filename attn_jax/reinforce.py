"""REINFORCE (Williams 1992) for hard attention: the score-function gradient as a surrogate loss term.

For actions ``s`` sampled from ``p_θ`` with reward ``R(s)``, ``∇ E[R] = E[(R - b) ∇ log p_θ(s)]`` for any
baseline ``b`` that does not depend on ``s``. :func:`score_function_surrogate` returns a term whose
gradient is the single-sample estimate and whose value is zero, so adding it to a loss changes the
gradient and not the reported number. Show, Attend and Tell (§4.1) uses ``R = log p(y | s, a)``, a
moving-average baseline (:func:`ema`) and an entropy bonus on the attention distribution.

For a sequence of actions ``s_1..s_T`` with a reward ``r_t`` per step (e.g. the log-likelihood of word t),
the action at step t can only change the rewards from t on, so each ``∇ log p(s_t)`` is weighted by its
reward-to-go ``G_t = Σ_{t' >= t} r_t'`` (:func:`reward_to_go`) minus a baseline that may depend on
everything before ``s_t`` (the history, the input) but not on ``s_t`` or later: still unbiased, and the
rewards before t no longer add their noise to step t's credit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def score_function_surrogate(log_p_actions: Array, reward: Array, baseline: Array | float = 0.0) -> Array:
    """``(R - b) · log p(s)`` with ``R`` and ``b`` held constant, minus its own value: zero-valued, with gradient
    ``(R - b) ∇ log p(s)``. Shapes broadcast (e.g. ``[B]`` each, or ``[B, T]`` with per-step rewards-to-go and
    baselines); maximise it (or minimise its negative)."""
    advantage = jax.lax.stop_gradient(jnp.asarray(reward) - baseline)
    term = advantage * log_p_actions
    return term - jax.lax.stop_gradient(term)


def reward_to_go(rewards: Array, mask: Array | None = None) -> Array:
    """``G_t = Σ_{t' >= t} mask_t' · r_t'`` along the last axis: ``rewards [..., T]`` (and ``mask [..., T]``,
    1 where a step counts) -> ``[..., T]``. Steps after a sequence's end add nothing."""
    rewards = jnp.asarray(rewards)
    if mask is not None:
        rewards = rewards * mask
    return jnp.flip(jnp.cumsum(jnp.flip(rewards, -1), axis=-1), -1)


def leave_one_out(values: Array, samples: int) -> Array:
    """For ``values [N·K, ...]`` holding K samples per input (rows ``n·K .. n·K + K - 1`` are input n's), each
    row's baseline: the mean of the *other* K - 1 samples of its input (Kool et al. 2019). The samples are
    drawn independently, so a sample's baseline does not depend on its own actions: unbiased, and it knows the
    input as well as the samples do. ``samples`` must be >= 2."""
    if samples < 2:
        raise ValueError(f"a leave-one-out baseline needs >= 2 samples per input, got {samples}")
    values = jnp.asarray(values)
    if values.shape[0] % samples:
        raise ValueError(f"{values.shape[0]} rows do not split into groups of {samples} samples")
    grouped = values.reshape(values.shape[0] // samples, samples, *values.shape[1:])
    others = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (samples - 1)
    return others.reshape(values.shape)


def ema(baseline: Array | float, value: Array | float, decay: float = 0.9) -> Array:
    """The moving-average baseline's update ``b ← decay · b + (1 - decay) · value``."""
    return decay * jnp.asarray(baseline) + (1.0 - decay) * jnp.asarray(value)
