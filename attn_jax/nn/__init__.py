"""Flax NNX modules over the attn_jax primitives."""

from attn_jax.nn.attention import AdditiveAttention, LocalAttention, LuongAttention, masked_softmax
from attn_jax.nn.recurrent import BiRNNEncoder

__all__ = ["AdditiveAttention", "BiRNNEncoder", "LocalAttention", "LuongAttention", "masked_softmax"]
