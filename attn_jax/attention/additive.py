"""Additive (Bahdanau / concat) attention: ``e_ts = vᵀ tanh(W_q q_t + W_k k_s)``.

Three implementations behind ``implementation=``:

* ``"xla"``: dense; holds the ``[B, T, S, A]`` tanh features. Readable and the
  test oracle.
* ``"chunked"``: streams key chunks with an online softmax and a hand-written
  backward (``jax.custom_vjp``) that recomputes each chunk's features, so it
  never holds more than ``[B, T, chunk, A]``. When one chunk holds every key
  it runs the dense form (the same bound, without the recomputation). A pointer network's loss
  ``-(e_target - logsumexp)`` can then be trained on long inputs.

* ``"pallas"``: the fused kernel (``attn_jax.kernels.additive_triton``), same
  memory profile as flash attention; compiled on GPU, interpreted on CPU.

The projections ``q W_q`` and ``k W_k`` are computed once outside the core
(``[B, T, A]`` and ``[B, S, A]``), so their gradients come from autodiff.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.inputs import check_lengths, compute_dtype, dtype_of, flatten_batch, is_float, shape_of
from attn_jax.attention.registry import OpRegistry, implementation_names
from attn_jax.masks import MASK_VALUE, MaskSpec, and_masks, visible_keys
from attn_jax.shapes import (
    AdditiveKey,
    AdditiveOut,
    AdditiveQuery,
    AdditiveV,
    AdditiveValue,
    AdditiveWk,
    AdditiveWq,
    Lengths,
    Mask,
)
from attn_jax.softmax import (
    attention_vjp,
    empty_rows_to_neg_inf,
    masked_softmax_stats,
    online_softmax_finish,
    online_softmax_step,
    recomputed_probabilities,
)

Array = jax.Array

# implementation=None uses "xla" while B·T·S·A float32 features fit in this many bytes.
DENSE_FEATURES_LIMIT_BYTES = 256 * 2**20
# chunk_size=None picks the key chunk so one [B, T, chunk, A] float32 feature block
# stays near this size (between 8 and 512 keys).
CHUNK_BUDGET_BYTES = 16 * 2**20


def auto_chunk_size(b: int, t: int, a: int) -> int:
    """Largest power-of-two key chunk whose ``[B, T, chunk, A]`` features fit the budget."""
    per_key = 4 * b * t * a
    c = 8
    while c < 512 and per_key * c * 2 <= CHUNK_BUDGET_BYTES:
        c *= 2
    return c


class _Static(NamedTuple):
    chunk: int
    kv_len: int  # real S before padding


def _keep(spec: MaskSpec, mask, k0, t: int, ck: int, kv_len: int, padded: bool):
    """Visibility ``[B|1, T, ck]`` of key chunk ``k0`` (or None)."""
    keep = spec.block(0, t, k0, ck, k_bound=kv_len if padded else None)
    if mask is not None:
        blk = mask if mask.shape[2] == 1 else jax.lax.dynamic_slice_in_dim(mask, k0, ck, axis=2)
        keep = and_masks(keep, blk)
    return keep


def _chunk_scores(qp, kpc, w):
    """``qp [B,T,A]``, ``kpc [B,ck,A]``, ``w [A]`` -> (tanh ``[B,T,ck,A]``, scores ``[B,T,ck]``)."""
    feats = jnp.tanh(qp[:, :, None, :] + kpc[:, None, :, :])
    return feats, feats @ w


def _forward(qp, kp, value, w, mask, spec, st: _Static):
    b, t, _ = qp.shape
    sp, dv = value.shape[1], value.shape[2]
    ck, nk = st.chunk, value.shape[1] // st.chunk
    acc = compute_dtype(qp.dtype)
    padded = sp > st.kv_len

    def body(j, carry):
        o, m, l = carry
        k0 = jnp.asarray(j * ck, jnp.int32)
        kpc = jax.lax.dynamic_slice_in_dim(kp, k0, ck, axis=1)
        vc = jax.lax.dynamic_slice_in_dim(value, k0, ck, axis=1).astype(acc)
        _, e = _chunk_scores(qp, kpc, w)
        keep = _keep(spec, mask, k0, t, ck, st.kv_len, padded)
        if keep is not None:
            e = jnp.where(keep, e, MASK_VALUE)
        m_new, alpha, p, l = online_softmax_step(m, l, e, keep)
        o = alpha[..., None] * o + jnp.einsum("BTS,BSD->BTD", p, vc)
        return o, m_new, l

    init = (jnp.zeros((b, t, dv), acc), jnp.full((b, t), MASK_VALUE, acc), jnp.zeros((b, t), acc))
    hi = jnp.int32(nk)
    if spec.kv_lengths is not None:
        hi = jnp.minimum(hi, (jnp.max(spec.kv_lengths) + ck - 1) // ck).astype(jnp.int32)
    o, m, l = jax.lax.fori_loop(jnp.int32(0), hi, body, init)
    o, lse = online_softmax_finish(o, m, l)
    return o, empty_rows_to_neg_inf(lse)


def _backward(st, arrays, out, lse, dout, dlse):
    qp, kp, value, w, mask, spec = arrays
    b, t, a = qp.shape
    sp = value.shape[1]
    ck, nk = st.chunk, sp // st.chunk
    acc = compute_dtype(qp.dtype)
    padded = sp > st.kv_len
    dout = dout.astype(acc)
    delta = jnp.sum(dout * out, axis=-1) - dlse.astype(acc)

    def body(j, carry):
        dqp, dkp, dval, dw = carry
        k0 = jnp.asarray(j * ck, jnp.int32)
        kpc = jax.lax.dynamic_slice_in_dim(kp, k0, ck, axis=1)
        vc = jax.lax.dynamic_slice_in_dim(value, k0, ck, axis=1).astype(acc)
        feats, e = _chunk_scores(qp, kpc, w)
        p = recomputed_probabilities(e, lse, _keep(spec, mask, k0, t, ck, st.kv_len, padded))
        dval = jax.lax.dynamic_update_slice_in_dim(dval, jnp.einsum("BTS,BTD->BSD", p, dout), k0, axis=1)
        ds = p * (jnp.einsum("BTD,BSD->BTS", dout, vc) - delta[..., None])
        dw = dw + jnp.einsum("BTSA,BTS->A", feats, ds)
        dfeat = ds[..., None] * w * (1.0 - jnp.square(feats))
        dqp = dqp + jnp.sum(dfeat, axis=2)
        dkp = jax.lax.dynamic_update_slice_in_dim(dkp, jnp.sum(dfeat, axis=1), k0, axis=1)
        return dqp, dkp, dval, dw

    init = (
        jnp.zeros(qp.shape, acc),
        jnp.zeros(kp.shape, acc),
        jnp.zeros(value.shape, acc),
        jnp.zeros(w.shape, acc),
    )
    dqp, dkp, dval, dw = jax.lax.fori_loop(jnp.int32(0), jnp.int32(nk), body, init)
    return dqp.astype(qp.dtype), dkp.astype(kp.dtype), dval.astype(value.dtype), dw.astype(w.dtype)


# (qp, kp, value, w) get gradients; (mask, spec) do not.
_chunked_core = attention_vjp(_forward, _backward, num_differentiable=4)
# Jitted so eager callers reuse the compiled loops instead of retracing them each call.
_chunked_core_jit = jax.jit(_chunked_core, static_argnums=(6,))


def _chunked_weights(qp, kp, w, mask, spec, lse, st: _Static):
    """Attention weights ``[B, T, Sp]`` from the logsumexp, one key chunk at a time."""
    t, ck = qp.shape[1], st.chunk
    padded = kp.shape[1] > st.kv_len

    def one(j):
        k0 = jnp.asarray(j * ck, jnp.int32)
        _, e = _chunk_scores(qp, jax.lax.dynamic_slice_in_dim(kp, k0, ck, axis=1), w)
        return recomputed_probabilities(e, lse, _keep(spec, mask, k0, t, ck, st.kv_len, padded))

    ws = jax.lax.map(one, jnp.arange(kp.shape[1] // ck, dtype=jnp.int32))  # [nk, B, T, ck]
    return jnp.moveaxis(ws, 0, 2).reshape(qp.shape[0], t, -1)


def _pallas(qp, kp, value, w, mask, kv_lengths, is_causal):
    """The fused Pallas kernel (attn_jax.kernels.additive_triton), interpreted on CPU."""
    from attn_jax.kernels import additive_triton

    return additive_triton.additive_attention(
        qp, kp, value.astype(qp.dtype), w, mask, key_value_seq_lengths=kv_lengths, is_causal=is_causal,
        interpret=jax.default_backend() == "cpu")


def _dense(qp, kp, value, w, keep):
    acc = compute_dtype(qp.dtype)
    e = jnp.tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ w
    if keep is not None:
        e = jnp.where(keep, e, MASK_VALUE)
    p, l_safe, lse = masked_softmax_stats(e, keep)
    weights = p / l_safe[..., None]
    return jnp.einsum("BTS,BSD->BTD", weights, value.astype(acc)), lse, weights


class _Shape(NamedTuple):
    """What the implementations' reasons look at."""

    b: int
    t: int
    s: int
    a: int


