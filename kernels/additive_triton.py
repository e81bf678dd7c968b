"""Fused additive (Bahdanau / concat / pointer) attention in Pallas, Triton-style lowering.

``e_ts = vᵀ tanh(qp_t + kp_s)`` with ``qp = q W_q`` ``[B, T, A]`` and
``kp = k W_k`` ``[B, S, A]`` (projections stay XLA matmuls, outside). Written
everywhere else as a broadcast holding ``[B, T, S, A]``; here each program
holds one ``[block_q, block_k, block_a]`` tile of tanh features at a time:

* forward (grid: query blocks x batch): for each key block, the scores are
  accumulated over ``A`` in chunks of ``block_a``, then an online softmax and
  ``p @ value``; saves the logsumexp.
* backward, by recomputation (FlashAttention-2 style): ``delta = rowsum(dO∘O) -
  dlse`` in jnp; a key-block kernel gives d(kp), d(value) and a per-program
  partial d(v) (summed in jnp, so the result is deterministic); a query-block
  kernel gives d(qp). Each recomputes the scores, then the features chunk by
  chunk for their gradients ``ds · v · (1 - tanh²)``.

Masks: causal (key blocks beyond the diagonal skipped), key lengths and padding
folded into ``kv_ids`` (a key is visible iff its id is 0), and a boolean ``mask``
``[Bm, Tm, Sm]`` (pointer networks' already-chosen positions) as int8 tiles.
Rows that see no key give zeros, logsumexp ``-inf`` and zero gradients.
:func:`additive_attention_reference` is the plain-jnp oracle beside it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attn_jax.kernels._tiles import MIN_BLOCK, check_block, dot, pad_axis, padded_tile
from attn_jax.masks import MASK_VALUE, MaskSpec, and_masks, position_predicate
from attn_jax.softmax import (
    attention_vjp,
    empty_rows_to_neg_inf,
    online_softmax_finish,
    online_softmax_step,
    recomputed_probabilities,
)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Query/key tiles and the chunk of the attention dim A processed at once (powers of two >= 16)."""

    block_q: int = 16
    block_k: int = 16
    block_a: int = 16
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        for f in ("block_q", "block_k", "block_a"):
            check_block(f, getattr(self, f))

    @classmethod
    def get_default(cls) -> BlockSizes:
        # A [16, 16, 16] float32 feature tile is 32 values a thread at 4 warps.
        # Compiled offline (benchmarks.gpu_compile, sm_80 and sm_90, A=128): these
        # tiles take 96-166 registers and never spill; [32, 32, 32] spills in every
        # kernel, [32, 32, 16] at 4 warps spills in the backward, at 8 warps it
        # fits with 241 registers (no headroom). Larger A is looped over.
        return cls()




def _scores(qp_ref, kp_ref, w_ref, q_rows, k_rows, num_a_chunks, block_a):
    """``e [bq, bk] = Σ_a w_a tanh(qp[q, a] + kp[k, a])``, accumulated over A chunks.

    The chunks are a loop, not unrolled: unrolled, the compiler keeps every chunk's
    loads live at once (measured: 250+ registers a thread even at 16-wide tiles).
    """
    def chunk(c, e):
        a = pl.ds(c * block_a, block_a)
        feats = jnp.tanh(qp_ref[q_rows, a].astype(jnp.float32)[:, None, :]
                         + kp_ref[k_rows, a].astype(jnp.float32)[None, :, :])
        return e + jnp.sum(feats * w_ref[a].astype(jnp.float32)[None, None, :], axis=2)

    bq = qp_ref.shape[0] if q_rows == slice(None) else q_rows.size
    bk = kp_ref.shape[0] if k_rows == slice(None) else k_rows.size
    return jax.lax.fori_loop(0, num_a_chunks, chunk, jnp.zeros((bq, bk), jnp.float32))


def _keep(q0, k0, bq, bk, kv_ids, mask, causal):
    q_pos = q0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    k_pos = k0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    keep = position_predicate(q_pos, k_pos, is_causal=causal, window=None)
    if kv_ids is not None:
        keep = and_masks(keep, jnp.broadcast_to(kv_ids[None, :] == 0, (bq, bk)))
    if mask is not None:
        keep = and_masks(keep, mask != 0)
    return keep


