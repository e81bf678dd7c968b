"""Pointer network: masking (padding, no repeats, end slot), decoding validity, beam 1 == greedy."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.masks import MASK_VALUE
from attn_jax.nn import beam_search, greedy_decode
from attn_jax.nn.pointer import PointerNetwork, PositionSeq2Seq
from attn_jax.train import rundir

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
    target = TARGET
    previous = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), target[:, :-1]], axis=1)

    def loss(p):
        logits, _ = nnx.merge(graphdef, p)(x, lengths, previous)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], -1))

    value, grads = jax.value_and_grad(loss)(params)
    assert np.isfinite(float(value))
    chex.assert_tree_all_finite(grads)


TARGET = jnp.array([[0, 1, 2, 3, 4, 5, END], [3, 2, 1, 0, END, END, END], [1, 0, END, END, END, END, END]])


@pytest.mark.parametrize("implementation", ["xla", "chunked", "pallas"])
def test_fused_nll_equals_log_softmax_of_the_logits_with_gradients(implementation):
    """The large-input loss (logsumexp from additive_attention's residual) is the dense path's loss."""
    net = PointerNetwork(2, 8, rngs=nnx.Rngs(4), fixed_length=True)
    graphdef, params = nnx.split(net, nnx.Param)
    x, lengths = _inputs(4)
    previous = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), TARGET[:, :-1]], axis=1)
    valid = np.asarray(TARGET) != END
    valid[np.arange(3), np.asarray(lengths)] = True  # the first end slot counts; later ones are padding

    def dense(p):
        logits, _ = nnx.merge(graphdef, p)(x, lengths, previous)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), TARGET[..., None], -1)[..., 0]
        return jnp.sum(jnp.where(valid, nll, 0.0))

    def fused(p):
        nll = nnx.merge(graphdef, p).nll(x, lengths, previous, TARGET, implementation=implementation)
        return jnp.sum(jnp.where(valid, nll, 0.0))

    (a, ga), (b, gb) = jax.value_and_grad(dense)(params), jax.value_and_grad(fused)(params)
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
    chex.assert_trees_all_equal_shapes_and_dtypes(gb, ga)
    chex.assert_trees_all_close(gb, ga, rtol=1e-4, atol=1e-5)


def test_position_seq2seq_cannot_point_past_its_vocabulary():
    """Trained for 4 positions, the baseline decodes valid outputs on 6 inputs but never index >= 4."""
    net = PositionSeq2Seq(2, 12, positions=4, rngs=nnx.Rngs(5), fixed_length=True)
    x, lengths = _inputs(5)
    out = beam_search(net, x, lengths, beam_size=3, max_length=N + 1, bos_id=0, eos_id=4, pad_id=4)
    tokens = np.asarray(out.tokens)
    for i, n in enumerate(np.asarray(lengths)):
        body = tokens[i, :int(out.lengths[i]) - 1].tolist()
        assert tokens[i, int(out.lengths[i]) - 1] == 4  # ended
        assert sorted(body) == list(range(min(n, 4)))  # every reachable input once, nothing past position 3
    logits, weights = net(x, lengths, jnp.zeros((3, 2), jnp.int32))
    assert logits.shape == (3, 2, 5) and weights.shape == (3, 2, N)
    assert np.all(np.asarray(weights)[2, :, 2:] == 0)  # attention ignores padding


def test_experiment_smoke_and_one_step_of_every_task(tmp_path, smoke_run):
    from experiments import pointer

    s = smoke_run("pointer").result  # shared with tests/test_run_dirs.py's rerun
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
    assert f"optimal {t['eval']['optimal_n5']:.3f}" in text and "| sort | ptrnet | 5 | 5 | accuracy" in text
    assert "2.12 vs optimal 2.12" in text and (tmp_path / "res" / "tsp-ptrnet-tsp.examples.png").exists()


def test_experiment_fixed_n_comparison_over_seeds_and_its_published_table(tmp_path):
    """ptrnet and seq2seq at the same fixed n, and a ptrnet trained on a range, in one table over seeds."""
    import json

    from experiments import pointer, publish

    tiny = ["--preset", "smoke", "--set", "train.steps=2", "--set", "train.eval_every=1", "--set",
            "train.progress=false", "--set", "seeds=0,1"]
    fixed = pointer.main(tiny + ["--out", str(tmp_path / "n5"), "--set", "models=ptrnet,seq2seq",
                                 "--set", "train_n=5,5", "--set", "test_n=5"])
    assert set(fixed) == {"ptrnet", "seq2seq"} and fixed["seq2seq"]["seeds"] == [0, 1]
    assert (tmp_path / "n5" / "seq2seq" / "seed1" / "summary.json").is_file()
    pointer.main(tiny + ["--out", str(tmp_path / "range"), "--set", "models=ptrnet", "--set", "train_n=4,5",
                         "--set", "test_n=5,10"])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- ptr:begin -->\n<!-- ptr:end -->\n")
    publish.main(["pointer", str(tmp_path / "n5"), str(tmp_path / "range"), "--block", "ptr", "--readme",
                  str(readme), "--results", str(tmp_path / "res")])
    table = json.loads((tmp_path / "res" / "comparison.json").read_text())
    assert list(table["rows"]) == ["ptrnet", "seq2seq", "ptrnet (train 4-5)"] and table["seeds"] == [0, 1]
    acc = table["rows"]["seq2seq"]["metrics"]["accuracy_n5"]
    assert acc["per_seed"] == fixed["seq2seq"]["per_seed"]["accuracy_n5"]
    text = readme.read_text()
    assert "| ptrnet (train 4-5) |" in text and f"{acc['mean']:.3f} ± {acc['std']:.3f}" in text
    assert "92.0% (trained on 5-50)" in text  # the paper's number beside our ptrnet at n = 5
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ptrnet")}
    assert "87.0%" in lines["| ptrnet (train 4-5)"] and "87.0%" not in lines["| ptrnet"]  # n = 10: tested rows only
    assert (tmp_path / "res" / "examples_ptrnet_train_4-5.png").exists()
    held_out = [r for r in rundir.read_metrics(tmp_path / "n5" / "ptrnet" / "seed0" / "metrics.jsonl")
                if "eval/accuracy_n5" in r]
    assert [r["step"] for r in held_out] == [1, 2]  # eval_every's point and the final evaluation
    assert (tmp_path / "res" / "learning_curve.png").stat().st_size > 0 and "learning_curve.png" in text


@pytest.mark.parametrize("task", ["convex_hull", "tsp"])
def test_experiment_seq2seq_baseline_one_step_fails_past_its_vocabulary(tmp_path, task):
    """model=seq2seq trains; on instances larger than its vocabulary it cannot produce a hull or a valid tour."""
    from experiments import pointer

    s = pointer.main(["--preset", "smoke", "--set", "train.steps=1", "--set", "train.progress=false",
                      "--set", "model=seq2seq", "--set", f"task={task}", "--out", str(tmp_path)])
    e = s["eval"]
    if task == "convex_hull":
        assert e["accuracy_n10"] <= 0.1 and 0 <= e["accuracy_n5"] <= 1  # hulls of 10 points rarely skip 5-9
    else:
        assert e["valid_n10"] == 0 and np.isnan(e["tour_n10"]) and e["valid_n5"] == 1
    with pytest.raises(ValueError, match="positions=3"):
        pointer.PointerTask(pointer.Config(model="seq2seq", positions=3, train_size=8))


def test_experiment_fused_loss_equals_dense_loss():
    from experiments import pointer

    cfg = pointer.smoke()
    dense = pointer.PointerTask(dataclasses.replace(cfg, loss="dense"))
    fused = pointer.PointerTask(dataclasses.replace(cfg, loss="fused"))
    assert fused.fused and not dense.fused
    assert pointer.PointerTask(dataclasses.replace(cfg, batch_size=128, hidden=256, train_n=(50, 50),
                                                   train_size=4)).fused  # auto: large inputs
    params, batch = dense.init(jax.random.key(0)), dense.batch(0)
    a, b = dense.loss(params, batch, None)[0], fused.loss(params, batch, None)[0]
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)


def test_experiment_scoring():
    from experiments import pointer

    square = np.array([[[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]]], np.float32)
    label = [[0, 1, 2, 3]]
    assert pointer.score("convex_hull", square, label, [[2, 3, 0, 1]], 5)["accuracy_n5"] == 1.0  # rotation
    assert pointer.score("convex_hull", square, label, [[0, 3, 2, 1]], 5)["accuracy_n5"] == 1.0  # direction
    bad = pointer.score("convex_hull", square, label, [[0, 1, 2]], 5)
    assert bad["accuracy_n5"] == 0.0 and bad["coverage_n5"] == 0.5
    assert pointer.targets([[2, 0], [1]], 3).tolist() == [[2, 0, 3, 3], [1, 3, 3, 3]]
