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
    lm = tf.main(TINY + ["--out", str(tmp_path / "lm"), "--set", "task=lm"])
    assert 0 < lm["eval"]["bits_per_char"] < 10 and lm["sample"].startswith("The ")
    assert (tmp_path / "lm" / "learning_curve.png").stat().st_size > 0  # every run writes a plot
    ab = tf.main(TINY + ["--out", str(tmp_path / "ab"), "--set", "task=ablation", "--set", "ablation_steps=2"])
    assert list(ab["rows"]) == ["heads=1", "heads=2", "key size=4", "learned positions"]
    assert ab["rows"]["key size=4"]["head_dim"] == 4 and ab["rows"]["key size=4"]["heads"] == 2  # row B
    assert all(r["steps"] == 2 for r in ab["rows"].values())  # ablation_steps overrides train.steps per row
    tr = tf.main(TINY + ["--out", str(tmp_path / "tr"), "--set", "data=dates"])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- tf:begin -->\n<!-- tf:end -->\n")
    publish.main(["transformer", str(tmp_path / "tr"), str(tmp_path / "ab"), str(tmp_path / "lm"), "--block", "tf",
                  "--readme", str(readme), "--results", str(tmp_path / "res")])
    text = readme.read_text()
    assert f"{lm['eval']['bits_per_char']:.3f} bits per character" in text
    assert "| heads=1 | 16 |" in text and "| learned positions | 8 |" in text and "| key size=4 | 4 |" in text
    assert f"| {tr['eval']['bleu']:.1f} |" in text and "bahdanau (RNN" in text  # beside the published RNN runs
    assert json.loads((tmp_path / "res" / "ab.ablation.json").read_text())["rows"]["heads=2"]["heads"] == 2
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
