"""Transformer: KV-cache decoding equals the full forward pass, packing equals separate sequences, positions."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn import beam_search, greedy_decode, sample_decode
from attn_jax.nn.transformer import Transformer, TransformerConfig, TransformerLM
from attn_jax.positions import rope, segment_positions, sinusoidal

SMALL = TransformerConfig(vocab_size=13, d_model=32, num_heads=4, num_kv_heads=2, d_ff=48, encoder_layers=2,
                          decoder_layers=2, dropout=0.0, max_length=40)


def test_sinusoidal_is_the_papers_formula():
    pe = np.asarray(sinusoidal(jnp.arange(7)[None], 10))[0]
    pos, i = np.arange(7)[:, None], np.arange(5)[None]
    angle = pos / 10000 ** (2 * i / 10)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(angle), atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        sinusoidal(jnp.arange(3), 5)


def test_rope_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))

    def score(i, j):
        return float(jnp.sum(rope(q, jnp.array([[i]])) * rope(k, jnp.array([[j]]))))

    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)
    assert segment_positions(jnp.array([[3, 3, 4, 4, 4, 0]])).tolist() == [[0, 1, 0, 1, 2, 0]]


def _lm(positions="sinusoidal", norm="post", **kw):
    cfg = dataclasses.replace(SMALL, positions=positions, norm=norm, **kw)
    return TransformerLM(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("positions,norm", [("sinusoidal", "post"), ("learned", "pre"), ("rope", "pre"),
                                            ("none", "post")])
def test_lm_kv_cache_decoding_equals_the_full_forward_pass(positions, norm):
    """Prefill ragged prompts, then feed tokens one at a time: every step's logits equal the full pass's."""
    lm = _lm(positions, norm)
    tokens = jax.random.randint(jax.random.key(2), (3, 12), 0, 13)
    full = lm(tokens)  # [B, T, V]
    lengths = jnp.array([4, 1, 7])
    cache = lm.init_cache(3, 16)
    logits, cache = lm.prefill(jnp.where(jnp.arange(12) < lengths[:, None], tokens, 0)[:, :8], lengths, cache)
    rows = jnp.arange(3)
    np.testing.assert_allclose(logits, full[rows, lengths - 1], atol=2e-4, rtol=2e-4)
    step = jax.jit(lm.step)
    for i in range(4):  # feed each sequence's next true token
        logits, cache = step(tokens[rows, lengths + i], cache)
        np.testing.assert_allclose(logits, full[rows, lengths + i], atol=2e-4, rtol=2e-4)
    assert cache[0].lengths.tolist() == (lengths + 4).tolist()


def test_lm_packed_segments_equal_separate_sequences():
    lm = _lm("rope", "pre")
    a = jax.random.randint(jax.random.key(3), (1, 5), 0, 13)
    b = jax.random.randint(jax.random.key(4), (1, 7), 0, 13)
    packed = jnp.concatenate([a, b], axis=1)
    seg = jnp.array([[1] * 5 + [2] * 7])
    out = lm(packed, segment_ids=seg)
    np.testing.assert_allclose(out[:, :5], lm(a), atol=2e-4, rtol=2e-4)
    np.testing.assert_allclose(out[:, 5:], lm(b), atol=2e-4, rtol=2e-4)


def test_encoder_decoder_cached_decoding_matches_teacher_forcing_and_padding_is_invisible():
    cfg = dataclasses.replace(SMALL, norm="pre")
    model = Transformer(cfg, rngs=nnx.Rngs(1), decode_length=9)
    src = jax.random.randint(jax.random.key(5), (2, 6), 1, 13)
    lengths = jnp.array([6, 3])
    out = greedy_decode(model, src, lengths, max_length=8, bos_id=0, eos_id=12, pad_id=0)
    tokens = np.asarray(out.tokens)
    prev = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), jnp.asarray(tokens[:, :-1])], axis=1)
    forced = model(src, prev, source_lengths=lengths)  # [B, T, V]
    logp = jax.nn.log_softmax(forced)
    chosen = np.take_along_axis(np.asarray(logp), tokens[..., None], -1)[..., 0]
    for i in range(2):
        n = int(out.lengths[i])
        assert tokens[i, :n].tolist() == np.argmax(np.asarray(forced[i, :n]), -1).tolist()
        assert float(out.log_prob[i]) == pytest.approx(float(chosen[i, :n].sum()), abs=1e-3)
    padded = jnp.concatenate([src, jnp.full((2, 3), 7)], axis=1)  # more padding, other values
    np.testing.assert_allclose(model(padded, prev, source_lengths=lengths), forced, atol=2e-4, rtol=2e-4)
    b = beam_search(model, src, lengths, beam_size=3, max_length=8, bos_id=0, eos_id=12, pad_id=0)
    assert np.all(np.asarray(b.score) >= np.asarray(out.score) - 1e-4)
    # sampling: its log_prob is teacher forcing's on the drawn tokens; top_k=1 draws the greedy tokens
    s = sample_decode(model, src, lengths, rng=jax.random.key(3), max_length=8, bos_id=0, eos_id=12, pad_id=0)
    prev = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), s.tokens[:, :-1]], axis=1)
    logp = np.asarray(jax.nn.log_softmax(model(src, prev, source_lengths=lengths)))
    for i in range(2):
        n = int(s.lengths[i])
        drawn = np.take_along_axis(logp[i, :n], np.asarray(s.tokens[i, :n])[:, None], -1).sum()
        assert float(s.log_prob[i]) == pytest.approx(float(drawn), abs=1e-3)
    top1 = sample_decode(model, src, lengths, rng=jax.random.key(3), max_length=8, bos_id=0, eos_id=12, pad_id=0,
                         top_k=1)
    np.testing.assert_array_equal(top1.tokens, out.tokens)


def test_encoder_decoder_packing_equals_separate_pairs():
    model = Transformer(dataclasses.replace(SMALL, positions="learned"), rngs=nnx.Rngs(2))
    s1, s2 = jnp.array([[1, 2, 3]]), jnp.array([[4, 5, 6, 7, 8]])
    t1, t2 = jnp.array([[0, 9, 10, 11]]), jnp.array([[0, 3, 3]])
    packed = model(jnp.concatenate([s1, s2], 1), jnp.concatenate([t1, t2], 1),
                   source_segment_ids=jnp.array([[1] * 3 + [2] * 5]),
                   target_segment_ids=jnp.array([[1] * 4 + [2] * 3]))
    np.testing.assert_allclose(packed[:, :4], model(s1, t1), atol=2e-4, rtol=2e-4)
    np.testing.assert_allclose(packed[:, 4:], model(s2, t2), atol=2e-4, rtol=2e-4)


def test_dropout_only_with_an_rng_and_gradients_are_finite():
    lm = _lm(dropout=0.3)
    tokens = jax.random.randint(jax.random.key(6), (2, 9), 0, 13)
    np.testing.assert_array_equal(lm(tokens), lm(tokens))
    assert not np.allclose(lm(tokens, rng=jax.random.key(0)), lm(tokens))
    graphdef, params = nnx.split(lm, nnx.Param)

    def loss(p):
        logits = nnx.merge(graphdef, p)(tokens[:, :-1], rng=jax.random.key(1))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

    grads = jax.grad(loss)(params)
    chex.assert_tree_all_finite(grads)


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        TransformerConfig(num_heads=8, num_kv_heads=3)
    with pytest.raises(ValueError, match="unknown positions"):
        TransformerConfig(positions="alibi")
    with pytest.raises(ValueError, match="unknown norm"):
        TransformerConfig(norm="sandwich")


def test_attention_fn_hook_swaps_in_jax_nn():
    """TransformerConfig.attention_fn replaces our attention (training and prefill); the logits agree with ours."""
    calls = []

    def jax_nn(q, k, v, **kw):
        calls.append(sorted(kw))
        return jax.nn.dot_product_attention(q, k, v, **kw)

    tokens = jax.random.randint(jax.random.key(3), (2, 9), 0, 13)
    ours = _lm("rope", "pre", implementation="xla")(tokens)
    theirs = _lm("rope", "pre", attention_fn=jax_nn)(tokens)
    np.testing.assert_allclose(theirs, ours, atol=2e-5, rtol=2e-5)
    assert calls and all(c == ["is_causal", "key_value_seq_lengths"] for c in calls)


def _position_signal(kind: str, d: int = 64, length: int = 128) -> np.ndarray:
    """What the embedding adds for positions at init: its output minus the scaled token embedding."""
    from attn_jax.nn.transformer import Embedding, _Rng

    cfg = TransformerConfig(vocab_size=50, d_model=d, positions=kind, max_length=length, dropout=0.0)
    emb = Embedding(cfg, 50, rngs=nnx.Rngs(params=0))
    tokens = jnp.arange(length)[None] % 50
    x = emb(tokens, jnp.arange(length)[None], _Rng(None))
    token_part = jnp.take(emb.table[...], tokens, axis=0) * np.sqrt(d)
    return np.asarray(x - token_part), np.asarray(token_part)


def test_learned_and_sinusoidal_positions_start_at_comparable_scale():
    learned, tokens = _position_signal("learned")
    sines, _ = _position_signal("sinusoidal")
    rms = {name: float(np.sqrt(np.mean(a ** 2))) for name, a in
           {"learned": learned, "sinusoidal": sines, "tokens": tokens}.items()}
    assert 0.5 < rms["learned"] / rms["sinusoidal"] < 2.0, rms
    assert 0.5 < rms["learned"] / rms["tokens"] < 2.0, rms  # not ~50x weaker than the tokens it is added to


def test_two_languages_keep_their_own_tables_and_one_vocabulary_shares_one():
    def model(**kw):
        cfg = TransformerConfig(vocab_size=20, d_model=16, num_heads=2, d_ff=32, encoder_layers=1,
                                decoder_layers=1, positions="learned", max_length=16, **kw)
        return Transformer(cfg, rngs=nnx.Rngs(params=0))

    two = model(target_vocab_size=20)  # two languages that happen to have the same vocabulary size
    assert two.src_embed is not two.tgt_embed and two.head is None  # output tied to the target table only
    assert not np.allclose(two.src_embed.learned[...], two.tgt_embed.learned[...])
    one = model()
    assert one.src_embed is one.tgt_embed
    asked = model(target_vocab_size=20, share_embeddings=True)
    assert asked.src_embed is asked.tgt_embed
    with pytest.raises(ValueError, match="share_embeddings"):
        TransformerConfig(vocab_size=20, target_vocab_size=21, share_embeddings=True)
