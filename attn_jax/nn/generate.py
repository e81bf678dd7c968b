"""Text generation for decoder-only language models: greedy, sampling and beam search over a KV cache.

:class:`PromptedLM` adapts a :class:`~attn_jax.nn.transformer.TransformerLM` to the
``encode / initial_carry / step`` protocol of :mod:`attn_jax.nn.decoding`, so the
same greedy, sampling and beam-search loops decode encoder-decoders and LMs. The
"source" is the prompt: each right-padded prompt ``[B, T]`` of ``lengths [B]`` is
prefilled into the cache up to its second-to-last token, and the first decoding
step feeds its last token; every later step feeds the token just chosen. Ragged
batches therefore need no left padding: each row continues from its own length.

    >>> out = generate(lm, prompts, lengths, max_new_tokens=50, method="sample", rng=jax.random.key(0))
    >>> out.tokens  # [B, 50] continuations (pad_id after eos_id)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax.nn.decoding import Decoded, beam_search, greedy_decode, sample_decode

Array = jax.Array
METHODS = ("greedy", "sample", "beam")


class Prompt(NamedTuple):
    """``tokens [B, T]`` right-padded prompts, ``lengths [B]`` (>= 1), ``last [B]`` each prompt's last token."""

    tokens: Array
    lengths: Array
    last: Array


class PromptedLM(nnx.Module):
    """A decoder-only LM behind the decoding protocol; the cache holds ``max_length`` positions in all."""

    def __init__(self, lm, max_length: int):
        self.lm, self.max_length = lm, max_length

    def encode(self, tokens: Array, lengths: Array) -> Prompt:
        lengths = jnp.asarray(lengths, jnp.int32)
        last = jnp.take_along_axis(tokens, (lengths - 1)[:, None], axis=1)[:, 0]
        return Prompt(tokens, lengths, last.astype(jnp.int32))

    def initial_carry(self, prompt: Prompt):
        cache = self.lm.init_cache(prompt.tokens.shape[0], self.max_length)
        _, cache = self.lm.prefill(prompt.tokens, prompt.lengths - 1, cache)  # the last token goes in at step 0
        return cache, jnp.ones(prompt.lengths.shape, bool)

    def step(self, carry, prev: Array, prompt: Prompt):
        cache, first = carry
        logits, cache = self.lm.step(jnp.where(first, prompt.last, prev), cache)
        return (cache, jnp.zeros_like(first)), logits, jnp.zeros((prev.shape[0], 1), logits.dtype)


def generate(lm, prompt: Array, lengths: Array, *, max_new_tokens: int, method: str = "greedy",
             rng: Array | None = None, temperature: float = 1.0, top_k: int | None = None, beam_size: int = 4,
             eos_id: int | None = None, pad_id: int = 0, length_penalty: float = 1.0) -> Decoded:
    """Continue ``prompt [B, T]`` (right-padded, ``lengths [B]`` >= 1) by up to ``max_new_tokens`` tokens.

    ``method``: "greedy" (arg-max), "sample" (needs ``rng``; ``temperature``, ``top_k``) or "beam"
    (``beam_size``, ``length_penalty``). Generation stops per row at ``eos_id`` (never, when None).
    Returns :class:`~attn_jax.nn.decoding.Decoded`: ``tokens [B, max_new_tokens]``, ``lengths``, ``log_prob``
    (the model's log-probability of the continuation) and ``score``; its alignments are zeros ``[B, L, 1]``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt.ndim != 2 or jnp.shape(lengths) != prompt.shape[:1]:
        raise ValueError(f"prompt must be [B, T] with lengths [B], got {prompt.shape} and {jnp.shape(lengths)}")
    total = prompt.shape[1] + max_new_tokens
    cfg = lm.cfg
    if cfg.positions == "learned" and total > cfg.max_length:
        raise ValueError(f"prompt width {prompt.shape[1]} + max_new_tokens {max_new_tokens} exceeds the learned "
                         f"position table ({cfg.max_length})")
    model = PromptedLM(lm, total)
    common = dict(max_length=max_new_tokens, bos_id=pad_id, eos_id=-1 if eos_id is None else eos_id, pad_id=pad_id,
                  length_penalty=length_penalty)
    if method == "greedy":
        return greedy_decode(model, prompt, lengths, **common)
    if method == "sample":
        if rng is None:
            raise ValueError('method="sample" needs rng (a jax.random key)')
        return sample_decode(model, prompt, lengths, rng=rng, temperature=temperature, top_k=top_k, **common)
    return beam_search(model, prompt, lengths, beam_size=beam_size, **common)
