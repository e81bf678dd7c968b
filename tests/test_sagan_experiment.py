"""experiments.sagan: the main variant at smoke, one step of the others, publish, the players' gradients, FD."""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn.sagan import hinge_losses
from experiments import publish, sagan

TINY = ["--preset", "smoke", "--set", "train.progress=false"]


def test_smoke_main_variant(smoke_run):
    run = smoke_run("sagan")  # shared with tests/test_run_dirs.py's rerun
    s, tmp_path = run.result["16"], run.out
    assert s["steps"] == 20 and np.isfinite(s["final_train_loss"])
    assert set(s["eval"]) == {"classifier_fd", "sample_accuracy", "classifier_test_accuracy"}
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "attention.png").stat().st_size > 0


def test_one_step_comparison_and_publish(tmp_path):
    out = tmp_path / "cmp"
    summaries = sagan.main(TINY + ["--out", str(out), "--set", "train.steps=2", "--set", "models=none,8",
                                   "--set", "seeds=0,1"])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- g:begin -->\n<!-- g:end -->\n")
    publish.main(["sagan", str(out), "--block", "g", "--readme", str(readme), "--results", str(tmp_path / "res")])
    text = readme.read_text()
    table = json.loads((tmp_path / "res" / "comparison.json").read_text())
    assert list(table["rows"]) == ["none", "8 x 8"] and table["seeds"] == [0, 1] and table["task"]["size"] == 16
    fd = table["rows"]["none"]["metrics"]["classifier_fd"]
    assert fd["per_seed"] == summaries["none"]["per_seed"]["classifier_fd"]
    assert f"| none | {fd['mean']:.2f} ± {fd['std']:.2f}" in text.replace("**", "") and "| 8 x 8 | " in text
    assert "| 22.98 |" in text  # the paper's feat8 FID beside ours
    assert (tmp_path / "res" / "gamma_g.png").exists() and "gamma_d.png" in text
    with pytest.raises(SystemExit, match="unknown model"):
        sagan.main(TINY + ["--set", "model=4"])
    with pytest.raises(SystemExit, match="unknown model"):  # the spelling: attention= is model=
        sagan.main(TINY + ["--set", "attention=4"])


def test_pairs_task_canvases_agreement_and_publish(tmp_path):
    task = sagan.GANTask(dataclasses.replace(sagan.smoke(), task="pairs"))
    assert task.classes == 1
    images, labels = sagan.pairs(np.random.default_rng(0), task.images, task.labels, task.train_idx, 40)
    assert images.shape == (40, 16, 32, 1)
    # every canvas is two different drawings of one digit
    flat = task.images.reshape(len(task.images), -1)
    for k in range(40):
        left = np.nonzero((flat == images[k, :, :16].reshape(-1)).all(1))[0]
        right = np.nonzero((flat == images[k, :, 16:].reshape(-1)).all(1))[0]
        assert set(task.labels[left]) == set(task.labels[right]) == {labels[k]}
        assert not set(left) & set(right) or len(left) > 1  # different images (unless two drawings are equal)
    # the agreement metric (with a classifier trained long enough to name digits): real pairs agree as often as
    # the classifier names both halves alike; swapping the right halves between canvases breaks it
    scorer = sagan.GANTask(dataclasses.replace(sagan.smoke(), task="pairs", classifier_steps=300))
    real, _ = scorer.real(np.random.default_rng(1), 200, "test")
    mixed = real.copy()
    mixed[:, :, 16:] = np.roll(real[:, :, 16:], 1, axis=0)
    assert scorer.agreement(real) > 0.7 and scorer.agreement(mixed) < 0.3
    b = task.batch(0)
    assert b["images"].shape == (16, 16, 32, 1) and set(b["labels"]) == {0} and set(b["fake_labels"]) == {0}
    params = task.init(jax.random.key(0))
    assert task.generator(params)(jnp.asarray(b["z"]), jnp.asarray(b["fake_labels"])).shape == (16, 16, 32, 1)
    out = tmp_path / "pairs"
    summaries = sagan.main(TINY + ["--out", str(out), "--set", "train.steps=2", "--set", "task=pairs",
                                   "--set", "models=none,8", "--set", "seeds=0,1"])
    assert {"classifier_fd", "agreement", "real_agreement"} <= set(summaries["8"]["eval"])
    metrics = [json.loads(line) for line in (out / "8" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert any("gamma_g" in r and "gamma_d" in r for r in metrics)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- p:begin -->\n<!-- p:end -->\n")
    publish.main(["sagan", str(out), "--block", "p", "--readme", str(readme), "--results", str(tmp_path / "res")])
    table = json.loads((tmp_path / "res" / "comparison.json").read_text())
    assert list(table["rows"]) == ["none", "8 x 16"] and table["task"]["name"] == "pairs"
    text = readme.read_text()
    assert "halves agree" in text and "16 x 32 pair canvases" in text and "samples_8.png" in text


def test_each_player_gets_the_gradient_of_its_own_loss_and_the_reported_loss_is_the_generators():
    task = sagan.GANTask(dataclasses.replace(sagan.smoke(), model="8"))
    params = task.init(jax.random.key(0))
    batch = task.batch(0)
    (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, None)
    assert float(loss) == pytest.approx(float(aux["g_loss"]), abs=1e-6)

    def scores(p):
        g = nnx.merge(task.g_def, p["g"])
        d = nnx.merge(task.d_def, p["d"])
        fake = g(batch["z"], batch["fake_labels"])
        return d(batch["images"], batch["labels"]), d(fake, batch["fake_labels"])

    grad_d = jax.grad(lambda p: hinge_losses(*scores(p))[0])(params)["d"]
    grad_g = jax.grad(lambda p: hinge_losses(*scores(p))[1])(params)["g"]
    for got, want in ((grads["d"], grad_d), (grads["g"], grad_g)):
        chex.assert_trees_all_close(got, want, atol=1e-5)


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    assert sagan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert sagan.frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, rel=1e-6)
    # N(0, I) vs N(0, 4I) in 3-D: trace(I + 4I - 2·2I) = 3
    assert sagan.frechet_distance(a, 2.0 * rng.standard_normal((4000, 3))) == pytest.approx(3.0, abs=0.3)
    images, labels = sagan.images_at(16)
    assert images.shape == (1797, 16, 16, 1) and images.min() == -1.0 and images.max() == 1.0
    assert jnp.asarray(labels).max() == 9
