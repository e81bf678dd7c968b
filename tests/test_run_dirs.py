"""Run directories: what a ``--out`` folder promises (one kind of run, one run at a time, results that survive a
crash or a damaged file, nonsense refused before anything is written, a finished run left alone)."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import toy_experiment

from attn_jax.train.cli import main

SCRIPT = Path(toy_experiment.__file__)
ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "train.steps=10", "--set", "train.checkpoint_every=5", "--set", "train.log_every=5"]
EXPERIMENTS = ("lstmn", "ntm", "pointer", "sagan", "seq2seq", "show_attend_tell", "snail", "transformer")


def _toy(out: Path, *sets: str) -> dict:
    return main("toy", toy_experiment.PRESETS, toy_experiment.Regression, ["--out", str(out), *sets], "smoke")


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` with its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(Path(out).rglob("*")) if p.is_file()}


def _records(out: Path) -> list[dict]:
    """metrics.jsonl without the (timing-dependent) steps_per_s."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


def _params(out: Path, step: int | None = None):
    mngr = ocp.CheckpointManager(out.absolute() / "checkpoints")
    step = mngr.latest_step() if step is None else step
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mngr.close()
    return step, {k: np.asarray(v) for k, v in restored["state"]["params"].items()}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), str(ROOT),
                                                         os.environ.get("PYTHONPATH", "")])}


# --- 8. one kind of run per folder ----------------------------------------------------------------------------------
def test_switching_between_one_model_and_a_comparison_on_one_out_is_refused(tmp_path):
    single, comparison = tmp_path / "single", tmp_path / "comparison"
    toy_experiment.compare(["--out", str(single), *FAST])
    before = _snapshot(single)
    with pytest.raises(ValueError, match=r"holds a single run .*another --out"):
        toy_experiment.compare(["--out", str(single), *FAST, "--set", "models=linear,scaled"])
    assert _snapshot(single) == before  # nothing written, nothing changed

    toy_experiment.compare(["--out", str(comparison), *FAST, "--set", "models=linear,scaled"])
    before = _snapshot(comparison)
    with pytest.raises(ValueError, match=r"holds a comparison \(runs in linear/, scaled/\)"):
        toy_experiment.compare(["--out", str(comparison), *FAST])
    with pytest.raises(ValueError, match=r"holds a comparison"):  # the loop itself refuses too
        _toy(comparison, *FAST)
    assert _snapshot(comparison) == before


# --- 9. a torn last line of metrics.jsonl --------------------------------------------------------------------------
def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    _toy(out)
    reference = _records(out)
    _, params = _params(out)
    # the state of a run killed while it wrote the line of step 40: checkpoint 35, half a line at the end
    lines = (out / "metrics.jsonl").read_text().splitlines()
    torn = next(x for x in lines if json.loads(x)["step"] == 40 and "loss" in json.loads(x))
    kept = [x for x in lines if json.loads(x)["step"] <= 35]
    (out / "metrics.jsonl").write_text("".join(x + "\n" for x in kept) + torn[:len(torn) // 2])
    (out / "summary.json").unlink()
    ocp.CheckpointManager(out.absolute() / "checkpoints").delete(40)
    with pytest.warns(UserWarning, match=r"torn last line .*metrics.jsonl"):
        _toy(out)
    assert _records(out) == reference  # every step once, in order: nothing duplicated, nothing missing
    step, resumed = _params(out)
    assert step == 40 and all(np.array_equal(params[k], resumed[k]) for k in params)


def test_a_corrupt_line_before_the_last_is_an_error_naming_it(tmp_path):
    out = tmp_path / "run"
    _toy(out, *FAST)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(["{not json", *lines]) + "\n")
    (out / "summary.json").unlink()
    with pytest.raises(ValueError, match=r"metrics.jsonl line 1 is not JSON"):
        _toy(out, *FAST)


# --- 10. a damaged newest checkpoint -------------------------------------------------------------------------------
def _damage(step_dir: Path, how: str) -> None:
    if how == "truncated-data":
        for f in (step_dir / "state" / "d").iterdir():
            os.truncate(f, 10)
    elif how == "missing-state-metadata":
        (step_dir / "state" / "_METADATA").unlink()
    elif how == "missing-step-metadata":
        (step_dir / "meta" / "metadata").unlink()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's aborted reads
@pytest.mark.parametrize("how", ["truncated-data", "missing-state-metadata", "missing-step-metadata"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, how):
    out = tmp_path / "run"
    summary = _toy(out)
    reference, (_, params) = _records(out), _params(out)
    _damage(out / "checkpoints" / "40", how)
    with pytest.warns(UserWarning, match=r"checkpoint step 40 in .*checkpoints is unreadable"):
        again = _toy(out)
    assert {k: again[k] for k in ("final_train_loss", "eval", "steps")} == {
        k: summary[k] for k in ("final_train_loss", "eval", "steps")}
    step, resumed = _params(out)
    assert step == 40 and all(np.array_equal(params[k], resumed[k]) for k in params)  # replayed from 35, bitwise
    assert _records(out) == reference
    assert (out / "damaged_checkpoints" / "40").is_dir()  # kept for inspection, out of the way


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_readable_checkpoint_is_a_clear_error_and_deletes_nothing(tmp_path):
    out = tmp_path / "run"
    _toy(out)
    for step in (35, 40):
        _damage(out / "checkpoints" / str(step), "truncated-data")
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"no readable checkpoint in \S*checkpoints .*nothing was deleted"):
        _toy(out)
    assert _snapshot(out) == before


# --- 11. nonsense numbers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["train.steps=0", "batch=0", "train.log_every=0", "train.learning_rate=nan",
                                     "train.learning_rate=inf", "train.learning_rate=-1", "train.keep_checkpoints=0",
                                     "train.checkpoint_every=-1", "train.eval_every=-5", "train.warmup_steps=-1",
                                     "train.clip_norm=nan", "noise=nan", "dim=-3", "train.optimizer=adan",
                                     "train.schedule=linear"])
