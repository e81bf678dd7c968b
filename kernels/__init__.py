"""Fused Pallas attention kernels, importable as ``attn_jax.kernels``.

Kernels import jax and ``attn_jax.masks`` only. ``attn_jax.dot_product_attention``
asks :func:`unsupported_reason` whether a kernel serves a problem and calls
:func:`attention` lazily, so importing attn_jax never imports Pallas.

No kernel has landed yet: the Triton-style GPU kernel (with CPU interpret
mode), the Mosaic GPU kernel and the Mosaic TPU kernel are tracked as separate
issues. Until then every pallas name declines with a reason, and asking for one
explicitly raises ``attn_jax.UnsupportedError``.
"""

from __future__ import annotations

KERNEL_NAMES = ("pallas", "pallas_triton", "pallas_mosaic_gpu", "pallas_mosaic_tpu")


def unsupported_reason(name: str, problem) -> str | None:
    """Why kernel ``name`` cannot serve ``problem`` (an attn_jax Problem), or None."""
    if name not in KERNEL_NAMES:
        return f"{name!r} is not a Pallas kernel name"
    return f"{name}: the Pallas attention kernels are not implemented yet"


def attention(name: str, problem):
    """Run kernel ``name`` on a normalised problem: ``(out [B,T,N,Hv], lse [B,T,N])``."""
    # Unreachable through the dispatcher, which asks unsupported_reason first
    # and raises attn_jax.UnsupportedError itself.
    raise NotImplementedError(unsupported_reason(name, problem))