class _Call(NamedTuple):
    """What every implementation runs on: projections ``qp [B,T,A]``, ``kp [B,S,A]``, the rest as given."""

    qp: Array
    kp: Array
    value: Array
    w: Array
    mask: Array | None  # [Bm, Tm, Sm] bool
    spec: MaskSpec
    is_causal: bool
    chunk_size: int | None
    want_weights: bool


def _run_xla(c: _Call):
    keep = and_masks(c.spec.block(0, c.qp.shape[1], 0, c.kp.shape[1]), c.mask)
    return _dense(c.qp, c.kp, c.value, c.w, keep)


def _run_blocked(c: _Call, fused: bool):
    """The chunked path, or (``fused``) the Pallas kernel; weights recomputed chunk by chunk when asked."""
    b, t, a = c.qp.shape
    s = c.kp.shape[1]
    ck = min(c.chunk_size or auto_chunk_size(b, t, a), s)
    sp = math.ceil(s / ck) * ck
    pad = ((0, 0), (0, sp - s), (0, 0))
    kp_p, val_p = jnp.pad(c.kp, pad), jnp.pad(c.value, pad)
    mask_p = c.mask
    if c.mask is not None and c.mask.shape[2] != 1:
        mask_p = jnp.pad(c.mask, ((0, 0), (0, 0), (0, sp - s)), constant_values=False)
    st = _Static(ck, s)
    if not fused and ck >= s:
        # One chunk holds every key: the dense form is the same computation, and autodiff keeps its tanh
        # features for the backward instead of recomputing them (the recomputation buys memory only when
        # there are several chunks). Its peak is the one [B, T, chunk, A] block the chunk budget allows.
        return _run_xla(c)
    if fused:
        out, lse = _pallas(c.qp, c.kp, c.value, c.w, c.mask, c.spec.kv_lengths, c.is_causal)
    else:
        out, lse = _chunked_core_jit(c.qp, kp_p, val_p, c.w, mask_p, c.spec, st)
    weights = None
    if c.want_weights:  # for plots: recomputed chunk by chunk from the logsumexp
        weights = _chunked_weights(c.qp, kp_p, c.w, mask_p, c.spec, lse, st)[:, :, :s]
    return out, lse, weights


