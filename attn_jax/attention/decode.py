"""``decode_attention``: one new token per sequence against its KV cache.

Two cache layouts: contiguous ``key_cache [B, S, K, H]``, or paged
``key_cache [P, page_size, K, H]`` (a pool of pages) with ``page_table
[B, max_pages]`` listing each sequence's pages in order. Implementations:

* ``"xla"`` / ``"chunked"``: gather the pages (paged layout) and run
  ``dot_product_attention`` with that implementation on one query row.
* ``"pallas"`` / ``"pallas_triton"`` (alias ``"triton"``): the split-KV
  flash-decoding kernel of ``attn_jax.kernels.decode_triton``, compiled on GPU,
  interpreted on CPU. Needs a page size that is a power of two >= 16.
* the Mosaic kernels and ``"cudnn"`` decline with their reason (UnsupportedError).
* ``None``: pallas on a GPU, else xla.

The vocabulary and the resolver are :mod:`attn_jax.attention.registry`'s, shared with
``dot_product_attention`` and ``additive_attention``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.dispatch import dot_product_attention
from attn_jax.attention.inputs import check_scalars, concrete_value, dtype_of, is_float, is_int, shape_of
from attn_jax.attention.registry import OpRegistry, implementation_names
from attn_jax.shapes import ArrayLike, Cache, DecodeLengths, DecodeOut, DecodeQuery, PageTable

Array = jax.Array


def _check(query, key_cache, value_cache, lengths, page_table, logits_soft_cap, scale) -> tuple:
    """Validate the arguments; returns the cache capacity per sequence."""
    qs, ks, vs = shape_of(query), shape_of(key_cache), shape_of(value_cache)
    if len(qs) != 3:
        raise ValueError(f"query must be [B, N, H], got shape {qs}")
    if len(ks) != 4 or len(vs) != 4:
        raise ValueError(f"key_cache and value_cache must be rank 4, got key_cache {ks}, value_cache {vs}")
    b, n, h = qs
    if ks[3] != h:
        raise ValueError(f"query and key_cache head_dim differ: query {qs}, key_cache {ks}")
    if ks[:3] != vs[:3]:
        raise ValueError(f"key_cache {ks} and value_cache {vs} must agree in all but the last dim")
    if n % ks[2]:
        raise ValueError(
            f"query heads must be a multiple of kv heads: query {qs} has N={n}, key_cache {ks} has K={ks[2]}")
    for name, x in (("query", query), ("key_cache", key_cache), ("value_cache", value_cache)):
        if not is_float(dtype_of(x)):
            raise TypeError(f"{name} must be a floating dtype, got {dtype_of(x)}")
    if len({dtype_of(query), dtype_of(key_cache), dtype_of(value_cache)}) != 1:
        raise TypeError(f"query, key_cache and value_cache must share a dtype, got "
                        f"{dtype_of(query)}, {dtype_of(key_cache)}, {dtype_of(value_cache)}")
    if not is_int(dtype_of(lengths)):
        raise TypeError(f"key_value_seq_lengths must be an integer array, got dtype {dtype_of(lengths)}")
    if shape_of(lengths) != (b,):
        raise ValueError(f"key_value_seq_lengths must be [B] = {(b,)}, got {shape_of(lengths)}")
    if h == 0:
        raise ValueError(f"head_dim must be positive, got query {qs} with H=0")
    if page_table is None:
        if ks[0] != b:
            raise ValueError(f"contiguous key_cache must be [B, S, K, H] with B={b}, got {ks}")
    else:
        if not is_int(dtype_of(page_table)):
            raise TypeError(f"page_table must be an integer array, got dtype {dtype_of(page_table)}")
        if len(shape_of(page_table)) != 2 or shape_of(page_table)[0] != b:
            raise ValueError(f"page_table must be [B, max_pages] with B={b}, got {shape_of(page_table)}")
        table = concrete_value(page_table)
        if table is not None and table.size and table.max() >= ks[0]:
            bad = tuple(int(i) for i in np.argwhere(table >= ks[0])[0])
            raise ValueError(
                f"page_table{list(bad)} = {table[bad]} is not a page of the pool of P={ks[0]} pages "
                f"(entries must lie in [0, {ks[0]}), or be negative for 'no page')"
            )
    scale, logits_soft_cap = check_scalars(scale, logits_soft_cap)
    arr = concrete_value(lengths)
    capacity = ks[1] if page_table is None else ks[1] * shape_of(page_table)[1]
    if arr is not None and arr.size and (arr.min() < 0 or arr.max() > capacity):
        raise ValueError(f"key_value_seq_lengths must lie in [0, {capacity}], got {arr}")
    return capacity, scale, logits_soft_cap


class _Shape(NamedTuple):
    """What the implementations' reasons look at."""

    page: int  # page size (paged) or S (contiguous)
    paged: bool


class _Call(NamedTuple):
    query: Array
    key_cache: Array
    value_cache: Array
    lengths: Array
    page_table: Array | None
    scale: float | None
    logits_soft_cap: float | None


def _pallas_reason(p: _Shape, automatic: bool) -> str | None:
    backend = jax.default_backend()
    if backend not in ("gpu", "cpu"):
        return f"the Pallas decode kernel runs on GPUs (or interpreted on CPU), not on {backend!r}"
    if automatic and backend == "cpu":
        return "on CPU the Pallas kernels run only in interpret mode (a test tool); ask for them by name"
    if p.paged and (p.page < 16 or p.page & (p.page - 1)):
        return f"the Pallas decode kernel needs a power-of-two page size >= 16, got {p.page}"
    return None


