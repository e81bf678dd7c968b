"""Flash attention in Pallas for TPUs (Mosaic TPU lowering; TPU interpret mode on CPU).

Same contract and features as :mod:`attn_jax.kernels.flash_triton`, laid out
for the TPU: the public ``[B, T, N, H]`` arrays are transposed to ``[B, N, T, H]``
at the kernel boundary so every block's last two dims are (sequence, head_dim)
tiles, the key axis is the innermost ("arbitrary") grid axis, and the running
max / normaliser / accumulator live in VMEM scratch across it (jax's TPU flash
kernel's structure). Per-position masks (segment ids, lengths, padding) are
folded into int32 ids, lane-replicated for queries ``[B, Tp, 128]`` and
sublane-replicated for keys ``[B, 8, Sp]`` as TPU tiling wants; causal/window
blocks outside the band are skipped with ``pl.when``.

Backward (FlashAttention-2): a dK/dV kernel whose grid walks, for each key
block, the G query heads of its kv head and every query block (K/V are never
repeated); a dQ kernel; and a dS kernel for the bias gradient (dropped by jit
when unused). Block sizes default to TPU tiles (multiples of 8 x 128).
:func:`flash_attention_reference` is the plain-jnp oracle (and the forward's
``pl.CostEstimate``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from attn_jax.kernels._tiles import pad_axis, position_ids, reduce_to_bias
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

LANES, SUBLANES = 128, 8


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Query and key tiles: block_q a multiple of 8, block_k a multiple of 128 (TPU tiling)."""

    block_q: int = 512
    block_k: int = 1024

    def __post_init__(self):
        if self.block_q <= 0 or self.block_q % SUBLANES:
            raise ValueError(f"BlockSizes.block_q={self.block_q} must be a positive multiple of {SUBLANES}")
        if self.block_k <= 0 or self.block_k % LANES:
            raise ValueError(f"BlockSizes.block_k={self.block_k} must be a positive multiple of {LANES}")

    @classmethod
    def get_default(cls) -> BlockSizes:
        # What benchmarks/tpu_model.py suggests for v5e/v5p (T = S = 8192, H = 128,
        # bf16: compute-bound, ~11 MiB of VMEM); both are clamped to the sequence.
        return cls()


def _logits(q, k, bias, scale, soft_cap):
    s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32) * scale
    return bias_and_cap(s, bias, soft_cap)


def _keep(i, j, bq, bk, qid_ref, kvid_ref, mask_ref, causal, window):
    q_pos = i * bq + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    k_pos = j * bk + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    keep = position_predicate(q_pos, k_pos, is_causal=causal, window=window)
    if qid_ref is not None:
        keep = and_masks(keep, qid_ref[:, :1] == kvid_ref[:1, :])
    if mask_ref is not None:
        keep = and_masks(keep, mask_ref[...] != 0)
    return keep


def _visible(i, j, bq, bk, causal, window):
    """Whether block (i, j) can hold a visible pair (static structure only)."""
    lo, hi = MaskSpec(is_causal=causal, window=window).key_block_range(i * bq, i * bq + bq, bk, 1 << 30)
    return (j >= lo) & (j < hi)


