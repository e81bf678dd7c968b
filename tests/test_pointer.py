"""Pointer network: masking (padding, no repeats, end slot), decoding validity, beam 1 == greedy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attn_jax.masks import MASK_VALUE
from attn_jax.nn import beam_search, greedy_decode
from attn_jax.nn.pointer import PointerNetwork

N = 6
END = N


def _inputs(seed=0):
    x = jax.random.uniform(jax.random.key(seed), (3, N, 2))
    return x, jnp.array([6, 4, 2], jnp.int32)


def test_teacher_forcing_masks_padding_and_repeats():
    net = PointerNetwork(2, 12, rngs=nnx.Rngs(0), min_outputs=1)
    x, lengths = _inputs()
    previous = jnp.array([[0, 3, 1, 5], [0, 2, 0, 1], [0, 1, 0, 0]], jnp.int32)  # step 0's entry is ignored
    logits, weights = net(x, lengths, previous)
    assert logits.shape == (3, 4, N + 1)
    w = np.asarray(weights)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert np.all(w[1, :, 4:N] == 0) and np.all(w[2, :, 2:N] == 0)  # padded inputs never chosen
    assert w[0, 0, END] == 0  # min_outputs=1: no end before the first choice
    assert w[0, 2, 3] == 0 and w[0, 3, 3] == 0 and w[0, 3, 1] == 0  # no repeats of 3, then 1
    assert np.asarray(logits)[0, 2, 3] == MASK_VALUE


def test_fixed_length_decoding_gives_permutations_and_beam_one_is_greedy():
    net = PointerNetwork(2, 12, rngs=nnx.Rngs(1), fixed_length=True)
    x, lengths = _inputs(1)
    kw = dict(max_length=N + 1, bos_id=0, eos_id=END, pad_id=END)
    g = greedy_decode(net, x, lengths, **kw)
    b1 = beam_search(net, x, lengths, beam_size=1, **kw)
    for a, b in zip(g, b1, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    b4 = beam_search(net, x, lengths, beam_size=4, **kw)
    for out in (g, b4):
        tokens = np.asarray(out.tokens)
        for i, n in enumerate(np.asarray(lengths)):
            assert sorted(tokens[i, :n].tolist()) == list(range(n)), tokens[i]  # every input exactly once
            assert tokens[i, n] == END and int(out.lengths[i]) == n + 1
    assert np.all(np.asarray(b4.log_prob) >= np.asarray(g.log_prob) - 1e-5)


def test_free_length_decoding_never_repeats_and_ends():
    net = PointerNetwork(2, 12, rngs=nnx.Rngs(2), min_outputs=3)
    x, lengths = _inputs(2)
    out = beam_search(net, x, lengths, beam_size=3, max_length=N + 1, bos_id=0, eos_id=END, pad_id=END)
    tokens = np.asarray(out.tokens)
    for i, n in enumerate(np.asarray(lengths)):
        seq = tokens[i, :int(out.lengths[i])].tolist()
        body = seq[:-1] if seq[-1] == END else seq
        assert len(body) == len(set(body)) and all(t < n for t in body)


def test_gradients_are_finite():
    net = PointerNetwork(2, 8, rngs=nnx.Rngs(3), fixed_length=True)
    graphdef, params = nnx.split(net, nnx.Param)
    x, lengths = _inputs(3)
    target = jnp.array([[0, 1, 2, 3, 4, 5, END], [3, 2, 1, 0, END, END, END], [1, 0, END, END, END, END, END]])
    previous = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), target[:, :-1]], axis=1)

    def loss(p):
        logits, _ = nnx.merge(graphdef, p)(x, lengths, previous)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], -1))

    value, grads = jax.value_and_grad(loss)(params)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
