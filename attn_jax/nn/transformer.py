"""The Transformer (Vaswani et al. 2017) in Flax NNX: encoder-decoder and decoder-only LM, with KV-cache decoding.

Multi-head attention with grouped KV heads (GQA: ``num_kv_heads`` divides
``num_heads``; the kernels never repeat K/V), through
:func:`attn_jax.dot_product_attention` (``implementation=`` passes through) and,
one token at a time, :func:`attn_jax.decode_attention` against a KV cache.
Positions: ``sinusoidal`` (the paper), ``learned``, ``rope`` (rotary, applied to
queries and keys) or ``none``; post-LN (the paper) or pre-LN; packed sequences
by segment ids (positions restart in each segment).

Every parameter carries logical axis names (``nnx.with_partitioning``) that
:mod:`attn_jax.sharding` maps to mesh axes; activations are constrained by name,
which is a no-op without an active mesh.

Shapes: tokens ``[B, T]`` int, hidden ``[B, T, D]``, heads ``[B, T, N, H]``,
a layer's cache :class:`KVCache` ``key/value [B, S_max, K, H]``, ``lengths [B]``.

>>> from flax import nnx
>>> import jax.numpy as jnp
>>> cfg = TransformerConfig(vocab_size=11, d_model=16, num_heads=4, num_kv_heads=2, d_ff=32, decoder_layers=2)
>>> lm = TransformerLM(cfg, rngs=nnx.Rngs(0))
>>> lm(jnp.zeros((2, 5), jnp.int32)).shape  # [B, T, V]
(2, 5, 11)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax.attention.decode import decode_attention
from attn_jax.attention.dispatch import dot_product_attention
from attn_jax.positions import rope, segment_positions, sinusoidal
from attn_jax.sharding import constrain

Array = jax.Array
POSITIONS = ("sinusoidal", "learned", "rope", "none")
NORMS = ("post", "pre")
ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes and choices. 0 means "derive": ``num_kv_heads`` = ``num_heads``, ``head_dim`` = d_model / heads,
    ``target_vocab_size`` = ``vocab_size``. The defaults are the paper's base model."""

    vocab_size: int = 32_000
    target_vocab_size: int = 0
    d_model: int = 512
    num_heads: int = 8
    num_kv_heads: int = 0
    head_dim: int = 0
    d_ff: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    positions: str = "sinusoidal"
    max_length: int = 512  # learned position table size
    rope_base: float = 10_000.0
    norm: str = "post"
    activation: str = "relu"
    tie_embeddings: bool = True  # the output projection is the target embedding transposed
    # the encoder-decoder's source and target share one embedding (and learned position) table, with
    # tie_embeddings: always when target_vocab_size is 0 (one vocabulary); with two declared vocabularies (of equal
    # size) only when this is set
    share_embeddings: bool = False
    implementation: Any = None  # dot_product_attention's
    # Replaces attn_jax.dot_product_attention in full-sequence attention (training, prefill) when set: any function
    # with its (jax.nn's) signature, e.g. jax.nn.dot_product_attention, called as
    # f(q, k, v, is_causal=..., key_value_seq_lengths=...) (+ q_segment_ids / kv_segment_ids when packing).
    # Decoding steps keep decode_attention.
    attention_fn: Any = None
    dtype: str = "float32"  # activations
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.share_embeddings and self.target_vocab_size not in (0, self.vocab_size):
            raise ValueError(f"share_embeddings needs one vocabulary; target_vocab_size {self.target_vocab_size} != "
                             f"vocab_size {self.vocab_size}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; valid: {', '.join(POSITIONS)}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.kv_heads < 1 or self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")
        if not self.head_dim and self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; set head_dim")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_features(self) -> int:
        return self.head_dim or self.d_model // self.num_heads

    @property
    def target_vocab(self) -> int:
        return self.target_vocab_size or self.vocab_size


def _param(rngs: nnx.Rngs, init, shape, names, dtype) -> nnx.Param:
    return nnx.Param(nnx.with_partitioning(init, names, eager_sharding=False)(rngs.params(), shape, dtype))


