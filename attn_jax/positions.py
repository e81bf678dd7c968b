"""Position information for attention: sinusoidal encodings (Vaswani et al. 2017) and rotary embeddings (RoPE).

Pure functions of arrays. ``positions`` are integer token positions ``[*B, T]``
(packed sequences restart them at 0 in each segment; a KV-cache step passes the
position it writes).

>>> import jax.numpy as jnp
>>> sinusoidal(jnp.arange(4)[None], 6).shape
(1, 4, 6)
>>> x = jnp.ones((1, 3, 2, 4))  # [B, T, N, H]
>>> y = rope(x, jnp.arange(3)[None])
>>> bool(jnp.allclose(y[:, 0], x[:, 0]))  # position 0 is not rotated
True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def sinusoidal(positions: Array, features: int, *, max_timescale: float = 10_000.0, dtype=jnp.float32) -> Array:
    """``PE(p, 2i) = sin(p / 10000^(2i/d))``, ``PE(p, 2i+1) = cos(p / 10000^(2i/d))``: ``[*B, T] -> [*B, T, d]``.

    The paper interleaves sin and cos; we do too, so that row p matches eq. (3.5) of
    Vaswani et al. element by element. ``features`` must be even.
    """
    if features % 2:
        raise ValueError(f"sinusoidal positions need an even number of features, got {features}")
    i = jnp.arange(features // 2, dtype=jnp.float32)
    inv = max_timescale ** (-2.0 * i / features)  # [d/2]
    angle = jnp.asarray(positions, jnp.float32)[..., None] * inv  # [*B, T, d/2]
    out = jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1)  # [*B, T, d/2, 2]
    return out.reshape(angle.shape[:-1] + (features,)).astype(dtype)


def rope(x: Array, positions: Array, *, base: float = 10_000.0) -> Array:
    """Rotary position embedding (Su et al. 2021) of ``x [*B, T, N, H]`` at ``positions [*B, T]``.

    Pairs ``(x[..., i], x[..., i + H/2])`` are rotated by the angle ``p · base^(-2i/H)`` (the "half" layout of
    GPT-NeoX and LLaMA), so ``q·k`` depends on positions only through their difference. ``H`` must be even.
    Computed in float32, returned in ``x``'s dtype.
    """
    h = x.shape[-1]
    if h % 2:
        raise ValueError(f"rope needs an even head_dim, got x of shape {x.shape}")
    inv = base ** (-2.0 * jnp.arange(h // 2, dtype=jnp.float32) / h)  # [H/2]
    angle = jnp.asarray(positions, jnp.float32)[..., None, None] * inv  # [*B, T, 1, H/2]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def segment_positions(segment_ids: Array) -> Array:
    """Positions that restart at 0 at each new segment id along the last axis: ``[*B, T] -> [*B, T]``.

    >>> segment_positions(jnp.array([[1, 1, 1, 2, 2, 0]])).tolist()
    [[0, 1, 2, 0, 1, 0]]
    """
    seg = jnp.asarray(segment_ids)
    t = jnp.arange(seg.shape[-1])
    start = jnp.concatenate([jnp.ones_like(seg[..., :1], bool), seg[..., 1:] != seg[..., :-1]], axis=-1)
    first = jax.lax.cummax(jnp.where(start, t, 0), axis=seg.ndim - 1)
    return t - first
