"""Ring attention (Liu et al. 2023): context parallelism over a mesh axis with ``shard_map`` and ``ppermute``.

Each of the P devices on the ring axis holds ``T/P`` query rows and ``S/P`` key/value rows. In P steps every
device attends with its queries to the K/V block it currently holds and passes the block on; the partial
results are merged by their logsumexp (:func:`attn_jax.softmax.merge_partials`). The ring itself only moves
blocks and merges: each (query block, visiting key block) pair is computed by the "chunked" implementation's
own forward and backward (:mod:`attn_jax.attention.chunked`), with the pair's global position offset in its
:class:`~attn_jax.masks.MaskSpec`, so the ring honours the whole contract of ``dot_product_attention``:

* causal (top-left, on global positions) and ``local_window_size``: pairs outside the band are skipped (no
  logits computed), and with the contiguous layout and a window narrower than the ring, the K/V blocks that no
  query can see are never sent: the ring jumps over them;
* ``query_seq_lengths`` / ``key_value_seq_lengths`` (global lengths, made local to each block);
* ``q_segment_ids`` / ``kv_segment_ids`` (packed sequences: a block's segment ids travel with it);
* ``bias`` / ``mask`` (each device holds its query rows of them, every key column; each step slices the
  visiting block's columns), ``logits_soft_cap``, GQA without repeating K/V, ``Hv != H``;
* the empty-row rule (zeros, residual ``-inf``, zero gradients) and a differentiable residual.

Attention dropout is not served (:class:`~attn_jax.UnsupportedError`).

Memory is O(T/P) per device, forward and backward: the chunked core holds one ``[query chunk, key chunk]``
tile of logits at a time, and the backward pass is a second ring (a ``custom_vjp``): K, V, their segment ids
and their gradient accumulators travel together and arrive home after the last hop; nothing of size T is
saved between the passes, only the output and the logsumexp (``tests/test_ring.py`` checks that the compiled
temporaries grow linearly with T).

Causal masking compares global token positions, so any layout of the sequence over the devices works.
:func:`zigzag` is the load-balanced one (Striped / zigzag ring attention): device i holds chunks i and 2P-1-i
of 2P chunks, so every device has the same number of unmasked (query chunk, key chunk) pairs.

    >>> # inside shard_map over axis "seq" (see ``ring_attention_sharded``):
    >>> # out = ring_attention(q, k, v, axis_name="seq", is_causal=True, layout="zigzag")

Shapes are jax.nn's: ``q [B, T, N, H]``, ``k [B, S, K, H]``, ``v [B, S, K, Hv]`` (GQA: N a multiple of K) —
per device inside ``shard_map``, global outside. ``dot_product_attention(..., implementation="ring")`` runs
:func:`ring_attention_sharded` over the mesh of :func:`attn_jax.sharding.use_mesh` when it has a ``seq``
axis of size > 1.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from attn_jax.attention import chunked as _chunked
from attn_jax.attention.inputs import compute_dtype, group_heads
from attn_jax.errors import UnsupportedError
from attn_jax.masks import MASK_VALUE, MaskSpec, normalize_window
from attn_jax.shapes import Bias, Key, KVSegments, Lengths, Mask, Out, QSegments, Query, Residual, Value
from attn_jax.softmax import attention_vjp, empty_rows_to_neg_inf, merge_partials

Array = jax.Array
LAYOUTS = ("contiguous", "zigzag")
# The query chunk the ring's chunked core aims for (a divisor of the rows a device holds is used).
QUERY_CHUNK = 256


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


def _chunks(layout: str) -> int:
    return 2 if layout == "zigzag" else 1


def _divisor_chunk(length: int, target: int) -> int:
    """The largest divisor of ``length`` that is at most ``target`` (the chunked core needs whole chunks)."""
    return max(d for d in range(1, min(length, target) + 1) if length % d == 0)


def _starts(device, length: int, parts: int, layout: str) -> list:
    """Global start positions of the ``c`` chunks (``length // c`` rows each) that ``device`` holds."""
    if layout == "contiguous":
        return [device * length]
    half = length // 2
    return [device * half, (2 * parts - 1 - device) * half]


class _Static(NamedTuple):
    axis_name: str
    parts: int
    layout: str
    shifts: tuple[int, ...]  # the ring steps: the sources (me - shift) whose K/V this device visits, in order
    is_causal: bool
    window: tuple[int, int] | None
    scale: float
    soft_cap: float | None
    chunk_q: int
    chunk_k: int
    precision: object


def _local_lengths(lengths, start, size: int):
    """Global lengths ``[B]`` as lengths of the block of ``size`` rows starting at ``start``."""
    return None if lengths is None else jnp.clip(lengths - start, 0, size).astype(jnp.int32)


def _cols(x, start, size: int):
    """Columns ``[start, start + size)`` of a grouped bias or mask ``[Bb, K, Tq, G, S or 1]`` (axis 4)."""
    if x is None or x.shape[4] == 1:
        return x
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=4)