def _dropout(x: Array, rate: float, rng: Array | None) -> Array:
    """Inverted dropout; the identity when ``rng`` is None (evaluation) or the rate is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class _Rng:
    """Splits one key into fresh keys on demand (None stays None: no dropout)."""

    def __init__(self, key: Array | None):
        self.key = key

    def __call__(self) -> Array | None:
        if self.key is None:
            return None
        self.key, sub = jax.random.split(self.key)
        return sub


class KVCache(NamedTuple):
    """One attention layer's cache: ``key [B, S_max, K, H]``, ``value [B, S_max, K, Hv]``, ``lengths [B]``."""

    key: Array
    value: Array
    lengths: Array


class LayerNorm(nnx.Module):
    def __init__(self, features: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, eps: float = 1e-6):
        del rngs
        self.scale = nnx.Param(nnx.with_partitioning(nnx.initializers.ones, ("embed",), eager_sharding=False)(
            None, (features,), param_dtype))
        self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, ("embed",), eager_sharding=False)(
            None, (features,), param_dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, -1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class TransformerAttention(nnx.Module):
    """``softmax(Q Kᵀ/√H) V`` over ``num_heads`` query heads sharing ``num_kv_heads`` K/V heads."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs, rotary: bool = False):
        d, n, k, h = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_features
        init, pd = nnx.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2)), jnp.dtype(cfg.param_dtype)
        self.wq = _param(rngs, init, (d, n, h), ("embed", "heads", "head_dim"), pd)
        self.wk = _param(rngs, init, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
        self.wv = _param(rngs, init, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
        self.wo = _param(rngs, nnx.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2), (n, h, d),
                         ("heads", "head_dim", "embed"), pd)
        self.rotary, self.rope_base = rotary, cfg.rope_base
        self.implementation = cfg.implementation
        self.attention_fn = cfg.attention_fn
        self.dtype = jnp.dtype(cfg.dtype)

    def _proj(self, x: Array, w: nnx.Param, names) -> Array:
        return constrain(jnp.einsum("BTD,DNH->BTNH", x, w[...].astype(self.dtype)), names)

    def keys_values(self, x: Array, positions: Array | None) -> tuple[Array, Array]:
        """``x [B, S, D]`` -> keys ``[B, S, K, H]`` (rotated when rotary) and values."""
        k = self._proj(x, self.wk, ("batch", "seq", "kv_heads", "head_dim"))
        v = self._proj(x, self.wv, ("batch", "seq", "kv_heads", "head_dim"))
        return (rope(k, positions, base=self.rope_base) if self.rotary else k), v

    def queries(self, x: Array, positions: Array | None) -> Array:
        q = self._proj(x, self.wq, ("batch", "seq", "heads", "head_dim"))
        return rope(q, positions, base=self.rope_base) if self.rotary else q

    def _attend(self, q: Array, k: Array, v: Array, **kwargs) -> Array:
        if self.attention_fn is not None:
            return self.attention_fn(q, k, v, **kwargs)
        return dot_product_attention(q, k, v, implementation=self.implementation, **kwargs)

    def out(self, o: Array) -> Array:
        return constrain(jnp.einsum("BTNH,NHD->BTD", o, self.wo[...].astype(self.dtype)), ("batch", "seq", "embed"))

    def __call__(self, x: Array, context: Array | None = None, *, is_causal: bool = False,
                 positions: Array | None = None, context_positions: Array | None = None,
                 segment_ids: Array | None = None, context_segment_ids: Array | None = None,
                 context_lengths: Array | None = None) -> Array:
        """Self-attention over ``x [B, T, D]`` or cross-attention to ``context [B, S, D]`` -> ``[B, T, D]``.

        ``positions`` / ``context_positions`` ``[B, T]`` (rotary only), ``segment_ids`` packing, and
        ``context_lengths [B]`` hiding padded context keys."""
        self_attn = context is None
        context = x if self_attn else context
        if self_attn:
            context_positions, context_segment_ids = positions, segment_ids
        q = self.queries(x, positions)
        k, v = self.keys_values(context, context_positions)
        seg = {} if segment_ids is None else dict(q_segment_ids=segment_ids, kv_segment_ids=context_segment_ids)
        o = self._attend(q, k, v, is_causal=is_causal, key_value_seq_lengths=context_lengths, **seg)
        return self.out(o)

    def prefill(self, x: Array, cache: KVCache, lengths: Array, positions: Array) -> tuple[Array, KVCache]:
        """Causal self-attention over prompts ``x [B, T, D]`` of ``lengths [B]`` (right-padded), writing their K/V
        into ``cache`` (slots ``[0, T)``; ``cache.lengths`` becomes ``lengths``)."""
        q = self.queries(x, positions)
        k, v = self.keys_values(x, positions)
        o = self._attend(q, k, v, is_causal=True, key_value_seq_lengths=lengths)
        t = x.shape[1]
        cache = KVCache(cache.key.at[:, :t].set(k.astype(cache.key.dtype)),
                        cache.value.at[:, :t].set(v.astype(cache.value.dtype)), jnp.asarray(lengths, jnp.int32))
        return self.out(o), cache

    def step(self, x: Array, cache: KVCache) -> tuple[Array, KVCache]:
        """One new token per sequence, ``x [B, D]`` at position ``cache.lengths``: append its K/V and attend."""
        b = x.shape[0]
        pos = cache.lengths[:, None]
        q = self.queries(x[:, None], pos)[:, 0]  # [B, N, H]
        k, v = self.keys_values(x[:, None], pos)
        rows = jnp.arange(b)
        key = cache.key.at[rows, cache.lengths].set(k[:, 0].astype(cache.key.dtype))
        value = cache.value.at[rows, cache.lengths].set(v[:, 0].astype(cache.value.dtype))
        lengths = cache.lengths + 1
        o = decode_attention(q, key, value, lengths, implementation=self.implementation)
        return self.out(o[:, None])[:, 0], KVCache(key, value, lengths)

    def cross_step(self, x: Array, keys: Array, values: Array, lengths: Array) -> Array:
        """Cross-attention of one token ``x [B, D]`` to precomputed context ``keys/values [B, S, K, H]``."""
        q = self.queries(x[:, None], None)[:, 0]
        o = decode_attention(q, keys, values, lengths, implementation=self.implementation)
        return self.out(o[:, None])[:, 0]


class FeedForward(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        init = nnx.initializers.xavier_uniform()
        self.w1 = _param(rngs, init, (cfg.d_model, cfg.d_ff), ("embed", "mlp"), pd)
        self.b1 = _param(rngs, nnx.initializers.zeros, (cfg.d_ff,), ("mlp",), pd)
        self.w2 = _param(rngs, init, (cfg.d_ff, cfg.d_model), ("mlp", "embed"), pd)
        self.b2 = _param(rngs, nnx.initializers.zeros, (cfg.d_model,), ("embed",), pd)
        self.act, self.dtype = ACTIVATIONS[cfg.activation], jnp.dtype(cfg.dtype)
        self.rate = cfg.dropout

    def __call__(self, x: Array, rng: _Rng) -> Array:
        h = self.act(x @ self.w1[...].astype(self.dtype) + self.b1[...].astype(self.dtype))
        h = _dropout(constrain(h, ("batch", "seq", "mlp")), self.rate, rng())
        return h @ self.w2[...].astype(self.dtype) + self.b2[...].astype(self.dtype)


class _Sublayer(nnx.Module):
    """Residual + layer norm around one sublayer: post-LN ``norm(x + drop(f(x)))`` or pre-LN
    ``x + drop(f(norm(x)))``."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.norm = LayerNorm(cfg.d_model, rngs=rngs, param_dtype=jnp.dtype(cfg.param_dtype))
        self.pre, self.rate = cfg.norm == "pre", cfg.dropout

    def __call__(self, x: Array, f, rng: _Rng) -> Array:
        if self.pre:
            return x + _dropout(f(self.norm(x)), self.rate, rng())
        return self.norm(x + _dropout(f(x), self.rate, rng()))


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.attn = TransformerAttention(cfg, rngs=rngs, rotary=cfg.positions == "rope")
        self.ff = FeedForward(cfg, rngs=rngs)
        self.sub1, self.sub2 = _Sublayer(cfg, rngs=rngs), _Sublayer(cfg, rngs=rngs)

    def __call__(self, x: Array, rng: _Rng, **kw) -> Array:
        x = self.sub1(x, lambda y: self.attn(y, **kw), rng)
        return self.sub2(x, lambda y: self.ff(y, rng), rng)


class DecoderLayer(nnx.Module):
    """Masked self-attention, then (encoder-decoder only) cross-attention, then the feed-forward block."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs, cross: bool):
        self.attn = TransformerAttention(cfg, rngs=rngs, rotary=cfg.positions == "rope")
        self.cross = TransformerAttention(cfg, rngs=rngs) if cross else None
        self.ff = FeedForward(cfg, rngs=rngs)
        self.sub1, self.sub3 = _Sublayer(cfg, rngs=rngs), _Sublayer(cfg, rngs=rngs)
        self.sub2 = _Sublayer(cfg, rngs=rngs) if cross else None

    def __call__(self, x: Array, rng: _Rng, *, positions=None, segment_ids=None, memory=None,
                 memory_segment_ids=None, memory_lengths=None) -> Array:
        x = self.sub1(x, lambda y: self.attn(y, is_causal=True, positions=positions, segment_ids=segment_ids), rng)
        if self.cross is not None:
            x = self.sub2(x, lambda y: self.cross(y, memory, segment_ids=None if memory_segment_ids is None else
                                                  segment_ids, context_segment_ids=memory_segment_ids,
                                                  context_lengths=memory_lengths), rng)
        return self.sub3(x, lambda y: self.ff(y, rng), rng)

    def prefill(self, x: Array, cache: KVCache, lengths: Array, positions: Array) -> tuple[Array, KVCache]:
        """Prompts ``x [B, T, D]`` of a decoder-only model (no cross-attention) into the cache."""
        out = {}

        def attn(y):
            o, out["cache"] = self.attn.prefill(y, cache, lengths, positions)
            return o

        none = _Rng(None)
        x = self.sub1(x, attn, none)
        return self.sub3(x, lambda y: self.ff(y, none), none), out["cache"]

    def step(self, x: Array, cache: KVCache, cross_kv=None) -> tuple[Array, KVCache]:
        """One token ``x [B, D]``; ``cross_kv`` = (keys, values, lengths) of the encoder memory."""
        out = {}

        def attn(y):
            o, out["cache"] = self.attn.step(y, cache)
            return o

        none = _Rng(None)
        x = self.sub1(x, attn, none)
        if self.cross is not None:
            x = self.sub2(x, lambda y: self.cross.cross_step(y, *cross_kv), none)
        return self.sub3(x, lambda y: self.ff(y, none), none), out["cache"]


class Embedding(nnx.Module):
    """Token embedding scaled by √D (the paper), positions added (sinusoidal / learned), and the tied output
    projection ``logits = h Eᵀ``."""

    def __init__(self, cfg: TransformerConfig, vocab: int, *, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        self.table = _param(rngs, nnx.initializers.normal(cfg.d_model ** -0.5), (vocab, cfg.d_model),
                            ("vocab", "embed"), pd)
        # learned positions start like the token table and are scaled by √D as the tokens are: both signals start
        # at RMS ~1, beside the sinusoids' RMS of 1/√2 (a table at N(0, 0.02) unscaled starts ~50x weaker than
        # the tokens it is added to)
        self.learned = _param(rngs, nnx.initializers.normal(cfg.d_model ** -0.5), (cfg.max_length, cfg.d_model),
                              ("positions", "embed"), pd) if cfg.positions == "learned" else None
        self.kind, self.d, self.dtype, self.rate = cfg.positions, cfg.d_model, jnp.dtype(cfg.dtype), cfg.dropout

    def __call__(self, tokens: Array, positions: Array, rng: _Rng) -> Array:
        x = jnp.take(self.table[...], tokens, axis=0).astype(self.dtype) * math.sqrt(self.d)
        if self.kind == "sinusoidal":
            x = x + sinusoidal(positions, self.d, dtype=self.dtype)
        elif self.kind == "learned":
            x = x + jnp.take(self.learned[...], positions, axis=0, mode="clip").astype(self.dtype) * math.sqrt(self.d)
        return _dropout(constrain(x, ("batch", "seq", "embed")), self.rate, rng())

    def attend(self, h: Array) -> Array:
        return jnp.einsum("...D,VD->...V", h, self.table[...].astype(self.dtype))


def _positions(tokens: Array, positions: Array | None, segment_ids: Array | None) -> Array:
    if positions is not None:
        return positions
    if segment_ids is not None:
        return segment_positions(segment_ids)
    return jnp.broadcast_to(jnp.arange(tokens.shape[-1]), tokens.shape)


class TransformerLM(nnx.Module):
    """Decoder-only language model: ``tokens [B, T] -> logits [B, T, V]`` (causal; packed by ``segment_ids``)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = Embedding(cfg, cfg.vocab_size, rngs=rngs)
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs, cross=False) for _ in range(cfg.decoder_layers)])
        self.final_norm = LayerNorm(cfg.d_model, rngs=rngs, param_dtype=jnp.dtype(cfg.param_dtype)) \
            if cfg.norm == "pre" else None
        self.head = None if cfg.tie_embeddings else _param(
            rngs, nnx.initializers.xavier_uniform(), (cfg.d_model, cfg.vocab_size), ("embed", "vocab"),
            jnp.dtype(cfg.param_dtype))

    def _logits(self, h: Array) -> Array:
        if self.final_norm is not None:
            h = self.final_norm(h)
        logits = self.embed.attend(h) if self.head is None else h @ self.head[...].astype(h.dtype)
        return constrain(logits, ("batch", "seq", "vocab") if logits.ndim == 3 else ("batch", "vocab"))

    def __call__(self, tokens: Array, *, segment_ids: Array | None = None, positions: Array | None = None,
                 rng: Array | None = None) -> Array:
        """``rng`` enables dropout (training); None evaluates."""
        r = _Rng(rng)
        positions = _positions(tokens, positions, segment_ids)
        x = self.embed(tokens, positions, r)
        for layer in self.layers:
            x = layer(x, r, positions=positions, segment_ids=segment_ids)
        return self._logits(x)

    def init_cache(self, batch: int, max_length: int, dtype=None) -> list[KVCache]:
        c = self.cfg
        shape = (batch, max_length, c.kv_heads, c.head_features)
        dtype = dtype or jnp.dtype(c.dtype)
        return [KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))
                for _ in self.layers]

    def prefill(self, tokens: Array, lengths: Array, cache: list[KVCache]) -> tuple[Array, list[KVCache]]:
        """Run right-padded prompts ``tokens [B, T]`` of ``lengths [B]`` (>= 1) into ``cache``; returns the logits
        of each prompt's last token ``[B, V]`` and the filled cache."""
        lengths = jnp.asarray(lengths, jnp.int32)
        positions = _positions(tokens, None, None)
        x = self.embed(tokens, positions, _Rng(None))
        new = []
        for layer, c in zip(self.layers, cache, strict=True):
            x, c = layer.prefill(x, c, lengths, positions)
            new.append(c)
        last = jnp.take_along_axis(x, (lengths - 1)[:, None, None], axis=1)[:, 0]
        return self._logits(last), new

    def step(self, tokens: Array, cache: list[KVCache]) -> tuple[Array, list[KVCache]]:
        """Feed one token per sequence ``tokens [B]`` at position ``cache[0].lengths``: logits ``[B, V]``."""
        x = self.embed(tokens[:, None], cache[0].lengths[:, None], _Rng(None))[:, 0]
        new = []
        for layer, c in zip(self.layers, cache, strict=True):
            x, c = layer.step(x, c)
            new.append(c)
        return self._logits(x), new