def _fwd_kernel(q_ref, k_ref, v_ref, bias_ref, mask_ref, qid_ref, kvid_ref, o_ref, lse_ref,
                m_scr, l_scr, acc_scr, *, scale, soft_cap, causal, window):
    i, j = pl.program_id(2), pl.program_id(3)
    bq, bk = q_ref.shape[0], k_ref.shape[0]

    @pl.when(j == 0)
    def _init():
        m_scr[...] = jnp.full(m_scr.shape, MASK_VALUE, jnp.float32)
        l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
        acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

    @pl.when(_visible(i, j, bq, bk, causal, window))
    def _step():
        s, _ = _logits(q_ref[...], k_ref[...], None if bias_ref is None else bias_ref[...], scale, soft_cap)
        keep = _keep(i, j, bq, bk, qid_ref, kvid_ref, mask_ref, causal, window)
        if keep is not None:
            s = jnp.where(keep, s, MASK_VALUE)
        m_prev, l_prev = m_scr[:, :1], l_scr[:, :1]  # [bq, 1]; lanes hold copies
        m_new, alpha, p, l_new = online_softmax_step(m_prev, l_prev, s, keep, keepdims=True)
        v = v_ref[...]
        pv = jax.lax.dot_general(p.astype(v.dtype), v, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        acc_scr[...] = alpha * acc_scr[...] + pv
        m_scr[...] = jnp.broadcast_to(m_new, m_scr.shape)
        l_scr[...] = jnp.broadcast_to(l_new, l_scr.shape)

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        out, lse = online_softmax_finish(acc_scr[...], m_scr[:, :1], l_scr[:, :1], keepdims=True)
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = jnp.broadcast_to(lse, lse_ref.shape)


def _ds_block(q, k, v, do, lse, delta, bias, i, j, bq, bk, qid_ref, kvid_ref, mask_ref, st):
    s, tanh = _logits(q, k, bias, st.scale, st.soft_cap)
    keep = _keep(i, j, bq, bk, qid_ref, kvid_ref, mask_ref, st.causal, st.window)
    p = recomputed_probabilities(s, lse, keep, keepdims=True)
    dp = jax.lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    ds = p * (dp - delta)
    if tanh is not None:
        ds = ds * (1.0 - tanh * tanh)
    return p, ds


def _dkv_kernel(q_ref, k_ref, v_ref, bias_ref, mask_ref, qid_ref, kvid_ref, do_ref, lse_ref, delta_ref,
                dk_ref, dv_ref, dk_scr, dv_scr, *, st):
    j, g, i = pl.program_id(2), pl.program_id(3), pl.program_id(4)
    bq, bk = q_ref.shape[0], k_ref.shape[0]

    @pl.when((g == 0) & (i == 0))
    def _init():
        dk_scr[...] = jnp.zeros(dk_scr.shape, jnp.float32)
        dv_scr[...] = jnp.zeros(dv_scr.shape, jnp.float32)

    @pl.when(_visible(i, j, bq, bk, st.causal, st.window))
    def _step():
        q, do = q_ref[...], do_ref[...]
        p, ds = _ds_block(q, k_ref[...], v_ref[...], do, lse_ref[:, :1], delta_ref[:, :1],
                          None if bias_ref is None else bias_ref[...], i, j, bq, bk, qid_ref, kvid_ref, mask_ref, st)
        dv_scr[...] += jax.lax.dot_general(p.astype(do.dtype), do, (((0,), (0,)), ((), ())),
                                           preferred_element_type=jnp.float32)
        dk_scr[...] += jax.lax.dot_general(ds.astype(q.dtype), q, (((0,), (0,)), ((), ())),
                                           preferred_element_type=jnp.float32)

    @pl.when((g == pl.num_programs(3) - 1) & (i == pl.num_programs(4) - 1))
    def _finish():
        dk_ref[...] = (dk_scr[...] * st.scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, bias_ref, mask_ref, qid_ref, kvid_ref, do_ref, lse_ref, delta_ref,
               out_ref, dq_scr, *, st, want_ds):
    i, j = pl.program_id(2), pl.program_id(3)
    bq, bk = q_ref.shape[0], k_ref.shape[0]
    k = k_ref[...]
    _, ds = _ds_block(q_ref[...], k, v_ref[...], do_ref[...], lse_ref[:, :1], delta_ref[:, :1],
                      None if bias_ref is None else bias_ref[...], i, j, bq, bk, qid_ref, kvid_ref, mask_ref, st)
    if want_ds:  # every block written (zeros where masked)
        out_ref[...] = ds
        return

    @pl.when(j == 0)
    def _init():
        dq_scr[...] = jnp.zeros(dq_scr.shape, jnp.float32)

    dq_scr[...] += jax.lax.dot_general(ds.astype(k.dtype), k, (((1,), (0,)), ((), ())),
                                       preferred_element_type=jnp.float32)

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        out_ref[...] = (dq_scr[...] * st.scale).astype(out_ref.dtype)


# --- wrappers ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Static:
    scale: float
    soft_cap: float | None
    causal: bool
    window: tuple[int, int] | None
    block_q: int
    block_k: int
    interpret: bool


def _specs(bias, mask, q_ids, kv_ids, bq, bk, h, hv, qmap, kmap):
    """q, k, v, bias, mask, q_ids, kv_ids specs; ``qmap``/``kmap`` -> (b, n, i) / (b, kv head, j)."""

    def bn(x):
        if x is None:
            return None
        bb, nb, tb, sb = x.shape

        def index(*ids):
            b, n, i = qmap(*ids)
            _, _, j = kmap(*ids)
            return (b if bb > 1 else 0, n if nb > 1 else 0, i if tb > 1 else 0, j if sb > 1 else 0)

        return pl.BlockSpec((None, None, bq if tb > 1 else 1, bk if sb > 1 else 1), index)

    return [
        pl.BlockSpec((None, None, bq, h), lambda *ids: (*qmap(*ids), 0)),
        pl.BlockSpec((None, None, bk, h), lambda *ids: (*kmap(*ids), 0)),
        pl.BlockSpec((None, None, bk, hv), lambda *ids: (*kmap(*ids), 0)),
        bn(bias),
        bn(mask),
        None if q_ids is None else pl.BlockSpec((None, bq, LANES), lambda *ids: (qmap(*ids)[0], qmap(*ids)[2], 0)),
        None if kv_ids is None else pl.BlockSpec((None, SUBLANES, bk), lambda *ids: (kmap(*ids)[0], 0, kmap(*ids)[2])),
    ]


def _forward(q, k, v, bias, mask, q_ids, kv_ids, st: _Static):
    b, n, tp, h = q.shape
    kh, sp, hv = k.shape[1], k.shape[2], v.shape[-1]
    g = n // kh
    bq, bk = st.block_q, st.block_k
    qmap = lambda bi, ni, i, j: (bi, ni, i)  # noqa: E731
    kmap = lambda bi, ni, i, j: (bi, ni // g, j)  # noqa: E731
    public = lambda x: jax.ShapeDtypeStruct((x.shape[0], x.shape[2], x.shape[1], x.shape[3]), x.dtype)  # noqa: E731
    cost = attention_cost(public(q), public(k), public(v), bias, mask, is_causal=st.causal, window=st.window,
                          logits_soft_cap=st.soft_cap)
    return pl.pallas_call(
        functools.partial(_fwd_kernel, scale=st.scale, soft_cap=st.soft_cap, causal=st.causal, window=st.window),
        grid=(b, n, tp // bq, sp // bk),
        in_specs=_specs(bias, mask, q_ids, kv_ids, bq, bk, h, hv, qmap, kmap),
        out_specs=[pl.BlockSpec((None, None, bq, hv), lambda bi, ni, i, j: (bi, ni, i, 0)),
                   pl.BlockSpec((None, None, bq, LANES), lambda bi, ni, i, j: (bi, ni, i, 0))],
        out_shape=[jax.ShapeDtypeStruct((b, n, tp, hv), q.dtype),
                   jax.ShapeDtypeStruct((b, n, tp, LANES), jnp.float32)],
        scratch_shapes=[pltpu.VMEM((bq, LANES), jnp.float32), pltpu.VMEM((bq, LANES), jnp.float32),
                        pltpu.VMEM((bq, hv), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=st.interpret, name="attn_jax_flash_tpu_fwd", cost_estimate=cost,
    )(q, k, v, bias, mask, q_ids, kv_ids)


def _backward(q, k, v, bias, mask, q_ids, kv_ids, do, lse, delta, st: _Static, want_dbias: bool):
    b, n, tp, h = q.shape
    kh, sp, hv = k.shape[1], k.shape[2], v.shape[-1]
    g = n // kh
    bq, bk = st.block_q, st.block_k
    args = (q, k, v, bias, mask, q_ids, kv_ids, do, lse, delta)
    row = lambda qmap: [  # noqa: E731
        pl.BlockSpec((None, None, bq, hv), lambda *ids: (*qmap(*ids), 0)),
        pl.BlockSpec((None, None, bq, LANES), lambda *ids: (*qmap(*ids), 0)),
        pl.BlockSpec((None, None, bq, LANES), lambda *ids: (*qmap(*ids), 0)),
    ]
    # dK / dV: grid (b, kv head, key block, group member, query block); the last two reduce.
    qmap = lambda bi, ki, j, gi, i: (bi, ki * g + gi, i)  # noqa: E731
    kmap = lambda bi, ki, j, gi, i: (bi, ki, j)  # noqa: E731
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, st=st),
        grid=(b, kh, sp // bk, g, tp // bq),
        in_specs=_specs(bias, mask, q_ids, kv_ids, bq, bk, h, hv, qmap, kmap) + row(qmap),
        out_specs=[pl.BlockSpec((None, None, bk, h), lambda bi, ki, j, gi, i: (bi, ki, j, 0)),
                   pl.BlockSpec((None, None, bk, hv), lambda bi, ki, j, gi, i: (bi, ki, j, 0))],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        scratch_shapes=[pltpu.VMEM((bk, h), jnp.float32), pltpu.VMEM((bk, hv), jnp.float32)],
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary", "arbitrary")),
        interpret=st.interpret, name="attn_jax_flash_tpu_dkv",
    )(*args)
    qmap = lambda bi, ni, i, j: (bi, ni, i)  # noqa: E731
    kmap = lambda bi, ni, i, j: (bi, ni // g, j)  # noqa: E731

    def dq_call(want_ds):
        if want_ds:
            out_spec = pl.BlockSpec((None, None, bq, bk), lambda bi, ni, i, j: (bi, ni, i, j))
            out_shape = jax.ShapeDtypeStruct((b, n, tp, sp), jnp.float32)
        else:
            out_spec = pl.BlockSpec((None, None, bq, h), lambda bi, ni, i, j: (bi, ni, i, 0))
            out_shape = jax.ShapeDtypeStruct(q.shape, q.dtype)
        return pl.pallas_call(
            functools.partial(_dq_kernel, st=st, want_ds=want_ds),
            grid=(b, n, tp // bq, sp // bk),
            in_specs=_specs(bias, mask, q_ids, kv_ids, bq, bk, h, hv, qmap, kmap) + row(qmap),
            out_specs=out_spec, out_shape=out_shape,
            scratch_shapes=[pltpu.VMEM((bq, h), jnp.float32)],
            compiler_params=pltpu.CompilerParams(
                dimension_semantics=("parallel", "parallel", "parallel", "parallel" if want_ds else "arbitrary")),
            interpret=st.interpret, name="attn_jax_flash_tpu_ds" if want_ds else "attn_jax_flash_tpu_dq",
        )(*args)

    dq = dq_call(False)
    dbias = None
    if want_dbias:
        ds = dq_call(True)
        dbias = reduce_to_bias(ds, bias)
    return dq, dk, dv, dbias


def _flash_backward(st, arrays, out, lse, dout, dlse):
    q, k, v, bias, mask, q_ids, kv_ids = arrays
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    # lse is lane-replicated [B, N, Tp, 128]; its cotangent is the sum over the lanes.
    delta = jnp.broadcast_to(delta - jnp.sum(dlse.astype(jnp.float32), axis=-1, keepdims=True), lse.shape)
    return _backward(q, k, v, bias, mask, q_ids, kv_ids, dout.astype(q.dtype), lse, delta, st, bias is not None)


# (q, k, v, bias) get gradients; (mask, q_ids, kv_ids) do not.
_flash = attention_vjp(_forward, _flash_backward, num_differentiable=4)


@functools.partial(jax.jit, static_argnames=("scale", "is_causal", "window", "logits_soft_cap", "block_sizes",
                                             "interpret"))
def flash_attention(
    query, key, value, bias=None, mask=None, *,
    q_segment_ids=None, kv_segment_ids=None, query_seq_lengths=None, key_value_seq_lengths=None,
    scale: float | None = None, is_causal: bool = False, window: tuple[int, int] | None = None,
    logits_soft_cap: float | None = None, block_sizes: BlockSizes | None = None, interpret: bool = False,
):
    """Same signature and results as ``flash_triton.flash_attention`` (``[B, T, N, H]`` in and out)."""
    b, t, n, h = query.shape
    s, kh = key.shape[1], key.shape[2]
    if n % kh:
        raise ValueError(f"query heads {n} must be a multiple of key/value heads {kh}")
    bs = block_sizes or BlockSizes.get_default()
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    bq = min(bs.block_q, pl.cdiv(t, SUBLANES) * SUBLANES)
    bk = min(bs.block_k, pl.cdiv(s, LANES) * LANES)
    tp, sp = pl.cdiv(t, bq) * bq, pl.cdiv(s, bk) * bk
    q = jnp.swapaxes(pad_axis(query, 1, tp), 1, 2)  # [B, N, Tp, H]
    k = jnp.swapaxes(pad_axis(key, 1, sp), 1, 2)
    v = jnp.swapaxes(pad_axis(value, 1, sp), 1, 2)
    bias = pad_axis(pad_axis(bias, 2, tp, broadcast=True), 3, sp, broadcast=True)
    if mask is not None:
        mask = pad_axis(pad_axis(mask.astype(jnp.int8), 2, tp, broadcast=True), 3, sp, broadcast=True)
    q_ids, kv_ids = position_ids(b, t, tp, s, sp, query_seq_lengths, key_value_seq_lengths,
                                 q_segment_ids, kv_segment_ids)
    if q_ids is not None:
        q_ids = jnp.broadcast_to(q_ids[:, :, None], (b, tp, LANES))
        kv_ids = jnp.broadcast_to(kv_ids[:, None, :], (b, SUBLANES, sp))
    st = _Static(float(scale), logits_soft_cap, bool(is_causal), window, bq, bk, interpret)
    out, lse = _flash(q, k, v, bias, mask, q_ids, kv_ids, st)
    out = jnp.swapaxes(out[:, :, :t], 1, 2)
    lse = jnp.swapaxes(lse[:, :, :t, 0], 1, 2)
    return out, empty_rows_to_neg_inf(lse)


# The oracle beside the kernel: the same dense function as flash_triton's (kernels/reference.py).
flash_attention_reference = attention_reference
