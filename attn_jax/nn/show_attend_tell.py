"""Show, Attend and Tell (Xu et al. 2015): an LSTM captioner attending over a CNN's annotation grid.

The encoder turns an image ``[B, H, W]`` into L annotation vectors ``a [B, L, D]`` (a feature grid
of ``h x w = L`` cells). At step t the decoder scores every cell with the additive attention
``e_ti = vᵀ tanh(W_a a_i + W_h h_{t-1})`` (eq. 4), ``α_t = softmax(e_t)``, and forms a context:

- ``"soft"``: the expectation ``ẑ_t = β_t Σ_i α_ti a_i`` with the gating scalar
  ``β_t = σ(f_β(h_{t-1}))`` (§4.2.1); the loss adds the doubly stochastic penalty
  ``λ Σ_i (1 - Σ_t α_ti)²`` (:func:`doubly_stochastic_penalty`).
- ``"hard"``: a location ``s_t ~ Multinoulli(α_t)`` and ``ẑ_t = a_{s_t}`` (§4.1); with probability
  ``expected_prob`` (the paper: 0.5) a step uses the expectation instead (1.0: always, the control that
  trains the hard model's network without sampling). The model returns ``log p(s_t)``, the entropy of α_t
  and the state ``h_{t-1}`` each step saw (for a learned baseline) for the REINFORCE surrogate
  (:mod:`attn_jax.reinforce`); ``samples=K`` draws K location sequences per image from one encoding.
- ``"none"``: the mean annotation at every step (no attention; the baseline).

The LSTM reads ``[E y_{t-1}; ẑ_t]``; its initial state is ``tanh(W mean_i a_i)`` (§3.1.2) and the
word distribution is the deep output ``L_o(E y_{t-1} + L_h h_t + L_z ẑ_t)`` (eq. 7).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
#: The ``attention`` names :class:`ShowAttendTell` takes.
ATTENTIONS = ("soft", "hard", "none")


class GridEncoder(nnx.Module):
    """``blocks`` VGG-style blocks {3x3 conv, ReLU} x ``convs_per_block``, then 2x2 max-pool: ``images [B, H, W]``
    -> annotations ``[B, L, D]`` (L = (H / 2^blocks)(W / 2^blocks), row-major over the grid; D = ``features``).

    Widths double block by block up to ``features`` (the last block's), so the early, full-resolution
    convolutions are narrow. With ``coords`` two channels of normalised (y, x) position join the image
    (CoordConv, Liu et al. 2018): the paper's VGG features of photographs carry position through their
    context, a digit on a blank canvas does not, and captions ordered left to right need it. Receptive field
    of a cell with the defaults (3 blocks of 2 convs): 36 px, cells of 8 px.
    """

    def __init__(self, features: int, *, rngs: nnx.Rngs, blocks: int = 3, convs_per_block: int = 2,
                 coords: bool = True):
        self.coords = coords
        widths = [max(features // 2 ** (blocks - 1 - k), 1) for k in range(blocks)]
        chans = [3 if coords else 1]
        for w in widths:
            chans += [w] * convs_per_block
        self.per_block = convs_per_block
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", rngs=rngs) for a, b in zip(chans, chans[1:])])

    def grid(self, height: int, width: int) -> tuple[int, int]:
        n = len(self.convs) // self.per_block
        return -(-height // 2 ** n), -(-width // 2 ** n)

    def __call__(self, images: Array) -> Array:
        x = images[..., None].astype(jnp.float32)
        if self.coords:
            b, h, w = images.shape
            y, xx = jnp.meshgrid(jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w), indexing="ij")
            x = jnp.concatenate([x, jnp.broadcast_to(jnp.stack([y, xx], -1), (b, h, w, 2))], axis=-1)
        for k, conv in enumerate(self.convs):
            x = jax.nn.relu(conv(x))
            if (k + 1) % self.per_block == 0:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return x.reshape(x.shape[0], -1, x.shape[-1])


class Trace(NamedTuple):
    """Per step (``[B, T, ...]``): attention ``alphas [B, T, L]``, ``locations [B, T]`` (hard: sampled cell, else
    -1), ``log_p_locations [B, T]`` (hard: log α of the sampled cell on steps that sampled, else 0),
    ``entropy [B, T]`` (of α_t), ``beta [B, T]`` (soft gate; 1 otherwise), ``hidden [B, T, hidden]`` (the
    decoder state ``h_{t-1}`` step t attended from: everything before the step's location was drawn)."""

    alphas: Array
    locations: Array
    log_p_locations: Array
    entropy: Array
    beta: Array
    hidden: Array


class ShowAttendTell(nnx.Module):
    """``(images [B, H, W], tokens_in [B, T]) -> (logits [B·K, T, V], Trace)`` by teacher forcing, K = ``samples``
    (rows ``b·K .. b·K + K - 1`` are image b's)."""

    def __init__(self, vocab_size: int, *, rngs: nnx.Rngs, attention: str = "soft", features: int = 64,
                 hidden: int = 128, embed: int = 32, attention_features: int = 64, encoder_blocks: int = 3,
                 expected_prob: float = 0.5):
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTIONS)}")
        self.attention, self.hidden, self.expected_prob = attention, hidden, expected_prob
        self.encoder = GridEncoder(features, rngs=rngs, blocks=encoder_blocks)
        self.embed = nnx.Embed(vocab_size, embed, rngs=rngs)
        self.init_h = nnx.Linear(features, hidden, rngs=rngs)
        self.init_c = nnx.Linear(features, hidden, rngs=rngs)
        self.w_a = nnx.Linear(features, attention_features, use_bias=False, rngs=rngs)
        self.w_h = nnx.Linear(hidden, attention_features, rngs=rngs)
        self.v = nnx.Linear(attention_features, 1, use_bias=False, rngs=rngs)
        self.f_beta = nnx.Linear(hidden, 1, rngs=rngs)
        self.cell = nnx.OptimizedLSTMCell(embed + features, hidden, rngs=rngs)
        self.l_h = nnx.Linear(hidden, embed, rngs=rngs)
        self.l_z = nnx.Linear(features, embed, rngs=rngs)
        self.l_o = nnx.Linear(embed, vocab_size, rngs=rngs)

    # --- pieces ---------------------------------------------------------------------------------------------
    def initial_state(self, a: Array) -> tuple[Array, Array]:
        mean = a.mean(axis=1)
        return jnp.tanh(self.init_c(mean)), jnp.tanh(self.init_h(mean))

    def weights(self, keys: Array, h: Array) -> Array:
        """α ``[B, L]`` from projected annotations ``keys = W_a a`` ``[B, L, A]`` and ``h [B, hidden]``."""
        scores = self.v(jnp.tanh(keys + self.w_h(h)[:, None]))[..., 0]
        return jax.nn.softmax(scores.astype(jnp.float32), axis=-1)

    def step(self, carry, token: Array, a: Array, keys: Array, rng: Array | None = None, expected: bool = False):
        """One word: ``carry = (c, h)``, ``token [B]`` (y_{t-1}) -> ``(carry, logits [B, V], trace fields)``.
        ``expected``: hard attention takes the expected context (deterministic decoding)."""
        c, h = carry
        h_prev = h
        b, n = a.shape[:2]
        alpha = self.weights(keys, h)
        entropy = -jnp.sum(alpha * jnp.log(jnp.maximum(alpha, 1e-30)), axis=-1)
        beta = jnp.ones((b,), jnp.float32)
        location, log_p = jnp.full((b,), -1, jnp.int32), jnp.zeros((b,), jnp.float32)
        z_expected = jnp.einsum("BL,BLD->BD", alpha.astype(a.dtype), a)
        if self.attention == "none":
            z = a.mean(axis=1)
        elif self.attention == "soft":
            beta = jax.nn.sigmoid(self.f_beta(h))[:, 0]
            z = beta[:, None] * z_expected
        elif expected:
            z = z_expected
        else:
            if rng is None:
                raise ValueError('attention="hard" needs an rng for sampling locations (teacher forcing and decoding)')
            k_loc, k_mix = jax.random.split(rng)
            sampled = jax.random.categorical(k_loc, jnp.log(jnp.maximum(alpha, 1e-30)))
            use_expected = jax.random.bernoulli(k_mix, self.expected_prob, (b,))
            z = jnp.where(use_expected[:, None], z_expected, a[jnp.arange(b), sampled])
            location = jnp.where(use_expected, -1, sampled)
            log_p = jnp.where(use_expected, 0.0, jnp.log(jnp.maximum(alpha[jnp.arange(b), sampled], 1e-30)))
        e = self.embed(token)
        (c, h), _ = self.cell((c, h), jnp.concatenate([e, z], axis=-1))
        logits = self.l_o(e + self.l_h(h) + self.l_z(z))
        return (c, h), logits, (alpha, location, log_p, entropy, beta, h_prev)

    # --- teacher forcing -------------------------------------------------------------------------------------
    def __call__(self, images: Array, tokens_in: Array, *, rng: Array | None = None,
                 samples: int = 1) -> tuple[Array, Trace]:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        a = self.encoder(images)  # one encoding, K decodings: the samples differ only in their locations
        keys = self.w_a(a)
        if samples > 1:
            a, keys, tokens_in = (jnp.repeat(x, samples, axis=0) for x in (a, keys, tokens_in))
        t = tokens_in.shape[1]
        rngs = jax.random.split(rng, t) if rng is not None else None

        def body(carry, inp):
            token, r = inp
            carry, logits, fields = self.step(carry, token, a, keys, r)
            return carry, (logits, fields)

        _, (logits, fields) = jax.lax.scan(body, self.initial_state(a), (tokens_in.T, rngs))  # rngs may be None
        logits = jnp.swapaxes(logits, 0, 1)
        return logits, Trace(*(jnp.swapaxes(f, 0, 1) for f in fields))


def doubly_stochastic_penalty(alphas: Array, mask: Array) -> Array:
    """``Σ_i (1 - Σ_t α_ti)²`` per example, over the steps where ``mask [B, T]`` is true: ``[B]``."""
    coverage = jnp.sum(alphas * mask[..., None], axis=1)  # [B, L]
    return jnp.sum((1.0 - coverage) ** 2, axis=-1)
