"""Neural Turing Machine addressing (Graves, Wayne & Danihelka 2014, eqs. 3.1-3.9), batch-first.

Memory ``[B, N, M]``: N slots of width M. Weightings ``[B, N]`` sum to 1.

* :func:`content_weights` — eq. 3.5-3.6: ``softmax_i(β · cos(k, M_i))``;
* :func:`interpolate` — eq. 3.7: ``g · w_c + (1 - g) · w_prev``;
* :func:`shift` — eq. 3.8: circular convolution with a shift distribution over
  offsets ``-(L//2) .. L//2`` (offset +1 moves attention to the next slot);
* :func:`sharpen` — eq. 3.9: ``w^γ / Σ w^γ`` (γ >= 1);
* :func:`address` composes the four; :func:`read` (eq. 3.1) and :func:`write`
  (eqs. 3.2-3.4: erase then add).

Numerically safe: cosine similarity is 0 (not NaN) for zero vectors, with
finite gradients; sharpening works in log space, so zero weights stay zero and
gradients stay finite.

>>> import jax.numpy as jnp
>>> w = jnp.array([[0.0, 1.0, 0.0, 0.0]])
>>> shift(w, jnp.array([[0.0, 0.0, 1.0]]))  # all weight on offset +1
Array([[0., 0., 1., 0.]], dtype=float32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_jax.shapes import NTMKey, NTMMemory, NTMRead, NTMScalar, NTMShift, NTMVector, NTMWeighting

Array = jax.Array
_EPS = 1e-8
_TINY = 1e-30


def _check_weighting(name: str, w: Array, n: int | None = None, b: int | None = None) -> None:
    """``w`` must be ``[B, N]`` with the given B and N: a batch mismatch is an error, never a broadcast."""
    want = ", ".join(f"{d}={v}" for d, v in (("B", b), ("N", n)) if v is not None)
    if jnp.ndim(w) != 2 or (n is not None and w.shape[-1] != n) or (b is not None and w.shape[0] != b):
        raise ValueError(f"{name} must be [B, N]{f' with {want}' if want else ''}, got {jnp.shape(w)}")


def _check_memory(memory: Array) -> None:
    if jnp.ndim(memory) != 3:
        raise ValueError(f"memory must be [B, N, M], got {jnp.shape(memory)}")


def _safe_norm(x: Array) -> Array:
    return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1), _EPS * _EPS))


def cosine_similarity(memory: NTMMemory, key: NTMKey) -> NTMWeighting:
    """``K[k, M_i] = k·M_i / (|k| |M_i|)`` for every slot: ``[B, N]``; 0 where either vector is zero."""
    dots = jnp.einsum("BNM,BM->BN", memory, key)
    return dots / (_safe_norm(memory) * _safe_norm(key)[:, None])


def content_weights(memory: NTMMemory, key: NTMKey, beta: NTMScalar) -> NTMWeighting:
    """Content addressing: ``softmax_i(β · cos(key, memory_i))``.

    Args:
      memory: ``[B, N, M]``; key: ``[B, M]``; beta: ``[B]`` key strength (>= 0).
    Returns:
      ``[B, N]``.
    """
    if memory.ndim != 3 or key.shape != (memory.shape[0], memory.shape[2]):
        raise ValueError(f"expected memory [B, N, M] and key [B, M]; got {memory.shape}, {key.shape}")
    beta = jnp.asarray(beta)
    if beta.shape != memory.shape[:1]:
        raise ValueError(f"beta must be [B] = {memory.shape[:1]}, got {beta.shape}")
    return jax.nn.softmax(beta[:, None] * cosine_similarity(memory, key), axis=-1)


def interpolate(w_content: NTMWeighting, w_prev: NTMWeighting, gate: NTMScalar) -> NTMWeighting:
    """``g · w_content + (1 - g) · w_prev`` with ``gate [B]`` in [0, 1]."""
    _check_weighting("w_content", w_content)
    _check_weighting("w_prev", w_prev, w_content.shape[-1], w_content.shape[0])
    gate = jnp.asarray(gate)
    if gate.shape != w_content.shape[:1]:
        raise ValueError(f"gate must be [B] = {w_content.shape[:1]}, got {gate.shape}")
    return gate[:, None] * w_content + (1.0 - gate[:, None]) * w_prev


def shift(w: NTMWeighting, s: NTMShift) -> NTMWeighting:
    """Circular convolution (eq. 3.8): ``result(i) = Σ_j s_j · w((i - o_j) mod N)``, ``o_j = j - L//2``.

    Args:
      w: ``[B, N]``; s: ``[B, L]`` shift weights, L odd.
    """
    _check_weighting("w", w)
    if s.ndim != 2 or s.shape[0] != w.shape[0]:
        raise ValueError(f"s must be [B, L] with B={w.shape[0]}, got {s.shape}")
    length = s.shape[1]
    if length % 2 != 1:
        raise ValueError(f"the shift distribution needs an odd length L (offsets -L//2..L//2), got L={length}")
    half = length // 2
    return sum(s[:, j, None] * jnp.roll(w, j - half, axis=-1) for j in range(length))


def sharpen(w: NTMWeighting, gamma: NTMScalar) -> NTMWeighting:
    """``w^γ / Σ_i w^γ`` with ``gamma [B] >= 1``, computed in log space (zeros stay zero)."""
    _check_weighting("w", w)
    gamma = jnp.asarray(gamma)
    if gamma.shape != w.shape[:1]:
        raise ValueError(f"gamma must be [B] = {w.shape[:1]}, got {gamma.shape}")
    logw = jnp.log(jnp.maximum(w, _TINY))
    out = jax.nn.softmax(gamma[:, None] * logw, axis=-1)
    return jnp.where(w > 0, out, 0.0)


def address(memory: NTMMemory, w_prev: NTMWeighting, key: NTMKey, beta: NTMScalar, gate: NTMScalar, s: NTMShift,
            gamma: NTMScalar) -> NTMWeighting:
    """The full addressing pipeline (Fig. 2): content -> interpolation -> shift -> sharpening. ``[B, N]``."""
    _check_memory(memory)
    _check_weighting("w_prev", w_prev, memory.shape[1], memory.shape[0])
    return sharpen(shift(interpolate(content_weights(memory, key, beta), w_prev, gate), s), gamma)


def read(memory: NTMMemory, w: NTMWeighting) -> NTMRead:
    """Eq. 3.1: ``r = Σ_i w_i M_i``: ``[B, M]``."""
    _check_memory(memory)
    _check_weighting("w", w, memory.shape[1], memory.shape[0])
    return jnp.einsum("BN,BNM->BM", w, memory)


def write(memory: NTMMemory, w: NTMWeighting, erase: NTMVector, add: NTMVector) -> NTMMemory:
    """Eqs. 3.2-3.4: ``M ∘ (1 - w eᵀ) + w aᵀ`` with ``erase [B, M]`` in [0, 1] and ``add [B, M]``."""
    _check_memory(memory)
    _check_weighting("w", w, memory.shape[1], memory.shape[0])
    if erase.shape != (memory.shape[0], memory.shape[2]) or add.shape != erase.shape:
        raise ValueError(f"erase and add must be [B, M] = {(memory.shape[0], memory.shape[2])}, "
                         f"got {erase.shape}, {add.shape}")
    return memory * (1.0 - w[:, :, None] * erase[:, None, :]) + w[:, :, None] * add[:, None, :]