def test_nonsense_numbers_are_refused_before_out_is_created(tmp_path, setting):
    out = tmp_path / "run"
    key = setting.split("=")[0]
    with pytest.raises(SystemExit, match=key.replace(".", r"\.")) as exit_:  # a usage error: exit status 2
        _toy(out, "--set", setting)
    assert exit_.value.code == 2 and not out.exists()


def test_zero_means_off_where_documented():
    from attn_jax.train import config as config_lib

    cfg = config_lib.build(toy_experiment.PRESETS, "smoke", ["train.eval_every=0", "train.checkpoint_every=0",
                                                             "train.clip_norm=0", "train.warmup_steps=0"])
    assert cfg.train.eval_every == cfg.train.checkpoint_every == 0


def test_a_run_whose_loss_becomes_non_finite_stops_with_an_error(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"non-finite .* at step 3"):
        _toy(out, "--set", "train.learning_rate=1e30", "--set", "train.checkpoint_every=3")
    assert not (out / "summary.json").exists()
    ck = out / "checkpoints"
    assert not ck.exists() or not [p for p in ck.iterdir() if p.name.isdigit()]  # no diverged state saved


# --- 12. one run per folder at a time ------------------------------------------------------------------------------
def test_a_second_run_on_a_busy_out_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    slow = ["--set", "sleep_per_step=0.1"]  # about 4 s of training: time for the second run to be refused
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), *slow]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second started"
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=rf"{re.escape(str(out))} is in use by process {first.pid}"):
            _toy(out, *slow)
        assert time.perf_counter() - t0 < 5  # at once, before any model is built
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / ".lock").read_text().split()[0] == str(first.pid)  # left behind by the killed run
    with pytest.warns(UserWarning, match=rf"stale lock of process {first.pid}"):
        _toy(out, *slow)
    steps = [r["step"] for r in _records(out) if "loss" in r]
    assert steps == list(range(5, 41, 5)) and not (out / ".lock").exists()


def test_the_lock_is_reentrant_in_one_process_and_released(tmp_path):
    from attn_jax.train import rundir

    with rundir.hold(tmp_path / "a"):
        assert (tmp_path / "a" / ".lock").read_text().split()[0] == str(os.getpid())
        with rundir.hold(tmp_path / "a"), rundir.hold(tmp_path / "a" / "b"):
            pass
        assert (tmp_path / "a" / ".lock").exists() and not (tmp_path / "a" / "b" / ".lock").exists()
    assert not (tmp_path / "a" / ".lock").exists()


def test_without_flock_the_lock_is_the_pid_of_a_live_process(tmp_path, monkeypatch):
    """Filesystems without flock: a lock file naming a live process on this host refuses, a dead one is stale."""
    import errno
    import socket

    from attn_jax.train import rundir

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(rundir.fcntl, "flock", no_flock)
    out = tmp_path / "run"
    out.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{alive.pid} {socket.gethostname()}\n")
        with pytest.raises(ValueError, match=rf"in use by process {alive.pid}"), rundir.hold(out):
            pass
    finally:
        alive.kill()
        alive.wait()
    with pytest.warns(UserWarning, match=rf"stale lock of process {alive.pid}"), rundir.hold(out):
        assert (out / ".lock").read_text().split()[0] == str(os.getpid())
    assert not (out / ".lock").exists()