def _run_pallas(c: _Call) -> Array:
    from attn_jax.kernels import decode_triton

    return decode_triton.decode_attention(
        c.query, c.key_cache, c.value_cache, c.lengths, c.page_table, scale=c.scale,
        logits_soft_cap=c.logits_soft_cap, interpret=jax.default_backend() == "cpu")


def _run_gathered(c: _Call, implementation: str) -> Array:
    """Gather each sequence's pages (a missing page is masked, never read), then one query row of
    ``dot_product_attention``, which selects away (where, not a zero weight) every key the lengths
    or the missing pages hide, so garbage in those slots never reaches the output."""
    key_cache, value_cache, mask = c.key_cache, c.value_cache, None
    b = c.query.shape[0]
    if c.page_table is not None:
        pages = jnp.asarray(c.page_table)
        present = (pages >= 0) & (pages < key_cache.shape[0])
        safe = jnp.clip(pages, 0, key_cache.shape[0] - 1)
        key_cache = key_cache[safe].reshape(b, -1, *key_cache.shape[2:])
        value_cache = value_cache[safe].reshape(b, -1, *value_cache.shape[2:])
        mask = jnp.repeat(present, shape_of(value_cache)[1] // pages.shape[1], axis=1)[:, None, None, :]
    out = dot_product_attention(c.query[:, None], key_cache, value_cache, mask=mask, scale=c.scale,
                                key_value_seq_lengths=c.lengths, logits_soft_cap=c.logits_soft_cap,
                                implementation=implementation)
    return out[:, 0]


#: decode_attention's implementations; None: pallas on a GPU, else xla.
REGISTRY = OpRegistry("decode_attention", automatic=("pallas", "xla"))
REGISTRY.register("xla", lambda p, automatic: None, lambda c: _run_gathered(c, "xla"))
REGISTRY.register("chunked", lambda p, automatic: None, lambda c: _run_gathered(c, "chunked"))
for _name in ("pallas", "pallas_triton"):
    REGISTRY.register(_name, _pallas_reason, _run_pallas)
for _name in ("pallas_mosaic_gpu", "pallas_mosaic_tpu"):
    REGISTRY.register(_name, lambda p, automatic, n=_name: f"{n}: no decode kernel of this kind yet", None)
REGISTRY.register("cudnn", lambda p, automatic: "cudnn has no decode path here", None)
REGISTRY.register("ring", lambda p, automatic: "ring attention splits a sequence; a decode step has one token", None)


def decode_attention(
    query: DecodeQuery,
    key_cache: Cache,
    value_cache: Cache,
    key_value_seq_lengths: DecodeLengths,
    *,
    scale: float | ArrayLike | None = None,
    logits_soft_cap: float | None = None,
    page_table: PageTable | None = None,
    implementation: str | Sequence[str] | None = None,
) -> DecodeOut:
    """Attention of one new token per sequence over its cache.

    Args:
      query: ``[B, N, H]``.
      key_cache: ``[B, S, K, H]`` (contiguous) or ``[P, page_size, K, H]`` (paged).
      value_cache: like key_cache with ``Hv`` last.
      key_value_seq_lengths: ``[B]`` valid tokens per sequence, in ``[0, capacity]``
        (capacity ``S``, or ``max_pages · page_size``); 0 gives zeros. Concrete
        values outside raise ValueError; traced ones are clipped into it.
      scale: default ``1 / sqrt(H)``, a number or a traced scalar; logits_soft_cap:
        ``c · tanh(logits / c)``; both finite (concrete non-finite values raise ValueError).
      page_table: ``[B, max_pages]`` int, selects the paged layout. Entry
        ``page_table[b, i]`` is the pool page holding tokens ``i·page_size ..``
        of sequence ``b``. A negative entry means "no page": its tokens are not
        attended (as if masked) and nothing is read for them. An entry ``>= P``
        raises ValueError (naming it) when the table is concrete; under ``jit``
        it is treated as "no page" too. No entry ever makes another page's
        tokens part of the result.
      implementation: None, a name or a list/tuple of names, the vocabulary
        of ``dot_product_attention`` (:mod:`attn_jax.attention.registry`; module docstring).

    Returns:
      ``[B, N, Hv]`` in the query dtype. Slots past a sequence's length and
      missing pages are selected away before the weighted sum: NaN or inf
      stored there never reaches the output. A cache with no slot (``S = 0``
      or no pages) gives zeros.
    """
    capacity, scale, logits_soft_cap = _check(
        query, key_cache, value_cache, key_value_seq_lengths, page_table, logits_soft_cap, scale)
    implementation_names(implementation)  # type errors before any work
    if scale is not None and not isinstance(scale, float):  # traced: folded into the query, as dot_product_attention
        query, scale = jnp.asarray(query) * jnp.asarray(scale).astype(dtype_of(query)), 1.0
    lengths = jnp.clip(jnp.asarray(key_value_seq_lengths), 0, capacity).astype(jnp.int32)
    b, n, _ = shape_of(query)
    name = REGISTRY.resolve(implementation, _Shape(shape_of(key_cache)[1], page_table is not None))
    if 0 in (b, n, capacity):  # nothing to compute, or no slot to read: zeros
        return jnp.zeros((b, n, shape_of(value_cache)[3]), query.dtype)
    return REGISTRY.run(name, _Call(query, key_cache, value_cache, lengths, page_table, scale, logits_soft_cap))
