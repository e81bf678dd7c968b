"""The experiments' shared command line: ``--help`` documents every config key, a bad ``--set`` or ``--config``
exits 2 with one argparse-style line naming the full key, ``--config FILE`` (JSON or Python) loads overrides."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import toy_experiment

from attn_jax.train import cli
from attn_jax.train import config as config_lib

SCRIPT = Path(toy_experiment.__file__)
EXPERIMENTS = ("seq2seq", "ntm", "pointer", "transformer", "lstmn", "snail", "show_attend_tell", "sagan")


def _parse(*argv):
    return cli.parse("toy", toy_experiment.PRESETS, list(argv), default_preset="smoke")


def test_help_lists_every_key_with_its_type_default_and_description(capsys):
    with pytest.raises(SystemExit) as exit_:
        _parse("--help")
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if line.startswith("  ") and ": " in line}
    for key in config_lib.keys(toy_experiment.Config()):
        assert key in lines, key
    assert "train.steps: int = 40" in lines["train.steps"] and "optimiser steps" in lines["train.steps"]
    assert "train.clip_norm: float | None = 1.0" in lines["train.clip_norm"]
    assert "0: only at the end" in lines["train.eval_every"]  # the field's comment, without its rst markup
    assert "linear | scaled" in lines["model"] and "``" not in text


def test_field_docs_read_trailing_comments_and_the_lines_above():
    docs = config_lib.field_docs(config_lib.__dict__.get("TrainConfig") or cli.train.__globals__["TrainConfig"])
    assert docs["tensorboard"].startswith("also write TensorBoard")  # trailing
    assert docs["seeds"].startswith("several seeds") and "the one run of" in docs["seeds"]  # two lines above
    assert docs["sharding_rules"].startswith("overrides of attn_jax.sharding")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_key_has_a_description(name):
    module = importlib.import_module(f"experiments.{name}")
    for preset, make in module.PRESETS.items():
        missing = [key for key, _, _, doc in config_lib.describe(make()) if not doc]
        assert not missing, f"{name} --preset {preset}: keys without a description: {missing}"


@pytest.mark.parametrize("argv, message", [
    (["--set", "train.stpes=3"], "unknown config key 'train.stpes'; did you mean 'train.steps'?"),
    (["--set", "train.steps=many"], "--set train.steps=many: expected int"),
    (["--set", "train.steps.x=1"], "config key 'train.steps' has no sub-keys (asked for 'train.steps.x')"),
    (["--set", "train=1"], "config key 'train' is a group"),
    (["--set", "train.steps=0"], "train.steps"),
    (["--set", "noise=nan"], "config key noise = nan: must be a finite number"),
    (["--set", "steps"], "--set expects key=value"),
])
def test_a_bad_set_exits_2_with_one_line_naming_the_full_key(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        _parse(*argv)
    assert exit_.value.code == 2 and message in str(exit_.value)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: python -m experiments.toy")  # the usage, then the one line of the error
    assert [line for line in err if "error" in line] == err[-1:]
    assert err[-1].startswith("python -m experiments.toy: error: ") and message in err[-1]


def test_a_bad_set_from_the_shell_is_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r"), "--set", "train.stpes=3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m experiments.toy: error: unknown config key")
    assert not (tmp_path / "r").exists()


def test_config_file_json_nested_and_dotted_then_set_wins(tmp_path):
    path = tmp_path / "over.json"
    path.write_text(json.dumps({"dim": 4, "train": {"steps": 7, "clip_norm": None, "progress": True},
                                "train.seeds": [0, 2], "models": ["linear", "scaled"]}))
    run = _parse("--config", str(path), "--set", "train.steps=9", "--out", str(tmp_path / "o"))
    cfg = run.cfg
    assert (cfg.dim, cfg.train.steps, cfg.train.clip_norm, cfg.train.progress) == (4, 9, None, True)
    assert cfg.train.seeds == (0, 2) and cfg.models == ("linear", "scaled")


def test_config_file_python_overrides_dict(tmp_path):
    path = tmp_path / "over.py"
    path.write_text("steps = 3 * 5\noverrides = {'train.steps': steps, 'seeds': (1,), 'noise': 0.5}\n")
    cfg = _parse("--config", str(path), "--out", str(tmp_path / "o")).cfg
    assert (cfg.train.steps, cfg.train.seeds, cfg.noise) == (15, (1,), 0.5)  # 'seeds' is train.seeds, as in --set


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", "{not json", "not JSON"),
    ("list.json", "[1, 2]", "expected an object of config keys"),
    ("none.py", "x = 1\n", "defines no 'overrides' dict"),
    ("c.yaml", "a: 1\n", "expected a .json or .py file"),
    ("key.json", '{"train": {"stpes": 1}}', "unknown config key 'train.stpes'"),
])
def test_a_bad_config_file_exits_2_naming_it(tmp_path, capsys, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exit_:
        _parse("--config", str(tmp_path / name))
    assert exit_.value.code == 2 and message in str(exit_.value)
    assert message in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path):
    with pytest.raises(SystemExit, match="no such file") as exit_:
        _parse("--config", str(tmp_path / "absent.json"))
    assert exit_.value.code == 2


def test_choices_refuse_an_unknown_value_of_a_key_or_of_a_tuple_key(capsys):
    choices = {"model": toy_experiment.MODELS, "models": toy_experiment.MODELS}
    ok = cli.parse("toy", toy_experiment.PRESETS, ["--set", "models=linear,scaled"], "smoke", choices=choices)
    assert ok.cfg.models == ("linear", "scaled")
    with pytest.raises(SystemExit, match=r"--set models: unknown model 'cubic'; valid: linear, scaled") as exit_:
        cli.parse("toy", toy_experiment.PRESETS, ["--set", "models=linear,cubic"], "smoke", choices=choices)
    assert exit_.value.code == 2 and "error: --set models" in capsys.readouterr().err
