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


#: The embedding normalisations :class:`SNAILClassifier` takes.
NORMS = ("moving", "none")


class SNAILClassifier(nnx.Module):
    """N-way K-shot: ``images [B, T, H, W]`` (T = N·K + 1, the query last), ``labels [B, T]`` int (the query's
    ignored) -> logits ``[B, T, N]`` (the query's prediction is ``[:, -1]``).

    The paper's embedding uses BatchNorm; per-image GroupNorm alone left our model at chance for 500 steps
    (the embeddings of different images start nearly identical, and what tells them apart is small beside what
    they share). With ``norm="moving"`` (the default) each embedding feature is standardised by a mean and a
    variance that are *parameters* (``norm_mean``, ``norm_var`` ``[F]``): they receive no gradient from the
    loss, a trainer moves them towards the statistics of its training batches (a moving average, see
    :meth:`embedding_moments`), and the same numbers serve in training and at test. So an image's features never
    depend on the other images of its batch or episode, nothing at step t sees a later step, and evaluation runs
    the function that was trained, whatever its batch. (An earlier version standardised over the episodes of each
    batch: 4-8 in training, 64 at evaluation, a different function at test.)"""

    def __init__(self, ways: int, shots: int, *, rngs: nnx.Rngs, model: str = "snail", filters: int = 64,
                 tc_filters: int = 128, attention: tuple[tuple[int, int], ...] = ((64, 32), (256, 128), (512, 256)),
                 implementation: str | None = None, norm: str = "moving"):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        self.ways, self.shots, self.model, self.norm = ways, shots, model, norm
        self.length = ways * shots + 1
        self.embed = ConvEmbedding(filters, rngs=rngs)
        if norm == "moving":
            self.norm_mean = nnx.Param(jnp.zeros((filters,)))
            self.norm_var = nnx.Param(jnp.ones((filters,)))
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

    def embedding(self, images: Array) -> Array:
        """The raw embedding of every image: ``images [B, T, H, W]`` -> ``[B, T, F]``."""
        b, t = images.shape[:2]
        return self.embed(images.reshape(b * t, *images.shape[2:], 1).astype(jnp.float32)).reshape(b, t, -1)

    @staticmethod
    def embedding_moments(e: Array) -> tuple[Array, Array]:
        """Per-feature mean and variance of raw embeddings ``[B, T, F]`` over every image: ``([F], [F])``; what a
        trainer moves ``norm_mean`` / ``norm_var`` towards."""
        return jnp.mean(e, axis=(0, 1)), jnp.var(e, axis=(0, 1))

    def features(self, images: Array, labels: Array, e: Array | None = None) -> Array:
        """``[embedding; one-hot label]`` per step, the last step's label zeroed: ``[B, T, F + N]`` (``e``: the raw
        embedding if already computed). With ``norm="moving"`` the embedding is standardised by the stored
        statistics (held constant: the loss does not move them)."""
        b, t = labels.shape
        e = self.embedding(images) if e is None else e
        if self.norm == "moving":
            mean, var = jax.lax.stop_gradient(self.norm_mean[...]), jax.lax.stop_gradient(self.norm_var[...])
            e = (e - mean) * jax.lax.rsqrt(var + 1e-5)
        onehot = jax.nn.one_hot(labels, self.ways) * (jnp.arange(t) < t - 1)[None, :, None]
        return jnp.concatenate([e, onehot], axis=-1)

    def __call__(self, images: Array, labels: Array, *, return_embedding: bool = False):
        """Logits ``[B, T, N]``; with ``return_embedding`` also the raw embedding ``[B, T, F]`` (for the moving
        statistics)."""
        e = self.embedding(images)
        x = self.features(images, labels, e)
        for layer in self.layers:
            x = layer(x)
        return (self.head(x), e) if return_embedding else self.head(x)
