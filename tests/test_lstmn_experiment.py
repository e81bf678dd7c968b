"""experiments.lstmn: the main variant at smoke, one step of the LSTM, the comparison and its publication."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import lstmn, publish
from experiments.data import chars

TINY = ["--preset", "smoke", "--set", "train.progress=false"]


def test_smoke_main_variant(smoke_run):
    run = smoke_run("lstmn")  # shared with tests/test_run_dirs.py's rerun
    s, tmp_path = run.result["lstmn"], run.out
    assert s["steps"] == 20 and np.isfinite(s["final_train_loss"])
    assert 0 < s["eval"]["bits_per_char"] < 10
    assert s["sample"].startswith("The ") and len(s["sample"]) == 204
    assert (tmp_path / "attention.png").stat().st_size > 0 and (tmp_path / "samples.txt").exists()


def test_comparison_at_equal_parameters_with_the_lr_sweep_and_publish(tmp_path):
    out = tmp_path / "cmp"
    two = TINY + ["--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "models=lstmn,lstm,lstmn_last",
                  "--set", "seeds=0,1"]
    summaries = lstmn.main(two + ["--out", str(out), "--set", "lr_lstm=0.01"])
    a, b = summaries["lstmn"]["parameters"], summaries["lstm"]["parameters"]
    assert abs(a - b) / a < 0.03  # the LSTM's hidden size is matched to the LSTMN's parameter count
    vocab = len(chars.CharCorpus(16).vocab)
    assert a == lstmn.lstmn_parameters(vocab, lstmn.smoke().net)
    assert (out / "comparison.json").exists() and (out / "learning_curve.png").exists()
    config = json.loads((out / "lstm" / "seed0" / "config.json").read_text())
    assert config["train"]["learning_rate"] == 0.01  # the model's own rate
    assert json.loads((out / "lstmn" / "seed0" / "config.json").read_text())["train"]["learning_rate"] == 3e-3
    sweep = []
    for lr in ("0.001", "0.003"):
        sweep.append(tmp_path / f"sweep{lr}")
        lstmn.main(TINY + ["--set", "train.steps=1", "--set", "models=lstmn,lstm", "--set", "eval_split=val",
                           "--set", f"train.learning_rate={lr}", "--out", str(sweep[-1])])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- lm:begin -->\n<!-- lm:end -->\n")
    publish.main(["lstmn", str(out), *map(str, sweep), "--block", "lm", "--readme", str(readme),
                  "--results", str(tmp_path / "res")])
    text = readme.read_text()
    table = json.loads((tmp_path / "res" / "comparison.json").read_text())
    assert list(table["rows"]) == ["lstmn", "lstm", "lstmn_last"] and table["seeds"] == [0, 1]
    read = table["rows"]["lstmn"]["attention"]  # where the LSTMN's read goes, per seed
    assert len(read["newest"]) == 2 and all(0 < v <= 1 for v in read["newest"]) and all(v >= 1 for v in read["slots"])
    assert "attention" not in table["rows"]["lstmn_last"] and "1 (no attention)" in text
    control = json.loads((out / "lstmn_last" / "seed0" / "config.json").read_text())
    assert control["train"]["learning_rate"] == 3e-3  # the LSTMN's rate
    assert summaries["lstmn_last"]["hidden"] == summaries["lstmn"]["hidden"]
    assert summaries["lstmn_last"]["parameters"] == lstmn.lstmn_parameters(vocab, lstmn.smoke().net, read="last")
    for m, s in summaries.items():
        row = table["rows"][m]
        assert row["metrics"]["bits_per_char"]["per_seed"] == s["per_seed"]["bits_per_char"]
        assert row["hidden"] == s["hidden"] and row["flops_per_char"] == s["flops_per_char"]
        assert len(row["sequences_to_flat"]) == 2 and all(0 < v <= 2 * 8 for v in row["sequences_to_flat"])
        assert f"| {m} | {s['eval']['bits_per_char']:.3f} ± " in text.replace("**", "")
    assert table["rows"]["lstm"]["learning_rate"] == 0.01
    assert set(table["lr_sweep"]["rows"]["lstm"]) == {"0.001", "0.003"} and "| model | lr 0.001 | lr 0.003 |" in text
    assert (tmp_path / "res" / "attention.png").exists() and (tmp_path / "res" / "learning_curve.png").exists()
    with pytest.raises(SystemExit, match="exactly one folder"):
        publish.main(["lstmn", *map(str, sweep), "--block", "lm", "--readme", str(readme),
                      "--results", str(tmp_path / "res2")])
    with pytest.raises(SystemExit, match="unknown model"):
        lstmn.main(TINY + ["--set", "model=gru"])


def test_validation_split_holds_out_the_training_tail():
    test, val = chars.CharCorpus(500), chars.CharCorpus(500, "val")
    assert test.vocab == val.vocab and len(val.train_ids) == len(test.train_ids) - 501
    np.testing.assert_array_equal(val.test_ids, test.train_ids[-501:])
    with pytest.raises(ValueError, match="split"):
        chars.CharCorpus(500, "train")


def test_flops_per_char_counts_the_matrix_products_xla_counts():
    """The shape-counted forward FLOPs of one step against XLA's own count of the same step (no loop, so XLA
    counts it whole): the LSTM exactly up to its elementwise ops, the LSTMN at a tape of t + 1 slots."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    vocab, n = 50, lstmn.NetConfig(embed=16, hidden=32, attention=24)
    for kind, slots in (("lstm", 1), ("lstmn", 1), ("lstmn", 9)):
        model = lstmn.CharRNN(vocab, n, kind, rngs=nnx.Rngs(0))
        state = model.init_state(1, slots - 1)  # the LSTMN's step scores a tape of ``slots`` slots
        step = jax.jit(lambda s, tok, m=model: m.step(s, tok))
        cost = step.lower(state, jnp.zeros((1,), jnp.int32)).compile().cost_analysis()
        flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
        # a window of 2·slots - 1 characters reads ``slots`` slots on average
        counted = lstmn.flops_per_char(kind, vocab, n, 2 * slots - 1, model.hidden)
        assert 0.9 * counted < flops < 1.3 * counted, (kind, slots, counted, flops)


