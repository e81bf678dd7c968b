"""Luong et al. (2015) local attention: local-m and local-p.

local-m centres the window on the target position ``t``; local-p predicts the
centre ``p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))`` (:func:`predictive_center`).
:func:`local_attention_weights` turns any score matrix into the windowed,
optionally Gaussian-weighted, attention weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_jax.masks import MASK_VALUE
from attn_jax.shapes import (
    Centers,
    LocalCenter,
    LocalScores,
    LocalStates,
    LocalVp,
    LocalWeights,
    LocalWp,
    SourceLengths,
)
from attn_jax.softmax import masked_softmax_stats

Array = jax.Array


def predictive_center(h: LocalStates, w_p: LocalWp, v_p: LocalVp, source_lengths: SourceLengths) -> Centers:
    """local-p centre ``p_t = S_b · sigmoid(v_pᵀ tanh(h_t W_p))``.

    Args:
      h: ``[B, T, D]`` decoder states; w_p: ``[D, A]``; v_p: ``[A]``.
      source_lengths: ``[B]`` each example's own source length ``S_b``.

    Returns:
      ``[B, T]`` real-valued centres in ``[0, S_b]``.
    """
    if h.ndim < 2 or w_p.shape != (h.shape[-1], v_p.shape[-1]) or v_p.ndim != 1:
        raise ValueError(
            f"expected h [B, T, D], w_p [D, A], v_p [A]; got h {h.shape}, w_p {w_p.shape}, v_p {v_p.shape}"
        )
    lengths = jnp.asarray(source_lengths)
    if lengths.shape != h.shape[:-2]:
        raise ValueError(f"source_lengths must be [B] = {h.shape[:-2]}, got {lengths.shape}")
    gate = jax.nn.sigmoid(jnp.tanh(h @ w_p) @ v_p)
    return lengths[..., None].astype(gate.dtype) * gate


def local_attention_weights(
    scores: LocalScores,
    center: LocalCenter,
    half_window: int,
    gaussian: bool,
    key_value_seq_lengths: SourceLengths | None = None,
) -> LocalWeights:
    """Softmax of ``scores`` over the window ``|s - center| <= D``, zero outside.

    Args:
      scores: ``[B, T, S]`` alignment scores (any score function).
      center: ``[B, T]`` window centres (int ``t`` for local-m, real for local-p).
      half_window: ``D >= 0``.
      gaussian: multiply by ``exp(-(s - center)² / (2σ²))``, ``σ = D / 2``,
        after the softmax and without renormalising, as the paper does.
      key_value_seq_lengths: ``[B]``; keys ``s >= length`` are excluded.

    Returns:
      ``[B, T, S]`` weights; rows whose window holds no valid key are zeros.
    """
    if not jnp.issubdtype(jnp.result_type(scores), jnp.floating):
        raise TypeError(f"scores must be a floating array, got dtype {jnp.result_type(scores)}")
    if jnp.ndim(scores) < 2:
        raise ValueError(f"scores must be [B, T, S], got shape {jnp.shape(scores)}")
    if not isinstance(half_window, int) or isinstance(half_window, bool) or half_window < 0:
        raise ValueError(f"half_window must be a non-negative int, got {half_window!r}")
    if center.shape != scores.shape[:-1]:
        raise ValueError(f"center must be [B, T] = {scores.shape[:-1]}, got {center.shape}")
    s_len = scores.shape[-1]
    pos = jnp.arange(s_len, dtype=jnp.float32)
    c = center.astype(jnp.float32)[..., None]
    keep = jnp.abs(pos - c) <= half_window
    if key_value_seq_lengths is not None:
        lengths = jnp.asarray(key_value_seq_lengths)
        if lengths.shape != scores.shape[:-2]:
            raise ValueError(
                f"key_value_seq_lengths must be [B] = {scores.shape[:-2]}, got {lengths.shape}"
            )
        keep = keep & (jnp.arange(s_len) < lengths[..., None, None])
    acc = jnp.promote_types(scores.dtype, jnp.float32)
    s = jnp.where(keep, scores.astype(acc), MASK_VALUE)
    p, l_safe, _ = masked_softmax_stats(s, keep)
    weights = p / l_safe[..., None]
    if gaussian:
        sigma = half_window / 2.0
        if sigma > 0:
            weights = weights * jnp.exp(-jnp.square(pos - c) / (2.0 * sigma**2))
    return weights.astype(scores.dtype)
