"""Recurrent encoders for the seq2seq experiments (Flax NNX).

:class:`BiRNNEncoder` is Bahdanau et al.'s bidirectional encoder: a forward and
a backward GRU (or LSTM) over the embedded source, their states concatenated
into annotations ``[B, S, 2H]``. With ``lengths`` the backward RNN starts at each
sequence's own last token (``nnx.RNN``'s ``seq_lengths``), so padding never
leaks into the annotations of real tokens; annotations at padded positions are
zeroed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
CELLS = {"gru": nnx.GRUCell, "lstm": nnx.OptimizedLSTMCell}


class BiRNNEncoder(nnx.Module):
    """``tokens [B, S]`` (int) -> annotations ``[B, S, 2·hidden]``, backward RNN's first state ``[B, hidden]``."""

    def __init__(self, vocab_size: int, embed_features: int, hidden_features: int, *, rngs: nnx.Rngs,
                 cell: str = "gru"):
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(CELLS)}")
        self.embed = nnx.Embed(vocab_size, embed_features, rngs=rngs)
        make = CELLS[cell]
        # rngs=False: the carry starts at zero (passed explicitly), so the module holds no RNG state
        # and can be split into parameters alone and merged inside jit.
        self.forward_rnn = nnx.RNN(make(embed_features, hidden_features, rngs=rngs), rngs=False)
        self.backward_rnn = nnx.RNN(make(embed_features, hidden_features, rngs=rngs), reverse=True,
                                    keep_order=True, return_carry=True, rngs=False)
        self.cell, self.hidden_features = cell, hidden_features

    def __call__(self, tokens: Array, lengths: Array | None = None) -> tuple[Array, Array]:
        x = self.embed(tokens)
        b, s = tokens.shape
        lengths = jnp.full((b,), s, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
        zeros = jnp.zeros((b, self.hidden_features), x.dtype)
        init = (zeros, zeros) if self.cell == "lstm" else zeros
        fwd = self.forward_rnn(x, initial_carry=init, seq_lengths=lengths)
        carry, bwd = self.backward_rnn(x, initial_carry=init, seq_lengths=lengths)
        valid = (jnp.arange(s)[None, :] < lengths[:, None])[..., None]
        annotations = jnp.where(valid, jnp.concatenate([fwd, bwd], axis=-1), 0.0)
        first_backward = carry[1] if self.cell == "lstm" else carry  # LSTM carry is (c, h)
        return annotations, first_backward
