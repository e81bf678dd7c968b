"""Ring attention (Liu et al. 2023): context parallelism over a mesh axis with ``shard_map`` and ``ppermute``.

Each of the P devices on the ring axis holds ``T/P`` query rows and ``S/P``
key/value rows. In P steps every device combines its queries with the K/V
block it currently holds (online softmax in float32) and passes the block to
the next device. A visiting block is itself consumed ``block_size`` key rows at
a time, so no device ever holds more than two K/V blocks and one
``[T/P, block_size]`` tile of logits: memory is O(T/P) per device, forward and
backward (``tests/test_ring.py`` checks the compiled temporaries grow linearly). The backward pass is a second ring
(a ``custom_vjp``): K, V and their gradient accumulators travel together and
arrive home after P hops; nothing of size T is saved between the passes, only
the output and the logsumexp.

Causal masking compares global token positions, so any layout of the sequence
over the devices works. :func:`zigzag` is the load-balanced one (Striped /
zigzag ring attention): device i holds chunks i and 2P-1-i of 2P chunks, so
every device has the same number of unmasked (query chunk, key chunk) pairs;
pairs that are wholly masked are skipped (``lax.cond``), which is where the
balance pays.

    >>> # inside shard_map over axis "seq" (see ``ring_attention_sharded``):
    >>> # out = ring_attention(q, k, v, axis_name="seq", is_causal=True, layout="zigzag")

Shapes are jax.nn's: ``q [B, T, N, H]``, ``k/v [B, S, K, H]`` (GQA: N a
multiple of K) — per device inside ``shard_map``, global outside.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from attn_jax.masks import MASK_VALUE
from attn_jax.shapes import Key, Out, Query, Value
from attn_jax.softmax import (
    empty_rows_to_neg_inf,
    online_softmax_finish,
    online_softmax_step,
    recomputed_probabilities,
)

Array = jax.Array
LAYOUTS = ("contiguous", "zigzag")


def zigzag(x: Array, parts: int, axis: int = 1) -> Array:
    """Reorder the sequence axis so that contiguous sharding over ``parts`` devices gives device i the chunks
    i and 2·parts-1-i (of 2·parts equal chunks)."""
    chunks = jnp.split(x, 2 * parts, axis=axis)
    order = [c for i in range(parts) for c in (chunks[i], chunks[2 * parts - 1 - i])]
    return jnp.concatenate(order, axis=axis)


def unzigzag(x: Array, parts: int, axis: int = 1) -> Array:
    """The inverse of :func:`zigzag`."""
    chunks = jnp.split(x, 2 * parts, axis=axis)
    out = [None] * (2 * parts)
    for i in range(parts):
        out[i], out[2 * parts - 1 - i] = chunks[2 * i], chunks[2 * i + 1]
    return jnp.concatenate(out, axis=axis)


def _positions(index: Array, length: int, parts: int, layout: str) -> Array:
    """Global positions ``[length]`` of the rows device ``index`` holds."""
    if layout == "contiguous":
        return index * length + jnp.arange(length)
    half = length // 2
    first = index * half + jnp.arange(half)
    second = (2 * parts - 1 - index) * half + jnp.arange(half)
    return jnp.concatenate([first, second])


def _chunks(layout: str) -> int:
    return 2 if layout == "zigzag" else 1


def _split_keys(k: Array, v: Array, kpos: Array, sub: int):
    """Cut a K/V block ``[B, S, K, H]`` into ``n`` sub-blocks of ``sub`` rows (the last one padded):
    ``[n, B, sub, K, H]`` each, positions ``[n, sub]`` and validity ``[n, sub]``."""
    s_len = k.shape[1]
    n = -(-s_len // sub)
    pad = n * sub - s_len

    def cut(x):
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
        return jnp.moveaxis(x.reshape(x.shape[0], n, sub, *x.shape[2:]), 1, 0)

    valid = (jnp.arange(n * sub) < s_len).reshape(n, sub)
    # Padding rows get the largest position so that they never lower a sub-block's first position.
    kpos = jnp.pad(kpos, (0, pad), constant_values=jnp.iinfo(jnp.int32).max).reshape(n, sub)
    return cut(k), cut(v), kpos, valid, pad


def _allowed(qpos, kpos, valid, causal):
    """``[T, sub]`` mask of the (query, key) pairs that attend."""
    ok = jnp.broadcast_to(valid[None, :], (qpos.shape[0], kpos.shape[0]))
    return ok & (qpos[:, None] >= kpos[None, :]) if causal else ok


def _tile_forward(q, k, v, qpos, kpos, valid, scale, causal, masked, carry):
    """Online-softmax update of ``carry = (o [B,K,G,T,Hv], m [B,K,G,T], l)`` with one ``[B, sub, K, H]`` tile."""
    o, m, l = carry
    s = jnp.einsum("BKGTH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32) * scale
    ok = _allowed(qpos, kpos, valid, causal) if masked else None
    if masked:
        s = jnp.where(ok, s, MASK_VALUE)
    m_new, alpha, p, l = online_softmax_step(m, l, s, ok)
    o = o * alpha[..., None] + jnp.einsum("BKGTS,BSKH->BKGTH", p, v.astype(jnp.float32))
    return o, m_new, l


def _visible(qpos, kpos):
    """Whether any query of the chunk sees any key of the chunk under causal masking."""
    return jnp.max(qpos) >= jnp.min(kpos)


def _block_forward(q, k, v, qpos, kpos, scale, causal, sub, carry):
    """Fold one visiting K/V block into ``carry``, ``sub`` key rows at a time: the logits held at
    once are ``[B, K, G, T, sub]``, so memory grows with T (the local rows), not with T·S."""
    ks, vs, kps, valid, pad = _split_keys(k, v, kpos, sub)
    masked = causal or pad > 0

    def body(j, carry):
        upd = functools.partial(_tile_forward, q, ks[j], vs[j], qpos, kps[j], valid[j], scale, causal, masked)
        return jax.lax.cond(_visible(qpos, kps[j]), upd, lambda c: c, carry) if causal else upd(carry)

    return jax.lax.fori_loop(0, ks.shape[0], body, carry)


def _block_backward(q, k, v, do, lse, delta, qpos, kpos, scale, causal, sub):
    """Gradients of one (query rows, visiting K/V block) pair, ``sub`` key rows at a time
    (FlashAttention-2's recurrences: P recomputed from the saved logsumexp)."""
    ks, vs, kps, valid, pad = _split_keys(k, v, kpos, sub)
    masked = causal or pad > 0

    def tile(j):
        kj, vj = ks[j].astype(jnp.float32), vs[j].astype(jnp.float32)
        s = jnp.einsum("BKGTH,BSKH->BKGTS", q, ks[j], preferred_element_type=jnp.float32) * scale
        p = recomputed_probabilities(s, lse, _allowed(qpos, kps[j], valid[j], causal) if masked else None)
        dv = jnp.einsum("BKGTS,BKGTH->BSKH", p, do)
        dp = jnp.einsum("BKGTH,BSKH->BKGTS", do, vj)
        ds = p * (dp - delta[..., None]) * scale
        return (jnp.einsum("BKGTS,BSKH->BKGTH", ds, kj), jnp.einsum("BKGTS,BKGTH->BSKH", ds, q.astype(jnp.float32)),
                dv)

    def body(j, state):
        dq, dk, dv = state
        zeros = (jnp.zeros(dq.shape, jnp.float32), jnp.zeros(dk.shape[1:], jnp.float32),
                 jnp.zeros(dv.shape[1:], jnp.float32))
        dqj, dkj, dvj = jax.lax.cond(_visible(qpos, kps[j]), tile, lambda _: zeros, j) if causal else tile(j)
        return dq + dqj, dk.at[j].set(dkj), dv.at[j].set(dvj)

    init = (jnp.zeros(q.shape, jnp.float32), jnp.zeros(ks.shape, jnp.float32), jnp.zeros(vs.shape, jnp.float32))
    dq, dk, dv = jax.lax.fori_loop(0, ks.shape[0], body, init)

    def join(x):
        x = jnp.moveaxis(x, 0, 1)
        return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :k.shape[1]]

    return dq, join(dk), join(dv)


