"""Flash attention in Pallas, Triton-style lowering (GPU; interpret mode on CPU).

Reading order, after jax's Pallas ops: :class:`BlockSizes`; the kernel bodies
(``_fwd_kernel``, ``_dkv_kernel``, ``_dq_kernel``) and the block helpers they
share; the ``pallas_call`` wrappers; :func:`flash_attention` under
``jax.custom_vjp``; and :func:`flash_attention_reference` (from
:mod:`attn_jax.kernels.reference`), the plain-jnp oracle that also gives the
forward's ``pl.CostEstimate``.

Layout inside the kernels is the public one, ``[B, T, N, H]``; K/V are indexed
by ``n // G`` in the BlockSpecs, so GQA/MQA never repeat K/V in memory.

What the kernels see of a mask:

* causal and local window: static, evaluated per block with
  ``attn_jax.masks.position_predicate``; key blocks outside
  ``MaskSpec.key_block_range`` (and query blocks outside ``query_block_range``
  in the backward) are skipped, not computed and masked;
* everything per position (segment ids, query/key lengths, the padding that
  makes T and S multiples of the blocks) is folded into one pair of int32 id
  arrays ``q_ids [B, Tp]`` and ``kv_ids [B, Sp]``: a query and key attend only
  when their ids are equal, and padding/out-of-length positions get ids that
  match nothing (``attn_jax.kernels._tiles.Q_PAD_ID`` / ``KV_PAD_ID``);
* an additive ``bias`` and a boolean ``mask`` (as int8), each broadcastable to
  ``[B, N, T, S]`` with size-1 axes kept size 1 in memory.

Attention dropout: each kernel recomputes the keep mask of its block from the
two int32 seed words and the absolute ``(b, n, i, j)`` positions
(:mod:`attn_jax.dropout`), the hash every implementation shares; the forward
drops only the ``P @ V`` term (the normaliser keeps every weight), the backward
uses ``P ∘ M`` for dV and ``M ∘ (dO Vᵀ)`` for dP.

Forward: online softmax over key blocks; saves the logsumexp (MASK_VALUE for
rows that see nothing). Backward, FlashAttention-2: ``delta = rowsum(dO∘O) -
dlse`` in jnp, a dK/dV kernel over key blocks (looping over the G query heads of
its kv head and over query blocks), a dQ kernel over query blocks, and, only if
the bias gradient is used, a dS kernel whose output is reduced to the bias'
shape. Every reduction has a fixed order: the backward is deterministic.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attn_jax import dropout as _dropout
from attn_jax.kernels._tiles import (
    MIN_BLOCK,
    check_block,
    default_num_warps,
    dot,
    pad_axis,
    padded_tile,
    position_ids,
    reduce_to_bias,
)
from attn_jax.kernels.reference import attention_cost, attention_reference
from attn_jax.masks import MASK_VALUE, MaskSpec, and_masks, position_predicate
from attn_jax.softmax import (
    attention_vjp,
    bias_and_cap,
    empty_rows_to_neg_inf,
    online_softmax_finish,
    online_softmax_step,
    recomputed_probabilities,
)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the forward and the two backward kernels (powers of two, >= 16)."""

    block_q: int = 64
    block_k: int = 64
    block_q_dkv: int = 32
    block_kv_dkv: int = 64
    block_q_dq: int = 64
    block_kv_dq: int = 32
    num_warps: int | None = None
    num_stages: int = 2

    def __post_init__(self):
        for f in ("block_q", "block_k", "block_q_dkv", "block_kv_dkv", "block_q_dq", "block_kv_dq"):
            check_block(f, getattr(self, f))
        if self.num_warps is not None and self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"BlockSizes.num_warps={self.num_warps!r} must be 1, 2, 4, 8 or 16")
        if self.num_stages < 1:
            raise ValueError(f"BlockSizes.num_stages={self.num_stages!r} must be >= 1")

    @classmethod
    def get_default(cls, head_dim: int = 64, dtype: Any = jnp.bfloat16, device_kind: str | None = None):
        """Defaults per head dim, dtype and GPU generation.

        Larger head dims use smaller key tiles so the ``[block_q, H]`` accumulator
        and ``[block_k, H]`` K/V tiles fit in shared memory. Hopper/Blackwell-class
        parts (more shared memory) take 128-row query tiles in 2-byte dtypes.
        float32 is exact here (no TF32: the tile matmuls are FMA loops), which costs
        registers: half the tiles and no software pipelining. Compiled
        offline for sm_80 and sm_90 (``benchmarks.gpu_compile``) these defaults do
        not spill; float32 with 2 stages, or with the 2-byte Hopper tiles, did.
        These are starting points; :mod:`attn_jax.kernels.autotune` measures and
        caches better ones per device and shape.
        """
        kind = (device_kind or "").lower()
        big_smem = any(x in kind for x in ("h100", "h200", "h800", "gh200", "b200", "gb200"))
        wide = jnp.dtype(dtype).itemsize >= 4
        hp = max(MIN_BLOCK, pl.next_power_of_2(head_dim))
        if hp <= 64:
            bq, bk = (128, 64) if big_smem and not wide else (64, 64)
        elif hp <= 128:
            bq, bk = (128, 64) if big_smem and not wide else (64, 32)
        else:
            bq, bk = 64, 32
        if wide:
            bq, bk = max(MIN_BLOCK, bq // 2), max(MIN_BLOCK, bk // 2)
        small = 32 if hp <= 128 and not wide else MIN_BLOCK
        return cls(
            block_q=bq,
            block_k=bk,
            block_q_dkv=small,
            block_kv_dkv=bk,
            block_q_dq=bk,
            block_kv_dq=small,
            # float32 warps as measured offline: 4 at H=64 and 8 at H=128 each spilled a little on sm_90
            num_warps=(8 if hp <= 64 else 4) if wide else default_num_warps(head_dim),
            num_stages=1 if wide else 2,
        )


# --- shared block helpers (backend-neutral jnp on loaded tiles) ---------------------------------




def _block_logits(q, k, bias, *, scale, soft_cap):
    """``q [bq, H]``, ``k [bk, H]`` -> f32 logits ``[bq, bk]`` and tanh (for soft-cap grads)."""
    return bias_and_cap(dot(q, k, trans_b=True) * scale, bias, soft_cap)


def _block_keep(q0, k0, bq, bk, q_ids, kv_ids, mask, *, causal, window):
    """Visibility ``[bq, bk]`` of the block at (q0, k0), or None when nothing masks."""
    q_pos = q0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    k_pos = k0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    keep = position_predicate(q_pos, k_pos, is_causal=causal, window=window)
    if q_ids is not None:
        keep = and_masks(keep, q_ids[:, None] == kv_ids[None, :])
    if mask is not None:
        keep = and_masks(keep, mask != 0)
    return keep


def _dropout_multiplier(seed_ref, dropout, b, n, q0, k0, bq, bk):
    """``keep_scale`` where the block's weights are kept, else 0: ``[bq, bk]`` float32."""
    q_pos = q0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    k_pos = k0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    kept = _dropout.block_keep((seed_ref[0], seed_ref[1]), dropout, b, n, q_pos, k_pos)
    return jnp.where(kept, jnp.float32(dropout.keep_scale), jnp.float32(0.0))


def _bias_tile(ref, q_slice, k_slice, head=None):
    """Load a bias/mask tile; axes kept at size 1 (broadcast) are loaded whole.

    ``head`` indexes a leading head axis (the dK/dV kernel's block of G heads)
    in the same indexer: Triton lowering takes one indexer per load.
    """
    if ref is None:
        return None
    rows = slice(None) if ref.shape[-2] == 1 else q_slice
    cols = slice(None) if ref.shape[-1] == 1 else k_slice
    if head is None:
        return ref[rows, cols]
    return ref[0 if ref.shape[0] == 1 else head, rows, cols]


# --- kernels ---------------------------------------------------------------------------------


def _fwd_kernel(q_ref, k_ref, v_ref, bias_ref, mask_ref, qid_ref, kvid_ref, seed_ref, o_ref, lse_ref, *,
                scale, soft_cap, causal, window, block_k, num_k_blocks, dropout):
    bq = q_ref.shape[0]
    i, b, n = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    q0 = i * bq
    q = q_ref[...]
    q_ids = None if qid_ref is None else qid_ref[...]
    hv = v_ref.shape[-1]

    def body(j, carry):
        o, m, l = carry
        k0 = j * block_k
        ks = pl.ds(k0, block_k)
        k = k_ref[ks, :]
        s, _ = _block_logits(q, k, _bias_tile(bias_ref, slice(None), ks), scale=scale, soft_cap=soft_cap)
        keep = _block_keep(q0, k0, bq, block_k, q_ids, None if kvid_ref is None else kvid_ref[ks],
                           _bias_tile(mask_ref, slice(None), ks), causal=causal, window=window)
        if keep is not None:
            s = jnp.where(keep, s, MASK_VALUE)
        m_new, alpha, p, l = online_softmax_step(m, l, s, keep)
        if dropout.active:
            p = p * _dropout_multiplier(seed_ref, dropout, b, n, q0, k0, bq, block_k)
        v = v_ref[ks, :]
        o = alpha[:, None] * o + dot(p.astype(v.dtype), v)
        return o, m_new, l

    lo, hi = MaskSpec(is_causal=causal, window=window).key_block_range(q0, q0 + bq, block_k, num_k_blocks)
    init = (jnp.zeros((bq, hv), jnp.float32), jnp.full((bq,), MASK_VALUE, jnp.float32),
            jnp.zeros((bq,), jnp.float32))
    o, m, l = jax.lax.fori_loop(lo, hi, body, init)
    o, lse = online_softmax_finish(o, m, l)
    o_ref[...] = o.astype(o_ref.dtype)
    lse_ref[...] = lse


def _dkv_kernel(q_ref, k_ref, v_ref, bias_ref, mask_ref, qid_ref, kvid_ref, seed_ref, do_ref, lse_ref, delta_ref,
                dk_ref, dv_ref, *, scale, soft_cap, causal, window, block_q, num_q_blocks, groups, dropout):
    bk = k_ref.shape[0]
    j, b, kv_head = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    k0 = j * bk
    k = k_ref[...]
    v = v_ref[...]
    kv_ids = None if kvid_ref is None else kvid_ref[...]
    lo, hi = MaskSpec(is_causal=causal, window=window).query_block_range(k0, k0 + bk, block_q, num_q_blocks)
    dk = jnp.zeros(k.shape, jnp.float32)
    dv = jnp.zeros(v.shape, jnp.float32)
    for g in range(groups):  # static: the G query heads that share this kv head

        def body(i, carry, g=g):
            dk, dv = carry
            q0 = i * block_q
            qs = pl.ds(q0, block_q)
            q = q_ref[qs, g, :]
            do = do_ref[qs, g, :]
            s, tanh = _block_logits(q, k, _bias_tile(bias_ref, qs, slice(None), g), scale=scale, soft_cap=soft_cap)
            keep = _block_keep(q0, k0, block_q, bk, None if qid_ref is None else qid_ref[qs], kv_ids,
                               _bias_tile(mask_ref, qs, slice(None), g), causal=causal, window=window)
            p = recomputed_probabilities(s, lse_ref[g, qs], keep)
            dp = dot(do, v, trans_b=True)
            p_dropped = p
            if dropout.active:
                mult = _dropout_multiplier(seed_ref, dropout, b, kv_head * groups + g, q0, k0, block_q, bk)
                p_dropped, dp = p * mult, dp * mult
            dv = dv + dot(p_dropped.astype(do.dtype), do, trans_a=True)
            ds = p * (dp - delta_ref[g, qs][:, None])
            if tanh is not None:
                ds = ds * (1.0 - tanh * tanh)
            dk = dk + dot(ds.astype(q.dtype), q, trans_a=True)
            return dk, dv

        dk, dv = jax.lax.fori_loop(lo, hi, body, (dk, dv))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, bias_ref, mask_ref, qid_ref, kvid_ref, seed_ref, do_ref, lse_ref, delta_ref,
               dq_ref, ds_ref, *, scale, soft_cap, causal, window, block_k, num_k_blocks, dropout):
    """dQ over the key blocks of one query block; with ``ds_ref`` writes dS (for dbias) instead."""
    bq = q_ref.shape[0]
    i, b, n = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    q0 = i * bq
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    q_ids = None if qid_ref is None else qid_ref[...]

    def body(j, dq):
        k0 = j * block_k
        ks = pl.ds(k0, block_k)
        k = k_ref[ks, :]
        v = v_ref[ks, :]
        s, tanh = _block_logits(q, k, _bias_tile(bias_ref, slice(None), ks), scale=scale, soft_cap=soft_cap)
        keep = _block_keep(q0, k0, bq, block_k, q_ids, None if kvid_ref is None else kvid_ref[ks],
                           _bias_tile(mask_ref, slice(None), ks), causal=causal, window=window)
        p = recomputed_probabilities(s, lse, keep)
        dp = dot(do, v, trans_b=True)
        if dropout.active:
            dp = dp * _dropout_multiplier(seed_ref, dropout, b, n, q0, k0, bq, block_k)
        ds = p * (dp - delta[:, None])
        if tanh is not None:
            ds = ds * (1.0 - tanh * tanh)
        if ds_ref is not None:
            ds_ref[:, ks] = ds
            return dq
        return dq + dot(ds.astype(k.dtype), k)

    if ds_ref is None:
        lo, hi = MaskSpec(is_causal=causal, window=window).key_block_range(q0, q0 + bq, block_k, num_k_blocks)
    else:  # every dS block is written (zeros where masked), none left uninitialised
        lo, hi = 0, num_k_blocks
    dq = jax.lax.fori_loop(lo, hi, body, jnp.zeros(q.shape, jnp.float32))
    if dq_ref is not None:
        dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


