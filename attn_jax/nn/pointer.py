"""Pointer Networks (Vinyals, Fortunato & Jaitly 2015) in Flax NNX.

An LSTM encoder reads the inputs ``x [B, n, F]``; an LSTM decoder's output at
step i is a distribution over input positions: ``u_ij = vᵀ tanh(W1 e_j + W2 d_i)``
(:func:`attn_jax.scores.additive`), softmax over j. Position ``n`` is a learned
*end* slot: pointing at it ends the output (convex hull); the decoder's input at
step i is the input it pointed at in step i-1 (a learned start vector at i = 0).

Validity constraints live in the decoder state, so they hold in teacher
forcing, greedy decoding and beam search alike (the model speaks the
``encode / initial_carry / step`` protocol of :mod:`attn_jax.nn.decoding`,
with ``eos_id = pad_id = end`` index): padded inputs are never chosen;
``no_repeat`` masks positions already chosen; ``fixed_length`` (TSP, sorting)
forbids the end slot until every input has been chosen and then allows only it;
otherwise the end slot opens after ``min_outputs`` choices (or once nothing
else may be chosen).

>>> from flax import nnx
>>> import jax.numpy as jnp
>>> net = PointerNetwork(2, 16, rngs=nnx.Rngs(0), fixed_length=True)
>>> logits, _ = net(jnp.ones((3, 5, 2)), jnp.array([5, 4, 2]), jnp.zeros((3, 6), jnp.int32))
>>> logits.shape  # [B, T, n + 1]: the last position is the end slot
(3, 6, 6)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax import scores
from attn_jax.attention.additive import additive_attention
from attn_jax.masks import MASK_VALUE
from attn_jax.nn.seq2seq import teacher_forced

Array = jax.Array


class PointerMemory(NamedTuple):
    """``encoded [B, n+1, H]`` (end slot last), ``inputs [B, n+1, E]`` (embedded), ``lengths [B]``, final state."""

    encoded: Array
    inputs: Array
    lengths: Array
    final: tuple


class PointerNetwork(nnx.Module):
    """``x [B, n, F]`` -> pointer logits over the n inputs and the end slot; see the module docstring."""

    def __init__(self, input_features: int, hidden_features: int, *, rngs: nnx.Rngs, embed_features: int | None = None,
                 attention_features: int | None = None, no_repeat: bool = True, fixed_length: bool = False,
                 min_outputs: int = 0):
        e, a = embed_features or hidden_features, attention_features or hidden_features
        self.embed = nnx.Linear(input_features, e, rngs=rngs)
        self.encoder = nnx.RNN(nnx.OptimizedLSTMCell(e, hidden_features, rngs=rngs), rngs=False, return_carry=True)
        self.decoder = nnx.OptimizedLSTMCell(e, hidden_features, rngs=rngs)
        self.w_enc = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (hidden_features, a)))
        self.w_dec = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (hidden_features, a)))
        self.v = nnx.Param(jax.random.normal(rngs.params(), (a,)) / a**0.5)
        self.end_encoded = nnx.Param(jnp.zeros((hidden_features,)))
        self.end_input = nnx.Param(jnp.zeros((e,)))
        self.start = nnx.Param(jax.random.normal(rngs.params(), (e,)) * 0.1)
        self.hidden_features = hidden_features
        self.no_repeat, self.fixed_length, self.min_outputs = no_repeat, fixed_length, min_outputs

    def encode(self, x: Array, lengths: Array) -> PointerMemory:
        b, n, _ = x.shape
        lengths = jnp.asarray(lengths, jnp.int32)
        emb = self.embed(x)
        zeros = jnp.zeros((b, self.hidden_features), emb.dtype)
        final, enc = self.encoder(emb, initial_carry=(zeros, zeros), seq_lengths=lengths)
        valid = (jnp.arange(n)[None, :] < lengths[:, None])[..., None]
        enc, emb = jnp.where(valid, enc, 0.0), jnp.where(valid, emb, 0.0)
        enc = jnp.concatenate([enc, jnp.broadcast_to(self.end_encoded[...], (b, 1, enc.shape[-1]))], axis=1)
        emb = jnp.concatenate([emb, jnp.broadcast_to(self.end_input[...], (b, 1, emb.shape[-1]))], axis=1)
        return PointerMemory(enc, emb, lengths, final)

    def initial_carry(self, memory: PointerMemory):
        b, slots = memory.encoded.shape[:2]
        return memory.final, jnp.zeros((b, slots), bool), jnp.zeros((b,), jnp.int32)

    def allowed(self, chosen: Array, count: Array, lengths: Array) -> Array:
        """``[B, n+1]`` positions that may be chosen next."""
        slots = chosen.shape[1]
        n = slots - 1
        real = jnp.arange(slots)[None, :] < jnp.minimum(lengths, n)[:, None]  # never the end slot
        if self.no_repeat:
            real = real & ~chosen
        if self.fixed_length:
            done = count >= lengths
            end_ok = done
            real = real & ~done[:, None]
        else:
            end_ok = count >= self.min_outputs
        end_ok = end_ok | ~jnp.any(real, axis=1)  # nothing else left: the end slot is always open
        is_end = jnp.arange(slots)[None, :] == n
        return jnp.where(is_end, end_ok[:, None], real)

    def advance(self, carry, prev: Array, memory: PointerMemory):
        """One decoder step up to the scores: ``(carry, d [B, H], allowed [B, slots])``."""
        lstm, chosen, count = carry
        b = prev.shape[0]
        slots = chosen.shape[1]
        prev = jnp.clip(prev, 0, memory.inputs.shape[1] - 1)
        inp = jnp.where((count == 0)[:, None], self.start[...][None],
                        memory.inputs[jnp.arange(b), prev])
        chosen = jnp.where((count > 0)[:, None], chosen | (jnp.arange(slots)[None] == prev[:, None]), chosen)
        lstm, d = self.decoder(lstm, inp)
        return (lstm, chosen, count + 1), d, self.allowed(chosen, count, memory.lengths)

    def step(self, carry, prev: Array, memory: PointerMemory):
        carry, d, allowed = self.advance(carry, prev, memory)
        logits = scores.additive(d[:, None], memory.encoded, self.w_dec[...], self.w_enc[...], self.v[...])[:, 0]
        logits = jnp.where(allowed, logits, MASK_VALUE)
        return carry, logits, jax.nn.softmax(logits, axis=-1)

    def __call__(self, x: Array, lengths: Array, previous: Array) -> tuple[Array, Array]:
        """Teacher forcing: ``previous [B, T]`` holds the index chosen before each step (anything at step 0).
        Returns logits ``[B, T, n+1]`` (invalid positions at a large negative value) and the pointer weights."""
        return teacher_forced(self, self.encode(x, lengths), previous)

    def nll(self, x: Array, lengths: Array, previous: Array, targets: Array, *,
            implementation: str | None = None) -> Array:
        """Teacher-forced ``-log p(targets)`` ``[B, T]`` without the ``[B, T, n+1, A]`` score features.

        The log-normaliser of each step's pointer distribution is the residual (logsumexp) of
        :func:`attn_jax.additive_attention` (``implementation`` as there: "chunked" or the fused "pallas"
        kernel keep memory linear in n), and the target's score is one additive score per step — the loss of
        :meth:`__call__` + log-softmax, for large inputs. Every target must be allowed at its step.
        """
        memory = self.encode(x, lengths)
        graphdef, state = nnx.split(self)

        def body(carry, prev):
            carry, d, allowed = nnx.merge(graphdef, state).advance(carry, prev, memory)
            return carry, (d, allowed)

        _, (d, allowed) = jax.lax.scan(body, self.initial_carry(memory), jnp.swapaxes(previous, 0, 1))
        d, allowed = jnp.swapaxes(d, 0, 1), jnp.swapaxes(allowed, 0, 1)  # [B, T, H], [B, T, n+1]
        enc = memory.encoded
        dummy = jnp.zeros(enc.shape[:2] + (1,), enc.dtype)
        _, lse = additive_attention(d, enc, dummy, self.w_dec[...], self.w_enc[...], self.v[...], mask=allowed,
                                    return_residual=True, implementation=implementation)
        target_keys = jnp.take_along_axis(enc, targets[..., None], axis=1)  # [B, T, H]
        target_score = jnp.tanh(d @ self.w_dec[...] + target_keys @ self.w_enc[...]) @ self.v[...]
        return lse - target_score


class PositionSeq2Seq(PointerNetwork):
    """The baseline of Vinyals et al.: the same encoder and decoder, but the output is a softmax over a *fixed*
    vocabulary of ``positions`` input indices plus an end token (index ``positions``), from the decoder state
    and an additive-attention context over the inputs (Bahdanau-style seq2seq with attention). The same
    validity constraints apply; positions >= ``positions`` can never be produced, so on instances larger
    than the training ones it must fail — the reason pointers exist.

    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> net = PositionSeq2Seq(2, 16, positions=5, rngs=nnx.Rngs(0), fixed_length=True)
    >>> logits, _ = net(jnp.ones((2, 9, 2)), jnp.array([9, 3]), jnp.zeros((2, 4), jnp.int32))
    >>> logits.shape  # [B, T, positions + 1] whatever the input size
    (2, 4, 6)
    """

    def __init__(self, input_features: int, hidden_features: int, *, positions: int, rngs: nnx.Rngs, **kwargs):
        super().__init__(input_features, hidden_features, rngs=rngs, **kwargs)
        self.positions = positions
        self.out = nnx.Linear(2 * hidden_features, positions + 1, rngs=rngs)

    def initial_carry(self, memory: PointerMemory):
        b = memory.encoded.shape[0]
        return memory.final, jnp.zeros((b, self.positions + 1), bool), jnp.zeros((b,), jnp.int32)

    def step(self, carry, prev: Array, memory: PointerMemory):
        carry, d, allowed = self.advance(carry, prev, memory)
        enc = memory.encoded[:, :-1]  # attention over the inputs (not the end slot)
        visible = jnp.arange(enc.shape[1])[None] < memory.lengths[:, None]
        att = scores.additive(d[:, None], enc, self.w_dec[...], self.w_enc[...], self.v[...])[:, 0]
        att = jax.nn.softmax(jnp.where(visible, att, MASK_VALUE), axis=-1)
        context = jnp.einsum("BS,BSH->BH", att, enc)
        logits = jnp.where(allowed, self.out(jnp.concatenate([d, context], axis=-1)), MASK_VALUE)
        return carry, logits, att
