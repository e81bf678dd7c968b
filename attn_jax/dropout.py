"""Attention dropout from a counter-based hash: the same mask in every implementation.

Dropout on the attention weights cannot come from ``jax.random.bernoulli`` over a
``[B, N, T, S]`` array: the chunked path and the kernels never hold that array.
Instead the keep decision of weight ``(b, n, i, j)`` (batch, query head, absolute
query position, absolute key position) is a pure function of the dropout key and
those four integers, so any implementation can evaluate it on whatever block it
holds and all of them draw the same mask:

* :func:`seeds` turns a jax PRNG key into two int32 words (``jax.random.bits``,
  once per call, outside any kernel);
* :func:`row_stream` mixes the seeds with ``(b, n, i)`` -- one word per query row;
* :func:`keep` mixes a row's word with ``j`` and compares the top 24 bits with a
  threshold: True (keep) with probability ``1 - rate`` up to ``2**-24``.

The mixer is Wellons' ``lowbias32`` (xor-shift / multiply), written in int32
with logical shifts and wrapping multiplies, operations that XLA, Triton and
Mosaic all lower. Kept weights are scaled by :func:`keep_scale`, the exact
inverse of the quantised keep probability, so the dropped output is unbiased.

``broadcast`` (flax's ``broadcast_dropout``): one ``[T, S]`` mask shared by every
batch element and head, i.e. the hash sees ``b = n = 0``.

This module imports jax only; the Pallas kernels use it (docs/design.md).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_BITS = 24  # the keep decision compares the top 24 bits of the hash
_M1 = np.int32(0x7FEB352D)
_M2 = np.int32(0x846CA68B - 2**32)
_GOLDEN = np.int32(0x9E3779B9 - 2**32)


def _srl(x, n: int):
    return jax.lax.shift_right_logical(x, jnp.asarray(n, x.dtype))


def mix(x):
    """Wellons' ``lowbias32`` on int32 bits: a bijection with good avalanche."""
    x = jnp.asarray(x, jnp.int32)
    x = x ^ _srl(x, 16)
    x = x * _M1
    x = x ^ _srl(x, 15)
    x = x * _M2
    return x ^ _srl(x, 16)


@dataclasses.dataclass(frozen=True)
class Dropout:
    """Static dropout settings: ``rate`` in ``[0, 1)`` and flax's ``broadcast`` flag."""

    rate: float = 0.0
    broadcast: bool = False

    def __post_init__(self):
        if not (isinstance(self.rate, (int, float)) and 0.0 <= self.rate < 1.0):
            raise ValueError(f"dropout_rate must be a number in [0, 1), got {self.rate!r}")

    @property
    def active(self) -> bool:
        return self.rate > 0.0

    @property
    def threshold(self) -> int:
        """Keep iff the hash's top 24 bits are >= this (an int in ``[0, 2**24)``)."""
        return int(round(self.rate * 2**_BITS))

    @property
    def keep_scale(self) -> float:
        """``1 / P(keep)`` for the quantised threshold: the inverted-dropout multiplier."""
        return float(2**_BITS / (2**_BITS - self.threshold))


