"""The command line every experiment shares (DESIGN.md "Runs and results").

    python -m experiments.<name> [--preset smoke|quick|paper] [--out DIR] [--set key=value]... [--list]

An experiment calls :func:`main` with its presets (name -> config factory; the
config has a ``train: TrainConfig`` field) and a function building its
:class:`~attn_jax.train.loop.Task` from a config.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from attn_jax.train import config as config_lib
from attn_jax.train.loop import train


def parser(name: str, presets: Mapping[str, Callable[[], Any]], default_preset: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m experiments.{name}")
    ap.add_argument("--preset", default=default_preset, help=f"one of: {', '.join(presets)}")
    ap.add_argument("--out", type=Path, default=None, help=f"run folder (default runs/{name}/<timestamp>)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the presets and every config key, then exit")
    return ap


def print_keys(cfg, presets, preset: str) -> None:
    print(f"presets: {', '.join(presets)}")
    print(f"config keys ({preset} values):")
    for key in config_lib.keys(cfg):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        print(f"  {key} = {value!r}")


def parse(name: str, presets: Mapping[str, Callable[[], Any]], argv=None, default_preset: str = "quick",
          variants: str | None = None) -> tuple[Any, Path, str] | None:
    """Parse the shared command line: ``(config, out, preset)``, or None after ``--list`` printed the keys."""
    args = parser(name, presets, default_preset).parse_args(argv)
    if args.list:
        if variants:
            print(variants)
        print_keys(config_lib.build(presets, args.preset), presets, args.preset)
        return None
    cfg = config_lib.build(presets, args.preset, args.sets)
    out = args.out or Path("runs") / name / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cfg, out, args.preset


def main(name: str, presets: Mapping[str, Callable[[], Any]], make_task: Callable[[Any], Any],
         argv=None, default_preset: str = "quick") -> dict | None:
    parsed = parse(name, presets, argv, default_preset)
    if parsed is None:
        return None
    cfg, out, preset = parsed
    summary, _ = train(make_task(cfg), cfg.train, out,
                       config={"experiment": name, "preset": preset, **config_lib.to_dict(cfg)})
    print(f"{name}: final train loss {summary['final_train_loss']:.4f}; eval {summary['eval']}; wrote {out}")
    return summary
