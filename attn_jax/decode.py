"""``decode_attention``: one new token per sequence against its KV cache.

Two cache layouts: contiguous ``key_cache [B, S, K, H]``, or paged
``key_cache [P, page_size, K, H]`` (a pool of pages) with ``page_table
[B, max_pages]`` listing each sequence's pages in order. Implementations:

* ``"xla"``: gathers the pages (paged layout) and runs the dense
  ``dot_product_attention(implementation="xla")`` with one query row.
* ``"pallas"`` (alias ``"pallas_triton"``, ``"triton"``): the split-KV
  flash-decoding kernel of ``attn_jax.kernels.decode_triton``, compiled on GPU,
  interpreted on CPU. Needs a page size that is a power of two >= 16.
* ``None``: pallas on a GPU, else xla.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax._inputs import _dtype, _is_float, _is_int, _shape
from attn_jax.attention import dot_product_attention
from attn_jax.errors import UnsupportedError

Array = jax.Array
_ALIASES = {"pallas_triton": "pallas", "triton": "pallas"}


def _check(query, key_cache, value_cache, lengths, page_table, logits_soft_cap):
    qs, ks, vs = _shape(query), _shape(key_cache), _shape(value_cache)
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
        if not _is_float(_dtype(x)):
            raise TypeError(f"{name} must be a floating dtype, got {_dtype(x)}")
    if len({_dtype(query), _dtype(key_cache), _dtype(value_cache)}) != 1:
        raise TypeError(f"query, key_cache and value_cache must share a dtype, got "
                        f"{_dtype(query)}, {_dtype(key_cache)}, {_dtype(value_cache)}")
    if not _is_int(_dtype(lengths)):
        raise TypeError(f"key_value_seq_lengths must be an integer array, got dtype {_dtype(lengths)}")
    if _shape(lengths) != (b,):
        raise ValueError(f"key_value_seq_lengths must be [B] = {(b,)}, got {_shape(lengths)}")
    if page_table is None:
        if ks[0] != b:
            raise ValueError(f"contiguous key_cache must be [B, S, K, H] with B={b}, got {ks}")
    else:
        if not _is_int(_dtype(page_table)):
            raise TypeError(f"page_table must be an integer array, got dtype {_dtype(page_table)}")
        if len(_shape(page_table)) != 2 or _shape(page_table)[0] != b:
            raise ValueError(f"page_table must be [B, max_pages] with B={b}, got {_shape(page_table)}")
    if logits_soft_cap is not None and not logits_soft_cap > 0:
        raise ValueError(f"logits_soft_cap must be positive, got {logits_soft_cap}")
    try:
        arr = np.asarray(lengths)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    capacity = ks[1] if page_table is None else ks[1] * _shape(page_table)[1]
    if arr.size and (arr.min() < 0 or arr.max() > capacity):
        raise ValueError(f"key_value_seq_lengths must lie in [0, {capacity}], got {arr}")


def decode_attention(
    query: Array,
    key_cache: Array,
    value_cache: Array,
    key_value_seq_lengths: Array,
    *,
    scale: float | None = None,
    logits_soft_cap: float | None = None,
    page_table: Array | None = None,
    implementation: str | None = None,
) -> Array:
    """Attention of one new token per sequence over its cache.

    Args:
      query: ``[B, N, H]``.
      key_cache: ``[B, S, K, H]`` (contiguous) or ``[P, page_size, K, H]`` (paged).
      value_cache: like key_cache with ``Hv`` last.
      key_value_seq_lengths: ``[B]`` valid tokens per sequence (0 gives zeros).
      scale: default ``1 / sqrt(H)``; logits_soft_cap: ``c · tanh(logits / c)``.
      page_table: ``[B, max_pages]`` int, selects the paged layout.
      implementation: None, "xla" or "pallas" (module docstring).

    Returns:
      ``[B, N, Hv]`` in the query dtype.
    """
    _check(query, key_cache, value_cache, key_value_seq_lengths, page_table, logits_soft_cap)
    if implementation is not None:
        if not isinstance(implementation, str):
            raise ValueError(f"implementation must be a string, got {implementation!r}")
        implementation = _ALIASES.get(implementation, implementation)
        if implementation not in ("xla", "pallas"):
            raise ValueError(f"unknown implementation {implementation!r} for decode_attention; known: xla, pallas")
    backend = jax.default_backend()
    if implementation is None:
        implementation = "pallas" if backend == "gpu" else "xla"
    if implementation == "pallas":
        if backend not in ("gpu", "cpu"):
            raise UnsupportedError(f"decode_attention: the Pallas kernel runs on GPUs (or interpreted on CPU), "
                                   f"not on {backend!r}")
        page = key_cache.shape[1]
        if page_table is not None and (page < 16 or page & (page - 1)):
            raise UnsupportedError(f"decode_attention pallas needs a power-of-two page size >= 16, got {page}")
        from attn_jax.kernels import decode_triton

        return decode_triton.decode_attention(
            query, key_cache, value_cache, jnp.asarray(key_value_seq_lengths), page_table,
            scale=scale, logits_soft_cap=logits_soft_cap, interpret=backend == "cpu")
    if page_table is not None:
        b = query.shape[0]
        key_cache = key_cache[page_table].reshape(b, -1, *key_cache.shape[2:])
        value_cache = value_cache[page_table].reshape(b, -1, *value_cache.shape[2:])
    out = dot_product_attention(query[:, None], key_cache, value_cache, scale=scale,
                                key_value_seq_lengths=jnp.asarray(key_value_seq_lengths),
                                logits_soft_cap=logits_soft_cap, implementation="xla")
    return out[:, 0]
