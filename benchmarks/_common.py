"""Helpers shared by the benchmark scripts: device naming, timing, the results blocks of docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import jax

from experiments.readme import update_readme_block

__all__ = ["README", "RESULTS", "add_output_args", "device_name", "publish_result", "time_fn", "update_readme_block"]

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"


def add_output_args(parser, readme_from: bool = True) -> None:
    """The output flags every benchmark takes: --out-dir, --update-readme (and --readme-from)."""
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true", help="rewrite its block in docs/benchmarks.md")
    if readme_from:
        parser.add_argument("--readme-from", type=Path, help="only rewrite the docs block from this results JSON")


def slug(kind: str) -> str:
    """A device kind as a file-name-safe name ("NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3")."""
    return re.sub(r"[^A-Za-z0-9]+", "-", kind).strip("-").lower()


def device_name() -> str:
    """A short, file-name-safe device name: "cpu", or the accelerator's kind (e.g. "nvidia-h100-80gb-hbm3")."""
    d = jax.devices()[0]
    return slug(d.platform if d.platform == "cpu" else d.device_kind)


def time_fn(fn, *args, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time (seconds) of ``fn(*args)`` after ``warmup`` calls, and every sample."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times



def publish_result(args, name: str, run, plot, markdown, alt: str) -> dict:
    """The tail every benchmark's ``main`` shares: with ``--readme-from``, read that JSON (and its PNG); else
    ``run(args)``, write ``<out-dir>/<name>_<device>.json`` and ``.png`` (``plot``) and print ``markdown``; then,
    when asked, rewrite the ``name`` block of the docs with the table and the figure. Returns the result."""
    if args.readme_from:
        result, png = json.loads(args.readme_from.read_text()), args.readme_from.with_suffix(".png")
    else:
        result = run(args)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{name}_{result['device']}"
        (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
        png = args.out_dir / f"{stem}.png"
        plot(result, png)
        print(markdown(result))
    if args.update_readme or args.readme_from:
        figure = f"\n\n![{alt}]({os.path.relpath(png, README.parent)})"
        print(f"updated {update_readme_block(name, markdown(result) + figure)}")
    return result
