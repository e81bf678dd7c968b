"""The harness: config overrides, the loop's outputs, resumption (SIGKILL included), clear errors."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import toy_experiment

from attn_jax.train import config as config_lib
from attn_jax.train.cli import main

SCRIPT = Path(toy_experiment.__file__)


def test_overrides_and_errors():
    cfg = config_lib.build(toy_experiment.PRESETS, "smoke", ["dim=4", "train.learning_rate=0.5",
                                                             "train.clip_norm=none", "train.progress=false"])
    assert cfg.dim == 4 and cfg.train.learning_rate == 0.5 and cfg.train.clip_norm is None
    assert cfg.train.progress is False
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; valid presets: smoke, quick"):
        config_lib.build(toy_experiment.PRESETS, "huge")
    with pytest.raises(ValueError, match=r"unknown config key 'nope'; .*valid keys: .*train.steps"):
        config_lib.build(toy_experiment.PRESETS, "smoke", ["nope=1"])
    with pytest.raises(ValueError, match="expected int"):
        config_lib.build(toy_experiment.PRESETS, "smoke", ["dim=four"])
    with pytest.raises(ValueError, match="is a group"):
        config_lib.build(toy_experiment.PRESETS, "smoke", ["train=1"])
    with pytest.raises(ValueError, match="key=value"):
        config_lib.build(toy_experiment.PRESETS, "smoke", ["dim"])


def test_list(capsys):
    main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--list"], default_preset="smoke")
    out = capsys.readouterr().out
    assert "presets: smoke, quick" in out and "train.checkpoint_every: int = 5" in out


def _params(out: Path):
    mngr = ocp.CheckpointManager(out.absolute() / "checkpoints")
    step = mngr.latest_step()
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, {k: np.asarray(v) for k, v in restored["state"]["params"].items()}


def test_run_outputs_and_finished_run_not_retrained(tmp_path):
    out = tmp_path / "run"
    summary = main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(out)], "smoke")
    assert set(summary) >= {"final_train_loss", "steps", "eval", "device"} and summary["steps"] == 40
    assert summary["eval"]["weight_error"] < 0.5  # it learned
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == list(range(5, 41, 5))
    assert json.loads((out / "config.json").read_text())["preset"] == "smoke"
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [35, 40]
    before = (out / "metrics.jsonl").read_text()
    again = main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(out)], "smoke")
    assert again == summary and (out / "metrics.jsonl").read_text() == before


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    ref_out, killed_out = tmp_path / "ref", tmp_path / "killed"
    main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(ref_out)], "smoke")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(SCRIPT), "--out", str(killed_out), "--set", "sleep_per_step=0.05"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint exists, mid-way through
        ck = killed_out / "checkpoints"
        if ck.exists() and any(p.name.isdigit() and int(p.name) >= 15 for p in ck.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_step, _ = _params(killed_out)
    assert killed_step < 40, "the run finished before it could be killed"
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    step_a, a = _params(ref_out)
    step_b, b = _params(killed_out)
    assert step_a == step_b == 40
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])  # bitwise
    steps = [json.loads(x)["step"] for x in (killed_out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == list(range(5, 41, 5))  # no duplicated lines from before the kill


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's aborted restore
def test_mismatched_checkpoint_or_config_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(out)], "smoke")
    snapshot = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(ValueError, match="different config"):
        main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(out), "--set", "dim=4"], "smoke")
    (out / "config.json").unlink()  # force past the config check: the checkpoint itself must refuse
    (out / "summary.json").unlink()
    presets = {"smoke": lambda: dataclasses.replace(toy_experiment.Config(), dim=4)}
    with pytest.raises(ValueError, match="does not match this model"):
        main("toy", presets, toy_experiment.Regression, ["--out", str(out)], "smoke")
    gc.collect()  # orbax leaves un-awaited read coroutines behind; collect them under this test's filter
    ours = ("config.json", "summary.json")  # the two files this test itself removed
    assert [p for p in sorted(str(p) for p in out.rglob("*")) if not p.endswith(ours)] == [
        p for p in snapshot if not p.endswith(ours)]


def test_tensorboard_events_when_tensorboardx_is_installed(tmp_path, monkeypatch):
    """With ``train.tensorboard=true`` the loop writes every logged scalar through tensorboardX's SummaryWriter;
    without the package it warns once per process and writes none; off by default."""
    import types

    calls = []

    class FakeWriter:
        def __init__(self, logdir):
            calls.append(("open", logdir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=FakeWriter))
    main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(tmp_path / "off")], "smoke")
    assert calls == []  # not requested
    main("toy", toy_experiment.PRESETS, toy_experiment.Regression,
         ["--out", str(tmp_path / "on"), "--set", "train.tensorboard=true"], "smoke")
    assert calls[0] == ("open", str(tmp_path / "on" / "tensorboard")) and calls[-1] == ("close",)
    assert [c[2] for c in calls if c[0] == "loss"] == list(range(5, 41, 5))
    assert any(c[0] == "eval/weight_error" and c[2] == 40 for c in calls)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # not installed: no writer, one warning
    from attn_jax.train import loop

    monkeypatch.setattr(loop, "_TENSORBOARD_WARNED", [])
    with pytest.warns(UserWarning, match=r"tensorboardX is not installed.*attn-jax\[tensorboard\]"):
        assert loop.tensorboard_writer(tmp_path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loop.tensorboard_writer(tmp_path) is None  # once only


def test_parameter_count_counts_every_scalar_of_a_pytree():
    from attn_jax.train.report import parameter_count

    tree = {"w": np.zeros((3, 4)), "b": np.zeros(4), "nested": [np.zeros(()), {"k": np.ones((2, 2, 2))}]}
    assert parameter_count(tree) == 12 + 4 + 1 + 8 and parameter_count({}) == 0
