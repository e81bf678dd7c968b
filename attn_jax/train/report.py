"""What the experiments' reports share: parameter counts, plots, learning curves.

Writing into the repository's README is not the library's business: it lives in
``experiments/readme.py``.
"""

from __future__ import annotations

from pathlib import Path

from attn_jax.train.rundir import read_metrics


def parameter_count(tree) -> int:
    """The number of scalars in a pytree of arrays (a model's parameters): the ``parameters`` of a summary."""
    import jax
    import numpy as np

    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


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
