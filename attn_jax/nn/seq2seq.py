"""Attentional encoder-decoders (Flax NNX): Cho et al. 2014, Bahdanau et al. 2015, Luong et al. 2015.

One model class, :class:`Seq2Seq`, with a bidirectional GRU/LSTM encoder
(:class:`~attn_jax.nn.recurrent.BiRNNEncoder`) and one of two decoders:

* :class:`BahdanauDecoder` — the context of step i comes from the *previous*
  state: ``c_i = attend(s_{i-1}, h)``, ``s_i = RNN(s_{i-1}, [E y_{i-1}; c_i])``,
  ``p(y_i) = softmax(W_o maxout(s_i, E y_{i-1}, c_i))``. With ``attention=None``
  the context is a fixed summary of the source instead (the RNN encoder-decoder
  of Cho et al. 2014: no attention).
* :class:`LuongDecoder` — input feeding: ``h_t = RNN(h_{t-1}, [E y_{t-1}; h~_{t-1}])``,
  then ``c_t = attend(h_t, h)``, ``h~_t = tanh(W_c [c_t; h_t])``,
  ``p(y_t) = softmax(W_s h~_t)``; the attention is global (dot, general, concat,
  location) or local (local-m, local-p).

Every decoder exposes the same three calls, which teacher forcing and the
search functions of :mod:`attn_jax.nn.decoding` are built on:
``initial_carry(memory)``, ``step(carry, prev_tokens [B], memory) -> (carry,
logits [B, V], weights [B, S])`` and ``__call__(memory, target_inputs [B, T])
-> (logits [B, T, V], weights [B, T, S])``. ``weights`` row i is the alignment
used to emit target token i; padded source positions get exactly zero weight.

>>> from flax import nnx
>>> import jax.numpy as jnp
>>> model = Seq2Seq(11, 13, attention="bahdanau", embed_features=8, hidden_features=6, rngs=nnx.Rngs(0))
>>> logits, weights = model(jnp.ones((2, 5), jnp.int32), jnp.array([5, 3]), jnp.ones((2, 4), jnp.int32))
>>> logits.shape, weights.shape, float(weights[1, :, 3:].sum())
((2, 4, 13), (2, 4, 5), 0.0)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax.nn.attention import AdditiveAttention, LocalAttention, LuongAttention
from attn_jax.nn.recurrent import CELLS, BiRNNEncoder

Array = jax.Array

#: The ``attention`` names :class:`Seq2Seq` takes: no attention (Cho et al. 2014), Bahdanau, Luong's global scores
#: and local-m / local-p.
ATTENTIONS = ("none", "bahdanau", "luong-dot", "luong-general", "luong-concat", "luong-location", "local-m",
              "local-p")


class Memory(NamedTuple):
    """What the decoder reads: ``annotations [B, S, 2H]``, ``lengths [B]``, ``summary [B, 2H]``."""

    annotations: Array
    lengths: Array
    summary: Array


def _rnn_state(cell: str, h: Array):
    """A recurrent carry whose output state is ``h`` (an LSTM's memory cell starts at zero)."""
    return (jnp.zeros_like(h), h) if cell == "lstm" else h


def _rnn_output(cell: str, carry) -> Array:
    return carry[1] if cell == "lstm" else carry


def teacher_forced(decoder, memory: Memory, target_inputs: Array) -> tuple[Array, Array]:
    """``decoder.step`` over ``target_inputs [B, T]`` (lax.scan): logits ``[B, T, V]``, weights ``[B, T, S]``."""
    graphdef, state = nnx.split(decoder)

    def body(carry, tokens):
        carry, logits, weights = nnx.merge(graphdef, state).step(carry, tokens, memory)
        return carry, (logits, weights)

    _, (logits, weights) = jax.lax.scan(body, decoder.initial_carry(memory), jnp.swapaxes(target_inputs, 0, 1))
    return jnp.swapaxes(logits, 0, 1), jnp.swapaxes(weights, 0, 1)


class _RecurrentDecoder(nnx.Module):
    """What both decoders share: target embedding, the initial-state layer and the recurrent cell."""

    def __init__(self, vocab_size: int, embed_features: int, hidden_features: int, memory_features: int,
                 extra_input_features: int, cell: str, rngs: nnx.Rngs):
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(CELLS)}")
        self.cell_kind = cell
        self.embed = nnx.Embed(vocab_size, embed_features, rngs=rngs)
        self.init_state = nnx.Linear(memory_features, hidden_features, rngs=rngs)
        self.cell = CELLS[cell](embed_features + extra_input_features, hidden_features, rngs=rngs)

    def _initial_rnn(self, memory: Memory):
        """The recurrent carry from ``tanh(W_s summary)``, and its output state."""
        h0 = jnp.tanh(self.init_state(memory.summary))
        return _rnn_state(self.cell_kind, h0), h0

    def __call__(self, memory: Memory, target_inputs: Array) -> tuple[Array, Array]:
        return teacher_forced(self, memory, target_inputs)


