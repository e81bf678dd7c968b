"""Small helpers shared by the Triton-style kernels: tile sizes, tile matmuls, padding."""

from __future__ import annotations

import jax.numpy as jnp
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
