"""attn_jax: the attention mechanisms of "Attention? Attention!" in JAX.

Pure functions at this level (no parameters held); Flax NNX modules live in
``attn_jax.nn``; fused Pallas kernels in ``attn_jax.kernels``.
"""

from attn_jax import masks, memory, positions, scores, sharding
from attn_jax.attention.additive import additive_attention
from attn_jax.attention.chunked import ChunkSizes
from attn_jax.attention.decode import decode_attention
from attn_jax.attention.dispatch import dot_product_attention
from attn_jax.attention.ring import ring_attention, ring_attention_sharded
from attn_jax.errors import UnsupportedError
from attn_jax.local import local_attention_weights, predictive_center
from attn_jax.masks import MaskSpec, dense_mask

__version__ = "0.1.0"

__all__ = [
    "ChunkSizes",
    "MaskSpec",
    "UnsupportedError",
    "additive_attention",
    "decode_attention",
    "dense_mask",
    "dot_product_attention",
    "local_attention_weights",
    "masks",
    "memory",
    "positions",
    "predictive_center",
    "ring_attention",
    "ring_attention_sharded",
    "scores",
    "sharding",
]
