"""Self-Attention GAN (Zhang, Goodfellow, Metaxas and Odena 2018): a self-attention block inside
convolutional generators and discriminators, with spectral normalisation, class-conditional.

- :class:`SelfAttention2D`: ``f = W_f x`` (queries, C/8), ``g = W_g x`` (keys, C/8) and ``h = W_h x``
  (values, C/2) by 1x1 convolutions; ``β_{j,i} = softmax_i(f_jᵀ g_i)`` over the N = H·W locations;
  ``o = W_v (Σ_i β_{j,i} h_i)`` back to C channels; ``y = γ o + x`` with γ initialised to 0, so the
  block starts as the identity. The attention runs through :func:`attn_jax.dot_product_attention`
  (one head, scale 1 as the paper's ``f(x)ᵀ g(x)``).
- :class:`SNConv` / :class:`SNLinear`: weights divided by their largest singular value
  (Miyato et al. 2018). The paper keeps a persistent power-iteration vector, updated once per
  step; ours is stateless: ``power_iterations`` steps (default 3) at every call from a fixed start
  vector, with no gradient through the vectors: the same σ estimate without
  mutable state (3 iterations per call instead of 1 per training step).
- :class:`Generator` (z, class) -> image in [-1, 1] and :class:`Discriminator` (image, class) ->
  score, with the projection discriminator's class term; self-attention at one chosen feature
  resolution (or none).
- :func:`hinge_losses` (the paper's adversarial loss).

Class conditioning in the generator is by class-conditional gains and biases after a
parameter-free group normalisation (the paper uses conditional BatchNorm; ours keeps no running
statistics, so training and sampling need no mutable state).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax.nn.multi_head import MultiHeadAttention

Array = jax.Array


def spectral_normalize(w: Array, u: Array, iterations: int) -> tuple[Array, Array]:
    """``w / σ(w)`` for ``w [..., out]`` seen as a matrix ``[fan_in, out]``, σ by power iteration from ``u [out]``
    (held constant for the gradient, as in Miyato et al.). Returns the normalised weight and σ."""
    mat = w.reshape(-1, w.shape[-1])
    u = jax.lax.stop_gradient(u)
    for _ in range(iterations):
        v = mat @ u
        v = v / (jnp.linalg.norm(v) + 1e-12)
        u = mat.T @ v
        u = u / (jnp.linalg.norm(u) + 1e-12)
    v, u = jax.lax.stop_gradient(v), jax.lax.stop_gradient(u)
    sigma = v @ mat @ u
    return w / sigma, sigma


def _start(n: int) -> Array:
    """The power iteration's fixed start vector (a constant: no state, no parameter)."""
    return jax.random.normal(jax.random.key(n), (n,))


class SNConv(nnx.Module):
    """A spectrally normalised 2-D convolution (channels last, SAME padding)."""

    def __init__(self, in_features: int, out_features: int, kernel: int = 3, *, rngs: nnx.Rngs,
                 power_iterations: int = 3):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kernel * kernel * in_features, out_features)).reshape(
            kernel, kernel, in_features, out_features))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.power_iterations = power_iterations

    def __call__(self, x: Array) -> Array:
        w, _ = spectral_normalize(self.kernel[...], _start(self.kernel.shape[-1]), self.power_iterations)
        y = jax.lax.conv_general_dilated(x, w.astype(x.dtype), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...]


class SNLinear(nnx.Module):
    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, power_iterations: int = 3,
                 use_bias: bool = True):
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
        self.power_iterations = power_iterations

    def __call__(self, x: Array) -> Array:
        w, _ = spectral_normalize(self.kernel[...], _start(self.kernel.shape[-1]), self.power_iterations)
        y = x @ w.astype(x.dtype)
        return y if self.bias is None else y + self.bias[...]


