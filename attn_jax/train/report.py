"""What the experiments' reports share: parameter counts, summaries over seeds, plots, learning curves.

Writing into the repository's pages (README, docs) is not the library's business: it lives in
``experiments/readme.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attn_jax.errors import require
from attn_jax.train.rundir import read_metrics


def parameter_count(tree) -> int:
    """The number of scalars in a pytree of arrays (a model's parameters): the ``parameters`` of a summary."""
    import jax
    import numpy as np

    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value). A NaN among the values makes both NaN."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def one_or_sorted(values) -> Any:
    """The one distinct value of ``values`` (strings, or lists of them, flattened), or the sorted list of them."""
    distinct = sorted({v for vs in values for v in ([vs] if isinstance(vs, str) else vs)})
    return distinct[0] if len(distinct) == 1 else distinct


def aggregate(per_seed: Mapping[int, Mapping]) -> dict:
    """One row's summaries by seed -> the row's summary over seeds.

    ``eval``: each metric's mean over seeds (metrics every seed reports); ``eval_std``: the sample standard
    deviation; ``per_seed``: metric -> values in seed order; ``seeds``; ``wall_s`` and ``final_train_loss``:
    means; ``parameters`` and ``device``: the first seed's; ``commit``: the one commit, or the sorted list when
    sittings differ; ``per_seed_summaries``: seed -> that run's summary. Other fields (an experiment's own, e.g.
    bucket sizes) are the first seed's."""
    if not per_seed:
        raise ValueError("aggregate needs at least one seed's summary")
    seeds = list(per_seed)
    runs = [per_seed[k] for k in seeds]
    first = runs[0]
    names = [m for m in first.get("eval", {}) if all(m in r.get("eval", {}) for r in runs)]
    values = {m: [float(r["eval"][m]) for r in runs] for m in names}
    stats = {m: mean_std(v) for m, v in values.items()}
    commits = [r["commit"] for r in runs if r.get("commit") is not None]
    out = {**first, "eval": {m: s[0] for m, s in stats.items()}, "eval_std": {m: s[1] for m, s in stats.items()},
           "per_seed": values, "seeds": seeds, "per_seed_summaries": {str(k): per_seed[k] for k in seeds}}
    for key in ("wall_s", "final_train_loss"):
        if all(isinstance(r.get(key), (int, float)) for r in runs):
            out[key] = mean_std([float(r[key]) for r in runs])[0]
    if commits:
        out["commit"] = one_or_sorted(commits)
    return out


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (matplotlib comes with the ``experiments`` extra)."""
    matplotlib = require("matplotlib", "experiments")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "experiments")


def save_line_plot(fig, ax, path: Path, title: str, dpi: int = 120) -> None:
    """Title, grid and legend on ``ax``; save ``fig`` to ``path`` and close it."""
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def curve_key(runs: Mapping[str, Path | Sequence[Path]], held_out: str, training: str) -> str:
    """The key a learning curve of ``runs`` should draw: the held-out ``held_out`` (e.g. ``eval/perplexity``) when
    every run folder logged it at two steps or more (``train.eval_every``), else the training metric ``training``
    (the runs of an older recipe)."""
    folders = [Path(d) for dirs in runs.values() for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]
    logged = [sum(held_out in r for r in read_metrics(d / "metrics.jsonl")) for d in folders]
    return held_out if logged and min(logged) >= 2 else training


def plot_metric_curves(runs: Mapping[str, Path | Sequence[Path]], key: str, path: Path, title: str, ylabel: str, *,
                       x_per_step: float = 1.0, xlabel: str = "step", label: str = "{name}",
                       log_y: bool = False, transform=None) -> None:
    """One line per row: ``key`` (a training metric, or a held-out ``eval/<metric>`` logged every ``eval_every``
    steps) from each run folder's ``metrics.jsonl``, against the step (times ``x_per_step``, e.g. the batch size
    for "examples seen"). A row with several run folders (its seeds) is drawn as the mean over them at the steps
    every seed logged, with a band of one standard deviation. ``transform`` (e.g. ``np.abs`` for a signed quantity
    whose seeds go either way) is applied to each seed's values before the mean."""
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    banded = False
    for name, dirs in runs.items():
        dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
        curves = [{r["step"]: r[key] for r in read_metrics(Path(d) / "metrics.jsonl") if key in r} for d in dirs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        y = np.array([[c[s] for s in steps] for c in curves], dtype=float)
        y = transform(y) if transform is not None else y
        x = np.asarray(steps, dtype=float) * x_per_step
        text = label.format(name=name) + (f" ({len(y)} seeds)" if len(y) > 1 else "")
        (line,) = ax.plot(x, y.mean(0), label=text)
        if len(y) > 1:
            banded = True
            std = y.std(0, ddof=1)
            low = y.mean(0) - std
            if log_y:  # a band reaching zero or below would fall off a log axis: stop it at a tenth of the mean
                low = np.maximum(low, y.mean(0) / 10)
            ax.fill_between(x, low, y.mean(0) + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    save_line_plot(fig, ax, path, title + ("\n(mean ± 1 std over seeds)" if banded else ""))
