"""The plain-jnp reference of the flash kernels (Triton-style and TPU), and the cost estimate it gives.

Both :mod:`attn_jax.kernels.flash_triton` and :mod:`attn_jax.kernels.flash_tpu`
take the same arguments and return the same results; this oracle is what the
tests compare them with, and :func:`attention_cost` (``pl.estimate_cost`` of the
oracle) is the ``pl.CostEstimate`` their forward ``pallas_call`` hands to XLA's
scheduler.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from attn_jax.masks import MASK_VALUE, MaskSpec


def attention_reference(
    query, key, value, bias=None, mask=None, *,
    q_segment_ids=None, kv_segment_ids=None, query_seq_lengths=None, key_value_seq_lengths=None,
    scale=None, is_causal=False, window=None, logits_soft_cap=None,
):
    """Plain-jnp oracle with the flash kernels' signature (float32 statistics, dense logits).

    ``query [B, T, N, H]``, ``key [B, S, K, H]``, ``value [B, S, K, Hv]``; bias and
    mask 4-D ``[Bb, Nb, Tb, Sb]``. Returns ``out [B, T, N, Hv]`` and ``lse [B, T, N]``
    (``-inf`` for empty rows).
    """
    b, t, n, h = query.shape
    s, kh = key.shape[1], key.shape[2]
    g = n // kh
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    qg = query.reshape(b, t, kh, g, h)
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", qg, key, preferred_element_type=jnp.float32) * scale
    logits = logits.reshape(b, n, t, s)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if logits_soft_cap is not None:
        logits = logits_soft_cap * jnp.tanh(logits / logits_soft_cap)
    spec = MaskSpec(is_causal=is_causal, window=window, q_lengths=query_seq_lengths,
                    kv_lengths=key_value_seq_lengths, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
    keep = spec.block(0, t, 0, s)
    keep = jnp.ones((1, t, s), bool) if keep is None else keep
    keep = keep[:, None]
    if mask is not None:
        keep = keep & mask
    logits = jnp.where(keep, logits, MASK_VALUE)
    m = jnp.max(logits, axis=-1, keepdims=True)
    p = jnp.where(keep, jnp.exp(logits - m), 0.0)
    l = jnp.sum(p, axis=-1)
    l_safe = jnp.where(l == 0, 1.0, l)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", (p / l_safe[..., None]).reshape(b, kh, g, t, s), value.astype(jnp.float32))
    lse = jnp.where(l == 0, -jnp.inf, m[..., 0] + jnp.log(l_safe))
    return out.reshape(b, t, n, -1).astype(query.dtype), jnp.swapaxes(lse, 1, 2)



def attention_cost(query, key, value, bias=None, mask=None, *, is_causal=False, window=None,
                   logits_soft_cap=None) -> pl.CostEstimate:
    """``pl.CostEstimate`` of :func:`attention_reference` on these shapes (arrays or ShapeDtypeStructs).

    Dense: it counts every (query, key) pair, also those causal/window blocks skip.
    """

    def abstract(x, dtype=None):
        return None if x is None else jax.ShapeDtypeStruct(x.shape, dtype or x.dtype)

    return pl.estimate_cost(attention_reference, abstract(query), abstract(key), abstract(value), abstract(bias),
                            abstract(mask, jnp.bool_), is_causal=is_causal, window=window,
                            logits_soft_cap=logits_soft_cap)
