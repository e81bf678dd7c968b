"""Dense ("xla") attention: the readable reference every other path is tested against.

Materialises the ``[B, K, G, T, S]`` logits in float32 (float64 for float64
inputs). Gradients come from autodiff, including the gradient of the
logsumexp residual. Attention dropout evaluates :mod:`attn_jax.dropout`'s hash
densely, on the same ``(b, n, i, j)`` positions every other path uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_jax import dropout as _dropout
from attn_jax.attention.inputs import Problem, compute_dtype, group_heads
from attn_jax.masks import MASK_VALUE, and_masks, dense_mask
from attn_jax.softmax import masked_softmax_stats

Array = jax.Array


def probabilities(p: Problem) -> tuple[Array, Array]:
    """The normalised attention weights ``[B, K, G, T, S]`` (before dropout) and ``lse [B, K, G, T]``.

    float32 (float64 for float64 inputs); rows with nothing to attend to are zeros.
    """
    b, t, s_len, n, k, h, hv = p.dims
    g = n // k
    acc = compute_dtype(p.query.dtype)
    q = p.query.reshape(b, t, k, g, h)
    s = jnp.einsum("BTKGH,BSKH->BKGTS", q, p.key, preferred_element_type=acc, precision=p.precision)
    s = s.astype(acc) * jnp.asarray(p.scale, acc)
    if p.bias is not None:
        s = s + group_heads(p.bias, k).astype(acc)
    if p.logits_soft_cap is not None:
        c = jnp.asarray(p.logits_soft_cap, acc)
        s = c * jnp.tanh(s / c)
    keep = None
    if not p.spec.is_empty:
        keep = dense_mask(p.spec, t, s_len)[:, None, None]
    keep = and_masks(keep, group_heads(p.mask, k))
    if p.bias is not None:  # a -inf bias masks its key; a row it empties is an empty row
        keep = and_masks(keep, s > -jnp.inf)
    if keep is not None:
        s = jnp.where(keep, s, jnp.asarray(MASK_VALUE, acc))
    if keep is None:  # no row can be empty: the plain softmax (XLA:CPU fuses its gradient far better)
        return jax.nn.softmax(s, axis=-1), jax.nn.logsumexp(s, axis=-1)
    probs, l_safe, lse = masked_softmax_stats(s, keep)
    return probs / l_safe[..., None], lse


def attention(p: Problem) -> tuple[Array, Array]:
    """Dense attention on a normalised problem.

    Returns ``out [B, T, N, Hv]`` in the query dtype and ``lse [B, T, N]`` in
    float32 (float64 for float64 inputs).
    """
    b, t, s_len, n, k, h, hv = p.dims
    g = n // k
    acc = compute_dtype(p.query.dtype)
    probs, lse = probabilities(p)
    if p.dropout.active:
        probs = apply_dropout(probs, p, b, k, g, t, s_len)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, p.value.astype(acc), precision=p.precision)
    out = out.reshape(b, t, n, hv).astype(p.query.dtype)
    lse = jnp.moveaxis(lse, 3, 1).reshape(b, t, n)
    return out, lse


def dropout_keep(p: Problem, b, k: int, g: int, t, s) -> Array:
    """The keep mask ``[B, K, G, T, S]`` of problem ``p`` (head ``n = kv · G + g``)."""
    shape = (b, k, g, t, s)
    bi, kv, gi, qi, kj = (jax.lax.broadcasted_iota(jnp.int32, shape, axis) for axis in range(5))
    return _dropout.block_keep(p.dropout_seed, p.dropout, bi, kv * g + gi, qi, kj)


def apply_dropout(probs: Array, p: Problem, b, k: int, g: int, t, s) -> Array:
    """Inverted dropout of the normalised weights ``probs [B, K, G, T, S]``."""
    kept = dropout_keep(p, b, k, g, t, s)
    return jnp.where(kept, probs * jnp.asarray(p.dropout.keep_scale, probs.dtype), 0.0)
