"""LM generation over the KV cache: greedy, sampling and beam search against full forward passes."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn.generate import generate
from attn_jax.nn.transformer import TransformerConfig, TransformerLM

V = 5


def _lm(positions="sinusoidal", norm="post"):
    cfg = TransformerConfig(vocab_size=V, d_model=32, num_heads=4, num_kv_heads=2, d_ff=48, decoder_layers=2,
                            dropout=0.0, max_length=16, positions=positions, norm=norm)
    return TransformerLM(cfg, rngs=nnx.Rngs(3))


def _prompts():
    lengths = jnp.array([4, 1, 6])
    tokens = jax.random.randint(jax.random.key(2), (3, 6), 0, V)
    return jnp.where(jnp.arange(6) < lengths[:, None], tokens, 0), lengths


def _log_probs(lm, prefix, continuations) -> list[float]:
    """log p(continuation | prefix) for each continuation (all of one length), from full forward passes."""
    seq = jnp.asarray([list(prefix) + list(c) for c in continuations])
    logp = np.asarray(jax.nn.log_softmax(lm(seq).astype(jnp.float32)), np.float64)
    return [float(sum(logp[j, len(prefix) - 1 + i, t] for i, t in enumerate(c))) for j, c in enumerate(continuations)]


def _log_prob(lm, prefix, continuation) -> float:
    return _log_probs(lm, prefix, [continuation])[0]


@pytest.mark.parametrize("positions,norm", [("sinusoidal", "post"), ("rope", "pre"), ("learned", "pre")])
def test_greedy_equals_argmax_of_full_forward_passes_on_ragged_prompts(positions, norm):
    lm = _lm(positions, norm)
    prompt, lengths = _prompts()
    out = generate(lm, prompt, lengths, max_new_tokens=5)
    forward = nnx.jit(lambda m, s: m(s))  # causal: zeros to the right of a position do not change its logits
    for b in range(3):
        seq = list(np.asarray(prompt[b, :lengths[b]]))
        for _ in range(5):
            padded = jnp.asarray([seq + [0] * (11 - len(seq))])
            seq.append(int(jnp.argmax(forward(lm, padded)[0, len(seq) - 1])))
        cont = seq[int(lengths[b]):]
        assert out.tokens[b].tolist() == cont
        assert float(out.log_prob[b]) == pytest.approx(_log_prob(lm, seq[:int(lengths[b])], cont), abs=1e-4)


def test_greedy_stops_at_eos_and_pads():
    lm = _lm()
    prompt, lengths = _prompts()
    free = generate(lm, prompt, lengths, max_new_tokens=6)
    eos = int(free.tokens[0, 2])  # row 0 emits it at step 2 (or earlier)
    out = generate(lm, prompt, lengths, max_new_tokens=6, eos_id=eos, pad_id=V)
    for b in range(3):
        toks = free.tokens[b].tolist()
        stop = toks.index(eos) + 1 if eos in toks else 6
        assert out.tokens[b].tolist() == toks[:stop] + [V] * (6 - stop)
        assert int(out.lengths[b]) == stop


def test_beam_of_one_is_greedy_and_a_wide_beam_is_exhaustive_search():
    lm = _lm()
    prompt, lengths = _prompts()
    greedy = generate(lm, prompt, lengths, max_new_tokens=3)
    one = generate(lm, prompt, lengths, max_new_tokens=3, method="beam", beam_size=1)
    np.testing.assert_array_equal(one.tokens, greedy.tokens)
    np.testing.assert_array_equal(one.log_prob, greedy.log_prob)
    # With V**2 beams nothing is ever pruned over 3 steps: beam search returns the most likely continuation.
    wide = generate(lm, prompt, lengths, max_new_tokens=3, method="beam", beam_size=V * V, length_penalty=0.0)
    some_better = False
    for b in range(3):
        prefix = list(np.asarray(prompt[b, :lengths[b]]))
        conts = list(itertools.product(range(V), repeat=3))
        scores = dict(zip(conts, _log_probs(lm, prefix, conts), strict=True))
        best = max(scores, key=scores.get)
        assert tuple(wide.tokens[b].tolist()) == best
        assert float(wide.log_prob[b]) == pytest.approx(scores[best], abs=1e-4)
        some_better |= scores[best] > float(greedy.log_prob[b]) + 1e-6
    assert some_better, "pick prompts where greedy is not optimal, or the test cannot tell beam from greedy"


def test_sampling_follows_the_tempered_distribution():
    lm = _lm()
    prompt = jnp.tile(jnp.array([[1, 4, 2]]), (4000, 1))
    lengths = jnp.full((4000,), 3)
    out = generate(lm, prompt, lengths, max_new_tokens=2, method="sample", rng=jax.random.key(0), temperature=0.7)
    probs = np.asarray(jax.nn.softmax(lm(prompt[:1])[0, -1] / 0.7))
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=V) / 4000
    np.testing.assert_allclose(freq, probs, atol=0.03)
    assert len({tuple(r) for r in out.tokens.tolist()}) > 1
    # log_prob is the model's own log-probability of what was drawn
    for b in range(3):
        cont = out.tokens[b].tolist()
        assert float(out.log_prob[b]) == pytest.approx(_log_prob(lm, [1, 4, 2], cont), abs=1e-4)
    # top_k=1 is greedy; another key draws something else
    p, n = _prompts()
    top1 = generate(lm, p, n, max_new_tokens=4, method="sample", rng=jax.random.key(1), top_k=1)
    np.testing.assert_array_equal(top1.tokens, generate(lm, p, n, max_new_tokens=4).tokens)
    other = generate(lm, prompt, lengths, max_new_tokens=2, method="sample", rng=jax.random.key(5), temperature=0.7)
    assert not np.array_equal(other.tokens, out.tokens)


def test_generate_errors():
    lm = _lm("learned")
    prompt, lengths = _prompts()
    with pytest.raises(ValueError, match="unknown method"):
        generate(lm, prompt, lengths, max_new_tokens=2, method="nucleus")
    with pytest.raises(ValueError, match="needs rng"):
        generate(lm, prompt, lengths, max_new_tokens=2, method="sample")
    with pytest.raises(ValueError, match="temperature"):
        generate(lm, prompt, lengths, max_new_tokens=2, method="sample", rng=jax.random.key(0), temperature=0.0)
    with pytest.raises(ValueError, match="learned position table"):
        generate(lm, prompt, lengths, max_new_tokens=20)
    with pytest.raises(ValueError, match="lengths"):
        generate(lm, prompt, lengths[:2], max_new_tokens=2)
