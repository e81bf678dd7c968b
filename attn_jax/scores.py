"""The score family of "Attention? Attention!": logits ``[..., T, S]``.

Queries are ``[..., T, Dq]`` and keys ``[..., S, Dk]`` with any number of
leading batch dims (broadcast against each other). Every function is pure and
jit/vmap/grad safe; none holds parameters: weights are arguments.

========== ============================================ ==========================
name       score(q_t, k_s)                              paper
========== ============================================ ==========================
dot        q_t · k_s                                    Luong et al. 2015
scaled_dot q_t · k_s / sqrt(D)                          Vaswani et al. 2017
general    q_t W k_s                                    Luong et al. 2015
additive   v · tanh(W_q q_t + W_k k_s)                  Bahdanau et al. 2015
cosine     beta_t · cos(q_t, k_s)                       Graves et al. 2014 (NTM)
location   (q_t W)_s  (keys unused)                     Luong et al. 2015
========== ============================================ ==========================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Norms are floored at this value so cosine scores stay finite (with finite
# gradients) for zero vectors, e.g. an NTM memory initialised to zeros.
COSINE_EPS = 1e-8


def dot(q: Array, k: Array) -> Array:
    """``q [..., T, D]``, ``k [..., S, D]`` -> ``q kᵀ`` ``[..., T, S]``."""
    return jnp.einsum("...td,...sd->...ts", q, k)


def scaled_dot(q: Array, k: Array) -> Array:
    """``q kᵀ / sqrt(D)``: ``q [..., T, D]``, ``k [..., S, D]`` -> ``[..., T, S]``."""
    return dot(q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))


def general(q: Array, k: Array, w: Array) -> Array:
    """Bilinear ``q W kᵀ``: ``q [..., T, Dq]``, ``k [..., S, Dk]``, ``w [Dq, Dk]``."""
    return jnp.einsum("...td,de,...se->...ts", q, w, k)


def additive(q: Array, k: Array, w_q: Array, w_k: Array, v: Array) -> Array:
    """Bahdanau's ``vᵀ tanh(q W_q + k W_k)`` -> ``[..., T, S]``.

    ``q [..., T, Dq]``, ``k [..., S, Dk]``, ``w_q [Dq, A]``, ``w_k [Dk, A]``,
    ``v [A]``. Dense: holds ``[..., T, S, A]``; fine for small S (pointer
    networks). ``attn_jax.additive_attention(implementation="chunked")`` avoids it.
    """
    qp = q @ w_q
    kp = k @ w_k
    return jnp.tanh(qp[..., :, None, :] + kp[..., None, :, :]) @ v


def _norm(x: Array) -> Array:
    sq = jnp.sum(jnp.square(x), axis=-1)
    return jnp.sqrt(jnp.maximum(sq, COSINE_EPS**2))


def cosine(q: Array, k: Array, beta: Array | float = 1.0) -> Array:
    """NTM content score ``beta_t · cos(q_t, k_s)`` -> ``[..., T, S]``.

    ``q [..., T, D]``, ``k [..., S, D]``; ``beta`` (key strength) broadcast to
    ``[..., T]``. Finite, with finite gradients, when either vector is zero.
    """
    cos = dot(q, k) / (_norm(q)[..., :, None] * _norm(k)[..., None, :])
    beta = jnp.asarray(beta, cos.dtype)
    return beta[..., None] * cos


def location(q: Array, w: Array) -> Array:
    """Location-based ``softmax(W q)`` logits: ``q [..., T, Dq]``, ``w [Dq, S]`` -> ``[..., T, S]``."""
    return q @ w
