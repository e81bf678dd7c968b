"""Seeds, spread and provenance: rows x seeds in ``OUT/<row>/seed<k>/``, summaries over seeds, the fields only
the training loop records (wall_s, parameters, commit), and the published-table writer."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import toy_experiment

from attn_jax.train import add_to_summary
from attn_jax.train.cli import main
from attn_jax.train.report import aggregate, mean_std, plot_metric_curves
from experiments import tables
from experiments.readme import row_run

FAST = ["--set", "train.steps=10", "--set", "train.checkpoint_every=5", "--set", "train.log_every=5"]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(Path(out).rglob("*")) if p.is_file()}


def _compare(out: Path, *sets: str) -> dict:
    return toy_experiment.compare(["--out", str(out), *FAST, *sets])


def test_rows_times_seeds_lay_out_one_resumable_run_per_seed(tmp_path):
    out = tmp_path / "cmp"
    summaries = _compare(out, "--set", "models=linear,scaled", "--set", "seeds=0,1")
    for model in ("linear", "scaled"):
        for seed in (0, 1):
            config = json.loads((out / model / f"seed{seed}" / "config.json").read_text())
            assert config["train"]["seed"] == seed and config["train"]["seeds"] == []
            assert (out / model / f"seed{seed}" / "summary.json").is_file()
        s = summaries[model]
        assert s["seeds"] == [0, 1]
        per_seed = s["per_seed"]["weight_error"]
        own = [json.loads((out / model / f"seed{k}" / "summary.json").read_text())["eval"]["weight_error"]
               for k in (0, 1)]
        assert per_seed == own and per_seed[0] != per_seed[1]  # the seed changes the initialisation
        assert s["eval"]["weight_error"] == pytest.approx(sum(own) / 2)
        assert s["eval_std"]["weight_error"] == pytest.approx(abs(own[0] - own[1]) / math.sqrt(2))
    saved = json.loads((out / "comparison.json").read_text())
    assert set(saved["summaries"]["linear"]["per_seed_summaries"]) == {"0", "1"}
    assert row_run(out, "scaled") == out / "scaled" / "seed0"


def test_adding_a_seed_reuses_the_finished_ones(tmp_path):
    out = tmp_path / "cmp"
    _compare(out, "--set", "models=linear", "--set", "seeds=0,1")
    before = _snapshot(out / "linear" / "seed0")
    summaries = _compare(out, "--set", "models=linear", "--set", "seeds=0,1,2")
    assert _snapshot(out / "linear" / "seed0") == before  # not retrained, not rewritten
    assert summaries["linear"]["seeds"] == [0, 1, 2] and (out / "linear" / "seed2" / "summary.json").is_file()


def test_seeds_without_models_make_a_comparison_of_one_row(tmp_path):
    out = tmp_path / "one"
    summary = main("toy", toy_experiment.PRESETS, toy_experiment.Regression,
                   ["--out", str(out), *FAST, "--set", "seeds=3,4"], "smoke")
    assert sorted(p.name for p in (out / "linear").iterdir()) == ["seed3", "seed4"]
    assert summary["seeds"] == [3, 4] and len(summary["per_seed"]["weight_error"]) == 2


@pytest.mark.parametrize("bad", ["seeds=1,1", "seeds=-1"])
def test_nonsense_seeds_are_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(SystemExit, match="seeds") as exit_:  # a usage error: exit status 2
        _compare(tmp_path / "x", "--set", bad)
    assert exit_.value.code == 2 and not (tmp_path / "x").exists()


def test_the_loop_records_wall_time_parameters_and_commit_and_a_rerun_changes_none(tmp_path):
    out = tmp_path / "run"
    summary = main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(out), *FAST], "smoke")
    assert summary["parameters"] == toy_experiment.Config().dim + 1
    assert summary["wall_s"] > 0 and isinstance(summary["commit"], str) and summary["commit"]
    before = _snapshot(out)
    again = main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(out), *FAST], "smoke")
    assert _snapshot(out) == before and again["wall_s"] == summary["wall_s"]
    with pytest.raises(ValueError, match="recorded by the training loop"):
        add_to_summary(out, summary, {"wall_s": 0.0})
    merged = add_to_summary(out, summary, {"note": "kept"})
    assert json.loads((out / "summary.json").read_text()) == merged and merged["wall_s"] == summary["wall_s"]


def test_wall_time_sums_the_sittings_of_a_resumed_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    sets = ["--out", str(out), "--set", "train.steps=40", "--set", "train.checkpoint_every=5",
            "--set", "sleep_per_step=0.05"]
    real_batch = toy_experiment.Regression.batch

    def dies_at_27(self, step):
        if step == 27:
            raise KeyboardInterrupt  # the first sitting ends after its checkpoint at step 25
        return real_batch(self, step)

    monkeypatch.setattr(toy_experiment.Regression, "batch", dies_at_27)
    with pytest.raises(KeyboardInterrupt):
        main("toy", toy_experiment.PRESETS, toy_experiment.Regression, sets, "smoke")
    monkeypatch.setattr(toy_experiment.Regression, "batch", real_batch)
    t0 = time.perf_counter()
    summary = main("toy", toy_experiment.PRESETS, toy_experiment.Regression, sets, "smoke")
    second = time.perf_counter() - t0
    # the first sitting slept 25 x 0.05 s before its last checkpoint: counted, though this sitting did not see it
    assert summary["wall_s"] >= second + 25 * 0.05


def test_aggregate_and_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    per_seed = {0: {"eval": {"a": 1.0, "b": 2.0}, "wall_s": 1.0, "parameters": 7, "commit": "x", "device": "cpu"},
                2: {"eval": {"a": 3.0}, "wall_s": 3.0, "parameters": 7, "commit": "y", "device": "cpu"}}
    s = aggregate(per_seed)
    assert s["eval"] == {"a": 2.0} and s["per_seed"] == {"a": [1.0, 3.0]} and s["seeds"] == [0, 2]
    assert s["wall_s"] == 2.0 and s["commit"] == ["x", "y"] and s["parameters"] == 7
    with pytest.raises(ValueError):
        aggregate({})


def _row(values, seeds=(0, 1, 2), commit="abc"):
    return aggregate({k: {"eval": {"bleu": v}, "wall_s": 1.0, "parameters": 10, "commit": commit,
                          "device": "cpu, jax x"} for k, v in zip(seeds, values, strict=True)})


def test_published_table_schema_and_markdown_marks_noise(tmp_path):
    rows = {"a": _row([10.0, 11.0, 12.0]), "b": _row([10.5, 11.5, 12.5]), "c": _row([1.0, 1.1, 0.9])}
    table = tables.from_summaries(rows, "python -m experiments.x --set seeds=0,1,2", date="2026-01-02")
    assert table["provenance"] == {"commit": "abc", "command": "python -m experiments.x --set seeds=0,1,2",
                                   "device": "cpu, jax x", "date": "2026-01-02"}
    assert table["seeds"] == [0, 1, 2]
    assert table["rows"]["a"] == {"metrics": {"bleu": {"mean": 11.0, "std": 1.0, "per_seed": [10.0, 11.0, 12.0]}},
                                  "parameters": 10, "wall_s": 1.0}
    path = tables.write(tmp_path / "exp" / "tbl", table)
    assert json.loads(path.read_text()) == table
    text = tables.markdown(table, [("bleu", "BLEU", ".1f")])
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "**11.5 ± 1.0**" in lines["b"]  # the best
    assert "11.0 ± 1.0 ≈" in lines["a"]  # 0.5 apart, std 1 each: within noise
    assert "≈" not in lines["c"] and "**" not in lines["c"]
    assert "3 seeds" in text
    low = tables.markdown(table, [("bleu", "BLEU", ".1f")], higher={"bleu": False})
    assert "**1.0 ± 0.1**" in low


def test_a_table_refuses_rows_over_different_seeds():
    with pytest.raises(ValueError, match="different seeds"):
        tables.from_summaries({"a": _row([1.0, 2.0, 3.0]), "b": _row([1.0, 2.0], seeds=(0, 1))}, "cmd")


def test_keeping_a_published_tables_rows_joins_rows_and_provenance():
    kept = tables.from_summaries({"a": _row([1.0, 2.0, 3.0])}, "old command", date="2026-01-01")
    kept["rows"]["a"]["steps"] = 7  # a row's own fields travel with it
    new_rows = {"b": {**_row([4.0, 5.0, 6.0]), "commit": "def", "device": "cpu, jax y"}}
    table = tables.keep_rows(kept, tables.from_summaries(new_rows, ["c1", "c2"], date="2026-01-02"))
    assert list(table["rows"]) == ["a", "b"] and table["rows"]["a"] == kept["rows"]["a"]
    assert table["rows"]["b"]["metrics"]["bleu"]["per_seed"] == [4.0, 5.0, 6.0]
    assert table["provenance"] == {"commit": ["abc", "def"], "command": ["old command", "c1", "c2"],
                                   "device": ["cpu, jax x", "cpu, jax y"], "date": "2026-01-02"}
    assert tables.is_published(table) and not tables.is_published({"summaries": {}})
    with pytest.raises(ValueError, match="in the kept table and in the new runs"):
        tables.keep_rows(kept, tables.from_summaries({"a": _row([1.0, 2.0, 3.0])}, "cmd"))
    with pytest.raises(ValueError, match="same seeds"):
        tables.keep_rows(kept, tables.from_summaries({"b": _row([1.0, 2.0], seeds=(0, 1))}, "cmd"))


def test_learning_curves_draw_a_band_over_seeds(tmp_path):
    out = tmp_path / "cmp"
    _compare(out, "--set", "models=linear,scaled", "--set", "seeds=0,1")
    rows = {m: [out / m / "seed0", out / m / "seed1"] for m in ("linear", "scaled")}
    plot_metric_curves(rows, "loss", tmp_path / "curve.png", "toy", "loss")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_a_row_without_a_metric_shows_a_dash_and_an_unknown_metric_is_refused():
    rows = {"attn": aggregate({k: {"eval": {"bleu": 1.0 + k, "aer": 0.1 * k}} for k in (0, 1, 2)}),
            "none": aggregate({k: {"eval": {"bleu": 0.5 + k}} for k in (0, 1, 2)})}
    table = tables.from_summaries(rows, "cmd")
    assert set(table["rows"]["none"]["metrics"]) == {"bleu"} and "aer" in table["rows"]["attn"]["metrics"]
    text = tables.markdown(table, [("bleu", "BLEU", ".1f"), ("aer", "AER", ".2f")], higher={"aer": False})
    assert text.splitlines()[3].endswith("| – |")
    with pytest.raises(ValueError, match="no row reports"):
        tables.from_summaries(rows, "cmd", metrics=["chrf"])


def test_short_commit_keeps_the_dirty_mark():
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert tables.short_commit(sha) == "0123456789ab"
    assert tables.short_commit(sha + "+dirty") == "0123456789ab+dirty"
    assert tables.short_commit([sha, "unknown"]) == "0123456789ab, unknown"


def test_git_state_names_the_tracked_files_that_differ(tmp_path):
    """``+dirty`` comes with the paths that made it; untracked files do not count."""
    import subprocess

    from attn_jax.train import provenance

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    git("add", "a.py", "b.py")
    git("commit", "-qm", "init")
    sha, changed = provenance.git_state(tmp_path)
    assert len(sha) == 40 and changed == ()
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "new.py").write_text("")
    assert provenance.git_state(tmp_path) == (sha, ("b.py",))


def test_the_commit_is_read_as_the_command_line_starts_not_when_the_run_ends(tmp_path, monkeypatch):
    """A long run records the tree as it was when it started: later edits of the checkout cannot mark it."""
    from attn_jax.train import cli, provenance

    tree = {"state": ("a" * 40, ())}
    monkeypatch.setattr(provenance, "git_state", lambda root: tree["state"])
    start = cli.distributed.initialize

    def edit_the_tree_after_start(*args):  # runs inside cli.parse, after the command line has started
        tree["state"] = ("a" * 40, ("README.md",))
        return start(*args)

    monkeypatch.setattr(cli.distributed, "initialize", edit_the_tree_after_start)
    provenance._package_state.cache_clear()
    try:
        summary = main("toy", toy_experiment.PRESETS, toy_experiment.Regression,
                       ["--out", str(tmp_path / "run"), *FAST], "smoke")
        assert summary["commit"] == "a" * 40 and "dirty_files" not in summary
    finally:
        provenance._package_state.cache_clear()


def test_curves_transform_each_seed_before_the_mean(tmp_path, monkeypatch):
    """A signed quantity whose seeds go either way (SAGAN's gamma): |.| per seed, then the mean."""
    from attn_jax.train import report

    dirs = []
    for k, sign in enumerate((1.0, -1.0)):
        d = tmp_path / f"seed{k}"
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "gamma": sign * v}) + "\n"
                                                 for s, v in ((1, 1.0), (2, -3.0))))
        dirs.append(d)
    drawn = []
    monkeypatch.setattr(report, "save_line_plot", lambda fig, ax, path, title: drawn.append(ax.lines[0].get_ydata()))
    plot_metric_curves({"a": dirs}, "gamma", tmp_path / "c.png", "t", "y")
    plot_metric_curves({"a": dirs}, "gamma", tmp_path / "c.png", "t", "y", transform=np.abs)
    np.testing.assert_allclose(drawn[0], [0.0, 0.0])
    np.testing.assert_allclose(drawn[1], [1.0, 3.0])