def _xla_reason(p: _Shape, automatic: bool) -> str | None:
    features = 4 * p.b * p.t * p.s * p.a
    if automatic and features > DENSE_FEATURES_LIMIT_BYTES:
        return f"the dense [B, T, S, A] features would take {features} bytes > {DENSE_FEATURES_LIMIT_BYTES}"
    return None


def _pallas_reason(p: _Shape, automatic: bool) -> str | None:
    backend = jax.default_backend()
    if backend not in ("gpu", "cpu"):
        return f"the Pallas additive kernel runs on GPUs (interpreted on CPU), not {backend!r}"
    if automatic and backend == "cpu":
        return "on CPU the Pallas kernels run only in interpret mode (a test tool); ask for them by name"
    return None


#: additive_attention's implementations; None tries pallas (on GPU), then xla, then chunked.
REGISTRY = OpRegistry("additive_attention", automatic=("pallas", "xla", "chunked"))
REGISTRY.register("xla", _xla_reason, _run_xla)
REGISTRY.register("chunked", lambda p, automatic: None, lambda c: _run_blocked(c, fused=False))
for _name in ("pallas", "pallas_triton"):
    REGISTRY.register(_name, _pallas_reason, lambda c: _run_blocked(c, fused=True))
for _name in ("pallas_mosaic_gpu", "pallas_mosaic_tpu"):
    REGISTRY.register(_name, lambda p, automatic, n=_name: f"{n}: no additive-attention kernel of this kind yet",
                      None)
