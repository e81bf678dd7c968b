"""The NTM module, its tasks and experiments.ntm (smoke main variant, one step of every other variant)."""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn.ntm import NTM, LSTMBaseline
from experiments import ntm as ntm_experiment
from experiments import publish
from experiments.data import ntm_tasks


@pytest.mark.parametrize("controller,heads", [("lstm", 1), ("feedforward", 2)])
def test_ntm_shapes_trace_and_step_consistency(controller, heads):
    model = NTM(5, 4, rngs=nnx.Rngs(0), controller=controller, controller_features=8, memory_slots=10,
                memory_width=6, read_heads=heads)
    x = jax.random.normal(jax.random.key(1), (2, 7, 5))
    y, trace = model(x, trace_memory=True)
    assert y.shape == (2, 7, 4) and trace["read_weights"].shape == (2, 7, heads, 10)
    assert trace["write_weights"].shape == (2, 7, 10) and trace["memory"].shape == (2, 7, 10, 6)
    np.testing.assert_allclose(np.asarray(trace["read_weights"]).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(trace["write_weights"]).sum(-1), 1.0, rtol=1e-5)
    state = model.initial_state(2)
    for t in range(7):  # the scan is the step function, step by step
        state, yt = model.step(state, x[:, t])
        np.testing.assert_allclose(np.asarray(yt), np.asarray(y[:, t]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(state.memory), np.asarray(trace["memory"][:, t]), rtol=1e-5,
                                   atol=1e-6)


def test_ntm_memory_carries_information_across_time_and_gradients_are_finite():
    model = NTM(3, 2, rngs=nnx.Rngs(0), controller_features=8, memory_slots=8, memory_width=4)
    graphdef, params = nnx.split(model, nnx.Param)

    def out_last(x):
        return nnx.merge(graphdef, params)(x)[0][:, -1].sum()

    x = jax.random.normal(jax.random.key(2), (1, 6, 3))
    g = jax.grad(out_last)(x)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g[:, 0]).sum()) > 0  # first input reaches the end
    grads = jax.grad(lambda p: nnx.merge(graphdef, p)(x)[0].sum())(params)
    chex.assert_tree_all_finite(grads)
    lstm = LSTMBaseline(3, 2, rngs=nnx.Rngs(0), hidden_features=8, layers=2)
    assert lstm(x)[0].shape == (1, 6, 2)
    with pytest.raises(ValueError, match="unknown controller"):
        NTM(3, 2, rngs=nnx.Rngs(0), controller="gru")


def test_copy_task_layout():
    b = ntm_tasks.copy(np.random.default_rng(0), 3, width=4, max_length=5, lengths=np.array([1, 3, 5]))
    assert b.inputs.shape == (3, 11, 5) and b.targets.shape == (3, 11, 4)
    for i, n in enumerate([1, 3, 5]):
        np.testing.assert_array_equal(b.targets[i, n + 1:2 * n + 1], b.inputs[i, :n, :4])
        assert b.inputs[i, n, 4] == 1 and b.inputs[i, :, 4].sum() == 1 and b.mask[i].sum() == n
        assert not b.inputs[i, n + 1:].any()


def test_repeat_copy_and_associative_recall_layout():
    b = ntm_tasks.repeat_copy(np.random.default_rng(1), 4, width=3, max_length=4, max_repeats=3)
    for i in range(4):
        n = int(np.argmax(b.inputs[i, :, 3] > 0))  # the repeat-count step follows the sequence
        r = round(float(b.inputs[i, n, 3]) * 3)
        seq = b.inputs[i, :n, :3]
        out = b.targets[i, n + 1:n + 1 + n * r, :3]
        np.testing.assert_array_equal(out, np.tile(seq, (r, 1)))
        assert b.targets[i, n + 1 + n * r, 3] == 1 and b.mask[i].sum() == n * r + 1
    fixed = ntm_tasks.repeat_copy(np.random.default_rng(3), 2, width=3, length=6, repeats=5, repeat_scale=3)
    assert fixed.mask.sum(1).tolist() == [31, 31] and fixed.inputs.shape[1] == 6 + 1 + 30 + 1
    np.testing.assert_allclose(fixed.inputs[:, 6, 3], 5 / 3)  # counts past training read as values above 1
    a = ntm_tasks.associative_recall(np.random.default_rng(2), 5, width=4, item_length=2, max_items=4)
    for i in range(5):
        starts = np.nonzero(a.inputs[i, :, 4])[0]
        items = [a.inputs[i, s + 1:s + 3, :4] for s in starts]
        q0, q1 = np.nonzero(a.inputs[i, :, 5])[0]
        query = a.inputs[i, q0 + 1:q1, :4]
        k = next(j for j, item in enumerate(items) if np.array_equal(item, query))
        np.testing.assert_array_equal(a.targets[i, q1 + 1:q1 + 3], items[k + 1])


