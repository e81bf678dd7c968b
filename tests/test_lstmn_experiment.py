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


def test_one_step_comparison_at_equal_parameters_and_publish(tmp_path):
    out = tmp_path / "cmp"
    summaries = lstmn.main(TINY + ["--out", str(out), "--set", "train.steps=1", "--set", "models=lstmn,lstm"])
    a, b = summaries["lstmn"]["parameters"], summaries["lstm"]["parameters"]
    assert abs(a - b) / a < 0.03  # the LSTM's hidden size is matched to the LSTMN's parameter count
    vocab = len(chars.CharCorpus(16).vocab)
    assert a == lstmn.lstmn_parameters(vocab, lstmn.smoke().net)
    assert (out / "comparison.json").exists() and (out / "learning_curve.png").exists()
    readme = tmp_path / "README.md"
    readme.write_text("<!-- lm:begin -->\n<!-- lm:end -->\n")
    publish.main(["lstmn", str(out), "--block", "lm", "--readme", str(readme), "--results", str(tmp_path / "res")])
    text = readme.read_text()
    for m, s in summaries.items():
        assert f"| {m} | {s['hidden']} | {s['parameters']:,} | {s['eval']['bits_per_char']:.3f} |" in text
    assert json.loads((tmp_path / "res" / "comparison.json").read_text())["summaries"].keys() == {"lstmn", "lstm"}
    assert (tmp_path / "res" / "attention.png").exists()
    with pytest.raises(SystemExit, match="unknown model"):
        lstmn.main(TINY + ["--set", "model=gru"])


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