class BahdanauDecoder(_RecurrentDecoder):
    """RNNsearch decoder (Bahdanau et al. 2015, appendix A) or, with ``attention=None``, RNNencdec (Cho et al. 2014).

    ``hidden_features`` is the decoder state size; ``memory_features`` the
    annotation size (2H of a bidirectional encoder). The deep output is a
    maxout layer with pool size 2 over ``[s_i; E y_{i-1}; c_i]``.
    """

    def __init__(self, vocab_size: int, embed_features: int, hidden_features: int, memory_features: int, *,
                 rngs: nnx.Rngs, attention: str | None = "additive", attention_features: int | None = None,
                 cell: str = "gru", implementation: str | None = None):
        if attention not in (None, "additive"):
            raise ValueError(f"BahdanauDecoder attention must be 'additive' or None, got {attention!r}")
        super().__init__(vocab_size, embed_features, hidden_features, memory_features, memory_features, cell, rngs)
        self.attention = (AdditiveAttention(hidden_features, memory_features, attention_features or hidden_features,
                                            rngs=rngs, implementation=implementation)
                          if attention else None)
        self.deep_output = nnx.Linear(hidden_features + embed_features + memory_features, 2 * hidden_features,
                                      rngs=rngs)
        self.readout = nnx.Linear(hidden_features, vocab_size, rngs=rngs)

    def initial_carry(self, memory: Memory):
        """``s_0 = tanh(W_s summary)``, and the step counter."""
        rnn, s0 = self._initial_rnn(memory)
        return rnn, jnp.zeros(s0.shape[:1], jnp.int32)

    def step(self, carry, prev_tokens: Array, memory: Memory):
        rnn, t = carry
        y = self.embed(prev_tokens)
        if self.attention is None:
            context = memory.summary
            weights = jnp.zeros(memory.annotations.shape[:2], memory.annotations.dtype)
        else:
            s_prev = _rnn_output(self.cell_kind, rnn)
            context, weights = self.attention(s_prev[:, None], memory.annotations, memory.annotations,
                                              key_value_seq_lengths=memory.lengths, return_weights=True)
            context, weights = context[:, 0], weights[:, 0]
        rnn, s = self.cell(rnn, jnp.concatenate([y, context], axis=-1))
        t_out = self.deep_output(jnp.concatenate([s, y, context], axis=-1))
        maxout = jnp.max(t_out.reshape(*t_out.shape[:-1], -1, 2), axis=-1)
        return (rnn, t + 1), self.readout(maxout), weights