def _rows(x, start: int, size: int, axis: int):
    """Rows of a query-side array along ``axis`` (a static slice; broadcast axes stay)."""
    if x is None or x.shape[axis] == 1:
        return x
    return jax.lax.slice_in_dim(x, start, start + size, axis=axis)


def _pairs(st: _Static, me, src, t_loc: int, s_loc: int):
    """Per (query chunk a, key chunk b) of this step: static row slices and traced global starts."""
    c = _chunks(st.layout)
    tq, tk = t_loc // c, s_loc // c
    q_starts = _starts(me, t_loc, st.parts, st.layout)
    k_starts = _starts(src, s_loc, st.parts, st.layout)
    return [(a, b, tq, tk, q_starts[a], k_starts[b]) for a in range(c) for b in range(c)]


def _block_args(st: _Static, arrays, k, v, kv_seg, src, a, b, tq, tk, q0, k0):
    """The chunked core's arguments for one pair: q rows of chunk a, the visiting block's chunk b, its spec."""
    q, _, _, bias, mask, q_len, kv_len, q_seg, _ = arrays
    col = (src * _chunks(st.layout) + b) * tk  # the visiting chunk's columns in the laid-out bias / mask
    spec = MaskSpec(
        is_causal=st.is_causal, window=st.window,
        q_lengths=_local_lengths(q_len, q0, tq), kv_lengths=_local_lengths(kv_len, k0, tk),
        q_segment_ids=_rows(q_seg, a * tq, tq, 1),
        kv_segment_ids=None if kv_seg is None else jax.lax.slice_in_dim(kv_seg, b * tk, (b + 1) * tk, axis=1),
        offset=jnp.asarray(q0 - k0, jnp.int32))
    cst = _chunked._Static(st.scale, st.soft_cap, st.chunk_q, st.chunk_k, tq, tk, st.precision)
    qa = jax.lax.slice_in_dim(q, a * tq, (a + 1) * tq, axis=2)
    kb = jax.lax.slice_in_dim(k, b * tk, (b + 1) * tk, axis=2)
    vb = jax.lax.slice_in_dim(v, b * tk, (b + 1) * tk, axis=2)
    bias_ab = _cols(_rows(bias, a * tq, tq, 2), col, tk)
    mask_ab = _cols(_rows(mask, a * tq, tq, 2), col, tk)
    return qa, kb, vb, bias_ab, mask_ab, spec, cst, col


def _runs(shifts: tuple[int, ...]) -> list[tuple[int, int]]:
    """``shifts`` as runs of consecutive values: ``[(first, length), ...]``."""
    runs: list[list[int]] = []
    for x in shifts:
        if runs and x == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([x, 1])
    return [(a, n) for a, n in runs]


def _ring_loop(st: _Static, step, carry, blocks):
    """Run ``step(shift, carry, blocks) -> (carry, blocks)`` over the ring steps, moving ``blocks`` (a tuple)
    one device per step (a ``fori_loop`` per run of consecutive steps, a jump between runs). Returns
    ``(carry, blocks, held)``: ``held`` is how far the blocks have travelled (a multiple of P: home)."""
    held = 0
    for first, length in _runs(st.shifts):
        if first != held:
            blocks = _hop(blocks, st, first - held)

        def body(j, state, first=first):
            carry, blocks = step(first + j, *state)
            return carry, _hop(blocks, st, 1)

        carry, blocks = jax.lax.fori_loop(0, length, body, (carry, blocks))
        held = first + length
    return carry, blocks, held


