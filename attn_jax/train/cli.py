"""The command line every experiment shares (docs/design.md, "Runs and results")::

    python -m experiments.<name> [--preset smoke|quick|paper] [--out DIR] [--set key=value]... [--list]
        [--mesh data=2,model=4] [--coordinator HOST:PORT --num-processes N --process-id I]
    python -m experiments.<name> --set models=a,b --set seeds=0,1,2     # rows x seeds: OUT/<row>/seed<k>/

Rows and seeds: ``--set seeds=0,1,2`` (short for ``train.seeds``) runs every row once per seed, with
``train.seed`` set to that seed, each into ``OUT/<row>/seed<k>/``, a normal resumable run folder; a row is a
model of ``models=...`` (or the one ``model``) or a setting an experiment names (:func:`run_rows`). A run with
several rows or any ``seeds`` is a comparison: its folder holds runs, not a run. :func:`run_rows` returns each
row's summary aggregated over its seeds (:func:`attn_jax.train.report.aggregate`: means in ``eval``, the spread
in ``eval_std``, every seed's value in ``per_seed``); a comparison's ``comparison.json`` keeps the per-seed
summaries too.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from jax.sharding import Mesh

from attn_jax.sharding import make_mesh
from attn_jax.train import config as config_lib
from attn_jax.train import distributed, provenance, report, rundir
from attn_jax.train.loop import train


class UsageError(SystemExit):
    """A bad command line (an unknown or ill-typed ``--set`` key, a bad ``--config`` file, an unknown model):
    exits with status 2 as argparse does; ``str()`` is the one-line message, which :func:`parse` has already
    printed to stderr after the usage line."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "()"
    return repr(value) if isinstance(value, str) else str(value)


def keys_help(cfg, preset: str) -> str:
    """Every config key with its type, its value in ``preset`` and its one-line description (the field's source
    comment, :func:`attn_jax.train.config.describe`): the epilog of ``--help`` and the body of ``--list``."""
    rows = config_lib.describe(cfg)
    heads = [(f"{key}: {typ} = {_value_text(value)}", doc.replace("``", "")) for key, typ, value, doc in rows]
    width = min(max(len(h) for h, _ in heads), 48)  # a longer key/type/value puts its description below it
    lines = [f"config keys (--set KEY=VALUE; values of preset {preset!r}):"]
    for head, doc in heads:
        lines.append(f"  {head:<{width}}  {doc}".rstrip() if len(head) <= width else
                     f"  {head}" + (f"\n  {'':<{width}}  {doc}" if doc else ""))
    return "\n".join(lines)


def parser(name: str, presets: Mapping[str, Callable[[], Any]], default_preset: str) -> argparse.ArgumentParser:
    try:
        epilog = keys_help(config_lib.build(presets, default_preset), default_preset)
    except (ValueError, TypeError):  # a broken preset is reported when it is built, not by --help
        epilog = None
    ap = argparse.ArgumentParser(prog=f"python -m experiments.{name}", epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=default_preset, help=f"one of: {', '.join(presets)}")
    ap.add_argument("--out", type=Path, default=None, help=f"run folder (default runs/{name}/<timestamp>)")
    ap.add_argument("--config", type=Path, action="append", default=[], metavar="FILE",
                    help="overrides from a .json object or a .py file's 'overrides' dict (keys dotted or nested), "
                         "applied before --set (repeatable)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable; the keys are listed below)")
    ap.add_argument("--list", action="store_true", help="print the presets and every config key, then exit")
    ap.add_argument("--mesh", default="", metavar="AXIS=N,...",
                    help="shard over a device mesh, e.g. data=2,model=4 (axes: data, fsdp, model, seq)")
    ap.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="multi-process: process 0's address")
    ap.add_argument("--num-processes", type=int, default=None)
    ap.add_argument("--process-id", type=int, default=None)
    return ap


def print_keys(cfg, presets, preset: str) -> None:
    print(f"presets: {', '.join(presets)}")
    print(keys_help(cfg, preset))


def _fail(ap: argparse.ArgumentParser, message: str) -> UsageError:
    ap.print_usage(sys.stderr)
    print(f"{ap.prog}: error: {message}", file=sys.stderr)
    return UsageError(message)


def check_choices(cfg, choices: Mapping[str, Iterable[str]]) -> None:
    """Raise ``ValueError`` naming the key when a config value (or an element of a tuple value) is not one of
    ``choices[key]`` (keys dotted)."""
    for key, valid in choices.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        valid, leaf = tuple(valid), key.rsplit(".", 1)[-1]
        noun = leaf[:-1] if isinstance(value, tuple) and leaf.endswith("s") else leaf  # models=a,b: each a model
        for v in value if isinstance(value, tuple) else (value,):
            if v not in valid:
                raise ValueError(f"--set {key}: unknown {noun} {v!r}; valid: {', '.join(valid)}")


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
          variants: str | None = None, aliases: Mapping[str, str] | None = None,
          choices: Mapping[str, Iterable[str]] | None = None) -> Run | None:
    """Parse the shared command line, or return None after ``--list`` printed the keys.

    ``aliases`` maps other names of a config key to it (``{"attention": "model"}`` lets ``--set attention=hard``
    mean ``--set model=hard``; ``attentions=...`` then means ``models=...``). ``choices`` maps config keys to their
    valid values (:func:`check_choices`). Overrides come from every ``--config FILE`` in order, then ``--set``; a
    bad one raises :class:`UsageError` (exit status 2) after printing the usage line and a one-line message that
    names the full key. Starts the multi-process runtime
    first when asked (flags or environment, :mod:`attn_jax.train.distributed`), then builds the ``--mesh`` over all
    devices of all processes."""
    ap = parser(name, presets, default_preset)
    args = ap.parse_args(argv)
    provenance.code_commit()  # the commit of the code imported now, before the run's minutes of training
    names = {"seeds": "train.seeds", **(aliases or {})}
    try:
        from_files = [item for path in args.config for item in config_lib.load_overrides(path)]
        args.sets = [_unalias(item, names) for item in from_files + args.sets]
        cfg = config_lib.build(presets, args.preset, args.sets)
        check_choices(cfg, choices or {})
    except ValueError as err:  # one line, argparse's way, exit status 2
        raise _fail(ap, str(err)) from None
    if args.list:
        if variants:
            print(variants)
        print_keys(config_lib.build(presets, args.preset), presets, args.preset)
        return None
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    mesh = make_mesh(args.mesh) if args.mesh else None
    out = args.out or Path("runs") / name / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Run(cfg, out, args.preset, mesh)


