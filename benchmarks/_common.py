"""Helpers shared by the benchmark scripts: device naming, timing, README blocks."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import jax

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"


def add_output_args(parser, readme_from: bool = True) -> None:
    """The output flags every benchmark takes: --out-dir, --update-readme (and --readme-from)."""
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true", help="rewrite this benchmark's README block")
    if readme_from:
        parser.add_argument("--readme-from", type=Path, help="only rewrite the README block from this results JSON")


def device_name() -> str:
    """A short, file-name-safe device name: "cpu", or the accelerator's kind (e.g. "nvidia-h100-80gb-hbm3")."""
    d = jax.devices()[0]
    kind = d.platform if d.platform == "cpu" else d.device_kind
    return re.sub(r"[^A-Za-z0-9]+", "-", kind).strip("-").lower()


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


def update_readme_block(name: str, text: str, readme: Path = README) -> None:
    """Replace the README's ``<!-- name:begin -->`` ... ``<!-- name:end -->`` block with ``text``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = readme.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{readme} has no {begin} ... {end} block to update")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
