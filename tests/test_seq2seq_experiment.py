"""experiments.seq2seq: the main variant's smoke preset, one step of every other variant, comparison mode, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from attn_jax.nn import ATTENTIONS
from experiments import publish, seq2seq

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "smoke", "--set", "train.steps=1", "--set", "dataset.train_size=64",
        "--set", "dataset.test_size=12", "--set", "train.progress=false"]


def test_main_variant_smoke(smoke_run):
    run = smoke_run("seq2seq")  # shared with tests/test_run_dirs.py's rerun
    summaries, tmp_path = run.result, run.out
    summary = summaries["bahdanau"]
    assert summary["steps"] == 30 and np.isfinite(summary["final_train_loss"])
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert set(saved) >= {"final_train_loss", "steps", "eval", "device", "wall_s", "parameters", "commit",
                          "bucket_counts", "train_max_source_length"}
    assert saved["train_max_source_length"] <= 10  # the length-generalisation split's training limit
    assert set(saved["eval"]) >= {"bleu", "chrf", "exact_match", "perplexity", "bleu_len_1-4", "bleu_len_17+",
                                  "inversion"}
    assert 0 <= saved["eval"]["bleu"] <= 100 and saved["eval"]["perplexity"] > 1
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == "bahdanau" and config["data"] == "num2words-de" and config["preset"] == "smoke"
    for name in ("bleu_by_length.png", "alignments.png", "samples.txt", "metrics.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    printed = run.stdout
    assert "| bahdanau |" in printed and "BLEU len 17+" in printed and "alignments.png" in printed


@pytest.mark.parametrize("model,data", [(m, "num2words-de") for m in ATTENTIONS if m != "bahdanau"]
                         + [("bahdanau", "num2words-fr"), ("bahdanau", "dates"), ("luong-location", "reorder")])
def test_every_other_variant_runs_one_step(tmp_path, model, data):
    summaries = seq2seq.main(TINY + ["--out", str(tmp_path), "--set", f"model={model}", "--set", f"data={data}"])
    e = summaries[model]["eval"]
    assert summaries[model]["steps"] == 1 and np.isfinite(e["bleu"]) and np.isfinite(e["perplexity"])
    assert ("aer" in e) == ("alignment_accuracy" in e) == (data in ("dates", "reorder"))
    assert (tmp_path / "alignments.png").exists() == (model != "none")


def test_comparison_mode_over_seeds_dates_aer_and_the_published_table(tmp_path):
    out = tmp_path / "cmp"
    seq2seq.main(TINY + ["--out", str(out), "--set", "models=none,local-p", "--set", "data=dates",
                         "--set", "seeds=0,1"])
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["summaries"]) == ["none", "local-p"] and comparison["data"] == "dates"
    assert 0 <= comparison["summaries"]["local-p"]["eval"]["aer"] <= 1
    assert "aer" not in comparison["summaries"]["none"]["eval"]
    assert (out / "bleu_by_length.png").exists() and (out / "local-p" / "seed1" / "alignments.png").exists()
    assert json.loads((out / "none" / "seed1" / "config.json").read_text())["model"] == "none"
    assert len(comparison["summaries"]["none"]["per_seed"]["bleu"]) == 2
    assert comparison["command"].startswith("python -m experiments.seq2seq --preset smoke")
    # the README block is written from that JSON by the publish script
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- s2s:begin -->\nold\n<!-- s2s:end -->\nrest\n")
    publish.main(["seq2seq", str(out), "--block", "s2s", "--readme", str(readme), "--results", str(tmp_path / "res")])
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("intro") and text.endswith("rest\n")
    assert "| none |" in text and "| local-p |" in text
    table = json.loads((tmp_path / "res" / "comparison.json").read_text())
    assert table["seeds"] == [0, 1] and set(table["provenance"]) == {"commit", "command", "device", "date"}
    aer = table["rows"]["local-p"]["metrics"]["aer"]
    assert aer["per_seed"] == comparison["summaries"]["local-p"]["per_seed"]["aer"]
    assert f"{aer['mean']:.3f} ± {aer['std']:.3f}" in text and "2 seeds (0, 1)" in text
    assert (tmp_path / "res" / "alignments_local-p.png").exists() and (tmp_path / "res" / "learning_curve.png").exists()


def test_list_and_errors(capsys):
    assert seq2seq.main(["--list"]) is None
    printed = capsys.readouterr().out
    assert "model=none|bahdanau|luong-dot" in printed and "data=num2words-de|num2words-fr|dates" in printed
    assert "net.hidden" in printed and "train.steps" in printed
    assert seq2seq.main(["--list", "--preset", "paper"]) is None
    assert "train.steps: int = 30000" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown model 'luong'"):
        seq2seq.main(TINY + ["--set", "model=luong"])
    with pytest.raises(SystemExit, match="unknown data 'wmt'"):
        seq2seq.main(TINY + ["--set", "data=wmt"])


def _final_params(out: Path) -> dict:
    step = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    restored = ocp.StandardCheckpointer().restore((out / "checkpoints" / str(step) / "state").absolute())
    return {"/".join(map(str, k)): np.asarray(v) for k, v in
            jax.tree_util.tree_flatten_with_path(restored["params"])[0]}


def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
    """Kill the smoke run with SIGKILL after its first checkpoint, rerun the command: bitwise the same parameters."""
    args = ["--preset", "smoke", "--set", "train.steps=120", "--set", "train.checkpoint_every=10",
            "--set", "train.progress=false", "--set", "dataset.test_size=8"]
    cmd = [sys.executable, "-m", "experiments.seq2seq", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        ck = killed / "checkpoints"
        if ck.exists() and any(p.name.isdigit() for p in ck.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = [int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()]
    assert max(steps) < 120, "the run finished before it could be killed"
    resumed = subprocess.run(cmd + ["--out", str(killed)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _final_params(tmp_path / "ref"), _final_params(killed)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ref_summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert json.loads((killed / "summary.json").read_text())["eval"] == ref_summary["eval"]
