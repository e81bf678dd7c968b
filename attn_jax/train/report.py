"""Writing results into the README: script-owned blocks between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""

from __future__ import annotations

import json
from pathlib import Path

from attn_jax.train.rundir import read_metrics, write_json

README = Path(__file__).resolve().parents[2] / "README.md"


def parameter_count(tree) -> int:
    """The number of scalars in a pytree of arrays (a model's parameters): the ``parameters`` of a summary."""
    import jax
    import numpy as np

    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


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


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_line_plot(fig, ax, path: Path, title: str, dpi: int = 120) -> None:
    """Title, grid and legend on ``ax``; save ``fig`` to ``path`` and close it."""
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def plot_metric_curves(runs: dict[str, Path], key: str, path: Path, title: str, ylabel: str, *,
                       x_per_step: float = 1.0, xlabel: str = "step", label: str = "{name}",
                       log_y: bool = False) -> None:
    """One line per run: the training ``key`` logged in each run folder's ``metrics.jsonl``, against the step
    (times ``x_per_step``, e.g. the batch size for "examples seen")."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, out in runs.items():
        rows = [r for r in read_metrics(Path(out) / "metrics.jsonl") if key in r]
        ax.plot([r["step"] * x_per_step for r in rows], [r[key] for r in rows], label=label.format(name=name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    save_line_plot(fig, ax, path, title)