# --- pallas_call wrappers ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Static:
    scale: float
    soft_cap: float | None
    causal: bool
    window: tuple[int, int] | None
    block_sizes: BlockSizes
    interpret: bool
    debug: bool
    dropout: _dropout.Dropout = _dropout.Dropout()


def _params(st: _Static, head_dim: int):
    warps = st.block_sizes.num_warps or default_num_warps(head_dim)
    return plgpu.CompilerParams(num_warps=warps, num_stages=st.block_sizes.num_stages)


def _bn_spec(x, block_t, block_s, t_index, s_index, head_index):
    """BlockSpec of a ``[Bb, Nb, Tb, Sb]`` bias/mask for a grid whose batch id is program 1."""
    if x is None:
        return None
    bb, nb, tb, sb = x.shape
    bt = 1 if tb == 1 else block_t
    bs = 1 if sb == 1 else block_s

    def index(*ids):
        return (
            ids[1] if bb > 1 else 0,
            head_index(ids) if nb > 1 else 0,
            t_index(ids) if tb > 1 else 0,
            s_index(ids) if sb > 1 else 0,
        )

    return pl.BlockSpec((None, None, bt, bs), index)


def _seed_spec(seed):
    return None if seed is None else pl.BlockSpec((2,), lambda *ids: (0,))


