"""What the kernels share besides masks and softmax: tile sizes, tile matmuls, padding, per-position ids.

Every kernel module (flash_triton, flash_tpu, additive_triton, decode_triton)
imports jax, :mod:`attn_jax.masks`, :mod:`attn_jax.softmax` and this module only.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

MIN_BLOCK = 16  # tl.dot needs every tile dimension >= 16


def is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def check_block(name: str, value) -> None:
    """Raise ValueError unless ``value`` is a power of two >= MIN_BLOCK."""
    if not isinstance(value, int) or not is_pow2(value) or value < MIN_BLOCK:
        raise ValueError(f"BlockSizes.{name}={value!r} must be a power of two >= {MIN_BLOCK}")


def dot(a, b, trans_a=False, trans_b=False):
    """Tile matmul with float32 accumulation; float32 inputs stay exact (no TF32 rounding)."""
    exact = a.dtype == jnp.float32 and b.dtype == jnp.float32
    return plgpu.dot(a, b, trans_a=trans_a, trans_b=trans_b, allow_tf32=False if exact else None).astype(jnp.float32)


def pad_axis(x, axis: int, target: int, value=0, *, broadcast: bool = False):
    """Pad ``x`` along ``axis`` to ``target`` with ``value``; None passes through.

    With ``broadcast=True`` a size-1 axis is a broadcast axis (bias/mask) and is
    left as it is.
    """
    if x is None or x.shape[axis] == target or (broadcast and x.shape[axis] == 1):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, target - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


Q_PAD_ID = -(2**31)  # query rows that attend to nothing
KV_PAD_ID = Q_PAD_ID + 1  # keys nobody attends to


def _ids(length, padded, lengths, segment_ids, pad_id, batch):
    pos = jnp.arange(padded, dtype=jnp.int32)[None, :]
    ids = jnp.zeros((batch, padded), jnp.int32) if segment_ids is None else pad_axis(segment_ids, 1, padded)
    valid = pos < length
    if lengths is not None:
        valid = valid & (pos < lengths[:, None])
    return jnp.where(valid, ids, pad_id)


def position_ids(batch, t, tp, s, sp, q_lengths=None, kv_lengths=None, q_segment_ids=None, kv_segment_ids=None):
    """Fold segment ids, lengths and padding into per-position ids ``[B, Tp]``, ``[B, Sp]`` (or None, None).

    A query and a key attend only when their ids are equal; padded or
    out-of-length positions get ids (:data:`Q_PAD_ID`, :data:`KV_PAD_ID`) that
    match nothing. Returns ``(None, None)`` when nothing per-position masks.
    """
    if q_segment_ids is None and q_lengths is None and kv_lengths is None and tp == t and sp == s:
        return None, None
    return (_ids(t, tp, q_lengths, q_segment_ids, Q_PAD_ID, batch),
            _ids(s, sp, kv_lengths, kv_segment_ids, KV_PAD_ID, batch))


def reduce_to_bias(ds, bias):
    """Sum a ``[B, N, Tp, Sp]`` logits gradient over the axes ``bias`` broadcasts (size 1)."""
    axes = tuple(a for a in range(ds.ndim) if bias.shape[a] == 1 and ds.shape[a] != 1)
    return jnp.sum(ds, axis=axes, keepdims=True).astype(bias.dtype)


def default_num_warps(head_dim: int) -> int:
    """Warps per program of the Triton-style attention kernels: 4 up to head dim 64, else 8."""
    return 4 if max(MIN_BLOCK, pl.next_power_of_2(head_dim)) <= 64 else 8


def padded_tile(length: int, block: int) -> tuple[int, int]:
    """``(tile, padded length)``: a power-of-two tile >= MIN_BLOCK no longer than ``block`` or the
    length needs, and the length rounded up to a whole number of tiles (padding is masked)."""
    tile = max(MIN_BLOCK, min(block, pl.next_power_of_2(length)))
    return tile, pl.cdiv(length, tile) * tile