def _zero_grads(args):
    """The gradients of a wholly masked pair: zeros shaped like (q, k, v) of ``args``."""
    return tuple(jnp.zeros(x.shape, jnp.float32) for x in args[:3])


def _pairs(q, k, qpos, kpos, c: int):
    """Split local rows into ``c`` chunks: (q chunk, positions) x (k chunk index, positions) pairs."""
    tq, tk = q.shape[3] // c, k.shape[1] // c
    return [(a, b, qpos[a * tq:(a + 1) * tq], kpos[b * tk:(b + 1) * tk], tq, tk) for a in range(c) for b in range(c)]


def _forward(q, k, v, axis_name, causal, layout, scale, sub):
    """Per-device forward: ``q [B,K,G,T,H]``, ``k/v [B,S,K,H]`` -> (o [B,K,G,T,Hv] f32 normalised, lse)."""
    parts = jax.lax.psum(1, axis_name)
    me = jax.lax.axis_index(axis_name)
    b, kh, g, t, _ = q.shape
    s_len, hv = k.shape[1], v.shape[-1]
    c = _chunks(layout)
    qpos = _positions(me, t, parts, layout)
    perm = [(i, (i + 1) % parts) for i in range(parts)]
    o = jnp.zeros((b, kh, g, t, hv), jnp.float32)
    m = jnp.full((b, kh, g, t), MASK_VALUE, jnp.float32)
    l = jnp.zeros((b, kh, g, t), jnp.float32)

    def step(i, state):
        o, m, l, k, v = state
        src = (me - i) % parts
        kpos = _positions(src, s_len, parts, layout)
        for a, bb, qp, kp, tq, tk in _pairs(q, k, qpos, kpos, c):
            sl_q = slice(a * tq, (a + 1) * tq)
            kb, vb = k[:, bb * tk:(bb + 1) * tk], v[:, bb * tk:(bb + 1) * tk]
            carry = (o[..., sl_q, :], m[..., sl_q], l[..., sl_q])
            upd = functools.partial(_block_forward, q[..., sl_q, :], kb, vb, qp, kp, scale, causal, sub)
            new = jax.lax.cond(_visible(qp, kp), upd, lambda x: x, carry) if causal else upd(carry)
            o = o.at[..., sl_q, :].set(new[0])
            m, l = m.at[..., sl_q].set(new[1]), l.at[..., sl_q].set(new[2])
        k, v = jax.lax.ppermute((k, v), axis_name, perm)
        return o, m, l, k, v

    o, m, l, _, _ = jax.lax.fori_loop(0, parts, step, (o, m, l, k, v))
    o, lse = online_softmax_finish(o, m, l)
    return o, empty_rows_to_neg_inf(lse)