REGISTRY.register("cudnn", lambda p, automatic: "cuDNN has no additive attention", None)
REGISTRY.register("ring", lambda p, automatic: "ring attention serves dot_product_attention only", None)


def _check(query, key, value, w_q, w_k, v, mask):
    qs, ks, vs = shape_of(query), shape_of(key), shape_of(value)
    if len(qs) < 2 or len(ks) != len(qs) or len(vs) != len(qs):
        raise ValueError(
            f"query [*B, T, Dq], key [*B, S, Dk] and value [*B, S, Dv] must share a rank >= 2, "
            f"got query {qs}, key {ks}, value {vs}"
        )
    batch = qs[:-2]
    if ks[:-2] != batch or vs[:-2] != batch:
        raise ValueError(f"batch dims differ: query {qs}, key {ks}, value {vs}")
    if ks[-2] != vs[-2]:
        raise ValueError(f"key and value lengths differ: key {ks}, value {vs}")
    a = shape_of(v)
    if len(a) != 1:
        raise ValueError(f"v must be [A], got shape {a}")
    if shape_of(w_q) != (qs[-1], a[0]):
        raise ValueError(f"w_q must be [Dq, A] = {(qs[-1], a[0])}, got {shape_of(w_q)}")
    if shape_of(w_k) != (ks[-1], a[0]):
        raise ValueError(f"w_k must be [Dk, A] = {(ks[-1], a[0])}, got {shape_of(w_k)}")
    for name, x in (("query", query), ("key", key), ("value", value), ("w_q", w_q), ("w_k", w_k), ("v", v)):
        if not is_float(dtype_of(x)):
            raise TypeError(f"{name} must be a floating dtype, got {dtype_of(x)}")
    if len({dtype_of(query), dtype_of(key), dtype_of(value)}) != 1:
        raise TypeError(
            f"query, key and value must share a dtype, got {dtype_of(query)}, {dtype_of(key)}, {dtype_of(value)}"
        )
    full = batch + (qs[-2], ks[-2])
    if mask is not None:
        if dtype_of(mask) != np.dtype(bool):
            raise TypeError(f"mask must be boolean (True = attend), got dtype {dtype_of(mask)}")
        try:
            ok = len(shape_of(mask)) <= len(full) and np.broadcast_shapes(shape_of(mask), full) == full
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"mask of shape {shape_of(mask)} is not broadcastable to [*B, T, S] = {full}")
    return batch