def _mask_tile(ref, q_rows, k_rows):
    if ref is None:
        return None
    return ref[slice(None) if ref.shape[0] == 1 else q_rows, slice(None) if ref.shape[1] == 1 else k_rows]


def _fwd_kernel(qp_ref, kp_ref, val_ref, w_ref, mask_ref, kvid_ref, o_ref, lse_ref, *,
                causal, block_k, num_k_blocks, block_a, num_a_chunks):
    bq = qp_ref.shape[0]
    q0 = pl.program_id(0) * bq

    def body(j, carry):
        o, m, l = carry
        k0 = j * block_k
        ks = pl.ds(k0, block_k)
        e = _scores(qp_ref, kp_ref, w_ref, slice(None), ks, num_a_chunks, block_a)
        keep = _keep(q0, k0, bq, block_k, None if kvid_ref is None else kvid_ref[ks],
                     _mask_tile(mask_ref, slice(None), ks), causal)
        if keep is not None:
            e = jnp.where(keep, e, MASK_VALUE)
        m, alpha, p, l = online_softmax_step(m, l, e, keep)
        v = val_ref[ks, :]
        return alpha[:, None] * o + dot(p.astype(v.dtype), v), m, l

    _, hi = MaskSpec(is_causal=causal).key_block_range(q0, q0 + bq, block_k, num_k_blocks)
    init = (jnp.zeros((bq, val_ref.shape[-1]), jnp.float32), jnp.full((bq,), MASK_VALUE, jnp.float32),
            jnp.zeros((bq,), jnp.float32))
    o, m, l = jax.lax.fori_loop(0, hi, body, init)
    o, lse = online_softmax_finish(o, m, l)
    o_ref[...] = o.astype(o_ref.dtype)
    lse_ref[...] = lse


def _ds(qp_ref, kp_ref, val_ref, w_ref, mask_ref, kvid_ref, do, lse, delta, q0, k0, q_rows, k_rows,
        bq, bk, causal, num_a_chunks, block_a):
    """Recompute the probabilities of one tile; return ``(p, ds)`` (``ds = p ∘ (dP - delta)``)."""
    e = _scores(qp_ref, kp_ref, w_ref, q_rows, k_rows, num_a_chunks, block_a)
    keep = _keep(q0, k0, bq, bk, None if kvid_ref is None else kvid_ref[k_rows],
                 _mask_tile(mask_ref, q_rows, k_rows), causal)
    p = recomputed_probabilities(e, lse, keep)
    v = val_ref[k_rows, :]
    dp = dot(do, v, trans_b=True)
    return p, p * (dp - delta[:, None])


def _feature_grads(qp_ref, kp_ref, w_ref, ds, q_rows, k_rows, c, block_a):
    """For A chunk ``c``: ``g [bq, bk, ba] = ds · w · (1 - tanh²)`` and ``Σ ds · tanh`` over the tile."""
    a = pl.ds(c * block_a, block_a)
    feats = jnp.tanh(qp_ref[q_rows, a].astype(jnp.float32)[:, None, :]
                     + kp_ref[k_rows, a].astype(jnp.float32)[None, :, :])
    g = ds[:, :, None] * w_ref[a].astype(jnp.float32)[None, None, :] * (1.0 - feats * feats)
    dw = jnp.sum(jnp.sum(ds[:, :, None] * feats, axis=0), axis=0)
    return g, dw


def _zero_chunks(ref, num_a_chunks, block_a):
    """Zero an output block ``[..., A]`` chunk by chunk (A need not be a power of two; each chunk is)."""
    def chunk(c, carry):
        idx = (slice(None),) * (ref.ndim - 1) + (pl.ds(c * block_a, block_a),)
        ref[idx] = jnp.zeros(ref.shape[:-1] + (block_a,), jnp.float32)
        return carry

    jax.lax.fori_loop(0, num_a_chunks, chunk, 0)


