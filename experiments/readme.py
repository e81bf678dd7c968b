"""Writing results into the repository's README: script-owned blocks between ``<!-- name:begin -->`` and
``<!-- name:end -->``, links relative to the repository root, and staging a run's comparison for publishing.

The experiments' ``publish`` steps and the benchmarks use it; the installable library
(``attn_jax``) knows nothing of the repository's README.
"""

from __future__ import annotations

import json
from pathlib import Path

from attn_jax.train.cli import row_folder
from attn_jax.train.rundir import write_json

README = Path(__file__).resolve().parents[1] / "README.md"


def update_readme_block(name: str, text: str, readme: Path | None = None) -> None:
    """Replace the README's ``<!-- name:begin -->`` ... ``<!-- name:end -->`` block with ``text``."""
    readme = README if readme is None else Path(readme)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = readme.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{readme} has no {begin} ... {end} block to update")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root (for links in the README), or as given when outside it."""
    try:
        return str(Path(path).resolve().relative_to(README.parent))
    except ValueError:
        return str(path)


def stage_comparison(run_dir: Path, results: Path) -> dict:
    """Read a comparison run's ``comparison.json`` and copy it into the ``results`` folder (created)."""
    comparison = json.loads((Path(run_dir) / "comparison.json").read_text())
    Path(results).mkdir(parents=True, exist_ok=True)
    write_json(Path(results) / "comparison.json", comparison)
    return comparison


def row_run(run_dir: Path, row: str) -> Path:
    """The run folder a comparison's per-row pictures come from: ``run_dir/<row>`` when it is a run, else the
    row's first seed, ``run_dir/<row>/seed<k>`` with the smallest k (``run_dir/<row>`` when it has none)."""
    folder = Path(run_dir) / row_folder(row)
    seeds = sorted((p for p in folder.glob("seed*") if p.name[4:].isdigit() and (p / "config.json").is_file()),
                   key=lambda p: int(p.name[4:]))
    return seeds[0] if seeds and not (folder / "config.json").is_file() else folder