def test_experiment_smoke_main_variant(smoke_run):
    run = smoke_run("ntm")  # shared with tests/test_run_dirs.py's rerun
    summaries, tmp_path = run.result, run.out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert summaries["ntm"]["steps"] == s["steps"] == 20 and np.isfinite(s["final_train_loss"])
    assert set(s["eval"]) >= {"bits_per_sequence", "bits_len_4", "bits_len_8", "bit_errors_len_8"}
    for name in ("learning_curve.png", "weightings.png", "generalisation.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "bits_len_8" in run.stdout


TINY = ["--preset", "smoke", "--set", "train.steps=1", "--set", "train.progress=false"]


@pytest.mark.parametrize("model,task", [("lstm", "copy"), ("ntm", "repeat_copy"), ("ntm", "associative_recall"),
                                        ("lstm", "associative_recall")])
def test_every_other_variant_runs_one_step(tmp_path, model, task):
    s = ntm_experiment.main(TINY + ["--out", str(tmp_path), "--set", f"model={model}", "--set", f"task={task}"])
    assert np.isfinite(s[model]["eval"]["bits_per_sequence"]) and s[model]["steps"] == 1
    if task == "repeat_copy":  # smoke: lengths up to 4, up to 10 repeats
        assert {"bits_len_4_rep_10", "bits_len_8_rep_10", "bit_errors_len_4_rep_20"} <= set(s[model]["eval"])
    if task == "associative_recall":  # trained on 2-6 items, tested on 6 and 8 (smoke)
        assert {"bits_items_6", "bit_errors_items_6", "bits_items_8", "bit_errors_items_8"} <= set(s[model]["eval"])
        assert (tmp_path / "generalisation.png").exists()
    assert (tmp_path / "weightings.png").exists() == (model == "ntm")


def test_associative_recall_tests_exactly_n_items_and_publishes_them(tmp_path):
    cfg = dataclasses.replace(ntm_experiment.smoke(), task="associative_recall")
    b = ntm_experiment._generate(cfg, np.random.default_rng(0), 16, items=8)
    assert np.all(b.inputs[:, :, -2].sum(1) == 8)  # 8 item delimiters in every sequence
    out = tmp_path / "cmp"
    ntm_experiment.main(TINY + ["--out", str(out), "--set", "models=ntm,lstm", "--set", "seeds=0,1",
                                "--set", "task=associative_recall"])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- ar:begin -->\n<!-- ar:end -->\n")
    publish.main(["ntm", str(out), "--block", "ar", "--readme", str(readme), "--results", str(tmp_path / "res")])
    text = readme.read_text()
    assert "wrong bits, 8 items" in text and "2-6 items" in text and (tmp_path / "res" / "generalisation.png").exists()
    assert ntm_experiment.associative_recall().data.eval_items[-1] == 20  # the paper's Fig. 11 goes to 20 items


def test_comparison_publishes_the_schema_with_seeds(tmp_path):
    ntm_experiment.main(TINY + ["--out", str(tmp_path), "--set", "models=ntm,lstm", "--set", "seeds=0,1",
                                "--set", "net.controller=feedforward"])
    c = json.loads((tmp_path / "comparison.json").read_text())
    assert list(c["summaries"]) == ["ntm", "lstm"] and (tmp_path / "generalisation.png").exists()
    assert c["eval_lengths"] == [4, 8] and c["train_max_length"] == 4
    readme = tmp_path / "README.md"
    readme.write_text("<!-- ntm_copy:begin -->\n<!-- ntm_copy:end -->\n")
    res = tmp_path / "res"
    publish.main(["ntm", str(tmp_path), "--block", "ntm_copy", "--readme", str(readme), "--results", str(res)])
    table = json.loads((res / "comparison.json").read_text())  # the schema of docs/results.md
    assert set(table) >= {"provenance", "seeds", "rows"} and table["seeds"] == [0, 1]
    assert set(table["provenance"]) >= {"commit", "command", "device", "date"}
    assert "seeds=0,1" in table["provenance"]["command"] and list(table["rows"]) == ["ntm", "lstm"]
    for row, summary in c["summaries"].items():
        r = table["rows"][row]
        assert isinstance(r["parameters"], int) and r["wall_s"] > 0
        per_seed = [summary["per_seed_summaries"][str(k)]["eval"]["bit_errors_len_8"] for k in (0, 1)]
        assert r["metrics"]["bit_errors_len_8"]["per_seed"] == per_seed
        assert r["metrics"]["bit_errors_len_8"]["mean"] == pytest.approx(np.mean(per_seed))
        assert r["metrics"]["bit_errors_len_8"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    text = readme.read_text()
    assert "| ntm |" in text and "| lstm |" in text and "wrong bits, length 8" in text and " ± " in text
    assert "gradient norm clipped at 10; seeds 0, 1;" in text  # the smoke preset's recipe, read from its config
    stat = table["rows"]["lstm"]["metrics"]["bits_per_sequence"]
    assert f"{stat['mean']:.3g} ± {stat['std']:.3g}" in text
    for name in ("learning_curve.png", "generalisation.png", "weightings_ntm.png"):
        assert (res / name).stat().st_size > 0 and name in text
    with pytest.raises(SystemExit, match="unknown model"):
        ntm_experiment.main(TINY + ["--set", "model=dnc"])
    with pytest.raises(SystemExit, match="unknown task"):
        ntm_experiment.main(TINY + ["--set", "task=sort"])


def test_copy_preset_is_the_papers_recipe_and_tests_up_to_120():
    cfg = ntm_experiment.copy()
    assert (cfg.data.min_length, cfg.data.max_length) == (1, 20) and {60, 120} <= set(cfg.data.eval_lengths)
    assert cfg.net.memory_slots >= max(cfg.data.eval_lengths)  # else the NTM skips length 120
    # the paper's optimiser, decayed (at a constant rate it collapsed again and again after converging)
    assert (cfg.train.optimizer, cfg.train.learning_rate, cfg.train.schedule) == ("rmsprop", 1e-4, "cosine")
    assert cfg.train.steps * cfg.batch_size == 200_000
    task = {m: ntm_experiment.NTMTask(dataclasses.replace(cfg, model=m)) for m in ("ntm", "lstm")}
    counts = {m: sum(np.size(x) for x in jax.tree.leaves(t.init(jax.random.key(0)))) for m, t in task.items()}
    assert abs(counts["lstm"] - counts["ntm"]) < 0.05 * counts["ntm"]  # the baseline at about equal parameters


def test_slots_in_use_crops_to_the_circular_run_of_used_slots():
    w = np.full((6, 128), 1e-3)
    for t, slot in enumerate([126, 127, 0, 1, 2, 2]):  # a head that wrapped around from the end
        w[t, slot] = 0.9
    w[0, 60] = 0.1  # diffuse weight below the threshold does not widen the crop
    np.testing.assert_array_equal(ntm_experiment.slots_in_use(w, margin=0), [126, 127, 0, 1, 2])
    np.testing.assert_array_equal(ntm_experiment.slots_in_use(w, margin=1), [125, 126, 127, 0, 1, 2, 3])
    w2 = np.zeros((3, 10))
    w2[:, [3, 5]] = 0.5
    np.testing.assert_array_equal(ntm_experiment.slots_in_use(w2, margin=0), [3, 4, 5])
    np.testing.assert_array_equal(ntm_experiment.slots_in_use(np.full((2, 8), 0.125)), np.arange(8))


def test_output_panel_is_blank_where_no_output_is_asked():
    b = ntm_tasks.copy(np.random.default_rng(0), 1, width=4, max_length=5, lengths=np.array([3]))
    probs = np.full(b.targets.shape[1:], 0.7)
    panel = ntm_experiment.output_panel(probs, b.mask[0])
    assert panel.shape == (4, 11)
    assert np.isnan(panel[:, :4]).all() and np.isnan(panel[:, 7:]).all()  # input phase and padding: blank
    np.testing.assert_allclose(panel[:, 4:7], 0.7)


def test_repeat_copy_preset_is_the_papers_ranges():
    cfg = ntm_experiment.repeat_copy()
    assert cfg.task == "repeat_copy" and (cfg.data.max_length, cfg.data.max_repeats) == (10, 10)
    assert ntm_experiment.repeat_generalisation(cfg.data) == [(10, 10), (20, 10), (10, 20)]
    assert cfg.train == dataclasses.replace(ntm_experiment.copy().train, steps=cfg.train.steps, checkpoint_every=1000)
    assert cfg.net.memory_slots >= 20  # twice the longest training length fits the memory


def test_the_repeat_copy_curriculum_brings_the_counts_in_one_at_a_time():
    data = ntm_experiment.TaskConfig(max_length=4, max_repeats=5, curriculum_steps=100)
    assert [ntm_experiment.curriculum_repeats(data, s) for s in (0, 24, 25, 50, 99, 100, 10_000)] == [1, 1, 2, 3, 4,
                                                                                                     5, 5]
    assert ntm_experiment.curriculum_repeats(dataclasses.replace(data, curriculum_steps=0), 0) == 5  # off
    cfg = dataclasses.replace(ntm_experiment.smoke(), task="repeat_copy", data=data, batch_size=64)
    task = ntm_experiment.NTMTask(cfg)
    first, late = task.batch(0), task.batch(100)
    counts = first["inputs"][:, :, data.width].max(axis=1) * 5  # the count channel, scaled by max_repeats
    np.testing.assert_allclose(counts, 1.0, rtol=1e-6)  # step 0: one repeat (a copy), read as 1 of 5
    assert first["inputs"].shape[1] == 4 + 1 + 4 * 1 + 1  # padded to the stage's longest sequence
    late_counts = np.round(late["inputs"][:, :, data.width].max(axis=1) * 5)
    assert set(late_counts) == {1, 2, 3, 4, 5} and late["inputs"].shape[1] == 4 + 1 + 4 * 5 + 1
    assert ntm_experiment.repeat_copy().data.curriculum_steps == ntm_experiment.REPEAT_COPY_CURRICULUM > 0


def test_a_folder_trained_on_other_lengths_adds_its_rows_and_another_recipe_is_refused(tmp_path):
    base = TINY + ["--set", "seeds=0,1", "--set", "net.controller=feedforward"]
    ntm_experiment.main(base + ["--out", str(tmp_path / "a"), "--set", "models=ntm,lstm"])
    ntm_experiment.main(base + ["--out", str(tmp_path / "b"), "--set", "models=ntm", "--set", "data.max_length=3"])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- ntm_copy:begin -->\n<!-- ntm_copy:end -->\n")
    res = tmp_path / "res"
    publish.main(["ntm", str(tmp_path / "a"), str(tmp_path / "b"), "--block", "ntm_copy", "--readme", str(readme),
                  "--results", str(res)])
    table = json.loads((res / "comparison.json").read_text())
    assert list(table["rows"]) == ["ntm", "lstm", "ntm (train 1-3)"]
    assert isinstance(table["provenance"]["command"], list) and len(table["provenance"]["command"]) == 2
    other = json.loads((tmp_path / "b" / "comparison.json").read_text())["summaries"]["ntm"]
    assert table["rows"]["ntm (train 1-3)"]["metrics"]["bit_errors_len_8"]["mean"] == pytest.approx(
        other["eval"]["bit_errors_len_8"])
    assert "| ntm (train 1-3) |" in readme.read_text() and "Rows marked (train a-b)" in readme.read_text()
    ntm_experiment.main(base + ["--out", str(tmp_path / "c"), "--set", "models=ntm", "--set", "batch_size=3"])
    with pytest.raises(SystemExit, match="more than its training lengths: batch_size"):
        publish.main(["ntm", str(tmp_path / "a"), str(tmp_path / "c"), "--block", "ntm_copy", "--readme",
                      str(readme), "--results", str(res)])