def check_rate(rate) -> float:
    """``dropout_rate`` as a Python float in ``[0, 1)``; TypeError if traced or not a number."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating, np.ndarray, jax.Array)):
        raise TypeError(f"dropout_rate must be a Python float, got {type(rate).__name__}")
    try:
        value = float(np.asarray(rate))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
        raise TypeError("dropout_rate must be concrete (a Python float), not a traced value") from None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"dropout_rate must lie in [0, 1), got {value}")
    return value


def seeds(rng) -> Array:
    """Two int32 words from a jax PRNG key (typed or a raw ``uint32[2]``); ``[2]`` int32."""
    if rng is None:
        raise ValueError("dropout_rate > 0 needs a dropout_rng (a jax.random key)")
    try:
        is_typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    except AttributeError:
        raise TypeError(f"dropout_rng must be a jax.random key, got {type(rng).__name__}") from None
    if (is_typed and rng.shape != ()) or (not is_typed and (rng.dtype != jnp.uint32 or rng.ndim != 1)):
        raise ValueError(
            "dropout_rng must be one jax.random key (shape () typed, or uint32[2] raw), "
            f"got dtype {rng.dtype} shape {rng.shape}"
        )
    bits = jax.random.bits(rng, (2,), jnp.uint32)
    return jax.lax.bitcast_convert_type(bits, jnp.int32)


def row_stream(seed, b, n, i):
    """One int32 word per query row ``(b, n, i)``; the arguments broadcast against each other.

    ``seed``: the two words, as a ``[2]`` array or a pair of scalars (what a kernel loads).
    """
    s0, s1 = (jnp.asarray(w, jnp.int32) for w in (seed[0], seed[1]))  # no array of the pair: Triton has no slice
    x = mix(s0 ^ mix(jnp.asarray(n, jnp.int32) ^ mix(s1 + jnp.asarray(b, jnp.int32))))
    return mix(x + jnp.asarray(i, jnp.int32) * _GOLDEN)


def keep(stream, j, threshold: int):
    """The keep decision (bool) of key ``j`` in the row(s) whose word is ``stream``."""
    u = mix(stream ^ jnp.asarray(j, jnp.int32))
    return _srl(u, 32 - _BITS) >= threshold


def block_keep(seed, dropout: Dropout, b, n, q_pos, k_pos):
    """Keep mask of a block: ``b``, ``n``, ``q_pos`` (rows) and ``k_pos`` (columns) broadcast.

    Typical shapes: ``b [B, 1, 1, 1]``, ``n [1, N, 1, 1]``, ``q_pos [1, 1, T, 1]``,
    ``k_pos [1, 1, 1, S]``. With ``dropout.broadcast`` the batch and head are 0.
    """
    if dropout.broadcast:
        b, n = 0, 0
    return keep(row_stream(seed, b, n, q_pos), k_pos, dropout.threshold)


def grouped_multiplier(seed, dropout: Dropout, shape, q0=0, k0=0):
    """Inverted-dropout multiplier (``keep_scale`` or 0, weakly typed) of a ``[B, K, cq, G, ck]`` block.

    The "xla" and "chunked" paths' layout: head ``n = kv · G + g``; the block's
    first query row is ``q0`` and its first key ``k0`` (absolute positions).
    """
    b, kh, cq, g, ck = shape
    bi = jax.lax.broadcasted_iota(jnp.int32, (b, 1, 1, 1, 1), 0)
    n = (jax.lax.broadcasted_iota(jnp.int32, (1, kh, 1, g, 1), 1) * g
         + jax.lax.broadcasted_iota(jnp.int32, (1, kh, 1, g, 1), 3))
    q_pos = q0 + jax.lax.broadcasted_iota(jnp.int32, (1, 1, cq, 1, 1), 2)
    k_pos = k0 + jax.lax.broadcasted_iota(jnp.int32, (1, 1, 1, 1, ck), 4)
    kept = block_keep(seed, dropout, bi, n, q_pos, k_pos)
    return jnp.where(kept, dropout.keep_scale, 0.0)


def dropout_mask(rng, rate: float, shape: tuple[int, int, int, int], *, broadcast: bool = False) -> Array:
    """The whole keep mask ``[B, N, T, S]`` (bool) that every implementation applies for ``rng``.

    For tests and references: ``dot_product_attention(..., dropout_rate=rate,
    dropout_rng=rng)`` equals attention whose normalised weights are multiplied
    by ``dropout_mask(...) * keep_scale(rate)``. ``B`` is the flattened batch.
    """
    d = Dropout(check_rate(rate), broadcast)
    b, n, t, s = shape
    ids = [jax.lax.broadcasted_iota(jnp.int32, (b, n, t, s), axis) for axis in range(4)]
    return block_keep(seeds(rng), d, *ids)


def keep_scale(rate: float) -> float:
    """The inverted-dropout multiplier for ``rate`` (``1 / P(keep)``, exact for the 24-bit threshold)."""
    return Dropout(check_rate(rate)).keep_scale
