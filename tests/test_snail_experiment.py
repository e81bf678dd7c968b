"""experiments.snail: glyph data and episodes, the main variant at smoke, one step of the other variants, publish."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import publish, snail
from experiments.data import glyphs

TINY = ["--preset", "smoke", "--set", "train.progress=false"]


def test_glyphs_are_distinct_characters_of_many_scripts_with_varied_drawings():
    g = glyphs.load(4)
    c = len(g.chars)
    assert g.images.shape == (c, 4, 28, 28) and c > 600 and len(set(g.scripts)) == len(glyphs.SCRIPTS)
    assert len(set(g.chars)) == c
    ink = g.images.reshape(c, 4, -1).mean(-1)
    assert np.all(ink > 5)  # every drawing has ink
    first, second = g.images[:, 0].astype(float), g.images[:, 1].astype(float)
    assert np.mean(np.abs(first - second)) > 5  # drawings of a character differ
    train, test = g.split("character")
    assert not set(train) & set(test) and len(train) + len(test) == c
    train, test = g.split("script")
    assert {g.scripts[i] for i in test} == set(glyphs.TEST_SCRIPTS)
    assert not {g.scripts[i] for i in train} & set(glyphs.TEST_SCRIPTS)
    with pytest.raises(ValueError, match="unknown split"):
        g.split("drawer")


def test_episodes_hold_n_classes_k_shots_and_a_query_of_one_of_them():
    g = glyphs.load(4)
    classes = np.arange(50)
    b = glyphs.episode(np.random.default_rng(0), g, classes, ways=5, shots=2, batch=8)
    assert b["images"].shape == (8, 11, 28, 28) and b["labels"].shape == (8, 11)
    for labels, images in zip(b["labels"], b["images"], strict=True):
        assert sorted(labels[:-1].tolist()) == sorted(list(range(5)) * 2)
        q = labels[-1]
        assert q in labels[:-1]
        for i in np.flatnonzero(labels[:-1] == q):
            assert not np.array_equal(images[i], images[-1])  # the query is another drawing


def test_smoke_main_variant(smoke_run):
    run = smoke_run("snail")  # shared with tests/test_run_dirs.py's rerun
    s, tmp_path = run.result["snail"], run.out
    assert s["steps"] == 20 and np.isfinite(s["final_train_loss"])
    assert 0.0 <= s["eval"]["accuracy"] <= 1.0 and (tmp_path / "episode.png").stat().st_size > 0


def test_one_step_ablation_other_settings_and_publish(tmp_path):
    out = tmp_path / "abl"
    summaries = snail.main(TINY + ["--out", str(out), "--set", "train.steps=1", "--set",
                                   "models=snail,tc-only,attn-only"])
    assert list(summaries) == ["snail", "tc-only", "attn-only"]
    singles = {}
    for setting in (["ways=20", "shots=1"], ["ways=5", "shots=3", "split=script"]):
        sets = [x for kv in setting for x in ("--set", kv)]
        singles[tmp_path / "_".join(setting)] = snail.main(
            TINY + ["--out", str(tmp_path / "_".join(setting)), "--set", "train.steps=1", "--set", "eval_episodes=4",
                    *sets])["snail"]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- s:begin -->\n<!-- s:end -->\n")
    publish.main(["snail", str(out), *map(str, singles), "--block", "s", "--readme", str(readme), "--results",
                  str(tmp_path / "res")])
    text = readme.read_text()
    for m, s in summaries.items():
        assert f"| {m} | {100 * s['eval']['accuracy']:.1f}% |" in text
    assert "| SNAIL, the paper (Omniglot) | 99.07% |" in text
    assert json.loads((tmp_path / "res" / "comparison.json").read_text())["ways"] == 5
    s = singles[tmp_path / "ways=20_shots=1"]
    assert f"| snail, 20-way 1-shot | character | 1 x 4 | {100 * s['eval']['accuracy']:.1f}% |" in text
    assert "| 97.64% |" in text and "| snail, 5-way 3-shot | script |" in text
    with pytest.raises(SystemExit, match="unknown model"):
        snail.main(TINY + ["--set", "model=lstm"])
    with pytest.raises(ValueError, match="drawings"):
        snail.main(TINY + ["--set", "shots=4", "--out", str(tmp_path / "x")])


def test_moving_statistics_start_at_the_first_batch_and_follow_a_moving_average():
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax

    task = snail.FewShotTask(dataclasses.replace(snail.smoke(), norm_decay=0.8))
    params = task.init(jax.random.key(0))
    model = task.model(params)
    first = model.embedding_moments(model.embedding(jnp.asarray(task.batch(0)["images"])))
    np.testing.assert_allclose(params["norm_mean"][...], first[0], rtol=1e-5)
    np.testing.assert_allclose(params["norm_var"][...], first[1], rtol=1e-5)
    opt = task.optimizer(task.cfg.train)
    state = opt.init(params)
    batch = task.batch(1)
    (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, None)
    logits = task.model(params)(batch["images"], batch["labels"])[:, -1]
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"][:, -1]).mean()
    assert float(loss) == pytest.approx(float(plain), abs=1e-6)  # the statistics' term adds nothing to the loss
    updates, state = opt.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    mean, var = model.embedding_moments(model.embedding(jnp.asarray(batch["images"])))
    np.testing.assert_allclose(new["norm_mean"][...], 0.8 * first[0] + 0.2 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["norm_var"][...], 0.8 * first[1] + 0.2 * var, rtol=1e-4, atol=1e-6)
    # evaluation runs the trained function: batches of any size give each episode the same prediction
    b = task.episodes(np.random.default_rng(3), task.test_classes, 5)
    together = np.asarray(task._predict(new, b["images"], b["labels"]))
    alone = [int(task._predict(new, b["images"][k:k + 1], b["labels"][k:k + 1])[0]) for k in range(5)]
    assert together.tolist() == alone
