"""experiments.show_attend_tell: the main variant at smoke, one step of hard and none, publish, the baseline."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.nn.show_attend_tell import Trace
from experiments import publish
from experiments import show_attend_tell as sat

TINY = ["--preset", "smoke", "--set", "train.progress=false"]


def test_smoke_main_variant(smoke_run):
    run = smoke_run("show_attend_tell")  # shared with tests/test_run_dirs.py's rerun
    s, tmp_path = run.result["soft"], run.out
    assert s["steps"] == 20 and np.isfinite(s["final_train_loss"])
    assert {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "exact_match"} == set(s["eval"])
    assert (tmp_path / "attention.png").stat().st_size > 0 and "reference:" in (tmp_path / "samples.txt").read_text()


def test_one_step_comparison_and_publish(tmp_path):
    out, out_hard = tmp_path / "cmp", tmp_path / "cmp_hard"
    one_step = TINY + ["--set", "train.steps=1", "--set", "seeds=0,1"]
    summaries = sat.main(one_step + ["--out", str(out), "--set", "models=none,soft,hard_expected"])
    assert list(summaries) == ["none", "soft", "hard_expected"]
    # hard, tuned apart: its folder may differ from the others in the hard model's settings only
    summaries |= sat.main(one_step + ["--out", str(out_hard), "--set", "models=hard", "--set", "reinforce=0.5",
                                      "--set", "baseline=loo", "--set", "samples=2"])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- sat:begin -->\n<!-- sat:end -->\n")
    publish.main(["show_attend_tell", str(out), str(out_hard), "--block", "sat", "--readme", str(readme),
                  "--results", str(tmp_path / "res")])
    text = readme.read_text()
    table = json.loads((tmp_path / "res" / "comparison.json").read_text())
    assert list(table["rows"]) == ["soft", "hard", "none", "hard, expected context"] and table["seeds"] == [0, 1]
    for row, model in zip(table["rows"], ["soft", "hard", "none", "hard_expected"], strict=True):
        stat = table["rows"][row]["metrics"]["bleu_4"]
        assert stat["per_seed"] == summaries[model]["per_seed"]["bleu_4"]
        assert f"| {row} | " in text
    assert "71.8 / 50.4 / 35.7 / 25.0" in text  # the paper's COCO hard row, a text column
    assert "leave-one-out baseline" in text and "REINFORCE weight 0.5" in text
    assert len(table["provenance"]["command"]) == 2
    assert table["task"]["eval_size"] == 16
    refs = (out / "soft" / "seed0" / "samples.txt").read_text().splitlines()
    reference = refs[0].split(":", 1)[1].strip()
    assert f"```text\n{'reference:':24} {reference}\nsoft:" in text and "\nhard, expected context: " in text
    for name in ("learning_curve.png", "attention_soft.png", "attention_hard.png", "attention_hard_expected.png"):
        assert (tmp_path / "res" / name).stat().st_size > 0 and name in text
    other = tmp_path / "cmp_other"
    sat.main(TINY + ["--set", "train.steps=1", "--out", str(other), "--set", "models=hard", "--set", "batch_size=4"])
    with pytest.raises(SystemExit, match="batch_size"):
        publish.main(["show_attend_tell", str(out), str(other), "--block", "sat", "--readme", str(readme),
                      "--results", str(tmp_path / "res2")])
    with pytest.raises(SystemExit, match="in both"):
        publish.main(["show_attend_tell", str(out), str(out), "--block", "sat", "--readme", str(readme),
                      "--results", str(tmp_path / "res2")])
    with pytest.raises(SystemExit, match="unknown model"):
        sat.main(TINY + ["--set", "model=local"])
    with pytest.raises(SystemExit, match="unknown model"):  # the spelling: attention= is model=
        sat.main(TINY + ["--set", "attention=local"])


def _hard_task(**changes):
    return sat.CaptionTask(dataclasses.replace(sat.smoke(), model="hard", **changes))


def test_hard_attention_baselines_are_fitted_and_add_nothing_to_the_loss():
    task = _hard_task()
    params = task.init(jax.random.key(0))
    assert params["baseline"].shape == (sat.dc.max_words(task.cfg.canvas) + 1,) and "critic" in params
    opt = task.optimizer(task.cfg.train)
    state = opt.init(params)
    for step, key in enumerate(jax.random.split(jax.random.key(1), 2)):
        batch = task.batch(step)
        (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, key)
        assert float(loss) == pytest.approx(float(aux["nll"] - 0.01 * aux["entropy"]), abs=1e-4)
        updates, state = opt.update(grads, state, params)
        new = optax.apply_updates(params, updates)
        # the moving average moves each position's baseline 10% of the way to that position's mean reward-to-go
        moved = np.asarray(new["baseline"] - params["baseline"])
        assert np.any(moved != 0) and float(aux["reward"]) < 0
        words = batch["lengths"].max() - 1  # positions some caption reaches
        assert np.all(moved[words:] == 0) and np.all(moved[:words] < 0)  # returns are negative log-likelihoods
        assert float(jnp.abs(grads["critic"]["w2"]).sum()) > 0  # the critic is fitted
        params = new


def test_hard_attention_credits_each_location_with_its_reward_to_go():
    """The REINFORCE term's gradient wrt log p(s_t) is -(G_t - b_t - critic_t)·[sampled] / tokens (to_go) or the
    whole caption's reward (caption)."""
    b, t = 2, 4
    nll = jnp.array([[1.0, 2.0, 0.5, 3.0], [0.2, 0.4, 0.0, 0.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    log_p = jnp.log(jnp.full((b, t), 0.25))
    trace = Trace(alphas=jnp.full((b, t, 4), 0.25), locations=jnp.array([[0, 1, -1, 2], [3, -1, 0, 0]]),
                      log_p_locations=log_p, entropy=jnp.zeros((b, t)), beta=jnp.ones((b, t)),
                      hidden=jnp.zeros((b, t, 3)))
    baseline = jnp.array([-1.0, -0.5, 0.0, 0.0])
    for credit, returns in (("to_go", -np.array([[6.5, 5.5, 3.5, 3.0], [0.6, 0.4, 0.0, 0.0]])),
                            ("caption", -np.array([[6.5] * 4, [0.6] * 4]))):
        cfg = dataclasses.replace(sat.smoke(), model="hard", credit=credit, entropy=0.0)

        def term(lp, cfg=cfg):
            return sat.hard_attention_terms(cfg, nll, mask, trace._replace(log_p_locations=lp), baseline, None)[0]

        g = np.asarray(jax.grad(term)(log_p))
        sampled = (np.asarray(trace.locations) >= 0) * np.asarray(mask)
        np.testing.assert_allclose(g, -(returns - np.asarray(baseline)) * sampled / 6.0, rtol=1e-5, atol=1e-6)
    # leave-one-out: rows 0 and 1 as two samples of one canvas, each credited against the other's reward-to-go
    cfg = dataclasses.replace(sat.smoke(), model="hard", baseline="loo", samples=2, entropy=0.0)
    same = jnp.ones_like(mask)
    g = np.asarray(jax.grad(lambda lp: sat.hard_attention_terms(
        cfg, nll, same, trace._replace(log_p_locations=lp), baseline, None, samples=2)[0])(log_p))
    returns = -np.array([[6.5, 5.5, 3.5, 3.0], [0.6, 0.4, 0.0, 0.0]])
    sampled = (np.asarray(trace.locations) >= 0).astype(float)
    np.testing.assert_allclose(g, -(returns - returns[::-1]) * sampled / 8.0, rtol=1e-5, atol=1e-6)


def test_hard_expected_row_never_samples_and_samples_multiply_the_batch():
    control = sat.CaptionTask(dataclasses.replace(sat.smoke(), model="hard_expected"))
    assert control.attention == "hard" and control.expected_prob == 1.0 and control.samples == 1
    params = control.init(jax.random.key(0))
    _, trace = control.model(params)(control.batch(0)["images"], control.batch(0)["captions"][:, :-1],
                                     rng=jax.random.key(1))
    assert np.all(np.asarray(trace.locations) == -1)
    task = _hard_task(samples=3)
    params = task.init(jax.random.key(0))
    batch = task.batch(0)
    logits, _ = task.model(params)(batch["images"], batch["captions"][:, :-1], rng=jax.random.key(1), samples=3)
    assert logits.shape[0] == 3 * len(batch["images"])
    assert np.isfinite(float(task.loss(params, batch, jax.random.key(2))[0]))
    with pytest.raises(ValueError, match="credit"):
        _hard_task(credit="episode")
    with pytest.raises(ValueError, match="samples >= 2"):
        _hard_task(baseline="loo", samples=1)
    assert "critic" not in _hard_task(baseline="loo", samples=2).init(jax.random.key(0))
    with pytest.raises(ValueError, match="eval_split"):
        _hard_task(eval_split="train")


def test_validation_canvases_differ_from_the_test_set():
    val = sat.CaptionTask(dataclasses.replace(sat.smoke(), eval_split="val"))
    test = sat.CaptionTask(sat.smoke())
    assert not np.array_equal(val.test_set()["images"], test.test_set()["images"])
