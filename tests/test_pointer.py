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


def test_experiment_smoke_and_one_step_of_every_task(tmp_path):
    from experiments import pointer

    s = pointer.main(["--preset", "smoke", "--out", str(tmp_path / "hull"), "--set", "train.progress=false"])
    assert s["steps"] == 20 and set(s["eval"]) == {"accuracy_n5", "coverage_n5", "accuracy_n10", "coverage_n10"}
    assert all(0 <= v <= 1 for v in s["eval"].values())
    tiny = ["--preset", "smoke", "--set", "train.steps=1", "--set", "train.progress=false", "--set", "test_n=5"]
    t = pointer.main(tiny + ["--out", str(tmp_path / "tsp"), "--set", "task=tsp"])
    assert t["eval"]["tour_n5"] >= t["eval"]["optimal_n5"] - 1e-9 and t["eval"]["gap_n5"] >= -1e-9
    s = pointer.main(tiny + ["--out", str(tmp_path / "sort"), "--set", "task=sort"])
    assert 0 <= s["eval"]["accuracy_n5"] <= 1
    from experiments import publish

    readme = tmp_path / "README.md"
    readme.write_text("<!-- ptr:begin -->\n<!-- ptr:end -->\n")
    publish.main(["pointer", str(tmp_path / "tsp"), str(tmp_path / "sort"), "--block", "ptr", "--readme", str(readme),
                  "--results", str(tmp_path / "res")])
    text = readme.read_text()
    assert f"optimal {t['eval']['optimal_n5']:.3f}" in text and "| sort | 5 | 5 | accuracy" in text


def test_experiment_scoring():
    from experiments import pointer

    square = np.array([[[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]]], np.float32)
    label = [[0, 1, 2, 3]]
    assert pointer.score("convex_hull", square, label, [[2, 3, 0, 1]], 5)["accuracy_n5"] == 1.0  # rotation
    assert pointer.score("convex_hull", square, label, [[0, 3, 2, 1]], 5)["accuracy_n5"] == 1.0  # direction
    bad = pointer.score("convex_hull", square, label, [[0, 1, 2]], 5)
    assert bad["accuracy_n5"] == 0.0 and bad["coverage_n5"] == 0.5
    assert pointer.targets([[2, 0], [1]], 3).tolist() == [[2, 0, 3, 3], [1, 3, 3, 3]]
