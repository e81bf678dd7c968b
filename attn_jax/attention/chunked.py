"""Memory-efficient ("chunked") attention, after Rabe & Staats (2021).

Queries are processed in chunks of ``query`` rows (a sequential ``lax.map``),
and for each chunk the keys/values are streamed in chunks of ``key`` columns
with an online softmax, so the forward never holds more than one
``[B, K, query · G, key]`` block of logits (kv heads outermost, the ``G``
query heads of a kv head folded into the block's matmul rows, so GQA never
repeats the keys). The backward pass is written by hand
(``jax.custom_vjp``, FlashAttention-2's recurrences in plain jnp): it recomputes
each block of probabilities from the saved logsumexp instead of storing them,
so it too runs in ``O(T·chunk)`` extra memory. Key chunks that the causal or
local-window structure excludes are skipped, not computed and masked.

Any ``T`` and ``S`` work: the sequences are padded to a multiple of the chunk
and the padding is masked (``q_bound``/``k_bound`` of :meth:`MaskSpec.block`).
The residual (logsumexp) has a true gradient: its cotangent enters the backward
as ``dS = P ∘ (dP - (D - dlse))``.

Attention dropout draws each block's keep mask from :mod:`attn_jax.dropout`'s
hash of the absolute ``(b, n, i, j)`` positions, in the forward and again in the
backward, so no ``[B, N, T, S]`` mask ever exists. Symbolic ``T`` or ``S``
(``jax.export`` shape polymorphism) use static chunks of at most
:data:`SYMBOLIC_CHUNK`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from attn_jax import dropout as _dropout
from attn_jax.attention.inputs import Problem, compute_dtype, group_heads
from attn_jax.masks import MASK_VALUE, MaskSpec, and_masks, decide
from attn_jax.softmax import (
    attention_vjp,
    bias_and_cap,
    empty_rows_to_neg_inf,
    online_softmax_finish,
    online_softmax_step,
    recomputed_probabilities,
)

Array = jax.Array

# The chunk length used along a symbolic (jax.export) dim, where min(chunk, T) is unknowable.
SYMBOLIC_CHUNK = 128
# The chunk target on CPU (ChunkSizes.for_problem).
CPU_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class ChunkSizes:
    """Query and key chunk lengths (clipped to T and S).

    Rabe & Staats use (1024, 4096) on TPU; smaller chunks use less memory and
    suit CPU caches. Both must be positive.
    """

    query: int = 512
    key: int = 1024

    def __post_init__(self):
        if self.query <= 0 or self.key <= 0:
            raise ValueError(f"chunk sizes must be positive, got {self}")

    @classmethod
    def get_default(cls) -> ChunkSizes:
        """The class defaults (smaller than Rabe & Staats' TPU chunks): what :meth:`for_problem` targets off CPU.

        ``attention`` without ``chunk_sizes`` uses :meth:`for_problem`, which
        also cuts each axis into equal chunks and targets :data:`CPU_CHUNK` on CPU.
        """
        return cls()

    @classmethod
    def for_problem(cls, t, s, backend: str | None = None) -> ChunkSizes:
        """The chunks ``attention`` uses for ``T`` queries and ``S`` keys on ``backend``.

        The target is :data:`CPU_CHUNK` on CPU, chosen from the chunk sweep of
        ``benchmarks.attention_memory`` (T = 4096, N = K, full and causal, forward
        and forward+backward; its table is in docs/benchmarks.md), and the class defaults
        elsewhere (not measured there). Each axis is then cut into equal chunks, a
        multiple of 8 long, so ``T = 300`` pads to 304 instead of 512. Symbolic
        lengths keep :data:`SYMBOLIC_CHUNK`.
        """
        backend = backend or jax.default_backend()
        target = cls(CPU_CHUNK, CPU_CHUNK) if backend == "cpu" else cls()
        return cls(_even_chunk(target.query, t), _even_chunk(target.key, s))


def _even_chunk(target: int, length) -> int:
    """The smallest multiple of 8 that covers ``length`` in ``ceil(length / target)`` chunks."""
    if not isinstance(length, int) or length <= target:
        return target
    pieces = _cdiv(length, target)
    return min(target, _cdiv(_cdiv(length, pieces), 8) * 8)


class _Static(NamedTuple):
    scale: float
    soft_cap: float | None
    chunk_q: int
    chunk_k: int
    q_len: int  # real T (before padding)
    kv_len: int  # real S
    precision: object = None
    dropout: _dropout.Dropout = _dropout.Dropout()


def _cdiv(a, b):
    return (a + b - 1) // b


def _maybe_greater(a, b) -> bool:
    """``a > b``; True when symbolic dims leave it undecided (masking padding that is absent is harmless)."""
    return decide(lambda: a > b, True)


def _chunk(size: int, length) -> int:
    """The chunk along an axis of ``length`` (an int, or a symbolic dim under jax.export)."""
    if isinstance(length, int):
        return min(size, length)
    return min(size, SYMBOLIC_CHUNK)


def _slice_broadcast(x: Array, start, size: int, axis: int) -> Array:
    """Slice ``x`` along ``axis`` unless that axis is broadcast (size 1)."""
    if x.shape[axis] == 1:
        return x
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _rows(x: Array) -> Array:
    """``[B, K, c, G, X]`` -> ``[B, K, c·G, X]``: the rows of one kv head's matmul (a free reshape)."""
    b, kh, c, g, x_ = x.shape
    return x.reshape(b, kh, c * g, x_)


def _block_logits(qc, kc, bias, mask, spec: MaskSpec, q0, k0, st: _Static, padded):
    """Logits of one block: ``qc [B,K,cq,G,H]``, ``kc [B,K,ck,H]`` -> ``[B,K,cq,G,ck]``.

    One 4-D matmul per kv head over its ``cq · G`` query rows (GQA without
    repeating K). Returns ``(s, tanh_or_None, keep_or_None)``; ``s`` is
    MASK_VALUE where masked.
    """
    acc = compute_dtype(qc.dtype)
    b, kh, cq, g, _ = qc.shape
    ck = kc.shape[2]
    # The scale goes on q, not on the logits: XLA:CPU fuses ``logits * scale - max`` into
    # an FMA, whose unrounded product differs from the rounded logit the max saw by up to
    # half an ulp, which is > 88 (exp's range) once logits pass ~1e9 (e.g. scale=3e8).
    qs = qc.astype(acc) * jnp.asarray(st.scale, acc)
    s = jnp.einsum("BKMH,BKSH->BKMS", _rows(qs), kc.astype(acc), preferred_element_type=acc,
                   precision=st.precision).astype(acc)
    s = s.reshape(b, kh, cq, g, ck)
    blk = None if bias is None else _slice_broadcast(_slice_broadcast(bias, q0, cq, 2), k0, ck, 4)
    s, tanh = bias_and_cap(s, blk, st.soft_cap)
    q_pad, k_pad = padded
    keep = spec.block(
        q0, cq, k0, ck,
        q_bound=st.q_len if q_pad else None,
        k_bound=st.kv_len if k_pad else None,
    )
    if keep is not None:
        keep = keep[:, None, :, None, :]
    if mask is not None:
        blk = _slice_broadcast(_slice_broadcast(mask, q0, cq, 2), k0, ck, 4)
        keep = and_masks(keep, blk)
    if keep is not None:
        s = jnp.where(keep, s, jnp.asarray(MASK_VALUE, acc))
    return s, tanh, keep


def _key_range(spec: MaskSpec, q0, st: _Static, nk: int):
    lo, hi = spec.key_block_range(q0, jnp.minimum(q0 + st.chunk_q, st.q_len), st.chunk_k, nk)
    if spec.kv_lengths is not None:
        hi = jnp.minimum(hi, _cdiv(jnp.max(spec.kv_lengths), st.chunk_k))
    return lo, hi


def _query_range(spec: MaskSpec, k0, st: _Static, nq: int):
    lo, hi = spec.query_block_range(k0, jnp.minimum(k0 + st.chunk_k, st.kv_len), st.chunk_q, nq)
    hi = jnp.minimum(hi, _cdiv(st.q_len, st.chunk_q))
    if spec.q_lengths is not None:
        hi = jnp.minimum(hi, _cdiv(jnp.max(spec.q_lengths), st.chunk_q))
    return lo, hi


def _forward(q, k, v, bias, mask, seed, spec, st: _Static):
    """``q [B,K,Tp,G,H]``, ``k [B,K,Sp,H]``, ``v [B,K,Sp,Hv]`` -> ``out [B,K,Tp,G,Hv]`` (q dtype), ``lse [B,K,Tp,G]``.

    ``lse`` is MASK_VALUE (finite) for empty rows, padded ones included.
    """
    b, nkv, tp, g, _ = q.shape
    sp, hv = k.shape[2], v.shape[-1]
    cq, ck = st.chunk_q, st.chunk_k
    nq, nk = tp // cq, sp // ck
    acc_t = compute_dtype(q.dtype)
    padded = (_maybe_greater(tp, st.q_len), _maybe_greater(sp, st.kv_len))

    def one_query_chunk(i):
        q0 = jnp.asarray(i * cq, jnp.int32)
        qc = jax.lax.dynamic_slice_in_dim(q, q0, cq, axis=2)

        def body(j, carry):
            o, m, l = carry
            k0 = jnp.asarray(j * ck, jnp.int32)
            kc = jax.lax.dynamic_slice_in_dim(k, k0, ck, axis=2)
            vc = jax.lax.dynamic_slice_in_dim(v, k0, ck, axis=2)
            s, _, keep = _block_logits(qc, kc, bias, mask, spec, q0, k0, st, padded)
            m_new, alpha, p, l = online_softmax_step(m, l, s, keep)
            if st.dropout.active:  # the normaliser l keeps every weight; only the P @ V term drops
                p = p * _dropout.grouped_multiplier(seed, st.dropout, p.shape, q0, k0).astype(acc_t)
            pv = jnp.einsum("BKMS,BKSH->BKMH", _rows(p), vc.astype(acc_t), precision=st.precision)
            o = alpha[..., None] * o + pv.reshape(o.shape)
            return o, m_new, l

        init = (
            jnp.zeros((b, nkv, cq, g, hv), acc_t),
            jnp.full((b, nkv, cq, g), MASK_VALUE, acc_t),
            jnp.zeros((b, nkv, cq, g), acc_t),
        )
        lo, hi = _key_range(spec, q0, st, nk)
        o, m, l = jax.lax.fori_loop(lo, hi, body, init)
        # Empty rows keep the finite MASK_VALUE here: padded query rows are empty
        # too, and -inf may only appear for rows the caller really masked.
        o, lse = online_softmax_finish(o, m, l)
        return o.astype(q.dtype), lse

    o, lse = jax.lax.map(one_query_chunk, jnp.arange(nq, dtype=jnp.int32))
    # o: [nq, B, K, cq, G, Hv] -> [B, K, Tp, G, Hv]; lse: [nq, B, K, cq, G] -> [B, K, Tp, G]
    o = jnp.moveaxis(o, 0, 2).reshape(b, nkv, tp, g, hv)
    lse = jnp.moveaxis(lse, 0, 2).reshape(b, nkv, tp, g)
    return o, lse


def _backward(q, k, v, bias, mask, seed, spec, st: _Static, out, lse, dout, dlse):
    b, nkv, tp, g, h = q.shape
    sp = k.shape[2]
    cq, ck = st.chunk_q, st.chunk_k
    nq, nk = tp // cq, sp // ck
    acc_t = compute_dtype(q.dtype)
    padded = (_maybe_greater(tp, st.q_len), _maybe_greater(sp, st.kv_len))
    scale = jnp.asarray(st.scale, acc_t)
    prec = st.precision

    # D_i = rowsum(dO ∘ O) minus the residual's cotangent: [B, K, Tp, G].
    delta = jnp.sum(dout.astype(acc_t) * out.astype(acc_t), axis=-1) - dlse.astype(acc_t)

    def one_key_chunk(j, carry):
        dq, dk, dv, dbias = carry
        k0 = jnp.asarray(j * ck, jnp.int32)
        kc = jax.lax.dynamic_slice_in_dim(k, k0, ck, axis=2)
        vc = jax.lax.dynamic_slice_in_dim(v, k0, ck, axis=2)

        def one_query_chunk(i, inner):
            dk_c, dv_c, dq, dbias = inner
            q0 = jnp.asarray(i * cq, jnp.int32)
            qc = jax.lax.dynamic_slice_in_dim(q, q0, cq, axis=2)
            doc = _rows(jax.lax.dynamic_slice_in_dim(dout, q0, cq, axis=2).astype(acc_t))
            lse_c = jax.lax.dynamic_slice_in_dim(lse, q0, cq, axis=2)
            delta_c = jax.lax.dynamic_slice_in_dim(delta, q0, cq, axis=2)
            s, tanh, keep = _block_logits(qc, kc, bias, mask, spec, q0, k0, st, padded)
            p = recomputed_probabilities(s, lse_c, keep)
            dp = jnp.einsum("BKMH,BKSH->BKMS", doc, vc.astype(acc_t), precision=prec).reshape(p.shape)
            p_dropped = p
            if st.dropout.active:  # out = (P ∘ M) V: dV sees P ∘ M, and dP = M ∘ (dO Vᵀ)
                mult = _dropout.grouped_multiplier(seed, st.dropout, p.shape, q0, k0).astype(acc_t)
                p_dropped, dp = p * mult, dp * mult
            dv_c = dv_c + jnp.einsum("BKMS,BKMH->BKSH", _rows(p_dropped), doc, precision=prec)
            ds = p * (dp - delta_c[..., None])
            if tanh is not None:
                ds = ds * (1.0 - jnp.square(tanh))
            if dbias is not None:
                red = ds
                for axis in range(5):
                    if bias.shape[axis] == 1 and red.shape[axis] != 1:
                        red = jnp.sum(red, axis=axis, keepdims=True)
                zero = jnp.int32(0)
                start = (zero, zero, q0 if bias.shape[2] > 1 else zero, zero, k0 if bias.shape[4] > 1 else zero)
                cur = jax.lax.dynamic_slice(dbias, start, red.shape)
                dbias = jax.lax.dynamic_update_slice(dbias, cur + red, start)
            ds_rows = _rows(ds)
            dq_c = jnp.einsum("BKMS,BKSH->BKMH", ds_rows, kc.astype(acc_t), precision=prec) * scale
            cur = jax.lax.dynamic_slice_in_dim(dq, q0, cq, axis=2)
            dq = jax.lax.dynamic_update_slice_in_dim(dq, cur + dq_c.reshape(cur.shape), q0, axis=2)
            dk_c = dk_c + jnp.einsum("BKMS,BKMH->BKSH", ds_rows, _rows(qc.astype(acc_t)), precision=prec) * scale
            return dk_c, dv_c, dq, dbias

        inner = (
            jnp.zeros((b, nkv, ck, h), acc_t),
            jnp.zeros((b, nkv, ck, v.shape[-1]), acc_t),
            dq,
            dbias,
        )
        lo, hi = _query_range(spec, k0, st, nq)
        dk_c, dv_c, dq, dbias = jax.lax.fori_loop(lo, hi, one_query_chunk, inner)
        dk = jax.lax.dynamic_update_slice_in_dim(dk, dk_c, k0, axis=2)
        dv = jax.lax.dynamic_update_slice_in_dim(dv, dv_c, k0, axis=2)
        return dq, dk, dv, dbias

    init = (
        jnp.zeros(q.shape, acc_t),
        jnp.zeros(k.shape, acc_t),
        jnp.zeros(v.shape, acc_t),
        None if bias is None else jnp.zeros(bias.shape, acc_t),
    )
    dq, dk, dv, dbias = jax.lax.fori_loop(jnp.int32(0), jnp.int32(nk), one_key_chunk, init)
    if dbias is not None:
        dbias = dbias.astype(bias.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dbias


# (q, k, v, bias) get gradients; (mask, seed, spec) do not.
_chunked_core = attention_vjp(
    _forward, lambda st, arrays, out, lse, dout, dlse: _backward(*arrays, st, out, lse, dout, dlse),
    num_differentiable=4)
# Jitted so eager callers reuse the compiled loops instead of retracing them each call.
_chunked_core_jit = jax.jit(_chunked_core, static_argnums=(7,))


def _pad_axis(x: Array | None, axis: int, target: int, value=0) -> Array | None:
    """Pad ``x`` along ``axis`` to ``target`` unless it is absent or broadcast."""
    if x is None or (isinstance(x.shape[axis], int) and x.shape[axis] == 1):
        return x
    if decide(lambda: x.shape[axis] == target, False):  # undecided (symbolic): pad, by a possibly-zero width
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, target - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def attention(p: Problem, chunk_sizes: ChunkSizes | None = None) -> tuple[Array, Array]:
    """Chunked attention on a normalised problem: ``out [B,T,N,Hv]``, ``lse [B,T,N]``."""
    b, t, s, n, kh, h, hv = p.dims
    g = n // kh
    chunk_sizes = chunk_sizes or ChunkSizes.for_problem(t, s)
    cq, ck = _chunk(chunk_sizes.query, t), _chunk(chunk_sizes.key, s)
    tp, sp = _cdiv(t, cq) * cq, _cdiv(s, ck) * ck
    # The kernel's layout: kv heads outermost, a head's G queries of one position adjacent.
    q = _pad_axis(jnp.transpose(p.query.reshape(b, t, kh, g, h), (0, 2, 1, 3, 4)), 2, tp)
    k = _pad_axis(jnp.swapaxes(p.key, 1, 2), 2, sp)
    v = _pad_axis(jnp.swapaxes(p.value, 1, 2), 2, sp)
    bias = _pad_axis(_pad_axis(group_heads(p.bias, kh), 2, tp), 4, sp)
    mask = _pad_axis(_pad_axis(group_heads(p.mask, kh), 2, tp, False), 4, sp, False)
    spec = p.spec
    if spec.q_segment_ids is not None:
        spec = dataclasses.replace(
            spec,
            q_segment_ids=_pad_axis(spec.q_segment_ids, 1, tp),
            kv_segment_ids=_pad_axis(spec.kv_segment_ids, 1, sp),
        )
    st = _Static(p.scale, p.logits_soft_cap, cq, ck, t, s, p.precision, p.dropout)
    out, lse = _chunked_core_jit(q, k, v, bias, mask, p.dropout_seed, spec, st)
    out = jnp.transpose(out[:, :, :t], (0, 2, 1, 3, 4)).reshape(b, t, n, hv)
    lse = jnp.moveaxis(lse[:, :, :t], 2, 1).reshape(b, t, n)
    return out, empty_rows_to_neg_inf(lse)
