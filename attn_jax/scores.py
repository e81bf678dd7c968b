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
import numpy as np

from attn_jax.shapes import (
    AdditiveV,
    AdditiveWk,
    AdditiveWq,
    GeneralW,
    LocationW,
    Logits,
    SameWidthKey,
    ScoreKey,
    ScoreQuery,
    Strength,
)

Array = jax.Array

# Norms are floored at this value so cosine scores stay finite (with finite
# gradients) for zero vectors, e.g. an NTM memory initialised to zeros.
COSINE_EPS = 1e-8


def _check_pair(q, k, *, same_width: bool = True) -> None:
    """``q [..., T, Dq]`` and ``k [..., S, Dk]``: rank >= 2, batch dims that broadcast, Dq == Dk if asked."""
    qs, ks = jnp.shape(q), jnp.shape(k)
    if len(qs) < 2 or len(ks) < 2:
        raise ValueError(f"q must be [..., T, D] and k [..., S, D] (rank >= 2), got q {qs}, k {ks}")
    if same_width and qs[-1] != ks[-1]:
        raise ValueError(f"q and k must share their last dim D, got q {qs}, k {ks}")
    try:
        np.broadcast_shapes(qs[:-2], ks[:-2])
    except ValueError:
        raise ValueError(f"the batch dims of q {qs} and k {ks} do not broadcast") from None


def _check_weight(name: str, w, want: tuple[int, ...], meaning: str) -> None:
    if jnp.shape(w) != want:
        raise ValueError(f"{name} must be {meaning} = {want}, got {jnp.shape(w)}")


def dot(q: ScoreQuery, k: SameWidthKey) -> Logits:
    """``q [..., T, D]``, ``k [..., S, D]`` -> ``q kᵀ`` ``[..., T, S]``."""
    _check_pair(q, k)
    return jnp.einsum("...TD,...SD->...TS", q, k)


def scaled_dot(q: ScoreQuery, k: SameWidthKey) -> Logits:
    """``q kᵀ / sqrt(D)``: ``q [..., T, D]``, ``k [..., S, D]`` -> ``[..., T, S]``."""
    return dot(q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))


def general(q: ScoreQuery, k: ScoreKey, w: GeneralW) -> Logits:
    """Bilinear ``q W kᵀ``: ``q [..., T, Dq]``, ``k [..., S, Dk]``, ``w [Dq, Dk]``."""
    _check_pair(q, k, same_width=False)
    _check_weight("w", w, (jnp.shape(q)[-1], jnp.shape(k)[-1]), "[Dq, Dk]")
    return jnp.einsum("...TD,DE,...SE->...TS", q, w, k)


def additive(q: ScoreQuery, k: ScoreKey, w_q: AdditiveWq, w_k: AdditiveWk, v: AdditiveV) -> Logits:
    """Bahdanau's ``vᵀ tanh(q W_q + k W_k)`` -> ``[..., T, S]``.

    ``q [..., T, Dq]``, ``k [..., S, Dk]``, ``w_q [Dq, A]``, ``w_k [Dk, A]``,
    ``v [A]``. Dense: holds ``[..., T, S, A]``; fine for small S (pointer
    networks). ``attn_jax.additive_attention(implementation="chunked")`` avoids it.
    """
    _check_pair(q, k, same_width=False)
    a = jnp.shape(v)
    if len(a) != 1:
        raise ValueError(f"v must be [A], got shape {a}")
    _check_weight("w_q", w_q, (jnp.shape(q)[-1], a[0]), "[Dq, A]")
    _check_weight("w_k", w_k, (jnp.shape(k)[-1], a[0]), "[Dk, A]")
    qp = q @ w_q
    kp = k @ w_k
    return jnp.tanh(qp[..., :, None, :] + kp[..., None, :, :]) @ v


def _norm(x: Array) -> Array:
    sq = jnp.sum(jnp.square(x), axis=-1)
    return jnp.sqrt(jnp.maximum(sq, COSINE_EPS**2))


def cosine(q: ScoreQuery, k: SameWidthKey, beta: Strength | float = 1.0) -> Logits:
    """NTM content score ``beta_t · cos(q_t, k_s)`` -> ``[..., T, S]``.

    ``q [..., T, D]``, ``k [..., S, D]``; ``beta`` (key strength) broadcast to
    ``[..., T]``. Finite, with finite gradients, when either vector is zero.
    """
    cos = dot(q, k) / (_norm(q)[..., :, None] * _norm(k)[..., None, :])
    beta = jnp.asarray(beta, cos.dtype)
    try:
        np.broadcast_shapes(beta.shape + (1,), cos.shape)
    except ValueError:
        raise ValueError(f"beta of shape {beta.shape} does not broadcast to [..., T] = {cos.shape[:-1]}") from None
    return beta[..., None] * cos


def location(q: ScoreQuery, w: LocationW) -> Logits:
    """Location-based ``softmax(W q)`` logits: ``q [..., T, Dq]``, ``w [Dq, S]`` -> ``[..., T, S]``."""
    if jnp.ndim(q) < 1 or jnp.ndim(w) != 2 or jnp.shape(w)[0] != jnp.shape(q)[-1]:
        raise ValueError(f"w must be [Dq, S] with Dq = q's last dim, got q {jnp.shape(q)}, w {jnp.shape(w)}")
    return q @ w
