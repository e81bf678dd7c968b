"""Dense ("xla") attention: the readable reference every other path is tested against.

Materialises the logits in float32 (float64 for float64 inputs) and writes the
backward by hand (``jax.custom_vjp``): the forward saves the normalised weights
``P`` and the backward is the four matmuls ``dV = Pᵀ dO``, ``dP = dO Vᵀ``,
``dQ = dS K``, ``dK = dSᵀ Q`` around ``dS = P ∘ (dP - D)``, with
``D = rowsum(dO ∘ O) - dlse`` carrying the logsumexp residual's cotangent, as in
FlashAttention-2. :func:`attention_autodiff` is the same forward differentiated by
autodiff; the tests hold the two to each other. Attention dropout evaluates
:mod:`attn_jax.dropout`'s hash densely, on the same ``(b, n, i, j)`` positions
every other path uses, in the forward and again in the backward.

Layout. The logits live as ``[B, K, T, G, S]``: one 4-D batched matmul per kv
head, whose rows are the ``T · G`` queries of that head's group (query ``i`` of
head ``n = kv · G + g`` is row ``i · G + g``). That is the plain
``"BTNH,BSNH->BNTS"`` matmul jax.nn uses when ``G = 1``, and for GQA it is a
single matmul against the unrepeated keys; on XLA:CPU a 5-D dot with a group
axis (``"BTKGH,BSKH->BKGTS"``) was the slower form, forward and backward. Masks
broadcast over ``G`` as ``[.., T, 1, S]``.

Softmax. One ``exp`` per logit gives both the weights and the logsumexp
(``m = max s``, ``e = exp(s - m)``, ``P = e / Σe``, ``lse = m + log Σe``).
The scale multiplies the queries before the matmul, not the logits after it, so
``exp(s - m)`` never sees an unrounded fused ``logit · scale - m`` (at logits
past ~1e9 half an ulp of the product exceeds exp's range). Empty rows: when
some row may see no key (:func:`rows_may_be_empty` decides it statically, so
causal or windowed attention without lengths, segments, bias or mask pays
nothing), masked entries of ``e`` are selected to 0, and a row whose sum is 0
gets weights 0 and logsumexp ``-inf``. Half-precision inputs multiply ``P``
cast to the value dtype by ``V`` with a float32 accumulator, as jax.nn does;
the saved ``P`` stays float32.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from attn_jax import dropout as _dropout
from attn_jax.attention.inputs import Problem, compute_dtype, group_heads
from attn_jax.masks import MASK_VALUE, MaskSpec, and_masks, decide, dense_mask
from attn_jax.softmax import bias_and_cap

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


class _Static(NamedTuple):
    """The hashable part of a dense problem (the custom VJP's non-differentiable argument)."""

    scale: float
    soft_cap: float | None
    precision: Any
    dropout: _dropout.Dropout
    may_be_empty: bool


# ----------------------------------------------------------------------------- pieces


def _rows(x: Array) -> Array:
    """``[B, K, T, G, X]`` -> ``[B, K, T·G, X]``: the rows of one kv head's matmul (a free reshape)."""
    b, kh, t, g, x_ = x.shape
    return x.reshape(b, kh, t * g, x_)


def _as_rows(x: Array | None, t, g: int) -> Array | None:
    """A ``[.., Tb, Gb, Sb]`` array broadcastable to the logits, as ``[.., Tb·Gb or T·G, Sb]`` rows.

    The logits stay 4-D (``[B, K, T·G, S]``, the matmul's own output): with
    ``G = 1`` a size-1 axis in a 5-D view made XLA:CPU copy the whole logits
    array to change its layout, twice per backward.
    """
    if x is None:
        return None
    *lead, tb, gb, sb = x.shape
    if g == 1 or (isinstance(tb, int) and tb == 1 and gb == 1):
        return x[..., 0, :]
    return jnp.broadcast_to(x, (*lead, t, g, sb)).reshape(*lead, t * g, sb)


def _logits(q, k, bias, st: _Static):
    """``q [B,K,M,H]``, ``k [B,K,S,H]`` -> scaled logits ``[B,K,M,S]`` (bias, soft-cap), and tanh or None."""
    acc = compute_dtype(q.dtype)
    qs = q.astype(acc) * jnp.asarray(st.scale, acc)
    s = jnp.einsum("BKMH,BKSH->BKMS", qs, k.astype(acc), preferred_element_type=acc,
                   precision=st.precision).astype(acc)
    return bias_and_cap(s, bias, st.soft_cap)


def _keep(s: Array, bias, mask, spec: MaskSpec, t, g: int) -> Array | None:
    """Visibility broadcastable to the logits ``s [B, K, M, S]``, or None (all visible)."""
    keep = None if spec.is_empty else _as_rows(dense_mask(spec, t, s.shape[-1])[:, None, :, None, :], t, g)
    keep = and_masks(keep, mask)
    if bias is not None:  # a -inf bias masks its key; a row it empties is an empty row
        keep = and_masks(keep, s > -jnp.inf)
    return keep


def _softmax(s: Array, keep: Array | None, may_be_empty: bool) -> tuple[Array, Array]:
    """Weights ``P [..., S]`` (0 where masked, rows that see nothing all 0) and ``lse [...]`` (-inf there)."""
    if keep is not None:
        s = jnp.where(keep, s, jnp.asarray(MASK_VALUE, s.dtype))
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - m)
    if keep is not None and may_be_empty:  # a row of MASK_VALUE would exponentiate to ones
        e = jnp.where(keep, e, 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    m, total = m[..., 0], total[..., 0]
    if keep is not None and may_be_empty:
        empty = total == 0.0
        total = jnp.where(empty, 1.0, total)
        return e / total[..., None], jnp.where(empty, -jnp.inf, m + jnp.log(total))
    return e / total[..., None], m + jnp.log(total)


def _dropout_rows(seed, st: _Static, b, kh: int, t, g: int, s) -> Array:
    """The inverted-dropout multiplier as logits rows ``[B, K, M, S]``."""
    return _as_rows(_dropout.grouped_multiplier(seed, st.dropout, (b, kh, t, g, s)), t, g)


def _weighted_values(probs: Array, v: Array, st: _Static) -> Array:
    """``P [B,K,M,S]`` times ``v [B,K,S,Hv]`` -> ``[B,K,M,Hv]`` in the accumulator dtype."""
    acc = compute_dtype(v.dtype)
    lhs = probs.astype(v.dtype) if v.dtype.itemsize < 4 else probs.astype(acc)
    out = jnp.einsum("BKMS,BKSH->BKMH", lhs, v.astype(lhs.dtype), preferred_element_type=acc,
                     precision=st.precision)
    return out.astype(acc)


def _transposed_lhs_matmul(a: Array, x: Array, precision) -> Array:
    """``aᵀ x`` for ``a [B, K, M, S]`` and ``x [B, K, M, H]`` -> ``[B, K, S, H]``, as ``(xᵀ a)ᵀ``.

    The big ``a`` stays a plain (untransposed) right operand: XLA:CPU's fast
    matmul serves ``xᵀ a`` and a transpose of the small result, where it sends
    ``aᵀ x`` to a slow generic loop (or transposes all of ``a`` first).
    """
    return jnp.swapaxes(jnp.einsum("BKHM,BKMS->BKHS", jnp.swapaxes(x, 2, 3), a, precision=precision), 2, 3)


# ----------------------------------------------------------------------------- the core


def _weights(q, k, bias, mask, spec, st: _Static):
    """``q [B,K,T,G,H]``, ``k [B,K,S,H]``; bias/mask ``[Bb,K|1,Tb,G|1,Sb]`` -> ``P [B,K,M,S]``, ``lse [B,K,M]``, tanh.

    ``M = T·G`` rows; ``tanh`` is the soft-cap's (None without one).
    """
    _, _, t, g, _ = q.shape
    bias = _as_rows(bias, t, g)
    s, tanh = _logits(_rows(q), k, bias, st)
    probs, lse = _softmax(s, _keep(s, bias, _as_rows(mask, t, g), spec, t, g), st.may_be_empty)
    return probs, lse, tanh


def _forward(q, k, v, bias, mask, seed, spec, st: _Static):
    """:func:`_weights`' arguments and ``v [B,K,S,Hv]`` -> out ``[B,K,M,Hv]`` (accumulator dtype), lse, P, tanh."""
    b, kh, t, g, _ = q.shape
    probs, lse, tanh = _weights(q, k, bias, mask, spec, st)
    dropped = probs
    if st.dropout.active:
        dropped = probs * _dropout_rows(seed, st, b, kh, t, g, k.shape[2]).astype(probs.dtype)
    return _weighted_values(dropped, v, st), lse, probs, tanh


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _dense_core(q, k, v, bias, mask, seed, spec, st: _Static):
    out, lse, _, _ = _forward(q, k, v, bias, mask, seed, spec, st)
    return out.astype(q.dtype), lse


def _dense_core_fwd(q, k, v, bias, mask, seed, spec, st: _Static):
    out, lse, probs, tanh = _forward(q, k, v, bias, mask, seed, spec, st)
    return (out.astype(q.dtype), lse), (q, k, v, bias, seed, out, probs, tanh)


def _dense_core_bwd(st: _Static, res, cot):
    q, k, v, bias, seed, out, probs, tanh = res
    dout, dlse = cot
    acc = compute_dtype(q.dtype)
    prec = st.precision
    b, kh, t, g, _ = q.shape
    do = dout.astype(acc)
    # D_i = rowsum(dO ∘ O) minus the residual's cotangent: [B, K, M].
    delta = jnp.sum(do * out, axis=-1) - dlse.astype(acc)
    dp = jnp.einsum("BKMH,BKSH->BKMS", do, v.astype(acc), precision=prec)
    dropped = probs
    if st.dropout.active:  # out = (P ∘ M) V: dV sees P ∘ M, and dP = M ∘ (dO Vᵀ)
        mult = _dropout_rows(seed, st, b, kh, t, g, k.shape[2]).astype(acc)
        dropped, dp = probs * mult, dp * mult
    dv = _transposed_lhs_matmul(dropped, do, prec)
    ds = probs * (dp - delta[..., None])
    if tanh is not None:
        ds = ds * (1.0 - jnp.square(tanh))
    dbias = None
    if bias is not None:
        dbias = ds.reshape(b, kh, t, g, ds.shape[-1])
        for axis in range(5):
            if bias.shape[axis] == 1 and dbias.shape[axis] != 1:
                dbias = jnp.sum(dbias, axis=axis, keepdims=True)
        dbias = dbias.astype(bias.dtype)
    scale = jnp.asarray(st.scale, acc)
    dq = jnp.einsum("BKMS,BKSH->BKMH", ds, k.astype(acc), precision=prec) * scale
    dk = _transposed_lhs_matmul(ds, _rows(q.astype(acc)), prec) * scale
    return (dq.reshape(q.shape).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dbias, None, None, None)


_dense_core.defvjp(_dense_core_fwd, _dense_core_bwd)
# Jitted so eager callers reuse one compiled program instead of running op by op.
_dense_core_jit = jax.jit(_dense_core, static_argnums=(7,))


def _kernel_layout(p: Problem):
    """The problem's arrays in the core's layout: q ``[B,K,T,G,H]``, k/v ``[B,K,S,H]``, bias/mask grouped."""
    b, t, s, n, kh, h, hv = p.dims
    q = jnp.transpose(p.query.reshape(b, t, kh, n // kh, h), (0, 2, 1, 3, 4))
    return q, jnp.swapaxes(p.key, 1, 2), jnp.swapaxes(p.value, 1, 2), group_heads(p.bias, kh), group_heads(p.mask, kh)


def _static(p: Problem) -> _Static:
    return _Static(p.scale, p.logits_soft_cap, p.precision, p.dropout, rows_may_be_empty(p))


def _to_problem_layout(p: Problem, out: Array, lse: Array) -> tuple[Array, Array]:
    """Rows ``out [B,K,M,Hv]``, ``lse [B,K,M]`` -> ``out [B,T,N,Hv]``, ``lse [B,T,N]``."""
    b, t, s, n, kh, h, hv = p.dims
    out = jnp.swapaxes(out.reshape(b, kh, t, (n // kh) * hv), 1, 2)
    return out.reshape(b, t, n, hv), jnp.swapaxes(lse.reshape(b, kh, t, n // kh), 1, 2).reshape(b, t, n)


def attention(p: Problem) -> tuple[Array, Array]:
    """Dense attention on a normalised problem.

    Returns ``out [B, T, N, Hv]`` in the query dtype and ``lse [B, T, N]`` in
    float32 (float64 for float64 inputs), ``-inf`` for rows that see no key.
    """
    q, k, v, bias, mask = _kernel_layout(p)
    out, lse = _dense_core_jit(q, k, v, bias, mask, p.dropout_seed, p.spec, _static(p))
    return _to_problem_layout(p, out, lse)


def attention_autodiff(p: Problem) -> tuple[Array, Array]:
    """:func:`attention`'s forward with gradients from autodiff (the tests' check of the hand-written backward)."""
    q, k, v, bias, mask = _kernel_layout(p)
    out, lse, _, _ = _forward(q, k, v, bias, mask, p.dropout_seed, p.spec, _static(p))
    return _to_problem_layout(p, out.astype(p.query.dtype), lse)


def probabilities(p: Problem) -> tuple[Array, Array]:
    """The normalised attention weights ``[B, K, G, T, S]`` (before dropout) and ``lse [B, K, G, T]``.

    float32 (float64 for float64 inputs); rows with nothing to attend to are zeros.
    Differentiable by autodiff.
    """
    q, k, _, bias, mask = _kernel_layout(p)
    b, kh, t, g, _ = q.shape
    probs, lse, _ = _weights(q, k, bias, mask, p.spec, _static(p))
    return jnp.swapaxes(probs.reshape(b, kh, t, g, -1), 2, 3), jnp.swapaxes(lse.reshape(b, kh, t, g), 2, 3)