def _query_grid_specs(bias, mask, q_ids, kv_ids, seed, bq, sp, h, hv, g):
    """In-specs of a (query block, batch, head) grid: q tile, whole K/V rows of its kv head, bias/mask/ids."""
    return [
        pl.BlockSpec((None, bq, None, h), lambda i, bi, ni: (bi, i, ni, 0)),
        pl.BlockSpec((None, sp, None, h), lambda i, bi, ni: (bi, 0, ni // g, 0)),
        pl.BlockSpec((None, sp, None, hv), lambda i, bi, ni: (bi, 0, ni // g, 0)),
        _bn_spec(bias, bq, sp, lambda ids: ids[0], lambda ids: 0, lambda ids: ids[2]),
        _bn_spec(mask, bq, sp, lambda ids: ids[0], lambda ids: 0, lambda ids: ids[2]),
        None if q_ids is None else pl.BlockSpec((None, bq), lambda i, bi, ni: (bi, i)),
        None if kv_ids is None else pl.BlockSpec((None, sp), lambda i, bi, ni: (bi, 0)),
        _seed_spec(seed),
    ]


def _forward(q, k, v, bias, mask, q_ids, kv_ids, seed, st: _Static):
    b, tp, n, h = q.shape
    sp, kh, hv = k.shape[1], k.shape[2], v.shape[-1]
    g = n // kh
    bs = st.block_sizes
    bq, bk = min(bs.block_q, tp), min(bs.block_k, sp)
    grid = (tp // bq, b, n)
    kernel = functools.partial(_fwd_kernel, scale=st.scale, soft_cap=st.soft_cap, causal=st.causal,
                               window=st.window, block_k=bk, num_k_blocks=sp // bk, dropout=st.dropout)
    in_specs = _query_grid_specs(bias, mask, q_ids, kv_ids, seed, bq, sp, h, hv, g)
    out_shape = [jax.ShapeDtypeStruct((b, tp, n, hv), q.dtype), jax.ShapeDtypeStruct((b, n, tp), jnp.float32)]
    out_specs = [
        pl.BlockSpec((None, bq, None, hv), lambda i, bi, ni: (bi, i, ni, 0)),
        pl.BlockSpec((None, None, bq), lambda i, bi, ni: (bi, ni, i)),
    ]
    cost = attention_cost(q, k, v, bias, mask, is_causal=st.causal, window=st.window, logits_soft_cap=st.soft_cap)
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=_params(st, h), interpret=st.interpret, debug=st.debug, name="attn_jax_flash_fwd",
        cost_estimate=cost,
    )(q, k, v, bias, mask, q_ids, kv_ids, seed)


def _backward_dkv(q, k, v, bias, mask, q_ids, kv_ids, seed, do, lse, delta, st: _Static):
    b, tp, n, h = q.shape
    sp, kh, hv = k.shape[1], k.shape[2], v.shape[-1]
    g = n // kh
    bs = st.block_sizes
    bq, bk = min(bs.block_q_dkv, tp), min(bs.block_kv_dkv, sp)
    grid = (sp // bk, b, kh)

    def grouped(x):  # bias/mask [Bb, Nb, Tb, Sb]: a block of G heads (or the single broadcast head)
        if x is None:
            return None
        bb, nb, tb, sb = x.shape
        return pl.BlockSpec(
            (None, g if nb > 1 else 1, tb, bk if sb > 1 else 1),
            lambda j, bi, ki: (bi if bb > 1 else 0, ki if nb > 1 else 0, 0, j if sb > 1 else 0),
        )

    kernel = functools.partial(_dkv_kernel, scale=st.scale, soft_cap=st.soft_cap, causal=st.causal,
                               window=st.window, block_q=bq, num_q_blocks=tp // bq, groups=g, dropout=st.dropout)
    in_specs = [
        pl.BlockSpec((None, tp, g, h), lambda j, bi, ki: (bi, 0, ki, 0)),
        pl.BlockSpec((None, bk, None, h), lambda j, bi, ki: (bi, j, ki, 0)),
        pl.BlockSpec((None, bk, None, hv), lambda j, bi, ki: (bi, j, ki, 0)),
        grouped(bias),
        grouped(mask),
        None if q_ids is None else pl.BlockSpec((None, tp), lambda j, bi, ki: (bi, 0)),
        None if kv_ids is None else pl.BlockSpec((None, bk), lambda j, bi, ki: (bi, j)),
        _seed_spec(seed),
        pl.BlockSpec((None, tp, g, hv), lambda j, bi, ki: (bi, 0, ki, 0)),
        pl.BlockSpec((None, g, tp), lambda j, bi, ki: (bi, ki, 0)),
        pl.BlockSpec((None, g, tp), lambda j, bi, ki: (bi, ki, 0)),
    ]
    out_shape = [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)]
    out_specs = [
        pl.BlockSpec((None, bk, None, h), lambda j, bi, ki: (bi, j, ki, 0)),
        pl.BlockSpec((None, bk, None, hv), lambda j, bi, ki: (bi, j, ki, 0)),
    ]
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=_params(st, h), interpret=st.interpret, debug=st.debug, name="attn_jax_flash_dkv",
    )(q, k, v, bias, mask, q_ids, kv_ids, seed, do, lse, delta)


def _backward_dq(q, k, v, bias, mask, q_ids, kv_ids, seed, do, lse, delta, st: _Static, *, want_ds: bool):
    b, tp, n, h = q.shape
    sp, kh, hv = k.shape[1], k.shape[2], v.shape[-1]
    g = n // kh
    bs = st.block_sizes
    bq, bk = min(bs.block_q_dq, tp), min(bs.block_kv_dq, sp)
    grid = (tp // bq, b, n)
    body = functools.partial(_dq_kernel, scale=st.scale, soft_cap=st.soft_cap, causal=st.causal,
                             window=st.window, block_k=bk, num_k_blocks=sp // bk, dropout=st.dropout)
    if want_ds:
        def kernel(*refs):
            return body(*refs[:11], None, refs[11])

        out_shape = jax.ShapeDtypeStruct((b, n, tp, sp), jnp.float32)
        out_specs = pl.BlockSpec((None, None, bq, sp), lambda i, bi, ni: (bi, ni, i, 0))
    else:
        def kernel(*refs):
            return body(*refs[:11], refs[11], None)

        out_shape = jax.ShapeDtypeStruct(q.shape, q.dtype)
        out_specs = pl.BlockSpec((None, bq, None, h), lambda i, bi, ni: (bi, i, ni, 0))
    in_specs = [
        *_query_grid_specs(bias, mask, q_ids, kv_ids, seed, bq, sp, h, hv, g),
        pl.BlockSpec((None, bq, None, hv), lambda i, bi, ni: (bi, i, ni, 0)),
        pl.BlockSpec((None, None, bq), lambda i, bi, ni: (bi, ni, i)),
        pl.BlockSpec((None, None, bq), lambda i, bi, ni: (bi, ni, i)),
    ]
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=_params(st, h), interpret=st.interpret, debug=st.debug,
        name="attn_jax_flash_ds" if want_ds else "attn_jax_flash_dq",
    )(q, k, v, bias, mask, q_ids, kv_ids, seed, do, lse, delta)


# --- differentiable entry point ----------------------------------------------------------------


def _backward(st, arrays, out, lse, dout, dlse):
    q, k, v, bias, mask, q_ids, kv_ids, seed = arrays
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B, Tp, N]
    delta = jnp.swapaxes(delta, 1, 2) - dlse.astype(jnp.float32)  # [B, N, Tp]
    args = (q, k, v, bias, mask, q_ids, kv_ids, seed, dout.astype(q.dtype), lse, delta)
    dk, dv = _backward_dkv(*args, st)
    dq = _backward_dq(*args, st, want_ds=False)
    dbias = None
    if bias is not None:
        ds = _backward_dq(*args, st, want_ds=True)  # [B, N, Tp, Sp]; dropped by jit when unused
        dbias = reduce_to_bias(ds, bias)
    return dq, dk, dv, dbias


# (q, k, v, bias) get gradients; (mask, q_ids, kv_ids, seed) do not.
_flash = attention_vjp(_forward, _backward, num_differentiable=4)




@functools.partial(jax.jit, static_argnames=("scale", "is_causal", "window", "logits_soft_cap",
                                             "block_sizes", "interpret", "debug", "dropout"))
def flash_attention(
    query, key, value, bias=None, mask=None, *,
    q_segment_ids=None, kv_segment_ids=None, query_seq_lengths=None, key_value_seq_lengths=None,
    scale: float | None = None, is_causal: bool = False, window: tuple[int, int] | None = None,
    logits_soft_cap: float | None = None, block_sizes: BlockSizes | None = None,
    interpret: bool = False, debug: bool = False,
    dropout: _dropout.Dropout | None = None, dropout_seed=None,
):
    """Fused attention. ``query [B, T, N, H]``, ``key [B, S, K, H]``, ``value [B, S, K, Hv]``.

    ``bias``/``mask`` are 4-D ``[Bb, Nb, Tb, Sb]`` with each axis 1 or full;
    segment ids ``[B, T]``/``[B, S]`` and lengths ``[B]`` are optional. Any T, S
    (padded to the blocks and masked), head dims padded to a power of two >= 16.
    Returns ``out [B, T, N, Hv]`` (query dtype) and ``lse [B, T, N]`` float32
    (``-inf`` for rows that see no key). Differentiable in q, k, v, bias and lse.
    ``dropout`` (static) with ``dropout_seed`` (``[2]`` int32, :func:`attn_jax.dropout.seeds`):
    attention dropout, the mask :mod:`attn_jax.dropout` defines.
    """
    b, t, n, h = query.shape
    s, kh, hv = key.shape[1], key.shape[2], value.shape[-1]
    if n % kh:
        raise ValueError(f"query heads {n} must be a multiple of key/value heads {kh}")
    bs = block_sizes or BlockSizes.get_default(h, query.dtype, _device_kind())
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    hp, hvp = (max(MIN_BLOCK, pl.next_power_of_2(d)) for d in (h, hv))
    _, tp = padded_tile(t, max(bs.block_q, bs.block_q_dkv, bs.block_q_dq))
    _, sp = padded_tile(s, max(bs.block_k, bs.block_kv_dkv, bs.block_kv_dq))
    q = pad_axis(pad_axis(query, 3, hp), 1, tp)
    k = pad_axis(pad_axis(key, 3, hp), 1, sp)
    v = pad_axis(pad_axis(value, 3, hvp), 1, sp)
    bias = pad_axis(pad_axis(bias, 2, tp, broadcast=True), 3, sp, broadcast=True)
    if mask is not None:
        mask = pad_axis(pad_axis(mask.astype(jnp.int8), 2, tp, broadcast=True), 3, sp, broadcast=True)
    q_ids, kv_ids = position_ids(b, t, tp, s, sp, query_seq_lengths, key_value_seq_lengths,
                                 q_segment_ids, kv_segment_ids)
    dropout = dropout or _dropout.Dropout()
    if dropout.active and dropout_seed is None:
        raise ValueError("dropout.rate > 0 needs dropout_seed (attn_jax.dropout.seeds(key))")
    seed = dropout_seed if dropout.active else None
    st = _Static(float(scale), logits_soft_cap, bool(is_causal), window, bs, interpret, debug, dropout)
    out, lse = _flash(q, k, v, bias, mask, q_ids, kv_ids, seed, st)
    out = out[:, :t, :, :hv]
    lse = jnp.swapaxes(lse[:, :, :t], 1, 2)
    return out, empty_rows_to_neg_inf(lse)


def _device_kind() -> str:
    return jax.devices()[0].device_kind


# The oracle beside the kernel (shared with flash_tpu, which computes the same function).
flash_attention_reference = attention_reference