def _forward(q, k, v, bias, mask, q_len, kv_len, q_seg, kv_seg, st: _Static):
    """Per device: ``q [B,K,Tl,G,H]``, ``k/v [B,K,Sl,H|Hv]`` -> (out ``[B,K,Tl,G,Hv]`` in q's dtype, lse with
    MASK_VALUE for rows that saw no key)."""
    arrays = (q, k, v, bias, mask, q_len, kv_len, q_seg, kv_seg)
    me = jax.lax.axis_index(st.axis_name)
    b_, kh, t_loc, g, _ = q.shape
    s_loc, hv = k.shape[2], v.shape[-1]
    acc = compute_dtype(q.dtype)

    def step(shift, carry, blocks):
        o, lse = carry
        k, v, kv_seg = blocks
        src = (me - shift) % st.parts
        for a, b, tq, tk, q0, k0 in _pairs(st, me, src, t_loc, s_loc):
            qa, kb, vb, bias_ab, mask_ab, spec, cst, _ = _block_args(st, arrays, k, v, kv_seg, src, a, b, tq,
                                                                     tk, q0, k0)
            o_ab, lse_ab = _chunked._forward(qa, kb, vb, bias_ab, mask_ab, None, spec, cst)
            rows = slice(a * tq, (a + 1) * tq)
            merged, merged_lse = merge_partials(
                jnp.stack([o[:, :, rows], o_ab.astype(acc)]), jnp.stack([lse[:, :, rows], lse_ab]), axis=0)
            o, lse = o.at[:, :, rows].set(merged), lse.at[:, :, rows].set(merged_lse)
        return (o, lse), blocks

    init = (jnp.zeros((b_, kh, t_loc, g, hv), acc), jnp.full((b_, kh, t_loc, g), MASK_VALUE, acc))
    (o, lse), _, _ = _ring_loop(st, step, init, (k, v, kv_seg))
    return o.astype(q.dtype), lse


def _hop(blocks, st: _Static, shift: int):
    """Send every array of ``blocks`` ``shift`` devices along the ring (device i -> i + shift)."""
    perm = [(i, (i + shift) % st.parts) for i in range(st.parts)]
    return jax.lax.ppermute(blocks, st.axis_name, perm)


