"""Dense ("xla") attention: the readable reference every other path is tested against.

Materialises the logits in float32 (float64 for float64 inputs). Gradients come
from autodiff, including the gradient of the logsumexp residual. Attention
dropout evaluates :mod:`attn_jax.dropout`'s hash densely, on the same
``(b, n, i, j)`` positions every other path uses.

Layout. The logits live as ``[B, K, T, G, S]``: one 4-D batched matmul per kv
head, whose rows are the ``T · G`` queries of that head's group (query ``i`` of
head ``n = kv · G + g`` is row ``i · G + g``). That is the plain
``"BTNH,BSNH->BNTS"`` matmul jax.nn uses when ``G = 1``, and for GQA it is a
single matmul against the unrepeated keys; on XLA:CPU a 5-D dot with a group
axis (``"BTKGH,BSKH->BKGTS"``) was the slower form, forward and backward. Masks
broadcast over ``G`` as ``[.., T, 1, S]``.

Empty rows. The softmax is ``jax.nn.softmax`` (its custom JVP gives XLA the
short backward). When some row may see no key, its weights are selected to
zero afterwards and its logsumexp to ``-inf``; :func:`rows_may_be_empty`
decides that statically, so causal or windowed attention without lengths,
segments, bias or mask pays nothing for the guard.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_jax import dropout as _dropout
from attn_jax.attention.inputs import Problem, compute_dtype, group_heads
from attn_jax.masks import MASK_VALUE, and_masks, decide, dense_mask

Array = jax.Array


def rows_may_be_empty(p: Problem) -> bool:
    """Whether some query row may have no visible key (False only when that is impossible).

    Arrays (mask, bias, lengths, segment ids) may empty a row; causal alone never
    does (row ``i`` sees key 0); a window ``(left, right)`` empties row ``i`` only
    when ``i - left > S - 1``, i.e. never when ``T <= S + left``.
    """
    spec = p.spec
    if p.mask is not None or p.bias is not None:
        return True
    if any(x is not None for x in (spec.q_lengths, spec.kv_lengths, spec.q_segment_ids)):
        return True
    if spec.window is not None:
        _, t, s, *_ = p.dims
        return decide(lambda: t > s + spec.window[0], True)
    return False


def _logits(p: Problem) -> Array:
    """Scaled logits ``[B, K, T, G, S]`` (bias and soft-cap applied, masks not yet)."""
    b, t, s_len, n, k, h, hv = p.dims
    g = n // k
    acc = compute_dtype(p.query.dtype)
    if g == 1:
        s = jnp.einsum("BTNH,BSNH->BNTS", p.query, p.key, preferred_element_type=acc, precision=p.precision)
    else:  # rows (i, g) of kv head k: query [B, K, T·G, H]
        q = jnp.swapaxes(p.query.reshape(b, t, k, g * h), 1, 2).reshape(b, k, t * g, h)
        s = jnp.einsum("BKMH,BSKH->BKMS", q, p.key, preferred_element_type=acc, precision=p.precision)
    s = s.astype(acc).reshape(b, k, t, g, s_len) * jnp.asarray(p.scale, acc)
    bias = group_heads(p.bias, k)
    if bias is not None:
        s = s + bias.astype(acc)
    if p.logits_soft_cap is not None:
        c = jnp.asarray(p.logits_soft_cap, acc)
        s = c * jnp.tanh(s / c)
    return s


def _keep(p: Problem, s: Array) -> Array | None:
    """Visibility broadcastable to the logits ``[B, K, T, G, S]``, or None (all visible)."""
    _, t, s_len, _, k, _, _ = p.dims
    keep = None
    if not p.spec.is_empty:
        keep = dense_mask(p.spec, t, s_len)[:, None, :, None, :]
    keep = and_masks(keep, group_heads(p.mask, k))
    if p.bias is not None:  # a -inf bias masks its key; a row it empties is an empty row
        keep = and_masks(keep, s > -jnp.inf)
    return keep


def _softmax(p: Problem) -> tuple[Array, Array]:
    """Normalised weights ``[B, K, T, G, S]`` (before dropout) and ``lse [B, K, T, G]``."""
    s = _logits(p)
    keep = _keep(p, s)
    if keep is not None:
        s = jnp.where(keep, s, jnp.asarray(MASK_VALUE, s.dtype))
    probs, lse = jax.nn.softmax(s, axis=-1), jax.nn.logsumexp(s, axis=-1)
    if keep is not None and rows_may_be_empty(p):
        seen = jnp.any(keep, axis=-1)  # a row of MASK_VALUE softmaxes to uniform: select it to zero
        probs = jnp.where(seen[..., None], probs, 0.0)
        lse = jnp.where(seen, lse, -jnp.inf)
    return probs, lse


def probabilities(p: Problem) -> tuple[Array, Array]:
    """The normalised attention weights ``[B, K, G, T, S]`` (before dropout) and ``lse [B, K, G, T]``.

    float32 (float64 for float64 inputs); rows with nothing to attend to are zeros.
    """
    probs, lse = _softmax(p)
    return jnp.swapaxes(probs, 2, 3), jnp.swapaxes(lse, 2, 3)


def attention(p: Problem) -> tuple[Array, Array]:
    """Dense attention on a normalised problem.

    Returns ``out [B, T, N, Hv]`` in the query dtype and ``lse [B, T, N]`` in
    float32 (float64 for float64 inputs).
    """
    b, t, s_len, n, k, h, hv = p.dims
    g = n // k
    acc = compute_dtype(p.query.dtype)
    probs, lse = _softmax(p)
    if p.dropout.active:
        probs = apply_dropout(probs, p, b, k, g, t, s_len)
    value = p.value.astype(acc)
    if g == 1:
        out = jnp.einsum("BNTS,BSNH->BTNH", probs.reshape(b, k, t, s_len), value, precision=p.precision)
    else:
        out = jnp.einsum("BKMS,BSKH->BKMH", probs.reshape(b, k, t * g, s_len), value, precision=p.precision)
        out = jnp.swapaxes(out.reshape(b, k, t, g * hv), 1, 2)
    out = out.reshape(b, t, n, hv).astype(p.query.dtype)
    lse = jnp.swapaxes(lse, 1, 2).reshape(b, t, n)
    return out, lse


def dropout_keep(p: Problem, b, k: int, g: int, t, s) -> Array:
    """The keep mask ``[B, K, T, G, S]`` of problem ``p`` (head ``n = kv · G + g``)."""
    shape = (b, k, t, g, s)
    bi, kv, qi, gi, kj = (jax.lax.broadcasted_iota(jnp.int32, shape, axis) for axis in range(5))
    return _dropout.block_keep(p.dropout_seed, p.dropout, bi, kv * g + gi, qi, kj)


def apply_dropout(probs: Array, p: Problem, b, k: int, g: int, t, s) -> Array:
    """Inverted dropout of the normalised weights ``probs [B, K, T, G, S]``."""
    kept = dropout_keep(p, b, k, g, t, s)
    return jnp.where(kept, probs * jnp.asarray(p.dropout.keep_scale, probs.dtype), 0.0)