def _dkv_kernel(qp_ref, kp_ref, val_ref, w_ref, mask_ref, kvid_ref, do_ref, lse_ref, delta_ref,
                dkp_ref, dval_ref, dw_ref, *, causal, block_q, num_q_blocks, block_a, num_a_chunks):
    """d(kp) and d(w) accumulate in their float32 output blocks, one A chunk at a time."""
    bk = kp_ref.shape[0]
    k0 = pl.program_id(0) * bk
    _zero_chunks(dkp_ref, num_a_chunks, block_a)
    _zero_chunks(dw_ref, num_a_chunks, block_a)

    def body(i, dval):
        q0 = i * block_q
        qs = pl.ds(q0, block_q)
        do = do_ref[qs, :]
        p, ds = _ds(qp_ref, kp_ref, val_ref, w_ref, mask_ref, kvid_ref, do, lse_ref[qs], delta_ref[qs],
                    q0, k0, qs, slice(None), block_q, bk, causal, num_a_chunks, block_a)

        def chunk(c, carry):
            a = pl.ds(c * block_a, block_a)
            g, dw_c = _feature_grads(qp_ref, kp_ref, w_ref, ds, qs, slice(None), c, block_a)
            dkp_ref[:, a] = dkp_ref[:, a] + jnp.sum(g, axis=0)
            dw_ref[a] = dw_ref[a] + dw_c
            return carry

        jax.lax.fori_loop(0, num_a_chunks, chunk, 0)
        return dval + dot(p.astype(do.dtype), do, trans_a=True)

    lo, _ = MaskSpec(is_causal=causal).query_block_range(k0, k0 + bk, block_q, num_q_blocks)
    dval = jax.lax.fori_loop(lo, num_q_blocks, body, jnp.zeros((bk, val_ref.shape[-1]), jnp.float32))
    dval_ref[...] = dval.astype(dval_ref.dtype)


def _dq_kernel(qp_ref, kp_ref, val_ref, w_ref, mask_ref, kvid_ref, do_ref, lse_ref, delta_ref, dqp_ref, *,
               causal, block_k, num_k_blocks, block_a, num_a_chunks):
    """d(qp) accumulates in its float32 output block, one A chunk at a time."""
    bq = qp_ref.shape[0]
    q0 = pl.program_id(0) * bq
    do, lse, delta = do_ref[...], lse_ref[...], delta_ref[...]
    _zero_chunks(dqp_ref, num_a_chunks, block_a)

    def body(j, carry):
        k0 = j * block_k
        ks = pl.ds(k0, block_k)
        _, ds = _ds(qp_ref, kp_ref, val_ref, w_ref, mask_ref, kvid_ref, do, lse, delta,
                    q0, k0, slice(None), ks, bq, block_k, causal, num_a_chunks, block_a)

        def chunk(c, carry):
            a = pl.ds(c * block_a, block_a)
            g, _ = _feature_grads(qp_ref, kp_ref, w_ref, ds, slice(None), ks, c, block_a)
            dqp_ref[:, a] = dqp_ref[:, a] + jnp.sum(g, axis=1)
            return carry

        return jax.lax.fori_loop(0, num_a_chunks, chunk, carry)

    _, hi = MaskSpec(is_causal=causal).key_block_range(q0, q0 + bq, block_k, num_k_blocks)
    jax.lax.fori_loop(0, hi, body, 0)


# --- pallas_call wrappers ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Static:
    causal: bool
    block_sizes: BlockSizes
    interpret: bool
    debug: bool


def _common_specs(mask, kv_ids, t_block, s_block, t_index, s_index, tp, sp, a, dv, q_index_map, k_index_map):
    """qp, kp, value, w, mask, kv_ids specs for a (block, batch) grid."""
    mask_spec = None
    if mask is not None:
        bm, tm, sm = mask.shape
        mask_spec = pl.BlockSpec(
            (None, 1 if tm == 1 else t_block, 1 if sm == 1 else s_block),
            lambda x, b: (b if bm > 1 else 0, t_index(x) if tm > 1 else 0, s_index(x) if sm > 1 else 0),
        )
    return [
        pl.BlockSpec((None, t_block, a), q_index_map),
        pl.BlockSpec((None, s_block, a), k_index_map),
        pl.BlockSpec((None, s_block, dv), k_index_map),
        pl.BlockSpec((a,), lambda x, b: (0,)),
        mask_spec,
        None if kv_ids is None else pl.BlockSpec((None, s_block), lambda x, b: (b, s_index(x))),
    ]


def _call(kernel, grid, in_specs, out_specs, out_shape, st, name, *args, cost=None):
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=st.block_sizes.num_warps,
                                             num_stages=st.block_sizes.num_stages),
        interpret=st.interpret, debug=st.debug, name=name, cost_estimate=cost,
    )(*args)