def _backward(q, k, v, o, lse, do, axis_name, causal, layout, scale, sub):
    parts = jax.lax.psum(1, axis_name)
    me = jax.lax.axis_index(axis_name)
    t, s_len = q.shape[3], k.shape[1]
    c = _chunks(layout)
    qpos = _positions(me, t, parts, layout)
    perm = [(i, (i + 1) % parts) for i in range(parts)]
    do = do.astype(jnp.float32)
    delta = jnp.sum(do * o, axis=-1)  # [B,K,G,T]
    dq = jnp.zeros(q.shape, jnp.float32)
    dk, dv = jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)

    def step(i, state):
        dq, k, v, dk, dv = state
        src = (me - i) % parts
        kpos = _positions(src, s_len, parts, layout)
        for a, bb, qp, kp, tq, tk in _pairs(q, k, qpos, kpos, c):
            sq, sk = slice(a * tq, (a + 1) * tq), slice(bb * tk, (bb + 1) * tk)
            args = (q[..., sq, :], k[:, sk], v[:, sk], do[..., sq, :], lse[..., sq], delta[..., sq], qp, kp)
            grads = functools.partial(_block_backward, scale=scale, causal=causal, sub=sub)
            dqb, dkb, dvb = (jax.lax.cond(_visible(qp, kp), lambda a, g=grads: g(*a), _zero_grads, args)
                             if causal else grads(*args))
            dq = dq.at[..., sq, :].add(dqb)
            dk, dv = dk.at[:, sk].add(dkb), dv.at[:, sk].add(dvb)
        k, v, dk, dv = jax.lax.ppermute((k, v, dk, dv), axis_name, perm)  # after P hops: home again
        return dq, k, v, dk, dv

    dq, _, _, dk, dv = jax.lax.fori_loop(0, parts, step, (dq, k, v, dk, dv))
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _ring(q, k, v, axis_name, causal, layout, scale, sub):
    return _forward(q, k, v, axis_name, causal, layout, scale, sub)[0]