def test_a_multi_process_run_on_a_busy_out_stops_every_process(tmp_path):
    """Process 0 of a multi-process run takes the lock for all of them (tests/test_distributed.py: the others join
    it); when it cannot, every process stops at once with the reason."""
    import socket

    from test_distributed import _env as mp_env

    from attn_jax.train import rundir

    out = tmp_path / "run"
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    worker = ("import sys; from attn_jax.train import distributed, rundir; "
              "distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))\n"
              f"with rundir.hold({str(out)!r}): print('held')")
    with rundir.hold(out):  # this process holds the folder
        procs = [subprocess.Popen([sys.executable, "-c", worker, f"localhost:{port}", str(i)], env=mp_env(1),
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        outputs = [p.communicate(timeout=300) for p in procs]
    errors = [e for _, e in outputs]
    assert [p.returncode != 0 for p in procs] == [True, True] and "held" not in "".join(o for o, _ in outputs)
    assert f"is in use by process {os.getpid()}" in errors[0], errors[0][-2000:]
    assert "process 0 of this run could not take the run folder's lock" in errors[1], errors[1][-2000:]
    assert list(out.iterdir()) == []  # nothing written


# --- 13. deleted results of a finished run -------------------------------------------------------------------------
def test_deleted_results_of_a_finished_run_are_recomputed_from_the_final_checkpoint(tmp_path):
    out = tmp_path / "run"
    summary = _toy(out, *FAST)
    reference = _records(out)
    (out / "summary.json").unlink()
    assert _toy(out, *FAST) == summary  # from the checkpoint and the log ...
    assert _records(out) == reference  # ... whose final evaluation is not logged twice
    (out / "summary.json").unlink()
    (out / "metrics.jsonl").unlink()
    with pytest.warns(UserWarning, match="metrics.jsonl .* is gone"):
        again = _toy(out, *FAST)
    assert again == summary and math.isfinite(again["final_train_loss"])
    assert json.loads((out / "summary.json").read_text()) == summary


def test_deleted_results_without_a_recorded_final_loss_are_a_clear_error(tmp_path):
    out = tmp_path / "run"
    _toy(out, *FAST)
    meta = out / "checkpoints" / "10" / "meta" / "metadata"
    meta.write_text(json.dumps({"step": 10}))  # a checkpoint written before the loss was recorded in it
    (out / "summary.json").unlink()
    (out / "metrics.jsonl").unlink()
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"results of the finished run in \S+ are gone"):
        _toy(out, *FAST)
    assert _snapshot(out) == before


# --- 14. atomic writes ---------------------------------------------------------------------------------------------
def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from attn_jax.train import rundir

    path = tmp_path / "summary.json"
    rundir.write_json(path, {"a": 1})

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        rundir.write_json(path, {"a": 2, "b": list(range(1000))})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_killed_writer_never_leaves_half_a_file(tmp_path):
    path = tmp_path / "comparison.json"
    child = (f"import importlib.util, itertools; spec = importlib.util.spec_from_file_location('r', "
             f"{str(ROOT / 'attn_jax' / 'train' / 'rundir.py')!r}); r = importlib.util.module_from_spec(spec); "
             f"spec.loader.exec_module(r)\n"
             f"for i in itertools.count(): r.write_json({str(path)!r}, {{'i': i, 'pad': 'x' * 2_000_000}})")
    proc = subprocess.Popen([sys.executable, "-c", child])
    deadline = time.time() + 30
    while time.time() < deadline and not path.exists():
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(json.loads(path.read_text())["pad"]) == 2_000_000  # whole, never a prefix


def test_run_files_are_only_written_through_the_atomic_writer(tmp_path, monkeypatch):
    """The harness writes summary.json, config.json and comparison.json by temporary file and rename (a plain
    write to those names fails here), and no experiment writes its JSON results any other way."""
    import pathlib

    names = ("summary.json", "config.json", "comparison.json")
    plain_write, plain_open = pathlib.Path.write_text, pathlib.Path.open

    def write_text(self, *a, **k):
        assert self.name not in names, f"plain write of {self}"
        return plain_write(self, *a, **k)

    def open_(self, mode="r", *a, **k):
        assert self.name not in names or "r" in mode, f"plain write of {self}"
        return plain_open(self, mode, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    monkeypatch.setattr(pathlib.Path, "open", open_)
    toy_experiment.compare(["--out", str(tmp_path / "cmp"), *FAST, "--set", "models=linear,scaled"])
    assert {p.name for p in (tmp_path / "cmp").rglob("*.json")} == set(names)
    plain = re.compile(r"\.json\"?\)?\s*\)?\.write_text\(|json\.dump\(|shutil\.copy\w*\([^)]*\.json")
    for source in [*(ROOT / "experiments").glob("*.py"), *(ROOT / "attn_jax" / "train").glob("*.py")]:
        hits = [n for n, line in enumerate(source.read_text().splitlines(), 1) if plain.search(line)]
        assert not hits, f"{source.name} writes JSON results without the atomic writer, lines {hits}"


# --- 15. every experiment's finished smoke run is left alone -------------------------------------------------------
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_rerunning_a_finished_smoke_run_trains_nothing_and_changes_no_file(smoke_run, name):
    run = smoke_run(name)  # shared with the experiment's own smoke test
    before = _snapshot(run.out)
    assert [f for f in before if f.endswith(".png")], f"{name}'s smoke run wrote no plot"
    again = importlib.import_module(f"experiments.{name}").main(list(run.argv))
    assert _snapshot(run.out) == before  # no step trained (metrics.jsonl, checkpoints), no result rewritten
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(run.result, sort_keys=True, default=str)