def additive_attention(
    query: AdditiveQuery,
    key: AdditiveKey,
    value: AdditiveValue,
    w_q: AdditiveWq,
    w_k: AdditiveWk,
    v: AdditiveV,
    *,
    mask: Mask | None = None,
    key_value_seq_lengths: Lengths | None = None,
    is_causal: bool = False,
    return_residual: bool = False,
    return_weights: bool = False,
    implementation: str | None = None,
    chunk_size: int | None = None,
) -> AdditiveOut | tuple[Array, ...]:
    """Bahdanau attention: ``context_t = Σ_s softmax_s(vᵀ tanh(W_q q_t + W_k k_s)) value_s``.

    Args:
      query: ``[*B, T, Dq]`` (decoder states).
      key: ``[*B, S, Dk]`` (encoder annotations).
      value: ``[*B, S, Dv]``.
      w_q: ``[Dq, A]``; w_k: ``[Dk, A]``; v: ``[A]``.
      mask: boolean, True = attend; broadcastable to ``[*B, T, S]``.
      key_value_seq_lengths: ``[*B]`` int; keys ``s >= length`` invisible.
      is_causal: key ``s`` visible from query ``t`` iff ``s <= t``.
      return_residual: also return the logsumexp of the scores ``[*B, T]``.
      return_weights: also return the attention weights ``[*B, T, S]``.
      implementation: None, a name or a list/tuple of names, the vocabulary
        of ``dot_product_attention`` (:mod:`attn_jax.attention.registry`): "xla",
        "chunked", "pallas" / "pallas_triton" (the fused kernel of
        ``attn_jax.kernels.additive_triton``: compiled on GPU, interpreted on
        CPU); the Mosaic and cudnn names decline with their reason. None:
        pallas on GPU; else xla while the dense features fit in
        :data:`DENSE_FEATURES_LIMIT_BYTES`, then chunked.
      chunk_size: key chunk length of the chunked path; None sizes it so one
        ``[B, T, chunk, A]`` block stays near :data:`CHUNK_BUDGET_BYTES`.

    Returns:
      ``context [*B, T, Dv]`` (query dtype), then the residual and the weights
      when asked, in that order. Rows with nothing to attend to give zeros,
      residual ``-inf`` and zero gradients.
    """
    batch = _check(query, key, value, w_q, w_k, v, mask)
    kv_len = check_lengths(key_value_seq_lengths, "key_value_seq_lengths", batch, shape_of(key)[-2])
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"is_causal must be a bool, got {is_causal!r}")
    implementation_names(implementation)  # type errors before any work
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    nb = len(batch)
    q, k, val = (flatten_batch(x, nb) for x in (query, key, value))
    b, t, s, a = q.shape[0], q.shape[1], k.shape[1], shape_of(v)[0]
    name = REGISTRY.resolve(implementation, _Shape(b, t, s, a))
    mask3 = None
    if mask is not None:
        m = jnp.asarray(mask)
        m = m.reshape((1,) * (nb + 2 - m.ndim) + m.shape)
        if all(d == 1 for d in m.shape[:nb]):
            mask3 = m.reshape((1,) + m.shape[nb:])
        else:
            mask3 = flatten_batch(jnp.broadcast_to(m, batch + m.shape[nb:]), nb)
    spec = MaskSpec(is_causal=bool(is_causal), kv_lengths=kv_len)
    if 0 in (b, t, s):  # nothing to compute, or S = 0: every row is empty
        results = [jnp.zeros(batch + (t, val.shape[-1]), q.dtype)]
        if return_residual:
            results.append(jnp.full(batch + (t,), -jnp.inf, q.dtype))
        if return_weights:
            results.append(jnp.zeros(batch + (t, s), q.dtype))
        return results[0] if len(results) == 1 else tuple(results)
    # Keys no query may see are selected away (where, not a zero weight: 0 * NaN = NaN),
    # so garbage stored past a length or under an all-False mask column reaches nothing.
    visible = visible_keys(spec, None if mask3 is None else mask3[:, None], t, s, 1)
    if visible is not None:
        k = jnp.where(visible, k, jnp.zeros((), k.dtype))
        val = jnp.where(visible, val, jnp.zeros((), val.dtype))
    acc = compute_dtype(q.dtype)
    qp = jnp.einsum("BTD,DA->BTA", q, w_q, preferred_element_type=acc).astype(acc)
    kp = jnp.einsum("BSD,DA->BSA", k, w_k, preferred_element_type=acc).astype(acc)
    w = jnp.asarray(v).astype(acc)

    call = _Call(qp, kp, val, w, mask3, spec, bool(is_causal), chunk_size, return_weights)
    out, lse, weights = REGISTRY.run(name, call)
    results = [out.astype(q.dtype).reshape(batch + (t, val.shape[-1]))]
    if return_residual:
        results.append(lse.astype(q.dtype).reshape(batch + (t,)))
    if return_weights:
        results.append(weights.astype(q.dtype).reshape(batch + (t, s)))
    return results[0] if len(results) == 1 else tuple(results)
