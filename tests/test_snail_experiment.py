"""experiments.snail: glyph data and episodes, the main variant at smoke, one step of the other variants, publish."""

from __future__ import annotations

import json
import shutil

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
    two = ["--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "seeds=0,1"]
    summaries = snail.main(TINY + two + ["--out", str(out), "--set", "models=snail,tc-only,attn-only"])
    assert list(summaries) == ["snail", "tc-only", "attn-only"]
    size = summaries["snail"]["parameters"]
    for m in ("tc-only", "attn-only"):  # widened to the snail's count (coarse at smoke widths: one TC filter is 6%)
        assert abs(summaries[m]["parameters"] - size) / size < 0.1, (m, summaries[m]["parameters"], size)
    config = json.loads((out / "tc-only" / "seed0" / "config.json").read_text())
    assert config["tc_filters"] > snail.smoke().tc_filters and config["match_parameters"]
    curve = [r for r in map(json.loads, (out / "snail" / "seed0" / "metrics.jsonl").read_text().splitlines())
             if "eval/accuracy" in r]
    assert [r["step"] for r in curve] == [1, 2]  # the held-out curve at every eval_every and the end
    settings = []
    for setting in (["ways=20", "shots=1"], ["ways=5", "shots=1"]):
        settings.append(tmp_path / "_".join(setting))
        sets = [x for kv in setting for x in ("--set", kv)]
        snail.main(TINY + two + ["--out", str(settings[-1]), "--set", "eval_episodes=4", *sets])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- a:begin -->\n<!-- a:end -->\n<!-- s:begin -->\n<!-- s:end -->\n")
    publish.main(["snail", str(out), "--block", "a", "--readme", str(readme), "--results", str(tmp_path / "ra")])
    table = json.loads((tmp_path / "ra" / "comparison.json").read_text())
    assert list(table["rows"]) == ["snail", "tc-only", "attn-only"] and table["seeds"] == [0, 1]
    for m, s in summaries.items():
        assert table["rows"][m]["metrics"]["accuracy"]["per_seed"] == s["per_seed"]["accuracy"]
    assert table["rows"]["tc-only"]["tc_filters"] == config["tc_filters"]
    assert (tmp_path / "ra" / "learning_curve.png").exists() and (tmp_path / "ra" / "episode_snail.png").exists()
    publish.main(["snail", *map(str, settings), "--block", "s", "--readme", str(readme),
                  "--results", str(tmp_path / "rs")])
    table = json.loads((tmp_path / "rs" / "comparison.json").read_text())
    assert list(table["rows"]) == ["5-way 1-shot", "20-way 1-shot"]  # ordered by ways, shots
    assert table["rows"]["20-way 1-shot"]["paper_accuracy"] == 97.64 and table["rows"]["5-way 1-shot"]["ways"] == 5
    text = readme.read_text()
    acc = table["rows"]["20-way 1-shot"]["metrics"]["accuracy"]
    assert f"| 20-way 1-shot | {acc['mean']:.3f} ± {acc['std']:.3f}" in text.replace("**", "")
    assert "| 97.64% |" in text and "Ablation. Device" in text and "Settings. Device" in text
    # an ablation folder gives its setting's row (its snail) to a settings table of several folders
    publish.main(["snail", str(out), str(settings[0]), "--block", "s", "--readme", str(readme),
                  "--results", str(tmp_path / "rs2")])
    table = json.loads((tmp_path / "rs2" / "comparison.json").read_text())
    assert list(table["rows"]) == ["5-way 1-shot", "20-way 1-shot"]
    row = table["rows"]["5-way 1-shot"]["metrics"]["accuracy"]
    assert row["per_seed"] == summaries["snail"]["per_seed"]["accuracy"]
    # a later sitting adds a setting to a published table whose run folders are gone: its rows are kept verbatim
    rk = tmp_path / "rk"
    publish.main(["snail", str(settings[1]), "--block", "s", "--readme", str(readme), "--results", str(rk)])
    first = json.loads((rk / "comparison.json").read_text())
    assert (rk / "learning_curve.png").exists()
    publish.main(["snail", str(rk), str(settings[0]), "--block", "s", "--readme", str(readme), "--results", str(rk)])
    table = json.loads((rk / "comparison.json").read_text())
    assert list(table["rows"]) == ["5-way 1-shot", "20-way 1-shot"]
    assert table["rows"]["5-way 1-shot"] == first["rows"]["5-way 1-shot"]
    assert table["provenance"]["command"] == [*first["provenance"]["command"],  # a list: one command per folder
                                              json.loads((settings[0] / "comparison.json").read_text())["command"]]
    assert sorted(p.name for p in rk.glob("*.png")) == ["learning_curve_20w1s.png", "learning_curve_5w1s.png"]
    assert "learning_curve_5w1s.png)" in readme.read_text() and "learning_curve_20w1s.png)" in readme.read_text()
    with pytest.raises(SystemExit, match="in the kept table and in the new runs"):
        publish.main(["snail", str(rk), str(settings[1]), "--block", "s", "--readme", str(readme),
                      "--results", str(tmp_path / "x")])
    first["rows"]["5-way 1-shot"]["parameters"] += 1  # a row of another model
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "comparison.json").write_text(json.dumps(first))
    with pytest.raises(SystemExit, match="not the same model"):
        publish.main(["snail", str(tmp_path / "other"), str(settings[0]), "--block", "s", "--readme", str(readme),
                      "--results", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="two folders hold"):
        shutil.copytree(settings[0], tmp_path / "again")
        publish.main(["snail", str(settings[0]), str(tmp_path / "again"), "--block", "s", "--readme", str(readme),
                      "--results", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no comparison.json"):
        publish.main(["snail", str(out / "snail" / "seed0"), "--block", "s", "--readme", str(readme)])
    with pytest.raises(SystemExit, match="unknown model"):
        snail.main(TINY + ["--set", "model=lstm"])
    with pytest.raises(ValueError, match="drawings"):
        snail.main(TINY + ["--set", "shots=4", "--out", str(tmp_path / "x")])


def test_matched_config_widens_the_ablation_models_to_the_snails_parameter_count():
    import dataclasses

    base = snail.small()
    size = snail.parameter_count(base)
    tc = snail.matched_config(dataclasses.replace(base, model="tc-only"))
    attn = snail.matched_config(dataclasses.replace(base, model="attn-only"))
    assert tc.tc_filters > base.tc_filters and attn.key_sizes[0] > base.key_sizes[0]
    for c in (tc, attn):
        assert abs(snail.parameter_count(c) - size) / size < 0.02
    plain = dataclasses.replace(base, model="tc-only", match_parameters=False)
    assert snail.matched_config(plain) == plain and snail.parameter_count(plain) < 0.8 * size


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