def _ring_fwd(q, k, v, axis_name, causal, layout, scale, sub):
    o, lse = _forward(q, k, v, axis_name, causal, layout, scale, sub)
    return o, (q, k, v, o, lse)


def _ring_bwd(axis_name, causal, layout, scale, sub, res, do):
    q, k, v, o, lse = res
    dq, dk, dv = _backward(q, k, v, o, lse, do, axis_name, causal, layout, scale, sub)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_ring.defvjp(_ring_fwd, _ring_bwd)


def ring_attention(query: Query, key: Key, value: Value, *, axis_name: str, is_causal: bool = False,
                   layout: str = "contiguous", scale: float | None = None, block_size: int = 512) -> Out:
    """Attention over a sequence sharded on ``axis_name``; call inside ``shard_map``.

    ``query [B, T, N, H]``, ``key/value [B, S, K, H]`` are this device's rows (T = S per device for causal);
    ``layout`` says how the global sequence is laid over the ring ("contiguous", or "zigzag" after
    :func:`zigzag`). Each visiting K/V block is consumed ``block_size`` key rows at a time, so the
    largest intermediate is ``[B, N, T, block_size]``. Returns ``[B, T, N, Hv]`` in the query's dtype.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    b, t, n, h = query.shape
    kh = key.shape[2]
    if n % kh:
        raise ValueError(f"query heads {n} must be a multiple of key heads {kh}")
    if layout == "zigzag" and (t % 2 or key.shape[1] % 2):
        raise ValueError(f"zigzag needs an even number of rows per device, got T={t}, S={key.shape[1]}")
    scale = h ** -0.5 if scale is None else scale
    q = jnp.moveaxis(query.reshape(b, t, kh, n // kh, h), 1, 3)  # [B, K, G, T, H]
    sub = min(int(block_size), key.shape[1] // _chunks(layout))
    o = _ring(q, key, value, axis_name, bool(is_causal), layout, float(scale), sub)
    return jnp.moveaxis(o, 3, 1).reshape(b, t, n, value.shape[-1]).astype(query.dtype)


def ring_attention_sharded(query: Query, key: Key, value: Value, mesh: Mesh, *, axis: str = "seq",
                           is_causal: bool = False, layout: str = "zigzag", scale: float | None = None,
                           block_size: int = 512) -> Out:
    """Global arrays in, global array out: lays the sequence out (zigzag when asked), runs
    :func:`ring_attention` under ``shard_map`` over mesh axis ``axis`` and restores the order."""
    parts = mesh.shape[axis]
    if layout == "zigzag":
        query, key, value = (zigzag(x, parts) for x in (query, key, value))
    spec = P(None, axis, None, None)
    local = functools.partial(ring_attention, axis_name=axis, is_causal=is_causal, layout=layout, scale=scale,
                              block_size=block_size)
    fn = jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)
    sharding = NamedSharding(mesh, spec)
    out = fn(*(jax.device_put(x, sharding) for x in (query, key, value)))
    return unzigzag(out, parts) if layout == "zigzag" else out