def is_comparison(cfg) -> bool:
    """Whether a config's run is a folder of runs: several models, or any ``train.seeds``."""
    return bool(getattr(cfg, "models", ())) or bool(cfg.train.seeds)


@contextlib.contextmanager
def run_dir(run: Run, comparison: bool | None = None) -> Iterator[Path]:
    """Hold ``run.out`` for the body: refuse it when it holds the other kind of run
    (:func:`attn_jax.train.rundir.check_kind`; ``comparison`` defaults to :func:`is_comparison`), then lock
    it (creating it). Wrap everything an experiment's ``main`` writes, plots and comparison files included."""
    comparison = is_comparison(run.cfg) if comparison is None else comparison
    rundir.check_kind(run.out, comparison)
    with rundir.hold(run.out):
        yield Path(run.out)


def row_folder(row: str) -> str:
    """A row's folder name: its name without spaces (``_``) and ``=`` (``heads=4`` -> ``heads4``)."""
    return row.replace(" ", "_").replace("=", "")


def seed_dir(out: Path | str, row: str, seed: int) -> Path:
    """The run folder of one row and seed in a comparison: ``out/<row>/seed<k>`` (the row by :func:`row_folder`)."""
    return Path(out) / row_folder(row) / f"seed{seed}"


def run_rows(run: Run, rows: Mapping[str, Any], run_one: Callable[..., dict]) -> tuple[dict, dict]:
    """Run ``run_one(cfg, out, preset, mesh)`` for every row (name -> its config) and seed.

    Seeds are ``run.cfg.train.seeds`` (none given: the one ``train.seed``); each run gets its row's config with
    ``train.seed`` set and ``train.seeds`` cleared, so its folder is an ordinary resumable run whatever the seed
    list (adding a seed later reuses the finished ones). One row of a config that is not a comparison
    (:func:`is_comparison`) runs in ``run.out`` itself;
    otherwise in :func:`seed_dir`. Returns ``(summaries, dirs)`` by row: in a comparison the summary aggregated
    over seeds (:func:`attn_jax.train.report.aggregate`; its ``per_seed_summaries`` keeps each seed's own), else
    the one run's summary as its summary.json holds it; and the row's folders in seed order."""
    seeds = tuple(run.cfg.train.seeds) or (run.cfg.train.seed,)
    comparison = len(rows) > 1 or is_comparison(run.cfg)
    out = Path(run.out)
    summaries, dirs = {}, {}
    with run_dir(run, comparison=comparison):
        for i, (row, cfg) in enumerate(rows.items()):
            per_seed, dirs[row] = {}, []
            for seed in seeds:
                where = seed_dir(out, row, seed) if comparison else out
                if comparison:
                    print(f"== {row} ({i + 1}/{len(rows)}), seed {seed} -> {where}")
                one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, seeds=()))
                per_seed[seed] = run_one(one, where, run.preset, run.mesh)
                dirs[row].append(where)
            summaries[row] = report.aggregate(per_seed) if comparison else per_seed[seeds[0]]
    return summaries, dirs


def run_models(run: Run, run_one: Callable[..., dict], valid: tuple[str, ...]) -> tuple[dict, dict]:
    """The ``model`` / ``models`` convention on :func:`run_rows`: a row per model of ``cfg.models`` (or the one
    ``cfg.model``), each config with ``model`` set and ``models`` cleared. Hold the folder (:func:`run_dir`) in
    ``main`` too to cover what follows the runs."""
    cfg = run.cfg
    models = cfg.models or (cfg.model,)
    for m in models:
        if m not in valid:
            raise SystemExit(f"unknown model {m!r}; valid: {', '.join(valid)}")
    return run_rows(run, {m: dataclasses.replace(cfg, model=m, models=()) for m in models}, run_one)


def save_comparison(out: Path, name: str, argv, summaries: Mapping[str, dict], **fields) -> None:
    """``out/comparison.json`` of a comparison: ``fields``, the command line and every row's summary (aggregated
    over seeds, each seed's own in ``per_seed_summaries``; written atomically)."""
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
    def run_one(cfg, out, preset, mesh):
        return train(make_task(cfg), cfg.train, out,
                     config={"experiment": name, "preset": preset, **config_lib.to_dict(cfg)}, mesh=mesh)[0]

    summaries, _ = run_rows(parsed, {getattr(parsed.cfg, "model", name): parsed.cfg}, run_one)
    (summary,) = summaries.values()
    print(f"{name}: final train loss {summary['final_train_loss']:.4f}; eval {summary['eval']}; wrote {parsed.out}")
    return summary