def _forward(qp, kp, val, w, mask, kv_ids, st: _Static):
    b, tp, a = qp.shape
    sp, dv = val.shape[1], val.shape[2]
    bs = st.block_sizes
    bq, bk = min(bs.block_q, tp), min(bs.block_k, sp)
    kernel = functools.partial(_fwd_kernel, causal=st.causal, block_k=bk, num_k_blocks=sp // bk,
                               block_a=bs.block_a, num_a_chunks=a // bs.block_a)
    in_specs = _common_specs(mask, kv_ids, bq, sp, lambda i: i, lambda i: 0, tp, sp, a, dv,
                             lambda i, bi: (bi, i, 0), lambda i, bi: (bi, 0, 0))
    out_shape = [jax.ShapeDtypeStruct((b, tp, dv), qp.dtype), jax.ShapeDtypeStruct((b, tp), jnp.float32)]
    out_specs = [pl.BlockSpec((None, bq, dv), lambda i, bi: (bi, i, 0)),
                 pl.BlockSpec((None, bq), lambda i, bi: (bi, i))]
    return _call(kernel, (tp // bq, b), in_specs, out_specs, out_shape, st, "attn_jax_additive_fwd",
                 qp, kp, val, w, mask, kv_ids, cost=pl.estimate_cost(  # the oracle beside the kernel
                     additive_attention_reference, qp, kp, val, w, None if mask is None else mask != 0))


def _backward(qp, kp, val, w, mask, kv_ids, do, lse, delta, st: _Static):
    b, tp, a = qp.shape
    sp, dv = val.shape[1], val.shape[2]
    bs = st.block_sizes
    bq, bk = min(bs.block_q, tp), min(bs.block_k, sp)
    chunks = dict(block_a=bs.block_a, num_a_chunks=a // bs.block_a)
    rows = [pl.BlockSpec((None, tp, dv), lambda j, bi: (bi, 0, 0)), pl.BlockSpec((None, tp), lambda j, bi: (bi, 0)),
            pl.BlockSpec((None, tp), lambda j, bi: (bi, 0))]
    in_specs = _common_specs(mask, kv_ids, tp, bk, lambda j: 0, lambda j: j, tp, sp, a, dv,
                             lambda j, bi: (bi, 0, 0), lambda j, bi: (bi, j, 0)) + rows
    dkp, dval, dw = _call(
        functools.partial(_dkv_kernel, causal=st.causal, block_q=bq, num_q_blocks=tp // bq, **chunks),
        (sp // bk, b), in_specs,
        [pl.BlockSpec((None, bk, a), lambda j, bi: (bi, j, 0)), pl.BlockSpec((None, bk, dv), lambda j, bi: (bi, j, 0)),
         pl.BlockSpec((None, None, a), lambda j, bi: (bi, j, 0))],
        [jax.ShapeDtypeStruct(kp.shape, jnp.float32), jax.ShapeDtypeStruct(val.shape, val.dtype),
         jax.ShapeDtypeStruct((b, sp // bk, a), jnp.float32)],
        st, "attn_jax_additive_dkv", qp, kp, val, w, mask, kv_ids, do, lse, delta)
    rows = [pl.BlockSpec((None, bq, dv), lambda i, bi: (bi, i, 0)), pl.BlockSpec((None, bq), lambda i, bi: (bi, i)),
            pl.BlockSpec((None, bq), lambda i, bi: (bi, i))]
    in_specs = _common_specs(mask, kv_ids, bq, sp, lambda i: i, lambda i: 0, tp, sp, a, dv,
                             lambda i, bi: (bi, i, 0), lambda i, bi: (bi, 0, 0)) + rows
    dqp = _call(
        functools.partial(_dq_kernel, causal=st.causal, block_k=bk, num_k_blocks=sp // bk, **chunks),
        (tp // bq, b), in_specs, pl.BlockSpec((None, bq, a), lambda i, bi: (bi, i, 0)),
        jax.ShapeDtypeStruct(qp.shape, jnp.float32), st, "attn_jax_additive_dq",
        qp, kp, val, w, mask, kv_ids, do, lse, delta)
    return dqp.astype(qp.dtype), dkp.astype(kp.dtype), dval, jnp.sum(dw, axis=(0, 1)).astype(w.dtype)


def _fused_backward(st, arrays, out, lse, dout, dlse):
    qp, kp, val, w, mask, kv_ids = arrays
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1) - dlse.astype(jnp.float32)
    return _backward(qp, kp, val, w, mask, kv_ids, dout.astype(out.dtype), lse, delta, st)


# (qp, kp, value, w) get gradients; (mask, kv_ids) do not.
_fused = attention_vjp(_forward, _fused_backward, num_differentiable=4)




@functools.partial(jax.jit, static_argnames=("is_causal", "block_sizes", "interpret", "debug"))
def additive_attention(qp, kp, value, w, mask=None, *, key_value_seq_lengths=None, is_causal=False,
                       block_sizes: BlockSizes | None = None, interpret: bool = False, debug: bool = False):
    """Fused additive attention on projected inputs.

    Args:
      qp: ``[B, T, A]`` projected queries; kp: ``[B, S, A]`` projected keys;
      value: ``[B, S, Dv]``; w: ``[A]`` (Bahdanau's v).
      mask: boolean ``[Bm, Tm, Sm]`` (each axis 1 or full), True = attend.
      key_value_seq_lengths: ``[B]`` int.

    Returns:
      ``out [B, T, Dv]`` (value dtype promoted with qp) and ``lse [B, T]``
      float32, ``-inf`` for rows with no visible key.
    """
    bs = block_sizes or BlockSizes.get_default()
    b, t, a = qp.shape
    s, dv = kp.shape[1], value.shape[-1]
    dtype = jnp.promote_types(qp.dtype, value.dtype)
    _, tp = padded_tile(t, bs.block_q)
    _, sp = padded_tile(s, bs.block_k)
    ap = pl.cdiv(a, bs.block_a) * bs.block_a
    dvp = max(MIN_BLOCK, pl.next_power_of_2(dv))
    qp_ = pad_axis(pad_axis(qp.astype(dtype), 2, ap), 1, tp)  # zero-padded A adds tanh(0)·0 = 0
    kp_ = pad_axis(pad_axis(kp.astype(dtype), 2, ap), 1, sp)
    val_ = pad_axis(pad_axis(value.astype(dtype), 2, dvp), 1, sp)
    w_ = pad_axis(w.astype(dtype), 0, ap)
    if mask is not None:
        mask = pad_axis(pad_axis(mask.astype(jnp.int8), 1, tp, broadcast=True), 2, sp, broadcast=True)
    kv_ids = None
    if key_value_seq_lengths is not None or sp != s:
        pos = jnp.arange(sp, dtype=jnp.int32)[None, :]
        valid = pos < s
        if key_value_seq_lengths is not None:
            valid = valid & (pos < key_value_seq_lengths[:, None])
        kv_ids = jnp.broadcast_to(jnp.where(valid, 0, 1), (b, sp)).astype(jnp.int32)
    out, lse = _fused(qp_, kp_, val_, w_, mask, kv_ids, _Static(bool(is_causal), bs, interpret, debug))
    return out[:, :t, :dv], empty_rows_to_neg_inf(lse[:, :t])


def additive_attention_reference(qp, kp, value, w, mask=None, *, key_value_seq_lengths=None, is_causal=False):
    """Dense jnp oracle (holds ``[B, T, S, A]``): ``(out [B, T, Dv], lse [B, T])``."""
    e = jnp.einsum("BTSA,A->BTS", jnp.tanh(qp[:, :, None, :] + kp[:, None, :, :]), w).astype(jnp.float32)
    t, s = e.shape[1], e.shape[2]
    keep = MaskSpec(is_causal=is_causal, kv_lengths=key_value_seq_lengths).block(0, t, 0, s)
    keep = and_masks(keep, mask)
    keep = jnp.ones(e.shape, bool) if keep is None else jnp.broadcast_to(keep, e.shape)
    e = jnp.where(keep, e, MASK_VALUE)
    m = jnp.max(e, axis=-1, keepdims=True)
    p = jnp.where(keep, jnp.exp(e - m), 0.0)
    l = jnp.sum(p, axis=-1)
    l_safe = jnp.where(l == 0, 1.0, l)
    out = jnp.einsum("BTS,BSD->BTD", p / l_safe[..., None], value.astype(jnp.float32))
    lse = jnp.where(l == 0, -jnp.inf, m[..., 0] + jnp.log(l_safe))
    return out.astype(jnp.promote_types(qp.dtype, value.dtype)), lse