def test_lstm_and_lstmn_steps_equal_their_sequence_forward():
    """The stepping used for sampling is the same function as the training forward pass."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    vocab = 11
    for kind in lstmn.MODELS:
        model = lstmn.CharRNN(vocab, lstmn.NetConfig(embed=4, hidden=6, attention=5), kind, rngs=nnx.Rngs(0))
        tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, vocab)
        state, steps = model.init_state(2, 7), []
        for t in range(7):
            state, logits = model.step(state, tokens[:, t])
            steps.append(logits)
        np.testing.assert_allclose(jnp.stack(steps, 1), model(tokens), atol=1e-5)


def test_attention_stats_of_known_reads():
    t = 6
    newest = np.zeros((1, t, t + 1))
    newest[0, np.arange(t), np.arange(t)] = 1.0  # an LSTM: always the newest slot
    assert lstmn.attention_stats(newest) == pytest.approx({"newest": 1.0, "slots": 1.0, "lag": 0.0})
    uniform = np.zeros((1, t, t + 1))
    for k in range(t):
        uniform[0, k, :k + 1] = 1.0 / (k + 1)
    steps = np.arange(1, t)  # step k reads k + 1 slots, k to 0 characters back, evenly
    assert lstmn.attention_stats(uniform) == pytest.approx(
        {"newest": np.mean(1.0 / (steps + 1)), "slots": np.mean(steps + 1.0), "lag": np.mean(steps / 2.0)})
    start = np.zeros((1, t, t + 1))
    start[0, :, 0] = 1.0  # always the zero start slot: t characters back at step t
    assert lstmn.attention_stats(start)["lag"] == pytest.approx(np.mean(steps))
