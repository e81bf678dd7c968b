"""Greedy, sampling and beam-search decoding for the encoder-decoders of :mod:`attn_jax.nn.seq2seq`, with
alignments (and, through :mod:`attn_jax.nn.generate`, for decoder-only language models).

All three work on any model with ``encode(source, lengths) -> memory``,
``initial_carry(memory)`` and ``step(carry, prev_tokens [B], memory) -> (carry,
logits [B, V], weights [B, S])``; all run a fixed ``max_length`` steps under
``lax.scan`` (jit-friendly, no host round trips). After a hypothesis emits
``eos_id`` it emits ``pad_id`` with zero alignment. Beam search ranks finished
hypotheses by ``log p / length ** length_penalty`` (length counts the EOS);
with ``beam_size=1`` it returns exactly what greedy decoding returns.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
_NEG = -1e30


class Decoded(NamedTuple):
    """``tokens [B, L]``, ``alignments [B, L, S]``, ``lengths [B]`` (with EOS), ``log_prob [B]``, ``score [B]``."""

    tokens: Array
    alignments: Array
    lengths: Array
    log_prob: Array
    score: Array


def _scan(model, fn, init, length: int):
    graphdef, state = nnx.split(model)

    def body(c, _):
        return fn(nnx.merge(graphdef, state), c)

    return jax.lax.scan(body, init, None, length=length)


def _normalise(log_prob: Array, lengths: Array, length_penalty: float) -> Array:
    return log_prob / jnp.maximum(lengths, 1).astype(log_prob.dtype) ** length_penalty


def _decode(model, source: Array, source_lengths: Array, choose, *, max_length: int, bos_id: int, eos_id: int,
            pad_id: int, length_penalty: float) -> Decoded:
    """One hypothesis per example; ``choose(logp [B, V], t) -> tokens [B]`` picks each step's token."""
    memory = model.encode(source, source_lengths)
    b = source.shape[0]

    def fn(m, state):
        carry, prev, finished, log_prob, lengths, t = state
        carry, logits, weights = m.step(carry, prev, memory)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        tok = jnp.where(finished, pad_id, choose(logp, t).astype(jnp.int32))
        log_prob = log_prob + jnp.where(finished, 0.0, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0])
        weights = jnp.where(finished[:, None], 0.0, weights)
        lengths = lengths + (~finished).astype(jnp.int32)
        return (carry, tok, finished | (tok == eos_id), log_prob, lengths, t + 1), (tok, weights)

    init = (model.initial_carry(memory), jnp.full((b,), bos_id, jnp.int32), jnp.zeros((b,), bool),
            jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32), jnp.asarray(0, jnp.int32))
    (_, _, _, log_prob, lengths, _), (tokens, weights) = _scan(model, fn, init, max_length)
    return Decoded(tokens.T, jnp.swapaxes(weights, 0, 1), lengths, log_prob,
                   _normalise(log_prob, lengths, length_penalty))


def greedy_decode(model, source: Array, source_lengths: Array, *, max_length: int, bos_id: int, eos_id: int,
                  pad_id: int = 0, length_penalty: float = 1.0) -> Decoded:
    """Arg-max decoding. ``source [B, S]`` int, ``source_lengths [B]``."""
    return _decode(model, source, source_lengths, lambda logp, t: jnp.argmax(logp, axis=-1), max_length=max_length,
                   bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, length_penalty=length_penalty)


def sample_decode(model, source: Array, source_lengths: Array, *, rng: Array, max_length: int, bos_id: int,
                  eos_id: int, pad_id: int = 0, temperature: float = 1.0, top_k: int | None = None,
                  length_penalty: float = 1.0) -> Decoded:
    """Ancestral sampling from ``softmax(logits / temperature)``, restricted to the ``top_k`` most likely tokens
    when given; every example draws independently (step t uses ``fold_in(rng, t)``). ``log_prob`` is the
    model's own (temperature 1) log-probability of the sampled tokens."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy_decode for arg-max), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")

    def choose(logp, t):
        logits = logp / temperature
        if top_k is not None:
            kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
            logits = jnp.where(logits >= kth, logits, -jnp.inf)
        return jax.random.categorical(jax.random.fold_in(rng, t), logits)

    return _decode(model, source, source_lengths, choose, max_length=max_length, bos_id=bos_id, eos_id=eos_id,
                   pad_id=pad_id, length_penalty=length_penalty)


def beam_search(model, source: Array, source_lengths: Array, *, beam_size: int, max_length: int, bos_id: int,
                eos_id: int, pad_id: int = 0, length_penalty: float = 1.0) -> Decoded:
    """Beam search; returns the best hypothesis per example by length-normalised log-probability."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    b, k = source.shape[0], beam_size
    memory = model.encode(source, source_lengths)
    memory = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), memory)  # [B*K, ...]
    first = jnp.full((b * k,), bos_id, jnp.int32)
    s = jax.eval_shape(lambda: model.step(model.initial_carry(memory), first, memory))[2].shape[-1]  # weights' S
    flat_base = (jnp.arange(b) * k)[:, None]

    def fn(m, state):
        carry, prev, finished, log_prob, lengths, tokens, aligns, t = state
        carry, logits, weights = m.step(carry, prev.reshape(-1), memory)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(b, k, -1)
        vocab = logp.shape[-1]
        pad_only = jnp.full((vocab,), _NEG).at[pad_id].set(0.0)
        cand = log_prob[..., None] + jnp.where(finished[..., None], pad_only, logp)
        top, idx = jax.lax.top_k(cand.reshape(b, k * vocab), k)
        src_beam, tok = idx // vocab, (idx % vocab).astype(jnp.int32)
        flat = (flat_base + src_beam).reshape(-1)
        carry = jax.tree.map(lambda x: x[flat], carry)
        was_finished = jnp.take_along_axis(finished, src_beam, axis=1)
        weights = jnp.where(was_finished[..., None], 0.0, weights.reshape(b, k, s)[jnp.arange(b)[:, None], src_beam])
        tokens = jnp.take_along_axis(tokens, src_beam[..., None], axis=1).at[:, :, t].set(tok)
        aligns = jnp.take_along_axis(aligns, src_beam[..., None, None], axis=1).at[:, :, t].set(weights)
        lengths = jnp.take_along_axis(lengths, src_beam, axis=1) + (~was_finished).astype(jnp.int32)
        finished = was_finished | (tok == eos_id)
        return (carry, tok, finished, top, lengths, tokens, aligns, t + 1), None

    alive = jnp.where(jnp.arange(k) == 0, 0.0, _NEG)  # only one live beam at the start: no duplicates
    init = (model.initial_carry(memory), jnp.full((b, k), bos_id, jnp.int32), jnp.zeros((b, k), bool),
            jnp.broadcast_to(alive, (b, k)).astype(jnp.float32), jnp.zeros((b, k), jnp.int32),
            jnp.full((b, k, max_length), pad_id, jnp.int32), jnp.zeros((b, k, max_length, s), jnp.float32),
            jnp.asarray(0, jnp.int32))
    (_, _, _, log_prob, lengths, tokens, aligns, _), _ = _scan(model, fn, init, max_length)
    score = _normalise(log_prob, lengths, length_penalty)
    best = jnp.argmax(score, axis=1)
    pick = lambda x: jnp.take_along_axis(x, best.reshape((b,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]  # noqa: E731
    return Decoded(pick(tokens), pick(aligns), pick(lengths), pick(log_prob), pick(score))
