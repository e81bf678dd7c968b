"""Split-KV ("flash-decoding") attention for one new token per sequence, Triton-style Pallas.

The KV cache is a pool of pages ``[P, page, K, H]`` addressed through a page table
``[B, max_pages]``; a contiguous cache ``[B, S, K, H]`` is the special case of
pages of ``block`` tokens numbered ``b * (S / block) + i`` (a reshape, no copy
once S is a multiple of the block). Grid: batch x kv head x split. Each program
takes the G query heads that share its kv head (so each K/V tile is loaded once
for the whole group), walks the pages of its split up to the sequence's length,
and keeps an online softmax. Partial results are merged with their logsumexps
in jnp. A zero length gives zeros.

:func:`decode_attention_reference` is the dense jnp oracle beside it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attn_jax.kernels._tiles import MIN_BLOCK, dot, is_pow2, pad_axis, padded_tile
from attn_jax.masks import MASK_VALUE
from attn_jax.softmax import merge_partials, online_softmax_finish, online_softmax_step


def _kernel(q_ref, k_ref, v_ref, pt_ref, len_ref, o_ref, lse_ref, *, scale, soft_cap, pages_per_split, page):
    split = pl.program_id(2)
    length = len_ref[()]
    q = q_ref[...]
    g = q.shape[0]
    first = split * pages_per_split
    last = jnp.minimum(first + pages_per_split, (length + page - 1) // page)

    num_pages = k_ref.shape[0]

    def body(p, carry):
        o, m, l = carry
        page_id = pt_ref[p]
        present = (page_id >= 0) & (page_id < num_pages)  # else "no page": masked, never used
        page_id = jnp.clip(page_id, 0, num_pages - 1)
        # Slots past the length or in a missing page are selected away (not weighted by 0:
        # 0 * NaN = NaN), so garbage stored there never reaches the output.
        slot = (p * page + jax.lax.broadcasted_iota(jnp.int32, (page, 1), 0) < length) & present
        k = jnp.where(slot, k_ref[page_id, :, :], 0)
        s = dot(q, k, trans_b=True) * scale
        if soft_cap is not None:
            s = soft_cap * jnp.tanh(s / soft_cap)
        pos = p * page + jax.lax.broadcasted_iota(jnp.int32, (g, page), 1)
        keep = (pos < length) & present
        s = jnp.where(keep, s, MASK_VALUE)
        m, alpha, prob, l = online_softmax_step(m, l, s, keep)
        v = jnp.where(slot, v_ref[page_id, :, :], 0)
        return alpha[:, None] * o + dot(prob.astype(v.dtype), v), m, l

    init = (jnp.zeros((g, v_ref.shape[-1]), jnp.float32), jnp.full((g,), MASK_VALUE, jnp.float32),
            jnp.zeros((g,), jnp.float32))
    o, m, l = jax.lax.fori_loop(first, jnp.maximum(first, last), body, init)
    o, lse = online_softmax_finish(o, m, l)
    o_ref[...] = o
    lse_ref[...] = lse


@functools.partial(jax.jit, static_argnames=("scale", "logits_soft_cap", "num_splits", "block", "interpret",
                                             "debug", "num_warps", "num_stages"))
def decode_attention(query, key_cache, value_cache, key_value_seq_lengths, page_table=None, *,
                     scale: float | None = None, logits_soft_cap: float | None = None, num_splits: int = 8,
                     block: int | None = None, interpret: bool = False, debug: bool = False, num_warps: int = 4,
                     num_stages: int | None = None):
    """``query [B, N, H]`` against a contiguous ``[B, S, K, H]`` or paged ``[P, page, K, H]`` cache -> ``[B, N, Hv]``.

    ``page_table [B, max_pages]`` selects the paged layout (page size a power of
    two >= 16); ``block`` is the contiguous layout's page size. ``num_splits``
    parallel programs share each sequence's pages. ``block`` and ``num_stages``
    default to 64 and 2 for 2-byte caches, 16 and 1 for float32 (exact float32
    tile matmuls need the registers: compiled offline for sm_80 / sm_90 at H=128,
    64 and 32 token pages spilled, 16 did not).
    """
    wide = jnp.dtype(key_cache.dtype).itemsize >= 4
    block = (16 if wide else 64) if block is None else block
    num_stages = (1 if wide else 2) if num_stages is None else num_stages
    b, n, h = query.shape
    kh, hv = key_cache.shape[2], value_cache.shape[-1]
    g = n // kh
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    cost = pl.estimate_cost(decode_attention_reference, query, key_cache, value_cache, key_value_seq_lengths,
                            page_table)  # the oracle beside the kernel
    if page_table is None:  # contiguous: view [B, S, K, H] as pages of `block` tokens
        s = key_cache.shape[1]
        page, sp = padded_tile(s, block)
        npg = sp // page
        k_pool = pad_axis(key_cache, 1, sp).reshape(b * npg, page, kh, h)
        v_pool = pad_axis(value_cache, 1, sp).reshape(b * npg, page, kh, hv)
        page_table = jnp.arange(b * npg, dtype=jnp.int32).reshape(b, npg)
    else:
        page = key_cache.shape[1]
        if not is_pow2(page) or page < MIN_BLOCK:
            raise ValueError(f"the Pallas decode kernel needs a power-of-two page size >= {MIN_BLOCK}, got {page}")
        k_pool, v_pool = key_cache, value_cache
    max_pages = page_table.shape[1]
    splits = max(1, min(num_splits, max_pages))
    pps = pl.cdiv(max_pages, splits)
    hp, hvp, gp = (max(MIN_BLOCK, pl.next_power_of_2(d)) for d in (h, hv, g))
    q = pad_axis(pad_axis(query.reshape(b, kh, g, h), 3, hp), 2, gp)
    k_pool = pad_axis(k_pool, 3, hp)
    v_pool = pad_axis(v_pool, 3, hvp)
    kernel = functools.partial(_kernel, scale=float(scale), soft_cap=logits_soft_cap, pages_per_split=pps, page=page)
    o, lse = pl.pallas_call(
        kernel,
        grid=(b, kh, splits),
        in_specs=[
            pl.BlockSpec((None, None, gp, hp), lambda bi, ki, si: (bi, ki, 0, 0)),
            pl.BlockSpec((k_pool.shape[0], page, None, hp), lambda bi, ki, si: (0, 0, ki, 0)),
            pl.BlockSpec((v_pool.shape[0], page, None, hvp), lambda bi, ki, si: (0, 0, ki, 0)),
            pl.BlockSpec((None, max_pages), lambda bi, ki, si: (bi, 0)),
            pl.BlockSpec((None,), lambda bi, ki, si: (bi,)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, gp, hvp), lambda bi, ki, si: (bi, ki, si, 0, 0)),
            pl.BlockSpec((None, None, None, gp), lambda bi, ki, si: (bi, ki, si, 0)),
        ],
        out_shape=[jax.ShapeDtypeStruct((b, kh, splits, gp, hvp), jnp.float32),
                   jax.ShapeDtypeStruct((b, kh, splits, gp), jnp.float32)],
        compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret, debug=debug, name="attn_jax_decode", cost_estimate=cost,
    )(q, k_pool, v_pool, page_table.astype(jnp.int32), key_value_seq_lengths.astype(jnp.int32))
    out, _ = merge_partials(o, lse, axis=2)  # an empty split (lse = MASK_VALUE) has weight 0
    out = jnp.where((key_value_seq_lengths > 0)[:, None, None, None], out, 0.0)
    return out[:, :, :g, :hv].reshape(b, n, hv).astype(query.dtype)


def decode_attention_reference(query, key_cache, value_cache, key_value_seq_lengths, page_table=None, *,
                               scale=None, logits_soft_cap=None):
    """Dense jnp oracle: gathers the pages, then a masked softmax over the whole cache."""
    b, n, h = query.shape
    if page_table is not None:
        key_cache = key_cache[page_table].reshape(b, -1, *key_cache.shape[2:])
        value_cache = value_cache[page_table].reshape(b, -1, *value_cache.shape[2:])
    s, kh = key_cache.shape[1], key_cache.shape[2]
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    q = query.reshape(b, kh, n // kh, h)
    logits = jnp.einsum("BKGH,BSKH->BKGS", q, key_cache, preferred_element_type=jnp.float32) * scale
    if logits_soft_cap is not None:
        logits = logits_soft_cap * jnp.tanh(logits / logits_soft_cap)
    keep = (jnp.arange(s)[None, :] < key_value_seq_lengths[:, None])[:, None, None, :]
    logits = jnp.where(keep, logits, MASK_VALUE)
    p = jnp.where(keep, jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)), 0.0)
    l = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum("BKGS,BSKH->BKGH", p / jnp.where(l == 0, 1.0, l), value_cache.astype(jnp.float32))
    return out.reshape(b, n, -1).astype(query.dtype)
