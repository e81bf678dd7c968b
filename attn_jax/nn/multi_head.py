"""A reusable multi-head attention module with explicit feature sizes, over ``dot_product_attention``.

Like flax's ``MultiHeadAttention``: the sizes are arguments, not a model config, so
any block can use it — SAGAN's self-attention over feature maps (one head, queries
and keys of C/8, values of C/2, spectrally normalised projections, no scaling) and
SNAIL's causal attention block (one head, no output projection) are two
configurations of it. The Transformer keeps its own config-driven, sharding-aware
attention (``attn_jax.nn.transformer.TransformerAttention``).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> mha = MultiHeadAttention(16, num_heads=4, qk_features=32, rngs=nnx.Rngs(0))
    >>> mha(jnp.ones((2, 5, 16)), is_causal=True).shape
    (2, 5, 16)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax.attention.dispatch import dot_product_attention

Array = jax.Array


class MultiHeadAttention(nnx.Module):
    """``x [B, T, F]`` (and ``context [B, S, F]``) -> ``[B, T, out_features]``.

    Args:
      in_features: ``F``, the width of ``x`` and ``context``.
      num_heads: query heads ``N``.
      qk_features: total width of the queries and keys (``N · H``; default ``F``).
      v_features: total width of the values (``N · Hv``; default ``qk_features``).
      out_features: width of the output projection; None projects back to ``F``;
        0 means no output projection (the heads' values, concatenated, are returned).
      num_kv_heads: ``K`` key/value heads (GQA/MQA, ``N`` a multiple of ``K``; default ``N``).
      scale: logit scale; default ``1 / sqrt(H)`` (SAGAN uses 1).
      linear: ``linear(in, out, rngs=...)`` building each projection (default
        ``nnx.Linear``; e.g. a spectrally normalised linear layer).
      implementation: passed to :func:`~attn_jax.dot_product_attention`.
    """

    def __init__(self, in_features: int, *, num_heads: int = 1, qk_features: int | None = None,
                 v_features: int | None = None, out_features: int | None = None, num_kv_heads: int | None = None,
                 scale: float | None = None, linear: Callable[..., Callable[[Array], Array]] = nnx.Linear,
                 implementation=None, rngs: nnx.Rngs):
        qk = in_features if qk_features is None else qk_features
        vf = qk if v_features is None else v_features
        kv = num_heads if num_kv_heads is None else num_kv_heads
        for name, width in (("qk_features", qk), ("v_features", vf)):
            if width % num_heads:
                raise ValueError(f"{name}={width} must be a multiple of num_heads={num_heads}")
        if num_heads % kv:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={kv}")
        self.num_heads, self.num_kv_heads = num_heads, kv
        self.head_features, self.value_features = qk // num_heads, vf // num_heads
        self.query = linear(in_features, qk, rngs=rngs)
        self.key = linear(in_features, kv * self.head_features, rngs=rngs)
        self.value = linear(in_features, kv * self.value_features, rngs=rngs)
        out = in_features if out_features is None else out_features
        self.out = linear(vf, out, rngs=rngs) if out else None
        self.scale, self.implementation = scale, implementation

    def projections(self, x: Array, context: Array | None = None) -> tuple[Array, Array, Array]:
        """Queries ``[B, T, N, H]``, keys ``[B, S, K, H]`` and values ``[B, S, K, Hv]``."""
        context = x if context is None else context
        split = lambda y, heads: y.reshape(*y.shape[:-1], heads, -1)  # noqa: E731
        return (split(self.query(x), self.num_heads), split(self.key(context), self.num_kv_heads),
                split(self.value(context), self.num_kv_heads))

    def weights(self, x: Array, context: Array | None = None, *, is_causal: bool = False) -> Array:
        """The attention weights ``[B, N, T, S]`` (dense, for plots)."""
        q, k, _ = self.projections(x, context)
        g = self.num_heads // self.num_kv_heads
        k = jnp.repeat(k, g, axis=2)
        scale = self.head_features ** -0.5 if self.scale is None else self.scale
        logits = jnp.einsum("BTNH,BSNH->BNTS", q, k).astype(jnp.float32) * scale
        if is_causal:
            t, s = logits.shape[-2:]
            logits = jnp.where(jnp.tril(jnp.ones((t, s), bool)), logits, -jnp.inf)
        return jax.nn.softmax(logits, axis=-1)

    def __call__(self, x: Array, context: Array | None = None, *, is_causal: bool = False,
                 mask: Array | None = None, key_value_seq_lengths: Array | None = None) -> Array:
        q, k, v = self.projections(x, context)
        o = dot_product_attention(q, k, v, mask=mask, scale=self.scale, is_causal=is_causal,
                                  key_value_seq_lengths=key_value_seq_lengths, implementation=self.implementation)
        o = o.reshape(*o.shape[:-2], -1).astype(x.dtype)
        return o if self.out is None else self.out(o)