class EncoderDecoderMemory(NamedTuple):
    """The encoder output ``hidden [B, S, D]``, ``lengths [B]`` and each decoder layer's cross K/V."""

    hidden: Array
    lengths: Array
    cross_kv: tuple


class Transformer(nnx.Module):
    """Encoder-decoder: ``(source [B, S], target_in [B, T]) -> logits [B, T, V_target]``.

    Speaks the ``encode / initial_carry / step`` protocol of :mod:`attn_jax.nn.decoding`, so
    ``greedy_decode`` and ``beam_search`` decode it with a KV cache (``max_length`` = the cache size given at
    construction by ``decode_length``). The "alignments" it returns are zeros (decode_attention keeps no weights).
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs, decode_length: int = 64):
        self.cfg, self.decode_length = cfg, decode_length
        # one table for both sides only for one vocabulary (target_vocab_size 0: the target speaks the source's
        # vocabulary, as the paper's joint BPE) or when asked; two languages whose vocabularies merely have the
        # same size keep their own token and position tables
        shared = cfg.tie_embeddings and (cfg.target_vocab_size == 0 or cfg.share_embeddings)
        self.src_embed = Embedding(cfg, cfg.vocab_size, rngs=rngs)
        self.tgt_embed = self.src_embed if shared else Embedding(cfg, cfg.target_vocab, rngs=rngs)
        self.encoder = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.encoder_layers)])
        self.decoder = nnx.List([DecoderLayer(cfg, rngs=rngs, cross=True) for _ in range(cfg.decoder_layers)])
        pd = jnp.dtype(cfg.param_dtype)
        pre = cfg.norm == "pre"
        self.enc_norm = LayerNorm(cfg.d_model, rngs=rngs, param_dtype=pd) if pre else None
        self.dec_norm = LayerNorm(cfg.d_model, rngs=rngs, param_dtype=pd) if pre else None
        self.head = None if cfg.tie_embeddings else _param(
            rngs, nnx.initializers.xavier_uniform(), (cfg.d_model, cfg.target_vocab), ("embed", "vocab"), pd)

    def encode_hidden(self, source: Array, lengths: Array | None = None, *, segment_ids: Array | None = None,
                      rng: _Rng | None = None) -> Array:
        r = rng or _Rng(None)
        positions = _positions(source, None, segment_ids)
        x = self.src_embed(source, positions, r)
        for layer in self.encoder:
            x = layer(x, r, positions=positions, segment_ids=segment_ids, context_lengths=lengths)
        return self.enc_norm(x) if self.enc_norm is not None else x

    def _logits(self, h: Array) -> Array:
        if self.dec_norm is not None:
            h = self.dec_norm(h)
        return self.tgt_embed.attend(h) if self.head is None else h @ self.head[...].astype(h.dtype)

    def __call__(self, source: Array, target_in: Array, *, source_lengths: Array | None = None,
                 source_segment_ids: Array | None = None, target_segment_ids: Array | None = None,
                 rng: Array | None = None) -> Array:
        """Teacher forcing. Padding by ``source_lengths [B]`` or packing by segment ids (then both are given and
        target segment i attends to source segment i)."""
        r = _Rng(rng)
        memory = self.encode_hidden(source, source_lengths, segment_ids=source_segment_ids, rng=r)
        positions = _positions(target_in, None, target_segment_ids)
        x = self.tgt_embed(target_in, positions, r)
        for layer in self.decoder:
            x = layer(x, r, positions=positions, segment_ids=target_segment_ids, memory=memory,
                      memory_segment_ids=source_segment_ids, memory_lengths=source_lengths)
        return self._logits(x)

    # --- the decoding protocol -------------------------------------------------------------------------------
    def encode(self, source: Array, lengths: Array) -> EncoderDecoderMemory:
        lengths = jnp.asarray(lengths, jnp.int32)
        hidden = self.encode_hidden(source, lengths)
        cross = tuple((*layer.cross.keys_values(hidden, None), lengths) for layer in self.decoder)
        return EncoderDecoderMemory(hidden, lengths, cross)

    def initial_carry(self, memory: EncoderDecoderMemory) -> list[KVCache]:
        c, b = self.cfg, memory.hidden.shape[0]
        shape = (b, self.decode_length, c.kv_heads, c.head_features)
        dt = memory.hidden.dtype
        return [KVCache(jnp.zeros(shape, dt), jnp.zeros(shape, dt), jnp.zeros((b,), jnp.int32))
                for _ in self.decoder]

    def step(self, carry: list[KVCache], prev: Array, memory: EncoderDecoderMemory):
        x = self.tgt_embed(prev[:, None], carry[0].lengths[:, None], _Rng(None))[:, 0]
        new = []
        for layer, c, kv in zip(self.decoder, carry, memory.cross_kv, strict=True):
            x, c = layer.step(x, c, kv)
            new.append(c)
        logits = self._logits(x)
        return new, logits, jnp.zeros(memory.hidden.shape[:2], logits.dtype)
