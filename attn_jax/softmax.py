"""Softmax bookkeeping shared by every attention path: dense, online (blocked), recomputed, merged.

The dense scores (:func:`masked_softmax_stats`), the chunked path, ring attention
and every Pallas kernel use these few functions, so the rules for masked
entries and empty rows exist once:

* masked logits hold :data:`~attn_jax.masks.MASK_VALUE` (large, finite), and
  their probabilities are selected to exactly 0;
* a row that sees no key keeps a normaliser of 0; it gives output zeros and an
  internal logsumexp of MASK_VALUE (finite, so padding rows never produce inf),
  which :func:`empty_rows_to_neg_inf` reports as ``-inf``;
* exponents are clamped at 0: in exact arithmetic ``s - max <= 0`` and
  ``s - lse <= 0``, and the clamp keeps a recomputed logit that rounds above
  its row's maximum from overflowing ``exp``.

This module imports jax and :mod:`attn_jax.masks` only, so the kernels in
``attn_jax.kernels`` may use it (docs/design.md, import rules). Every function
works on any leading shape; ``rows`` is the second-to-last axis of the logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from attn_jax.masks import MASK_VALUE

Array = jax.Array


def _nonpositive(x):
    """``min(x, 0)`` with the gradient of ``x`` where ``x <= 0`` (``jnp.minimum`` halves it at a tie)."""
    return jnp.where(x > 0, 0.0, x)


def _rowwise(x, keepdims: bool):
    """A per-row statistic as a column to broadcast against ``[..., rows, cols]``."""
    return x if keepdims else x[..., None]


def bias_and_cap(s, bias, soft_cap):
    """The logits' epilogue every path shares: ``s + bias``, then ``c · tanh(s / c)``.

    ``s`` float32 (or float64) scaled logits; ``bias`` broadcastable or None;
    ``soft_cap`` a Python float or None. Returns ``(logits, tanh)``, ``tanh`` being
    what the soft-cap's gradient ``1 - tanh²`` needs (None without a cap).
    """
    if bias is not None:
        s = s + bias.astype(s.dtype)
    tanh = None
    if soft_cap is not None:
        tanh = jnp.tanh(s / soft_cap)
        s = soft_cap * tanh
    return s, tanh


def online_softmax_step(m, l, s, keep, *, keepdims: bool = False):
    """Fold one block of logits into the running max ``m`` and normaliser ``l``.

    ``s``: ``[..., rows, cols]`` logits, already MASK_VALUE where ``keep`` (bool,
    broadcastable, or None) is False; ``m``/``l``: ``[..., rows]`` (or
    ``[..., rows, 1]`` with ``keepdims``, the TPU kernels' layout), starting at
    MASK_VALUE and 0. Returns ``(m_new, alpha, p, l_new)``: the caller rescales
    its accumulator by ``alpha`` and adds ``p @ v``. Masked entries of ``p`` are
    exactly 0, so a row that has seen nothing keeps ``l == 0``.
    """
    m_new = jnp.maximum(m, jnp.max(s, axis=-1, keepdims=keepdims))
    alpha = jnp.exp(m - m_new)
    p = jnp.exp(_nonpositive(s - _rowwise(m_new, keepdims)))
    if keep is not None:
        p = jnp.where(keep, p, 0.0)
    return m_new, alpha, p, alpha * l + jnp.sum(p, axis=-1, keepdims=keepdims)


def online_softmax_finish(acc, m, l, *, keepdims: bool = False):
    """Normalise the accumulator ``[..., rows, H]``; returns ``(out, lse)``.

    Rows that saw no key (``l == 0``) give zeros and ``lse = MASK_VALUE`` (finite,
    so padding rows never create infinities; callers turn it into ``-inf`` with
    :func:`empty_rows_to_neg_inf` for rows the user masked).
    """
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    return acc / _rowwise(l_safe, keepdims), jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))


def empty_rows_to_neg_inf(lse):
    """Report rows whose internal logsumexp is MASK_VALUE (saw no key) as ``-inf``."""
    return jnp.where(lse <= 0.5 * MASK_VALUE, -jnp.inf, lse)


def recomputed_probabilities(s, lse, keep, *, keepdims: bool = False):
    """``P = exp(s - lse)`` of a block, from the saved logsumexp (the backward passes' recomputation).

    ``lse`` may be MASK_VALUE (an empty row) or ``-inf``; either gives ``P = 0``
    in the whole row, whatever ``keep`` says.
    """
    seen = _rowwise(lse > 0.5 * MASK_VALUE, keepdims)
    p = jnp.exp(_nonpositive(s - jnp.where(seen, _rowwise(lse, keepdims), 0.0)))
    keep = seen if keep is None else keep & seen
    return jnp.where(keep, p, 0.0)


def masked_softmax_stats(s: Array, keep: Array | None) -> tuple[Array, Array, Array]:
    """Dense masked softmax pieces over the last axis.

    ``s``: logits ``[..., S]`` already set to MASK_VALUE where masked; ``keep``
    broadcastable bool or None. Returns unnormalised ``p`` ``[..., S]``, the
    safe normaliser ``l`` (1 where a row is empty) and the logsumexp (``-inf``
    where a row is empty). Empty rows give ``p == 0`` and zero gradients.
    """
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1))
    p = jnp.exp(_nonpositive(s - m[..., None]))
    if keep is not None:
        p = jnp.where(keep, p, 0.0)
    l = jnp.sum(p, axis=-1)
    empty = l == 0
    l_safe = jnp.where(empty, 1.0, l)
    lse = jnp.where(empty, -jnp.inf, m + jnp.log(l_safe))
    return p, l_safe, lse


def merge_partials(out, lse, axis: int):
    """Combine partial results over disjoint key sets (split-KV decoding, ring steps).

    ``out [..., P, ..., H]`` holds each part's normalised output and ``lse``
    (same shape without ``H``) its logsumexp, MASK_VALUE or ``-inf`` for a part
    that saw no key; ``axis`` is the parts axis of ``lse``. Returns the merged
    ``(out, lse)``; rows no part saw give zeros and MASK_VALUE.
    """
    lse = jnp.where(jnp.isfinite(lse), lse, MASK_VALUE)
    m = jnp.max(lse, axis=axis, keepdims=True)
    w = jnp.where(lse <= 0.5 * MASK_VALUE, 0.0, jnp.exp(_nonpositive(lse - m)))
    total = jnp.sum(w, axis=axis, keepdims=True)
    empty = total == 0
    safe = jnp.where(empty, 1.0, total)
    merged = jnp.sum(out * (w / safe)[..., None], axis=axis)
    merged_lse = jnp.where(empty, MASK_VALUE, m + jnp.log(safe))
    return merged, jnp.squeeze(merged_lse, axis)


def attention_vjp(forward, backward, num_differentiable: int):
    """A ``jax.custom_vjp`` attention ``f(*arrays, static) -> (out, lse)`` (the chunked paths and every kernel).

    The first ``num_differentiable`` arrays get gradients, the rest (ids, masks)
    none; ``static`` is hashable. ``forward(*arrays, static) -> (out, lse)``;
    ``backward(static, arrays, out, lse, dout, dlse)`` returns the gradients of
    the differentiable arrays. The residuals are the inputs, the output and the
    logsumexp, as FlashAttention-2 saves them.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def fused(static, *arrays):
        return forward(*arrays, static)

    def fused_fwd(static, *arrays):
        out, lse = forward(*arrays, static)
        return (out, lse), (arrays, out, lse)

    def fused_bwd(static, res, cot):
        arrays, out, lse = res
        grads = backward(static, arrays, out, lse, *cot)
        return (*grads, *([None] * (len(arrays) - num_differentiable)))

    fused.defvjp(fused_fwd, fused_bwd)
    return lambda *args: fused(args[-1], *args[:-1])