class SelfAttention2D(nnx.Module):
    """``x [B, H, W, C]`` -> ``γ o + x``; :meth:`attention` gives the maps ``β [B, N, N]`` (query j, key i)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs, implementation: str | None = None):
        if channels % 8:
            raise ValueError(f"channels must be a multiple of 8 (queries and keys have C/8), got {channels}")
        # One head over the H·W positions; the paper's 1x1 convolutions are spectrally
        # normalised linear maps of the channels, and its logits are not scaled.
        self.mha = MultiHeadAttention(channels, num_heads=1, qk_features=channels // 8, v_features=channels // 2,
                                      out_features=channels, scale=1.0, linear=SNLinear,
                                      implementation=implementation, rngs=rngs)
        self.gamma = nnx.Param(jnp.zeros(()))

    # The paper's names for the projections (each maps channels, so it applies to [B, H, W, C] too).
    f = property(lambda self: self.mha.query)
    g = property(lambda self: self.mha.key)
    h = property(lambda self: self.mha.value)
    v = property(lambda self: self.mha.out)

    def attention(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        return self.mha.weights(x.reshape(b, hh * ww, c))[:, 0]

    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        o = self.mha(x.reshape(b, hh * ww, c)).reshape(b, hh, ww, c)
        return x + self.gamma[...] * o


def _group_norm(x: Array, groups: int = 8, eps: float = 1e-5) -> Array:
    b, h, w, c = x.shape
    g = math.gcd(groups, c)
    y = x.reshape(b, h, w, g, c // g)
    mean = y.mean(axis=(1, 2, 4), keepdims=True)
    var = y.var(axis=(1, 2, 4), keepdims=True)
    return ((y - mean) * jax.lax.rsqrt(var + eps)).reshape(b, h, w, c)


class _GBlock(nnx.Module):
    """Upsample x2, conditional norm, ReLU, SN conv 3x3."""

    def __init__(self, cin: int, cout: int, classes: int, *, rngs: nnx.Rngs):
        self.gain = nnx.Embed(classes, cin, embedding_init=nnx.initializers.ones, rngs=rngs)
        self.shift = nnx.Embed(classes, cin, embedding_init=nnx.initializers.zeros, rngs=rngs)
        self.conv = SNConv(cin, cout, 3, rngs=rngs)

    def __call__(self, x: Array, y: Array) -> Array:
        x = _group_norm(x) * self.gain(y)[:, None, None] + self.shift(y)[:, None, None]
        x = jax.nn.relu(x)
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class Generator(nnx.Module):
    """``(z [B, Z], labels [B]) -> images [B, S, S·aspect, 1]`` in [-1, 1]; S = 4·2^blocks (the first feature map is
    4 x 4·aspect: ``aspect=2`` draws canvases twice as wide as high). ``attention_at``: the feature-map height at
    which the self-attention block sits (0: none)."""

    def __init__(self, classes: int, *, rngs: nnx.Rngs, z_features: int = 64, channels: int = 64,
                 blocks: int = 2, attention_at: int = 0, aspect: int = 1):
        if aspect < 1:
            raise ValueError(f"aspect must be >= 1, got {aspect}")
        self.channels, self.z_features, self.aspect = channels, z_features, aspect
        self.project = SNLinear(z_features, 4 * 4 * aspect * channels, rngs=rngs)
        self.blocks = nnx.List([_GBlock(channels, channels, classes, rngs=rngs) for _ in range(blocks)])
        sides = [4 * 2 ** (i + 1) for i in range(blocks)]
        if attention_at and attention_at not in sides:
            raise ValueError(f"attention_at must be one of the generator's feature sizes {sides}, got {attention_at}")
        self.attention_at = attention_at
        self.attention = SelfAttention2D(channels, rngs=rngs) if attention_at else None
        self.out = SNConv(channels, 1, 3, rngs=rngs)

    def features(self, z: Array) -> Array:
        """The first feature map ``[B, 4, 4·aspect, C]`` from the noise."""
        return self.project(z).reshape(z.shape[0], 4, 4 * self.aspect, self.channels)

    def __call__(self, z: Array, labels: Array) -> Array:
        x = self.features(z)
        for block in self.blocks:
            x = block(x, labels)
            if self.attention is not None and x.shape[1] == self.attention_at:
                x = self.attention(x)
        return jnp.tanh(self.out(jax.nn.relu(_group_norm(x))))


class Discriminator(nnx.Module):
    """``(images [B, S, W, 1], labels [B]) -> scores [B]``: SN conv blocks with 2x2 average pooling, self-attention
    at feature height ``attention_at`` (0: none), then the projection discriminator ``ψ(h) + embed(y)·h`` (h:
    features summed over the positions, so without attention it scores a bag of local features)."""

    def __init__(self, classes: int, *, rngs: nnx.Rngs, channels: int = 64, blocks: int = 2, size: int = 16,
                 attention_at: int = 0):
        chans = [1] + [channels] * blocks
        self.convs = nnx.List([SNConv(a, b, 3, rngs=rngs) for a, b in zip(chans, chans[1:])])
        sides = [size // 2 ** i for i in range(blocks)]
        if attention_at and attention_at not in sides:
            raise ValueError(f"attention_at must be one of the discriminator's feature sizes {sides}, "
                             f"got {attention_at}")
        self.attention_at = attention_at
        self.attention = SelfAttention2D(channels, rngs=rngs) if attention_at else None
        self.psi = SNLinear(channels, 1, rngs=rngs)
        self.embed = nnx.Embed(classes, channels, rngs=rngs)

    def __call__(self, images: Array, labels: Array) -> Array:
        x = images
        for conv in self.convs:
            x = jax.nn.leaky_relu(conv(x), 0.1)
            if self.attention is not None and x.shape[1] == self.attention_at:
                x = self.attention(x)
            x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        h = jnp.sum(jax.nn.relu(x), axis=(1, 2))  # [B, C]
        return self.psi(h)[:, 0] + jnp.sum(self.embed(labels) * h, axis=-1)


def hinge_losses(real_scores: Array, fake_scores: Array) -> tuple[Array, Array]:
    """The paper's hinge losses: ``L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``, ``L_G = -E[D(G(z))]``."""
    d = jnp.mean(jax.nn.relu(1.0 - real_scores)) + jnp.mean(jax.nn.relu(1.0 + fake_scores))
    return d, -jnp.mean(fake_scores)
