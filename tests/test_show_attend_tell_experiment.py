"""experiments.show_attend_tell: the main variant at smoke, one step of hard and none, publish, the baseline."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest

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
    out = tmp_path / "cmp"
    summaries = sat.main(TINY + ["--out", str(out), "--set", "train.steps=1", "--set", "models=soft,hard,none"])
    assert list(summaries) == ["soft", "hard", "none"]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- sat:begin -->\n<!-- sat:end -->\n")
    publish.main(["show_attend_tell", str(out), "--block", "sat", "--readme", str(readme), "--results",
                  str(tmp_path / "res")])
    text = readme.read_text()
    for m, s in summaries.items():
        assert f"| {m} | {s['eval']['bleu_1']:.1f} |" in text
    assert "| the paper, hard (COCO) | 71.8 | 50.4 | 35.7 | 25.0 |" in text
    refs = (out / "soft" / "seed0" / "samples.txt").read_text().splitlines()
    assert f"```text\n{refs[0]}\nsoft:      " in text and "\nnone:      " in text  # example captions
    assert json.loads((tmp_path / "res" / "comparison.json").read_text())["eval_size"] == 16
    with pytest.raises(SystemExit, match="unknown model"):
        sat.main(TINY + ["--set", "model=local"])
    with pytest.raises(SystemExit, match="unknown model"):  # the spelling: attention= is model=
        sat.main(TINY + ["--set", "attention=local"])


def test_hard_attention_baseline_is_a_moving_average_and_adds_nothing_to_the_loss():
    task = sat.CaptionTask(dataclasses.replace(sat.smoke(), model="hard"))
    params = task.init(jax.random.key(0))
    opt = task.optimizer(task.cfg.train)
    state = opt.init(params)
    for step, key in enumerate(jax.random.split(jax.random.key(1), 2)):
        (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(params, task.batch(step), key)
        assert float(loss) == pytest.approx(float(aux["nll"] - 0.01 * aux["entropy"]), abs=1e-4)
        updates, state = opt.update(grads, state, params)
        new = optax.apply_updates(params, updates)
        expected = 0.9 * float(params["baseline"]) + 0.1 * float(aux["reward"])
        assert float(new["baseline"]) == pytest.approx(expected, rel=1e-5)
        assert float(aux["reward"]) < 0
        params = new
