"""Flax NNX modules over the attn_jax primitives."""

from attn_jax.nn.attention import AdditiveAttention, LocalAttention, LuongAttention, masked_softmax

__all__ = ["AdditiveAttention", "LocalAttention", "LuongAttention", "masked_softmax"]
