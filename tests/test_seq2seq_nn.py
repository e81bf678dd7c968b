"""Encoder-decoders and decoding: shapes, exact-zero padding, teacher forcing = stepping, beam search vs brute force."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn import ATTENTIONS, Seq2Seq, beam_search, greedy_decode
from attn_jax.nn.seq2seq import teacher_forced

BOS, EOS, PAD = 1, 2, 0
SV, TV = 11, 9


def _model(attention, cell="gru", seed=0, **kw):
    return Seq2Seq(SV, TV, rngs=nnx.Rngs(params=jax.random.key(seed)), attention=attention, embed_features=8,
                   hidden_features=6, attention_features=7, cell=cell, max_source_length=12, half_window=2, **kw)


def _source(b=3, s=7, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([s, 4, 1, 6][:b], np.int32)
    src = rng.integers(3, SV, (b, s)).astype(np.int32)
    src[np.arange(s)[None, :] >= lengths[:, None]] = PAD
    return jnp.asarray(src), jnp.asarray(lengths)


@pytest.mark.parametrize("attention,cell", [(a, "gru") for a in ATTENTIONS] + [("bahdanau", "lstm"),
                                                                                 ("luong-general", "lstm")])
def test_shapes_and_padding_gets_exactly_zero_attention(attention, cell):
    model = _model(attention, cell)
    src, lengths = _source()
    tgt_in = jnp.asarray(np.random.default_rng(1).integers(3, TV, (3, 5)), jnp.int32)
    logits, weights = model(src, lengths, tgt_in)
    assert logits.shape == (3, 5, TV) and weights.shape == (3, 5, 7)
    assert np.all(np.isfinite(np.asarray(logits)))
    visible = np.arange(7)[None, None, :] < np.asarray(lengths)[:, None, None]
    assert np.all(np.asarray(weights)[~np.broadcast_to(visible, weights.shape)] == 0.0)  # exactly zero
    if attention == "none":
        assert np.all(np.asarray(weights) == 0.0)
    elif attention not in ("local-m", "local-p"):
        np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-5)
    # more padding changes nothing: same logits with the source padded to 12
    wide = jnp.pad(src, ((0, 0), (0, 5)))
    logits_wide, weights_wide = model(wide, lengths, tgt_in)
    np.testing.assert_allclose(np.asarray(logits_wide), np.asarray(logits), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(weights_wide)[..., :7], np.asarray(weights), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("attention", ["bahdanau", "luong-dot", "luong-location", "local-m", "local-p", "none"])
def test_beam_one_equals_greedy_and_teacher_forcing_reproduces_the_alignments(attention):
    model = _model(attention)
    src, lengths = _source()
    g = greedy_decode(model, src, lengths, max_length=8, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    b = beam_search(model, src, lengths, beam_size=1, max_length=8, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    for x, y in zip(g, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert g.tokens.shape == (3, 8) and g.alignments.shape == (3, 8, 7)
    # feeding greedy's own tokens back (teacher forcing) gives the same alignments and log-probabilities
    tgt_in = jnp.concatenate([jnp.full((3, 1), BOS, jnp.int32), g.tokens[:, :-1]], axis=1)
    logits, weights = model(src, lengths, tgt_in)
    for i in range(3):
        n = int(g.lengths[i])
        np.testing.assert_allclose(np.asarray(weights[i, :n]), np.asarray(g.alignments[i, :n]), atol=1e-6)
        assert np.all(np.asarray(g.alignments[i, n:]) == 0)
        logp = jax.nn.log_softmax(logits[i, :n])
        np.testing.assert_allclose(float(jnp.take_along_axis(logp, g.tokens[i, :n, None], 1).sum()),
                                   float(g.log_prob[i]), rtol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_search_is_exact_against_brute_force(length_penalty):
    """With a beam as wide as every prefix, beam search must find the best normalised hypothesis
    (and on these examples greedy decoding must not, or the test could not tell them apart)."""
    tv, steps, b = 5, 3, 16
    model = Seq2Seq(SV, tv, rngs=nnx.Rngs(params=jax.random.key(1)), attention="bahdanau", embed_features=4,
                    hidden_features=3)
    model.decoder.readout.kernel[...] = 3.0 * model.decoder.readout.kernel[...]  # peaky, varied distributions
    rng = np.random.default_rng(5)
    src = jnp.asarray(rng.integers(3, SV, (b, 5)), jnp.int32)
    lengths = jnp.asarray(rng.integers(1, 6, b), jnp.int32)
    search = dict(max_length=steps, bos_id=BOS, eos_id=EOS, pad_id=PAD, length_penalty=length_penalty)
    out = beam_search(model, src, lengths, beam_size=tv ** (steps - 1), **search)
    greedy = greedy_decode(model, src, lengths, **search)
    # every hypothesis: sequences that stop at the first EOS, or run for all steps
    hyps = [seq for n in range(1, steps + 1) for seq in itertools.product(range(tv), repeat=n)
            if EOS not in seq[:-1] and (n == steps or seq[-1] == EOS)]
    padded = np.array([list(h) + [PAD] * (steps - len(h)) for h in hyps], np.int32)
    tgt_in = jnp.asarray(np.concatenate([np.full((len(hyps), 1), BOS, np.int32), padded[:, :-1]], axis=1))
    n = np.array([len(h) for h in hyps])
    # score every hypothesis of every example in one teacher-forced batch ([b * len(hyps)] rows: one compile)
    logits, _ = model(jnp.repeat(src, len(hyps), 0), jnp.repeat(lengths, len(hyps)), jnp.tile(tgt_in, (b, 1)))
    logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)).reshape(b, len(hyps), steps, tv),
                              np.broadcast_to(padded[None, ..., None], (b, *padded.shape, 1)), -1)[..., 0]
    all_scores = np.where(np.arange(steps)[None, None] < n[None, :, None], logp, 0).sum(-1) / n ** length_penalty
    greedy_misses = 0
    for i in range(b):
        scores = all_scores[i]
        best = hyps[int(np.argmax(scores))]
        got = tuple(int(t) for t in out.tokens[i, :int(out.lengths[i])])
        assert got == best, (got, best)
        np.testing.assert_allclose(float(out.score[i]), scores.max(), rtol=1e-5)
        greedy_misses += tuple(int(t) for t in greedy.tokens[i, :int(greedy.lengths[i])]) != best
    assert greedy_misses > 0


def test_local_m_windows_follow_the_target_position_while_stepping():
    model = _model("local-m")
    src, lengths = _source(b=1, s=7)
    g = greedy_decode(model, src, lengths, max_length=6, bos_id=BOS, eos_id=EOS + 100, pad_id=PAD)  # no early stop
    w = np.asarray(g.alignments[0])
    for t in range(6):
        outside = np.abs(np.arange(7) - t) > 2
        assert np.all(w[t, outside] == 0), t


def test_teacher_forced_is_a_scan_of_steps():
    model = _model("luong-concat")
    src, lengths = _source()
    tgt_in = jnp.ones((3, 4), jnp.int32)
    memory = model.encode(src, lengths)
    logits, weights = teacher_forced(model.decoder, memory, tgt_in)
    carry = model.initial_carry(memory)
    for t in range(4):
        carry, lg, w = model.step(carry, tgt_in[:, t], memory)
        np.testing.assert_allclose(np.asarray(lg), np.asarray(logits[:, t]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(w), np.asarray(weights[:, t]), rtol=1e-5, atol=1e-7)


def test_gradients_flow_and_jit():
    model = _model("bahdanau")
    graphdef, params = nnx.split(model, nnx.Param)
    src, lengths = _source()

    @jax.jit
    def loss(params):
        logits, _ = nnx.merge(graphdef, params)(src, lengths, jnp.ones((3, 4), jnp.int32))
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 3])

    grads = jax.grad(loss)(params)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) >= len(norms) - 1


def test_errors():
    with pytest.raises(ValueError, match="unknown attention 'luong'; valid: none, bahdanau"):
        _model("luong")
    with pytest.raises(ValueError, match="location score needs max_source_length"):
        Seq2Seq(SV, TV, rngs=nnx.Rngs(0), attention="luong-location", embed_features=4, hidden_features=3)
    with pytest.raises(ValueError, match="unknown cell"):
        _model("bahdanau", cell="rnn")
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        beam_search(_model("none"), *_source(), beam_size=0, max_length=3, bos_id=BOS, eos_id=EOS)