class LuongDecoder(_RecurrentDecoder):
    """Luong et al. (2015) decoder with input feeding; ``attention`` is a global score or "local-m" / "local-p"."""

    def __init__(self, vocab_size: int, embed_features: int, hidden_features: int, memory_features: int, *,
                 rngs: nnx.Rngs, attention: str = "general", attention_features: int | None = None,
                 cell: str = "gru", max_source_length: int | None = None, half_window: int = 4,
                 local_score: str = "general"):
        super().__init__(vocab_size, embed_features, hidden_features, memory_features, hidden_features, cell, rngs)
        if attention in ("local-m", "local-p"):
            self.attention = LocalAttention(attention, half_window, hidden_features, memory_features, rngs=rngs,
                                            score=local_score, attention_features=attention_features)
        else:
            self.attention = LuongAttention(attention, hidden_features, memory_features, rngs=rngs,
                                            attention_features=attention_features,
                                            max_source_length=max_source_length)
        self.local = attention in ("local-m", "local-p")
        self.combine = nnx.Linear(memory_features + hidden_features, hidden_features, use_bias=False, rngs=rngs)
        self.readout = nnx.Linear(hidden_features, vocab_size, rngs=rngs)

    def initial_carry(self, memory: Memory):
        """``h_0 = tanh(W_s summary)``, ``h~_0 = 0``, and the step counter."""
        rnn, h0 = self._initial_rnn(memory)
        return rnn, jnp.zeros_like(h0), jnp.zeros(h0.shape[:1], jnp.int32)

    def step(self, carry, prev_tokens: Array, memory: Memory):
        rnn, h_tilde, t = carry
        rnn, h = self.cell(rnn, jnp.concatenate([self.embed(prev_tokens), h_tilde], axis=-1))
        kwargs: dict[str, Any] = dict(key_value_seq_lengths=memory.lengths, return_weights=True)
        if self.local:
            kwargs["positions"] = t[:, None]
        context, weights = self.attention(h[:, None], memory.annotations, memory.annotations, **kwargs)
        context, weights = context[:, 0], weights[:, 0]
        h_tilde = jnp.tanh(self.combine(jnp.concatenate([context, h], axis=-1)))
        return (rnn, h_tilde, t + 1), self.readout(h_tilde), weights


class Seq2Seq(nnx.Module):
    """Bidirectional-RNN encoder + attentional decoder; ``attention`` is one of :data:`ATTENTIONS`.

    ``hidden_features`` is the encoder's size per direction; the decoder state
    has ``2 · hidden_features`` so that the dot score applies to the
    annotations unprojected. "luong-location" needs ``max_source_length``.

    Shapes: ``source [B, S]`` int, ``source_lengths [B]``, ``target_inputs
    [B, T]`` (BOS followed by the target shifted right).
    """

    def __init__(self, source_vocab: int, target_vocab: int, *, rngs: nnx.Rngs, attention: str = "bahdanau",
                 embed_features: int = 64, hidden_features: int = 64, attention_features: int | None = None,
                 cell: str = "gru", max_source_length: int | None = None, half_window: int = 4,
                 local_score: str = "general", implementation: str | None = None):
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTIONS)}")
        self.attention_kind = attention
        self.encoder = BiRNNEncoder(source_vocab, embed_features, hidden_features, rngs=rngs, cell=cell)
        d, m = 2 * hidden_features, 2 * hidden_features
        if attention in ("none", "bahdanau"):
            self.decoder = BahdanauDecoder(target_vocab, embed_features, d, m, rngs=rngs,
                                           attention=None if attention == "none" else "additive",
                                           attention_features=attention_features, cell=cell,
                                           implementation=implementation)
        else:
            self.decoder = LuongDecoder(target_vocab, embed_features, d, m, rngs=rngs,
                                        attention=attention.removeprefix("luong-"),
                                        attention_features=attention_features, cell=cell,
                                        max_source_length=max_source_length, half_window=half_window,
                                        local_score=local_score)

    def encode(self, source: Array, source_lengths: Array) -> Memory:
        """Annotations, lengths and the summary ``[last forward state; first backward state]``."""
        lengths = jnp.asarray(source_lengths, jnp.int32)
        annotations, first_backward = self.encoder(source, lengths)
        h = annotations.shape[-1] // 2
        last = jnp.take_along_axis(annotations[..., :h], jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
        return Memory(annotations, lengths, jnp.concatenate([last, first_backward], axis=-1))

    def initial_carry(self, memory: Memory):
        return self.decoder.initial_carry(memory)

    def step(self, carry, prev_tokens: Array, memory: Memory):
        return self.decoder.step(carry, prev_tokens, memory)

    def __call__(self, source: Array, source_lengths: Array, target_inputs: Array) -> tuple[Array, Array]:
        """Teacher forcing: logits ``[B, T, V]`` and alignments ``[B, T, S]``."""
        return self.decoder(self.encode(source, source_lengths), target_inputs)
