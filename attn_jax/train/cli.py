"""The command line every experiment shares (docs/design.md, "Runs and results").

    python -m experiments.<name> [--preset smoke|quick|paper] [--out DIR] [--set key=value]... [--list]
        [--mesh data=2,model=4] [--coordinator HOST:PORT --num-processes N --process-id I]

An experiment calls :func:`main` with its presets (name -> config factory; the
config has a ``train: TrainConfig`` field) and a function building its
:class:`~attn_jax.train.loop.Task` from a config.

The config is built and validated (:func:`attn_jax.train.config.validate`, the
``TrainConfig`` rules) before ``--out`` is created. An experiment's ``main``
holds its run folder for the whole run with :func:`run_dir`: it refuses a folder
of the other kind (a single run's folder for ``models=...``, a comparison's for a
single run) before anything is written, and locks it
(:func:`attn_jax.train.rundir.hold`) so a second run on it fails at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from jax.sharding import Mesh

from attn_jax.sharding import make_mesh
from attn_jax.train import config as config_lib
from attn_jax.train import distributed, rundir
from attn_jax.train.loop import train


def parser(name: str, presets: Mapping[str, Callable[[], Any]], default_preset: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m experiments.{name}")
    ap.add_argument("--preset", default=default_preset, help=f"one of: {', '.join(presets)}")
    ap.add_argument("--out", type=Path, default=None, help=f"run folder (default runs/{name}/<timestamp>)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the presets and every config key, then exit")
    ap.add_argument("--mesh", default="", metavar="AXIS=N,...",
                    help="shard over a device mesh, e.g. data=2,model=4 (axes: data, fsdp, model, seq)")
    ap.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="multi-process: process 0's address")
    ap.add_argument("--num-processes", type=int, default=None)
    ap.add_argument("--process-id", type=int, default=None)
    return ap


def print_keys(cfg, presets, preset: str) -> None:
    print(f"presets: {', '.join(presets)}")
    print(f"config keys ({preset} values):")
    for key in config_lib.keys(cfg):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        print(f"  {key} = {value!r}")


class Run(NamedTuple):
    """What the shared command line decides: the config, the run folder, the preset's name and the mesh (None:
    one device)."""

    cfg: Any
    out: Path
    preset: str
    mesh: Mesh | None


def _unalias(item: str, aliases: Mapping[str, str]) -> str:
    key, sep, value = item.partition("=")
    plural = {f"{a}s": f"{k}s" for a, k in aliases.items()}
    return f"{aliases.get(key, plural.get(key, key))}{sep}{value}"


def parse(name: str, presets: Mapping[str, Callable[[], Any]], argv=None, default_preset: str = "quick",
          variants: str | None = None, aliases: Mapping[str, str] | None = None) -> Run | None:
    """Parse the shared command line, or return None after ``--list`` printed the keys.

    ``aliases`` maps other names of a config key to it (``{"attention": "model"}`` lets ``--set attention=hard``
    mean ``--set model=hard``; ``attentions=...`` then means ``models=...``). Starts the multi-process runtime
    first when asked (flags or environment, :mod:`attn_jax.train.distributed`), then builds the ``--mesh`` over all
    devices of all processes."""
    args = parser(name, presets, default_preset).parse_args(argv)
    args.sets = [_unalias(item, aliases or {}) for item in args.sets]
    if args.list:
        if variants:
            print(variants)
        print_keys(config_lib.build(presets, args.preset), presets, args.preset)
        return None
    cfg = config_lib.build(presets, args.preset, args.sets)
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    mesh = make_mesh(args.mesh) if args.mesh else None
    out = args.out or Path("runs") / name / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Run(cfg, out, args.preset, mesh)


@contextlib.contextmanager
def run_dir(run: Run, comparison: bool | None = None) -> Iterator[Path]:
    """Hold ``run.out`` for the body: refuse it when it holds the other kind of run
    (:func:`attn_jax.train.rundir.check_kind`; ``comparison`` defaults to whether ``cfg.models`` is set), then lock
    it (creating it). Wrap everything an experiment's ``main`` writes, plots and comparison files included."""
    comparison = bool(getattr(run.cfg, "models", ())) if comparison is None else comparison
    rundir.check_kind(run.out, comparison)
    with rundir.hold(run.out):
        yield Path(run.out)


def run_models(run: Run, run_one: Callable[..., dict], valid: tuple[str, ...]) -> tuple[dict, dict]:
    """The ``model`` / ``models`` convention: run ``run_one(cfg, out, preset, mesh)`` for ``cfg.model``, or for each
    of ``cfg.models`` in ``out/<model>`` (comparison mode). Returns (summaries, run folders) by model name.
    The folder is held (:func:`run_dir`) for the loop; hold it in ``main`` too to cover what follows."""
    cfg, out, preset, mesh = run
    models = cfg.models or (cfg.model,)
    for m in models:
        if m not in valid:
            raise SystemExit(f"unknown model {m!r}; valid: {', '.join(valid)}")
    out = Path(out)
    summaries, dirs = {}, {}
    with run_dir(run):
        for m in models:
            dirs[m] = out / m if cfg.models else out
            if cfg.models:
                print(f"== {m} ({models.index(m) + 1}/{len(models)}) -> {dirs[m]}")
            summaries[m] = run_one(dataclasses.replace(cfg, model=m, models=()), dirs[m], preset, mesh)
    return summaries, dirs


def save_comparison(out: Path, name: str, argv, summaries: Mapping[str, dict], **fields) -> None:
    """``out/comparison.json`` of a ``models=...`` run: ``fields``, the command line and every model's summary
    (written atomically)."""
    rundir.write_json(Path(out) / "comparison.json", {**fields, "command": command_line(name, argv),
                                                       "summaries": summaries})


def command_line(name: str, argv) -> str:
    """``python -m experiments.<name> <argv>`` (``sys.argv[1:]`` when ``argv`` is None): the run's command."""
    return f"python -m experiments.{name} " + " ".join(argv if argv is not None else sys.argv[1:])


def main(name: str, presets: Mapping[str, Callable[[], Any]], make_task: Callable[[Any], Any],
         argv=None, default_preset: str = "quick") -> dict | None:
    parsed = parse(name, presets, argv, default_preset)
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with run_dir(parsed, comparison=False):
        summary, _ = train(make_task(cfg), cfg.train, out,
                           config={"experiment": name, "preset": preset, **config_lib.to_dict(cfg)}, mesh=mesh)
    print(f"{name}: final train loss {summary['final_train_loss']:.4f}; eval {summary['eval']}; wrote {out}")
    return summary