def _backward(st: _Static, arrays, out, lse, dout, dlse):
    """The second ring: K, V, their segment ids and gradient accumulators travel together and come home."""
    q, k, v, bias, mask, q_len, kv_len, q_seg, kv_seg = arrays
    me = jax.lax.axis_index(st.axis_name)
    t_loc, s_loc = q.shape[2], k.shape[2]
    acc = compute_dtype(q.dtype)

    def step(shift, carry, blocks):
        dq, dbias = carry
        k, v, kv_seg, dk, dv = blocks
        src = (me - shift) % st.parts
        for a, b, tq, tk, q0, k0 in _pairs(st, me, src, t_loc, s_loc):
            qa, kb, vb, bias_ab, mask_ab, spec, cst, col = _block_args(st, arrays, k, v, kv_seg, src, a, b,
                                                                       tq, tk, q0, k0)
            rows = slice(a * tq, (a + 1) * tq)
            dqa, dkb, dvb, dba = _chunked._backward(qa, kb, vb, bias_ab, mask_ab, None, spec, cst,
                                                    out[:, :, rows], lse[:, :, rows], dout[:, :, rows],
                                                    dlse[:, :, rows])
            dq = dq.at[:, :, rows].add(dqa.astype(acc))
            dk = dk.at[:, :, b * tk:(b + 1) * tk].add(dkb.astype(acc))
            dv = dv.at[:, :, b * tk:(b + 1) * tk].add(dvb.astype(acc))
            if dbias is not None:
                dbias = _add_bias_grad(dbias, dba.astype(acc), a * tq, tq, col, tk)
        return (dq, dbias), (k, v, kv_seg, dk, dv)

    init = (jnp.zeros(q.shape, acc), None if bias is None else jnp.zeros(bias.shape, acc))
    blocks = (k, v, kv_seg, jnp.zeros(k.shape, acc), jnp.zeros(v.shape, acc))
    carry, blocks, held = _ring_loop(st, step, init, blocks)
    dq, dbias = carry
    dk, dv = blocks[3], blocks[4]
    if held % st.parts:  # the accumulators go home with their blocks
        dk, dv = _hop((dk, dv), st, st.parts - held % st.parts)
    dbias = None if dbias is None else dbias.astype(bias.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dbias


def _add_bias_grad(dbias, d, row0: int, tq: int, col, tk: int):
    """Add one pair's bias gradient at its rows and columns (axes that are broadcast take it whole)."""
    start = [0, 0, row0 if dbias.shape[2] > 1 else 0, 0, col if dbias.shape[4] > 1 else 0]
    start = [jnp.asarray(s, jnp.int32) for s in start]
    cur = jax.lax.dynamic_slice(dbias, start, d.shape)
    return jax.lax.dynamic_update_slice(dbias, cur + d, start)


# (q, k, v, bias) get gradients; (mask, lengths, segment ids) do not.
_ring_core = attention_vjp(_forward, _backward, num_differentiable=4)


def _ring_shifts(parts: int, layout: str, window, s_loc: int, is_causal: bool) -> tuple[int, ...]:
    """The ring steps (shifts of the visiting block) a device needs. Every block visits, except that with the
    contiguous layout a window narrower than the ring skips the blocks no query can see (and causal skips the
    blocks after the device's own)."""
    if layout != "contiguous" or (window is None and not is_causal):
        return tuple(range(parts))
    left, right = window if window is not None else (10**12, 10**12)
    if is_causal:
        right = min(right, 0)
    behind = min(parts - 1, -(-left // s_loc))  # sources before this device that hold a visible key
    ahead = min(parts - 1 - behind, -(-right // s_loc)) if right > 0 else 0
    return tuple(range(behind + 1)) + tuple(range(parts - ahead, parts))


def ring_attention(
    query: Query,
    key: Key,
    value: Value,
    bias: Bias | None = None,
    mask: Mask | None = None,
    *,
    axis_name: str,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: Lengths | None = None,
    key_value_seq_lengths: Lengths | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    q_segment_ids: QSegments | None = None,
    kv_segment_ids: KVSegments | None = None,
    logits_soft_cap: float | None = None,
    dropout_rate: float = 0.0,
    precision=None,
    return_residual: bool = False,
    layout: str = "contiguous",
    block_size: int = 512,
) -> Out | tuple[Out, Residual]:
    """Attention over a sequence sharded on ``axis_name``; call inside ``shard_map``.

    The arguments are ``dot_product_attention``'s, per device: ``query [B, Tl, N, H]``, ``key [B, Sl, K, H]``,
    ``value [B, Sl, K, Hv]`` are this device's rows (the global sequence is ``P · Tl`` long, laid over the ring
    as ``layout`` says: "contiguous", or "zigzag" after :func:`zigzag`); ``bias`` / ``mask`` hold this device's
    query rows and every key column in laid-out order (``[Bb, Nb, Tl or 1, P·Sl or 1]``);
    ``query_seq_lengths`` / ``key_value_seq_lengths`` are the global lengths ``[B]``; segment ids are this
    device's ``[B, Tl]`` and ``[B, Sl]``. Causal, window and lengths act on global positions. Each visiting
    K/V block is consumed ``block_size`` key rows at a time. Returns ``[B, Tl, N, Hv]`` in the query's dtype
    (and the logsumexp ``[B, Tl, N]`` with ``return_residual``).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if dropout_rate:
        raise UnsupportedError("ring attention has no attention dropout (use dropout outside attention)")
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        raise ValueError(f"ring attention takes query/key/value [B, T, N, H] per device, got {query.shape}, "
                         f"{key.shape}, {value.shape}")
    b, t, n, h = query.shape
    s_loc, kh = key.shape[1], key.shape[2]
    if n % kh:
        raise ValueError(f"query heads {n} must be a multiple of key heads {kh}")
    c = _chunks(layout)
    if t % c or s_loc % c:
        raise ValueError(f"zigzag needs an even number of rows per device, got T={t}, S={s_loc}")
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("q_segment_ids and kv_segment_ids go together")
    parts = jax.lax.psum(1, axis_name)
    window = normalize_window(local_window_size)
    scale = h ** -0.5 if scale is None else float(scale)
    st = _Static(axis_name, parts, layout, _ring_shifts(parts, layout, window, s_loc, bool(is_causal)),
                 bool(is_causal), window, scale, None if logits_soft_cap is None else float(logits_soft_cap),
                 _divisor_chunk(t // c, QUERY_CHUNK), _divisor_chunk(s_loc // c, int(block_size)), precision)
    g = n // kh
    q5 = jnp.transpose(query.reshape(b, t, kh, g, h), (0, 2, 1, 3, 4))  # [B, K, Tl, G, H]
    k4, v4 = jnp.swapaxes(key, 1, 2), jnp.swapaxes(value, 1, 2)  # [B, K, Sl, H]
    as4 = lambda x, dt: None if x is None else jnp.asarray(x, dt).reshape((1,) * (4 - jnp.ndim(x)) + jnp.shape(x))  # noqa: E731
    bias5 = group_heads(as4(bias, bias.dtype if hasattr(bias, "dtype") else query.dtype), kh)
    mask5 = group_heads(as4(mask, bool), kh)
    ints = lambda x: None if x is None else jnp.asarray(x, jnp.int32)  # noqa: E731
    out, lse = _ring_core(q5, k4, v4, bias5, mask5, ints(query_seq_lengths), ints(key_value_seq_lengths),
                          ints(q_segment_ids), ints(kv_segment_ids), st)
    out = jnp.transpose(out, (0, 2, 1, 3, 4)).reshape(b, t, n, value.shape[-1]).astype(query.dtype)
    if not return_residual:
        return out
    lse = empty_rows_to_neg_inf(jnp.moveaxis(lse, 2, 1).reshape(b, t, n))
    return out, lse.astype(query.dtype)


def _zigzag_perms(parts: int) -> tuple[list, list]:
    """The two ``ppermute`` permutations that take contiguous shards to the zigzag layout: device j's first
    half (global chunk 2j) and second half (chunk 2j+1) each go to the device that holds that chunk in zigzag
    order (chunk c < P: device c; else device 2P-1-c)."""
    dest = lambda c: c if c < parts else 2 * parts - 1 - c  # noqa: E731
    return [(j, dest(2 * j)) for j in range(parts)], [(j, dest(2 * j + 1)) for j in range(parts)]


def _to_zigzag(x, axis_name: str, parts: int, axis: int = 1):
    """This device's contiguous rows (``axis``) -> its zigzag rows, by two ``ppermute`` of half blocks: O(T/P)
    per device, where reordering the global array would gather it."""
    first, second = jnp.split(x, 2, axis=axis)
    perm0, perm1 = _zigzag_perms(parts)
    got0, got1 = jax.lax.ppermute(first, axis_name, perm0), jax.lax.ppermute(second, axis_name, perm1)
    even = jax.lax.axis_index(axis_name) % 2 == 0  # an even device gets its first chunk from the first halves
    return jnp.where(even, jnp.concatenate([got0, got1], axis), jnp.concatenate([got1, got0], axis))


def _from_zigzag(x, axis_name: str, parts: int, axis: int = 1):
    """The inverse of :func:`_to_zigzag`."""
    a, b = jnp.split(x, 2, axis=axis)
    even = jax.lax.axis_index(axis_name) % 2 == 0
    got0, got1 = jnp.where(even, a, b), jnp.where(even, b, a)  # what the two permutations delivered
    perm0, perm1 = _zigzag_perms(parts)
    back = lambda perm: [(d, j) for j, d in perm]  # noqa: E731
    first = jax.lax.ppermute(got0, axis_name, back(perm0))
    second = jax.lax.ppermute(got1, axis_name, back(perm1))
    return jnp.concatenate([first, second], axis)


def ring_attention_sharded(
    query: Query,
    key: Key,
    value: Value,
    mesh: Mesh,
    bias: Bias | None = None,
    mask: Mask | None = None,
    *,
    axis: str = "seq",
    batch_axes: tuple[str, ...] = (),
    layout: str | None = None,
    block_size: int = 512,
    **kwargs,
) -> Out | tuple[Out, Residual]:
    """Global arrays in, global arrays out: :func:`ring_attention` under ``shard_map`` over mesh axis ``axis``.

    ``query [B, T, N, H]``, ``key [B, S, K, H]``, ``value [B, S, K, Hv]``, ``bias`` / ``mask`` broadcastable
    to ``[B, N, T, S]``; every other keyword is ``dot_product_attention``'s (``is_causal``,
    ``local_window_size``, lengths, segment ids, ``logits_soft_cap``, ``scale``, ``return_residual``, ...).
    The sequence is sharded contiguously; with ``layout="zigzag"`` (the default when causal) each device
    trades half blocks with two others (``ppermute``) to hold chunks i and 2P-1-i, and trades the output back,
    so no device ever holds more than its share. ``batch_axes``: mesh axes the batch is split over (default:
    none). T and S must divide into the ring (2P chunks for zigzag).
    """
    parts = mesh.shape[axis]
    layout = layout or ("zigzag" if kwargs.get("is_causal") else "contiguous")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    c = _chunks(layout)
    t, s = query.shape[1], key.shape[1]
    if t % (c * parts) or s % (c * parts):
        raise ValueError(f"ring attention over {parts} devices ({layout}) needs T and S divisible by "
                         f"{c * parts}, got T={t}, S={s}")
    zig = layout == "zigzag"
    bat = None if not batch_axes else batch_axes[0] if len(batch_axes) == 1 else tuple(batch_axes)

    def side(x):  # bias / mask [Bb, Nb, Tb, Sb]: rows split over the ring, columns whole (laid out per device)
        if x is None:
            return None, None
        x = jnp.asarray(x)
        x = x.reshape((1,) * (4 - x.ndim) + x.shape)
        if zig and x.shape[3] > 1:
            x = zigzag(x, parts, 3)  # a column reorder of what every device holds anyway: no communication
        return x, P(bat if x.shape[0] > 1 else None, None, axis if x.shape[2] > 1 else None, None)

    bias, bias_spec = side(bias)
    mask, mask_spec = side(mask)
    qs, ks = kwargs.pop("q_segment_ids", None), kwargs.pop("kv_segment_ids", None)
    qlen, kvlen = kwargs.pop("query_seq_lengths", None), kwargs.pop("key_value_seq_lengths", None)
    seq_spec, len_spec = P(bat, axis, None, None), P(bat)
    args = [query, key, value, bias, mask, None if qs is None else jnp.asarray(qs),
            None if ks is None else jnp.asarray(ks), None if qlen is None else jnp.asarray(qlen),
            None if kvlen is None else jnp.asarray(kvlen)]
    specs = [seq_spec, seq_spec, seq_spec, bias_spec, mask_spec, P(bat, axis), P(bat, axis), len_spec, len_spec]
    present = [i for i, x in enumerate(args) if x is not None]
    return_residual = kwargs.get("return_residual", False)

    def local(*xs):
        full = [None] * len(args)
        for i, x in zip(present, xs, strict=True):
            full[i] = x
        q, k, v, bb, mm, qsi, ksi, ql, kl = full
        if zig:
            lay = functools.partial(_to_zigzag, axis_name=axis, parts=parts)
            q, k, v = lay(q), lay(k), lay(v)
            qsi, ksi = (None if x is None else lay(x) for x in (qsi, ksi))
            bb, mm = (x if x is None or x.shape[2] == 1 else lay(x, axis=2) for x in (bb, mm))
        res = ring_attention(q, k, v, bb, mm, axis_name=axis, layout=layout, block_size=block_size,
                             q_segment_ids=qsi, kv_segment_ids=ksi, query_seq_lengths=ql, key_value_seq_lengths=kl,
                             **kwargs)
        if not zig:
            return res
        back = functools.partial(_from_zigzag, axis_name=axis, parts=parts)
        return (back(res[0]), back(res[1])) if return_residual else back(res)

    out_specs = (seq_spec, P(bat, axis, None)) if return_residual else seq_spec
    fn = jax.shard_map(local, mesh=mesh, in_specs=tuple(specs[i] for i in present), out_specs=out_specs,
                       check_vma=False)
    return fn(*(jax.device_put(args[i], NamedSharding(mesh, specs[i])) for i in present))
