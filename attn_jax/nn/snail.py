"""SNAIL (Mishra, Rohaninejad, Chen and Abbeel 2018): temporal convolutions interleaved with causal
soft attention, and the paper's few-shot classifier.

Building blocks (the paper's Appendix B, channels-last ``[B, T, C]``):

- :class:`DenseBlock` (dilation R, D filters): two causal convolutions of kernel 2 and dilation R,
  gated ``tanh(xf) * sigmoid(xg)``; the D activations are concatenated to the input.
- :class:`TCBlock` (sequence length T, D filters): dense blocks with dilations 1, 2, 4, ... up to
  the first power of two >= T, so the last output sees the whole sequence.
- :class:`AttentionBlock` (key size K, value size V): single-head causal attention through
  :func:`attn_jax.dot_product_attention`; the V read values are concatenated to the input.

:class:`SNAILClassifier` is the Omniglot N-way K-shot model: an embedding network per image,
then ``[embedding; one-hot label]`` per time step (the query's label is zeros) through
Attention(64, 32), TC(T, 128), Attention(256, 128), TC(T, 128), Attention(512, 256) and a 1x1
convolution to N logits. ``model="tc-only"`` drops the attention blocks and ``"attn-only"`` the
TC blocks (the paper's ablation). Every output at t depends on inputs at steps <= t only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax.nn.multi_head import MultiHeadAttention

Array = jax.Array
MODELS = ("snail", "tc-only", "attn-only")


class CausalConv1D(nnx.Module):
    """Kernel-2 causal convolution with dilation ``r``: ``y_t = W_0 x_{t-r} + W_1 x_t + b`` (``x_{<0} = 0``)."""

    def __init__(self, in_features: int, out_features: int, dilation: int, *, rngs: nnx.Rngs):
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        init = nnx.initializers.lecun_normal()
        # the kernel's two taps as one [2, C_in, C_out] parameter, fan-in 2·C_in
        self.kernel = nnx.Param(init(rngs.params(), (2 * in_features, out_features)).reshape(
            2, in_features, out_features))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.dilation = dilation

    def __call__(self, x: Array) -> Array:
        """``x [B, T, C_in]`` -> ``[B, T, C_out]``."""
        r, t = self.dilation, x.shape[1]
        past = jnp.pad(x, ((0, 0), (r, 0), (0, 0)))[:, :t]
        w = self.kernel[...]
        return past @ w[0] + x @ w[1] + self.bias[...]


class DenseBlock(nnx.Module):
    """``x [B, T, C]`` -> ``[B, T, C + D]``: input and gated causal-conv activations."""

    def __init__(self, in_features: int, filters: int, dilation: int, *, rngs: nnx.Rngs):
        self.f = CausalConv1D(in_features, filters, dilation, rngs=rngs)
        self.g = CausalConv1D(in_features, filters, dilation, rngs=rngs)
        self.out_features = in_features + filters

    def __call__(self, x: Array) -> Array:
        return jnp.concatenate([x, jnp.tanh(self.f(x)) * jax.nn.sigmoid(self.g(x))], axis=-1)


def tc_dilations(length: int) -> list[int]:
    """1, 2, 4, ... : ``ceil(log2 length)`` dilations (at least one), enough to span ``length`` steps."""
    return [2 ** i for i in range(max(1, math.ceil(math.log2(max(length, 2)))))]


class TCBlock(nnx.Module):
    """Dense blocks with dilations 1, 2, 4, ...: ``[B, T, C]`` -> ``[B, T, C + D·ceil(log2 T)]``."""

    def __init__(self, in_features: int, length: int, filters: int, *, rngs: nnx.Rngs):
        blocks, c = [], in_features
        for r in tc_dilations(length):
            blocks.append(DenseBlock(c, filters, r, rngs=rngs))
            c = blocks[-1].out_features
        self.blocks = nnx.List(blocks)
        self.out_features = c

    def __call__(self, x: Array) -> Array:
        for block in self.blocks:
            x = block(x)
        return x


class AttentionBlock(nnx.Module):
    """Causal single-head attention, keys/queries of ``key_size``, ``value_size`` values concatenated:
    ``[B, T, C]`` -> ``[B, T, C + V]``; weights are ``softmax(q kᵀ / sqrt(K))`` over steps <= t."""

    def __init__(self, in_features: int, key_size: int, value_size: int, *, rngs: nnx.Rngs,
                 implementation: str | None = None):
        # One head, no output projection: the read is concatenated to the input.
        self.mha = MultiHeadAttention(in_features, num_heads=1, qk_features=key_size, v_features=value_size,
                                      out_features=0, implementation=implementation, rngs=rngs)
        self.out_features = in_features + value_size

    query = property(lambda self: self.mha.query)
    key = property(lambda self: self.mha.key)
    value = property(lambda self: self.mha.value)

    def weights(self, x: Array) -> Array:
        """The attention matrix ``[B, T, T]`` (for plots)."""
        return self.mha.weights(x, is_causal=True)[:, 0]

    def __call__(self, x: Array) -> Array:
        return jnp.concatenate([x, self.mha(x, is_causal=True)], axis=-1)


class ConvEmbedding(nnx.Module):
    """The paper's Omniglot embedding: 4 x {3x3 conv, norm, ReLU, 2x2 max-pool}, ``[B, H, W, 1]`` -> ``[B, F]``.

    GroupNorm replaces BatchNorm: it keeps no running statistics and never mixes the examples of an
    episode, so the classifier stays causal over the sequence.
    """

    def __init__(self, filters: int = 64, *, rngs: nnx.Rngs, blocks: int = 4, groups: int = 8):
        chans = [1] + [filters] * blocks
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", rngs=rngs) for a, b in zip(chans, chans[1:])])
        self.norms = nnx.List([nnx.GroupNorm(filters, num_groups=math.gcd(groups, filters), rngs=rngs)
                               for _ in range(blocks)])
        self.out_features = filters

    def __call__(self, images: Array) -> Array:
        x = images
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = jax.nn.relu(norm(conv(x)))
            x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return jnp.mean(x, axis=(1, 2))  # 28 px -> 2 x 2 after four pools: average what remains


class SNAILClassifier(nnx.Module):
    """N-way K-shot: ``images [B, T, H, W]`` (T = N·K + 1, the query last), ``labels [B, T]`` int (the query's
    ignored) -> logits ``[B, T, N]`` (the query's prediction is ``[:, -1]``).

    The paper's embedding uses BatchNorm; per-image GroupNorm alone left our model at chance for 500 steps
    (the embeddings of different images start nearly identical), so by default the embeddings are also
    standardised across the batch's episodes at each step (:meth:`features`)."""

    def __init__(self, ways: int, shots: int, *, rngs: nnx.Rngs, model: str = "snail", filters: int = 64,
                 tc_filters: int = 128, attention: tuple[tuple[int, int], ...] = ((64, 32), (256, 128), (512, 256)),
                 implementation: str | None = None, standardize: bool = True):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
        self.ways, self.shots, self.model, self.standardize = ways, shots, model, standardize
        self.length = ways * shots + 1
        self.embed = ConvEmbedding(filters, rngs=rngs)
        c = filters + ways
        layers = []
        for i, (k, v) in enumerate(attention):
            if model != "tc-only":
                layers.append(AttentionBlock(c, k, v, rngs=rngs, implementation=implementation))
                c = layers[-1].out_features
            if i < len(attention) - 1 and model != "attn-only":
                layers.append(TCBlock(c, self.length, tc_filters, rngs=rngs))
                c = layers[-1].out_features
        self.layers = nnx.List(layers)
        self.head = nnx.Linear(c, ways, rngs=rngs)

    def features(self, images: Array, labels: Array) -> Array:
        """``[embedding; one-hot label]`` per step, the last step's label zeroed: ``[B, T, F + N]``.

        With ``standardize`` each embedding feature is standardised over the episodes of the batch, separately
        at every step t (batch normalisation without running statistics, taken across episodes, never across
        time, so step t still sees nothing later). It needs several episodes per batch."""
        b, t = labels.shape
        e = self.embed(images.reshape(b * t, *images.shape[2:], 1).astype(jnp.float32)).reshape(b, t, -1)
        if self.standardize:
            if b < 2:
                raise ValueError(f"standardize=True normalises over the episodes of a batch: got batch {b}")
            e = (e - e.mean(0)) * jax.lax.rsqrt(e.var(0) + 1e-5)
        onehot = jax.nn.one_hot(labels, self.ways) * (jnp.arange(t) < t - 1)[None, :, None]
        return jnp.concatenate([e, onehot], axis=-1)

    def __call__(self, images: Array, labels: Array) -> Array:
        x = self.features(images, labels)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)
