"""experiments.transformer: the main variant at smoke, one step of the other tasks, publishing, the schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attn_jax.train import TrainConfig
from attn_jax.train.loop import make_optimizer
from experiments import publish
from experiments import transformer as tf
from experiments.data import chars

TINY = ["--preset", "smoke", "--set", "train.steps=1", "--set", "train.progress=false"]


def test_smoke_main_variant_translates(smoke_run):
    run = smoke_run("transformer")  # shared with tests/test_run_dirs.py's rerun
    s, tmp_path = run.result, run.out
    assert s["steps"] == 20 and np.isfinite(s["final_train_loss"])
    assert {"bleu", "chrf", "exact_match", "perplexity"} <= set(s["eval"]) and "inversion" not in s["eval"]
    assert (tmp_path / "samples.txt").exists() and s["parameters"] > 0
    assert (tmp_path / "bleu_by_length.png").stat().st_size > 0


def test_one_step_lm_and_ablation_and_publish(tmp_path):
    lm = tf.main(TINY + ["--out", str(tmp_path / "lm"), "--set", "task=lm", "--set", "seeds=0"])
    assert 0 < lm["eval"]["bits_per_char"] < 10 and lm["per_seed_summaries"]["0"]["sample"].startswith("The ")
    assert (tmp_path / "lm" / "transformer" / "seed0" / "learning_curve.png").stat().st_size > 0
    ab = tf.main(TINY + ["--out", str(tmp_path / "ab"), "--set", "task=ablation", "--set", "ablation_steps=2",
                         "--set", "seeds=0"])
    assert list(ab["rows"]) == ["heads=1", "heads=2", "key size=4", "learned positions"]
    assert ab["rows"]["key size=4"]["head_dim"] == 4 and ab["rows"]["key size=4"]["heads"] == 2  # row B
    assert all(r["steps"] == 2 for r in ab["rows"].values())  # ablation_steps overrides train.steps per row
    # translate over the published RNN table's seeds: its rows join the table
    tr = tf.main(TINY + ["--out", str(tmp_path / "tr"), "--set", "seeds=0,1,2"])
    assert tr["seeds"] == [0, 1, 2] and (tmp_path / "tr" / "transformer" / "seed2" / "summary.json").exists()
    readme = tmp_path / "README.md"
    readme.write_text("<!-- tf:begin -->\n<!-- tf:end -->\n")
    publish.main(["transformer", str(tmp_path / "tr"), str(tmp_path / "ab"), str(tmp_path / "lm"), "--block", "tf",
                  "--readme", str(readme), "--results", str(tmp_path / "res")])
    text = readme.read_text()
    bpc = lm["eval"]["bits_per_char"]
    assert f"{bpc:.3f} ± 0.000 bits per character" in text
    ablation = json.loads((tmp_path / "res" / "ablation" / "comparison.json").read_text())
    assert ablation["rows"]["heads=2"]["heads"] == 2 and ablation["rows"]["key size=4"]["head_dim"] == 4
    assert ablation["rows"]["heads=1"]["metrics"]["bleu"]["per_seed"] == ab["rows"]["heads=1"]["per_seed"]["bleu"]
    assert "| heads=1 |" in text and "| learned positions |" in text
    translate = json.loads((tmp_path / "res" / "translate" / "comparison.json").read_text())
    (row,) = [r for r in translate["rows"] if r.startswith("transformer")]
    assert translate["rows"][row]["metrics"]["bleu"]["per_seed"] == tr["per_seed"]["bleu"]
    assert "bahdanau (RNN)" in translate["rows"] and "bahdanau (RNN)" in text  # beside the published RNN table
    assert translate["rnn_rows"]["table"].endswith("seq2seq/num2words_de")
    assert (tmp_path / "res" / "translate" / "learning_curve.png").stat().st_size > 0
    single = tf.main(TINY + ["--out", str(tmp_path / "single")])  # one run: no table to publish
    assert single["steps"] == 1
    with pytest.raises(SystemExit, match="over seeds"):
        publish.main(["transformer", str(tmp_path / "single"), "--block", "tf", "--readme", str(readme),
                      "--results", str(tmp_path / "res2")])
    with pytest.raises(SystemExit, match="unknown task"):
        tf.main(TINY + ["--set", "task=vision"])


def test_lm_corpus_is_the_bundled_python_docs():
    text = chars.corpus()
    assert len(text) > 100_000 and "for" in text and "class" in text
    cfg = tf.smoke()
    assert tf.CharLMTask(cfg).batch(0)["tokens"].shape == (cfg.lm_batch_size, cfg.lm_length + 1)


def test_rsqrt_schedule_is_the_papers():
    opt = make_optimizer(TrainConfig(learning_rate=1.0, warmup_steps=4, schedule="rsqrt", clip_norm=None,
                                     optimizer="sgd"))
    import jax.numpy as jnp

    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    steps = []
    for _ in range(9):  # sgd: the update is -lr * grad with grad 1
        updates, state = opt.update({"w": jnp.ones(())}, state, params)
        steps.append(-float(updates["w"]))
    expected = [min((s + 1) / 4, (4 / (s + 1)) ** 0.5) for s in range(9)]
    np.testing.assert_allclose(steps, expected, rtol=1e-6)
