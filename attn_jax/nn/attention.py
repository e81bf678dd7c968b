"""Flax NNX attention modules for recurrent encoder-decoders (Bahdanau, Luong global and local).

Each module owns its parameters and calls the pure primitives of ``attn_jax``;
``implementation`` is passed through where a primitive has one. Shapes:
query (decoder states) ``[B, T, Dq]``, key (encoder annotations) ``[B, S, Dk]``,
value ``[B, S, Dv]``; ``key_value_seq_lengths [B]`` and a boolean ``mask``
broadcastable to ``[B, T, S]`` exclude source positions, which then receive
exactly zero weight.

>>> from flax import nnx
>>> import jax.numpy as jnp
>>> attn = AdditiveAttention(6, 5, 8, rngs=nnx.Rngs(0))
>>> ctx, w = attn(jnp.ones((2, 3, 6)), jnp.ones((2, 4, 5)), jnp.ones((2, 4, 7)), return_weights=True)
>>> ctx.shape, w.shape
((2, 3, 7), (2, 3, 4))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax import scores as score_fns
from attn_jax.attention.additive import additive_attention
from attn_jax.local import local_attention_weights, predictive_center
from attn_jax.masks import MASK_VALUE, MaskSpec, and_masks
from attn_jax.softmax import masked_softmax_stats

Array = jax.Array
_init = nnx.initializers.lecun_normal()


def _keep(t: int, s: int, lengths, mask):
    keep = MaskSpec(kv_lengths=None if lengths is None else jnp.asarray(lengths, jnp.int32)).block(0, t, 0, s)
    return and_masks(keep, None if mask is None else jnp.asarray(mask))


def masked_softmax(scores: Array, keep) -> Array:
    """Softmax over the last axis; masked entries and rows with nothing visible get exactly 0."""
    s = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    if keep is not None:
        s = jnp.where(keep, s, MASK_VALUE)
    p, l_safe, _ = masked_softmax_stats(s, keep)
    return (p / l_safe[..., None]).astype(scores.dtype)


class AdditiveAttention(nnx.Module):
    """Bahdanau et al. (2015): ``e_ts = vᵀ tanh(W_q q_t + W_k k_s)``."""

    def __init__(self, query_features: int, key_features: int, attention_features: int, *, rngs: nnx.Rngs,
                 implementation: str | None = None):
        self.w_q = nnx.Param(_init(rngs.params(), (query_features, attention_features)))
        self.w_k = nnx.Param(_init(rngs.params(), (key_features, attention_features)))
        self.v = nnx.Param(jax.random.normal(rngs.params(), (attention_features,)) / attention_features**0.5)
        self.implementation = implementation

    def __call__(self, query, key, value, *, mask=None, key_value_seq_lengths=None, is_causal=False,
                 return_weights=False):
        return additive_attention(query, key, value, self.w_q[...], self.w_k[...], self.v[...], mask=mask,
                                  key_value_seq_lengths=key_value_seq_lengths, is_causal=is_causal,
                                  return_weights=return_weights, implementation=self.implementation)


class LuongAttention(nnx.Module):
    """Luong et al. (2015) global attention with ``score`` in {"dot", "general", "concat", "location"}.

    "location" scores ``W_a h_t`` over positions, so it needs ``max_source_length``.
    """

    SCORES = ("dot", "general", "concat", "location")

    def __init__(self, score: str, query_features: int, key_features: int, *, rngs: nnx.Rngs,
                 attention_features: int | None = None, max_source_length: int | None = None):
        if score not in self.SCORES:
            raise ValueError(f"unknown score {score!r}; valid: {', '.join(self.SCORES)}")
        self.score = score
        if score == "dot" and query_features != key_features:
            raise ValueError(f"dot score needs query_features == key_features, got {query_features}, {key_features}")
        if score == "general":
            self.w = nnx.Param(_init(rngs.params(), (query_features, key_features)))
        elif score == "concat":
            a = attention_features or query_features
            self.w_q = nnx.Param(_init(rngs.params(), (query_features, a)))
            self.w_k = nnx.Param(_init(rngs.params(), (key_features, a)))
            self.v = nnx.Param(jax.random.normal(rngs.params(), (a,)) / a**0.5)
        elif score == "location":
            if not max_source_length:
                raise ValueError("the location score needs max_source_length")
            self.w = nnx.Param(_init(rngs.params(), (query_features, max_source_length)))

    def scores(self, query, key):
        """Alignment scores ``[B, T, S]``."""
        if self.score == "dot":
            return score_fns.dot(query, key)
        if self.score == "general":
            return score_fns.general(query, key, self.w[...])
        if self.score == "concat":
            return score_fns.additive(query, key, self.w_q[...], self.w_k[...], self.v[...])
        s = key.shape[-2]
        if s > self.w.shape[1]:
            raise ValueError(f"source length {s} exceeds max_source_length {self.w.shape[1]}")
        return score_fns.location(query, self.w[...][:, :s])

    def __call__(self, query, key, value, *, mask=None, key_value_seq_lengths=None, return_weights=False):
        weights = masked_softmax(self.scores(query, key), _keep(query.shape[-2], key.shape[-2],
                                                                key_value_seq_lengths, mask))
        context = jnp.einsum("...ts,...sd->...td", weights, value)
        return (context, weights) if return_weights else context


class LocalAttention(nnx.Module):
    """Luong et al. (2015) local attention: ``mode`` "local-m" (centre t) or "local-p" (predicted centre).

    Scores inside the window ``[p_t - D, p_t + D]`` use ``score`` ("dot" or
    "general"); local-p multiplies by a Gaussian with σ = D / 2 (not renormalised).
    """

    def __init__(self, mode: str, half_window: int, query_features: int, key_features: int, *,
                 rngs: nnx.Rngs, score: str = "general", attention_features: int | None = None):
        if mode not in ("local-m", "local-p"):
            raise ValueError(f"unknown mode {mode!r}; valid: local-m, local-p")
        self.mode, self.half_window = mode, half_window
        self.luong = LuongAttention(score, query_features, key_features, rngs=rngs)
        if mode == "local-p":
            a = attention_features or query_features
            self.w_p = nnx.Param(_init(rngs.params(), (query_features, a)))
            self.v_p = nnx.Param(jax.random.normal(rngs.params(), (a,)) / a**0.5)

    def center(self, query, source_lengths, positions=None):
        """Window centres ``[B, T]``: t for local-m, ``S_b · sigmoid(v_pᵀ tanh(W_p h_t))`` for local-p.

        ``positions [B, T]`` gives the target positions t of the queries (default
        ``0..T-1``); step-by-step decoding passes the current step.
        """
        b, t = query.shape[0], query.shape[-2]
        if self.mode == "local-m":
            if positions is None:
                return jnp.broadcast_to(jnp.arange(t, dtype=jnp.float32), (b, t))
            return jnp.broadcast_to(jnp.asarray(positions, jnp.float32), (b, t))
        return predictive_center(query, self.w_p[...], self.v_p[...], source_lengths)

    def __call__(self, query, key, value, *, key_value_seq_lengths=None, positions=None, return_weights=False):
        s = key.shape[-2]
        lengths = key_value_seq_lengths if key_value_seq_lengths is not None else jnp.full(query.shape[:1], s)
        weights = local_attention_weights(self.luong.scores(query, key), self.center(query, lengths, positions),
                                          self.half_window, self.mode == "local-p",
                                          key_value_seq_lengths=jnp.asarray(lengths))
        context = jnp.einsum("...ts,...sd->...td", weights, value)
        return (context, weights) if return_weights else context
