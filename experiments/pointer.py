"""Pointer Networks on convex hull, planar TSP and sorting (Vinyals et al. 2015).

    python -m experiments.pointer --preset smoke --out /tmp/ptr               # main variant: ptrnet on convex_hull
    python -m experiments.pointer --set task=tsp
    python -m experiments.pointer --list
    python -m experiments.pointer --set models=ptrnet,seq2seq --set train_n=10,10 --set test_n=10 --set seeds=0,1,2

``task`` in {convex_hull, tsp, sort}; ``model`` in {ptrnet, seq2seq}: the
pointer network, or the paper's baseline, a seq2seq model with attention whose
outputs are a fixed vocabulary of ``positions`` input indices (the largest
training n by default) — it cannot name an input past that, so it fails on
larger instances. Training instances have
``train_n`` points (a range), the test sets each size in ``test_n``. Labels:
Qhull hulls, Held-Karp tours (2-opt above 12 points), argsort
(:mod:`experiments.data.geometry`). Decoding uses beam search with the
validity constraints of :class:`~attn_jax.nn.pointer.PointerNetwork`.
Eval metrics per test size n: hull ``accuracy_n<k>`` (the predicted polygon is
the hull) and ``coverage_n<k>`` (area of the predicted polygon over the hull's,
0 when not a simple polygon); TSP ``valid_n<k>`` (share of outputs that visit
every city once), ``tour_n<k>`` (mean length of the valid tours; NaN if none),
``optimal_n<k>`` (mean optimal length over all instances) and ``gap_n<k>`` (tour
/ optimal - 1 on the valid instances); sort ``accuracy_n<k>``. Each run also
writes ``examples.png`` (decoded test instances against their labels) and
``wall_s`` in summary.json. ``loss=fused`` (or ``auto`` with large inputs)
trains the pointer net through ``additive_attention``'s logsumexp residual
(:meth:`~attn_jax.nn.pointer.PointerNetwork.nll`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.attention.additive import DENSE_FEATURES_LIMIT_BYTES
from attn_jax.nn import beam_search
from attn_jax.nn.pointer import PointerNetwork, PositionSeq2Seq
from attn_jax.train import TrainConfig, cli, rundir, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import curve_key, plot_metric_curves, pyplot
from experiments import tables
from experiments.data import geometry
from experiments.readme import repo_relative, row_run, update_readme_block

MODELS = ("ptrnet", "seq2seq")
LOSSES = ("auto", "dense", "fused")


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "convex_hull"  # convex_hull | tsp | sort
    model: str = "ptrnet"  # ptrnet (the pointer network) | seq2seq (the baseline over a vocabulary of positions)
    models: tuple[str, ...] = ()  # comparison mode: each of these, same data and budget, OUT/<model>/seed<k>/
    train_n: tuple[int, ...] = (5, 5)  # (min, max) points per training instance
    test_n: tuple[int, ...] = (5, 10)  # points per test instance: one test set per value
    train_size: int = 50000  # training instances generated
    test_size: int = 500  # test instances per value of test_n
    batch_size: int = 128  # training instances per step
    hidden: int = 128  # LSTM size of the encoder and decoder (also the point embedding and attention size)
    beam_size: int = 4  # beam width of the test-set decoding
    positions: int = 0  # model=seq2seq: size of the output vocabulary of positions (0: the largest training n)
    loss: str = "auto"  # ptrnet: dense logits, or "fused" (additive_attention's residual); auto: fused when large
    # 8000 steps: at 2500 / 5000 the hull reached 82.8% / 84.2% at n=5 (target 85%), at 8000 86.8%
    train: TrainConfig = TrainConfig(steps=8000, optimizer="adam", learning_rate=1e-3, schedule="cosine",
                                     clip_norm=2.0, log_every=50, checkpoint_every=500)


def smoke() -> Config:
    return Config(train_size=256, test_size=16, batch_size=16, hidden=16, beam_size=2,
                  train=TrainConfig(steps=20, learning_rate=1e-3, log_every=5, checkpoint_every=10))


PRESETS = {"smoke": smoke, "quick": Config,
           "paper": lambda: Config(train_n=(5, 50), test_n=(5, 10, 50), train_size=1_000_000, hidden=256,
                                   train=TrainConfig(steps=100_000, learning_rate=1e-3, schedule="cosine",
                                                     clip_norm=2.0, log_every=500, checkpoint_every=5000))}
VARIANTS = f"variants: model={'|'.join(MODELS)}  task={'|'.join(geometry.TASKS)}  (main: ptrnet on convex_hull)"


def labels_for(task: str, x: np.ndarray) -> list[list[int]]:
    """Labels of the instances ``x [B, n, F]`` (all of one size n)."""
    if task == "convex_hull":
        return [geometry.convex_hull(p) for p in x]
    if task == "tsp":
        return geometry.tsp_batch(x)
    return [geometry.sort(p[:, 0]) for p in x]


@functools.lru_cache(maxsize=8)
def dataset(task: str, sizes: tuple[int, ...], count: int, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """``count`` instances with a size drawn from ``sizes`` (min, max): points ``[count, max, F]`` (zero-padded),
    sizes ``[count]``, labels (lists of indices)."""
    rng = np.random.default_rng(seed)
    features = 1 if task == "sort" else 2
    ns = rng.integers(sizes[0], sizes[-1] + 1, count)
    x = np.zeros((count, sizes[-1], features), np.float32)
    for i, n in enumerate(ns):
        x[i, :n] = rng.uniform(0.0, 1.0, (n, features))
    labels: list = [None] * count
    for n in np.unique(ns):  # label each size in one batch (the TSP's Held-Karp is vectorised over instances)
        rows = np.nonzero(ns == n)[0]
        for i, lab in zip(rows, labels_for(task, x[rows, :n].astype(np.float64)), strict=True):
            labels[i] = lab
    return x, ns.astype(np.int32), labels


def targets(labels, width: int) -> np.ndarray:
    """Index sequences followed by the end slot (``width``), padded with it: ``[N, width + 1]``."""
    out = np.full((len(labels), width + 1), width, np.int32)
    for i, seq in enumerate(labels):
        out[i, :len(seq)] = seq
    return out


class PointerTask:
    def __init__(self, cfg: Config):
        if cfg.task not in geometry.TASKS:
            raise ValueError(f"unknown task {cfg.task!r}; valid: {', '.join(geometry.TASKS)}")
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
        self.cfg = cfg
        self.x, self.n, labels = dataset(cfg.task, tuple(cfg.train_n), cfg.train_size, cfg.train.seed)
        if cfg.model == "seq2seq" and cfg.positions and cfg.positions < self.x.shape[1]:
            raise ValueError(f"positions={cfg.positions} cannot name every input of training instances with up to "
                             f"{self.x.shape[1]} points")
        if cfg.loss not in LOSSES:
            raise ValueError(f"unknown loss {cfg.loss!r}; valid: {', '.join(LOSSES)}")
        self.y = targets(labels, self.x.shape[1])
        self.features = self.x.shape[-1]
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))

    @property
    def end(self) -> int:
        """The end token: the end slot (index = input width) of the pointer net, ``positions`` for seq2seq."""
        return (self.cfg.positions or self.x.shape[1]) if self.cfg.model == "seq2seq" else self.x.shape[1]

    def _model(self, rng):
        fixed = self.cfg.task in ("tsp", "sort")
        kw = dict(rngs=nnx.Rngs(params=rng), fixed_length=fixed, min_outputs=0 if fixed else 3)
        if self.cfg.model == "seq2seq":
            return PositionSeq2Seq(self.features, self.cfg.hidden, positions=self.end, **kw)
        return PointerNetwork(self.features, self.cfg.hidden, **kw)

    @property
    def fused(self) -> bool:
        """Whether the loss goes through additive_attention's logsumexp (pointer net only): asked for, or "auto"
        and the dense ``[B, T, n+1, A]`` score features would pass attn_jax's dense limit."""
        if self.cfg.model != "ptrnet" or self.cfg.loss == "dense":
            return False
        n = self.x.shape[1]
        return self.cfg.loss == "fused" or 4 * self.cfg.batch_size * (n + 1) ** 2 * self.cfg.hidden > \
            DENSE_FEATURES_LIMIT_BYTES

    def init(self, rng):
        return nnx.state(self._model(rng), nnx.Param)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        rows = np.random.default_rng((self.cfg.train.seed, 5, step)).integers(0, len(self.x), self.cfg.batch_size)
        return {"x": self.x[rows], "n": self.n[rows], "y": self.y[rows]}

    def loss(self, params, batch, rng):
        del rng
        y = batch["y"]
        previous = jnp.concatenate([jnp.zeros_like(y[:, :1]), y[:, :-1]], axis=1)
        model = nnx.merge(self.graphdef, params)
        # every label position up to and including the first end token counts
        first_end = jnp.argmax(y == self.end, axis=1)
        mask = (jnp.arange(y.shape[1])[None] <= first_end[:, None]).astype(jnp.float32)
        if self.fused:
            nll = model.nll(batch["x"], batch["n"], previous, y).astype(jnp.float32)
            return jnp.sum(nll * mask) / jnp.sum(mask), {}
        logits, _ = model(batch["x"], batch["n"], previous)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
        loss = jnp.sum(nll * mask) / jnp.sum(mask)
        acc = jnp.sum((jnp.argmax(logits, -1) == y) * mask) / jnp.sum(mask)
        return loss, {"pointer_accuracy": acc}

    @functools.cached_property
    def _decode(self):
        def run(params, x, n):
            end = self.end if self.cfg.model == "seq2seq" else x.shape[1]
            return beam_search(nnx.merge(self.graphdef, params), x, n, beam_size=self.cfg.beam_size,
                               max_length=x.shape[1] + 1, bos_id=0, eos_id=end, pad_id=end)

        return jax.jit(run)

    def predict(self, params, x: np.ndarray, n: np.ndarray) -> list[list[int]]:
        """Beam-search outputs for ``x [B, n, F]``: index lists without the end token."""
        out = self._decode(params, jnp.asarray(x), jnp.asarray(n))
        end = self.end if self.cfg.model == "seq2seq" else x.shape[1]
        return [[int(t) for t in row if t != end] for row in np.asarray(out.tokens)]

    def evaluate(self, params) -> dict[str, float]:
        metrics = {}
        for k in self.cfg.test_n:
            x, n, labels = dataset(self.cfg.task, (k, k), self.cfg.test_size, 10_000 + self.cfg.train.seed)
            preds = []
            for start in range(0, len(x), 100):
                preds += self.predict(params, x[start:start + 100], n[start:start + 100])
            metrics.update(score(self.cfg.task, x, labels, preds, k))
        return metrics


def score(task: str, x: np.ndarray, labels, preds, k: int) -> dict[str, float]:
    if task == "convex_hull":
        same = [_same_polygon(p, lab) for p, lab in zip(preds, labels, strict=True)]
        cover = [geometry.hull_coverage(xi[:k].astype(np.float64), p) for xi, p in zip(x, preds, strict=True)]
        return {f"accuracy_n{k}": float(np.mean(same)), f"coverage_n{k}": float(np.mean(cover))}
    if task == "tsp":  # lengths over the valid tours (every city once); the paper's Table 2 as well
        valid = [sorted(p) == list(range(k)) for p in preds]
        tours = [geometry.tour_length(xi[:k].astype(np.float64), p) for xi, p, ok in zip(x, preds, valid,
                                                                                           strict=True) if ok]
        best = [geometry.tour_length(xi[:k].astype(np.float64), lab) for xi, lab, ok in zip(x, labels, valid,
                                                                                              strict=True) if ok]
        all_best = [geometry.tour_length(xi[:k].astype(np.float64), lab) for xi, lab in zip(x, labels, strict=True)]
        tour = float(np.mean(tours)) if tours else float("nan")
        return {f"tour_n{k}": tour, f"optimal_n{k}": float(np.mean(all_best)), f"valid_n{k}": float(np.mean(valid)),
                f"gap_n{k}": tour / float(np.mean(best)) - 1.0 if tours else float("nan")}
    return {f"accuracy_n{k}": float(np.mean([p == lab for p, lab in zip(preds, labels, strict=True)]))}


def _same_polygon(pred, label) -> bool:
    if len(pred) != len(label) or set(pred) != set(label):
        return False
    k = pred.index(label[0])
    rotated = pred[k:] + pred[:k]
    return rotated == label or [rotated[0]] + rotated[1:][::-1] == label


# --- plots and the docs -------------------------------------------------------------------------------------------
def plot_examples(task: PointerTask, params, path: Path, per_size: int = 3) -> None:
    """Decoded test instances per test size: hull / tour (label dashed grey, prediction solid) or, for sorting,
    the values in output order."""
    sizes = list(task.cfg.test_n)
    plt = pyplot()
    fig, axes = plt.subplots(len(sizes), per_size, figsize=(3 * per_size, 3 * len(sizes)), squeeze=False)
    for row, k in zip(axes, sizes, strict=True):
        x, n, labels = dataset(task.cfg.task, (k, k), task.cfg.test_size, 10_000 + task.cfg.train.seed)
        preds = task.predict(params, x[:per_size], n[:per_size])
        for ax, xi, lab, pred in zip(row, x[:per_size], labels[:per_size], preds, strict=True):
            if task.cfg.task == "sort":
                ax.plot(xi[lab, 0], "o--", color="0.6", label="sorted")
                ax.plot(xi[pred, 0], ".-", color="C3", label="output")
                ax.set_xlabel("output step")
            else:
                p = xi[:k]
                for order, style in ((lab, dict(color="0.6", ls="--", lw=2)), (pred, dict(color="C3", lw=1))):
                    loop = p[list(order) + list(order[:1])] if order else p[:0]
                    ax.plot(loop[:, 0], loop[:, 1], **style)
                ax.scatter(p[:, 0], p[:, 1], s=12, color="k", zorder=3)
                ax.set_xlim(-0.05, 1.05)
                ax.set_ylim(-0.05, 1.05)
                ax.set_xticks([])
                ax.set_yticks([])
            if task.cfg.task == "tsp" and sorted(pred) == list(range(k)):
                length = geometry.tour_length(xi[:k].astype(np.float64), pred)
                optimal = geometry.tour_length(xi[:k].astype(np.float64), lab)
                ax.set_title(f"n={k}: tour {length:.3f}, optimal {optimal:.3f}", fontsize=9)
                continue
            ok = pred == lab if task.cfg.task == "sort" else _same_polygon(pred, lab)
            ax.set_title(f"n={k}: {'correct' if ok else 'wrong'}", fontsize=9)
    fig.suptitle(f"{task.cfg.model} on {task.cfg.task} (label dashed grey, output red)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Vinyals et al. 2015, Tables 1-2: (task, model, test n) -> what the paper reports
PAPER = {
    ("convex_hull", "ptrnet", 5): "92.0% (trained on 5-50)",
    ("convex_hull", "ptrnet", 10): "87.0% (trained on 5-50)",
    ("convex_hull", "ptrnet", 50): "72.6%, 99.9% (trained on 50)",
    ("convex_hull", "seq2seq", 50): "LSTM+attention 38.9%, 99.7% (trained on 50)",
    ("tsp", "ptrnet", 5): "2.12 vs optimal 2.12 (trained on 5)",
    ("tsp", "ptrnet", 10): "2.88 vs optimal 2.87 (trained on 10)",
    ("tsp", "ptrnet", 20): "3.88 vs optimal 3.83 (trained on 20)",
}


def _ours(task: str, e: dict, k: int) -> str:
    if task == "convex_hull":
        return f"accuracy {e[f'accuracy_n{k}']:.1%}, area coverage {e[f'coverage_n{k}']:.1%}"
    if task == "tsp":
        if not e.get(f"valid_n{k}", 1.0):
            return "no valid tour"
        valid = f", {e[f'valid_n{k}']:.0%} valid" if e.get(f"valid_n{k}", 1.0) < 1 else ""
        return f"tour {e[f'tour_n{k}']:.3f} vs optimal {e[f'optimal_n{k}']:.3f} ({e[f'gap_n{k}']:+.1%}{valid})"
    return f"accuracy {e[f'accuracy_n{k}']:.1%}"


def publish(run_dirs, results: Path, block: str, readme: Path | None = None) -> str:
    """Copy each run's config, summary and example plot to ``results`` and write the docs block ``block``: one row
    per run and test size, beside the paper's number where it reports one. Comparison folders (``models=...``,
    ``seeds=...``) go to :func:`publish_comparisons` instead: a published table over seeds."""
    if all((Path(r) / "comparison.json").is_file() for r in run_dirs):
        return publish_comparisons(run_dirs, results, block, readme)
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    rows = ["| task | model | trained on n | test n | ours | paper | steps x batch | wall time | device |",
            "|---|---|---|---|---|---|---|---|---|"]
    images = []
    for run in map(Path, run_dirs):
        config, summary = (json.loads((run / f).read_text()) for f in ("config.json", "summary.json"))
        task, model = config["task"], config.get("model", "ptrnet")
        name = f"{task}-{model}-{run.name}"
        for f in ("config.json", "summary.json", "examples.png"):
            if (run / f).exists():
                if f.endswith(".json"):
                    rundir.copy_json(run / f, results / f"{name}.{f}")
                else:
                    shutil.copy(run / f, results / f"{name}.{f}")
        if (run / "examples.png").exists():
            images.append(results / f"{name}.examples.png")
        trained = "-".join(str(v) for v in sorted(set(config["train_n"])))
        wall = f"{summary['wall_s'] / 60:.1f} min" if "wall_s" in summary else "–"
        for k in config["test_n"]:
            rows.append(f"| {task} | {model} | {trained} | {k} | {_ours(task, summary['eval'], k)} | "
                        f"{PAPER.get((task, model, k), '–')} | {summary['steps']} x {config['batch_size']} | {wall} "
                        f"| {summary['device']} |")
    text = "\n".join([f"Written by `python -m experiments.publish pointer {' '.join(map(str, run_dirs))} "
                      f"--block {block}` from each run's summary.json (beam {config['beam_size']}, "
                      f"{config['test_size']} test instances per size; the paper trained on 1M instances).", "",
                      *rows, "", *[f"![{p.stem}]({repo_relative(p)})" for p in images]])
    update_readme_block(block, text, readme)
    return text


def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    task = PointerTask(cfg)
    summary, params = train(task, cfg.train, Path(out), config={"experiment": "pointer", "preset": preset,
                                                                 **to_dict(cfg)}, mesh=mesh)
    if jax.process_index() == 0:
        plot_examples(task, params, Path(out) / "examples.png")
    return summary


def main(argv=None) -> dict | None:
    parsed = cli.parse("pointer", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                       choices={"task": geometry.TASKS, "model": MODELS, "models": MODELS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, _ = cli.run_models(parsed, run_one, MODELS)
        if cli.is_comparison(cfg) and jax.process_index() == 0:
            cli.save_comparison(out, "pointer", argv, summaries, preset=preset, task=cfg.task,
                                train_n=list(cfg.train_n), test_n=list(cfg.test_n), beam_size=cfg.beam_size,
                                test_size=cfg.test_size, batch_size=cfg.batch_size)
    for model, summary in summaries.items():
        print(f"pointer, {cfg.task} ({model}, preset {preset}): " +
              ", ".join(f"{k} {v:.4g}" for k, v in summary["eval"].items()))
    return summaries if cli.is_comparison(cfg) else next(iter(summaries.values()))


TABLE_METRICS = {"convex_hull": (("accuracy", "accuracy", ".3f", True), ("coverage", "area coverage", ".3f", True)),
                 "tsp": (("gap", "tour / optimal - 1", ".3f", False), ("valid", "valid tours", ".3f", True)),
                 "sort": (("accuracy", "accuracy", ".3f", True),)}


def file_stem(row: str) -> str:
    """A row's name as a file-name stem of letters, digits, ``.``, ``-`` and ``_`` (``ptrnet (train 5-10)`` ->
    ``ptrnet_train_5-10``), safe in Markdown links and on every file system."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", row).strip("_")


def publish_comparisons(run_dirs, results: Path, block: str, readme: Path | None = None) -> str:
    """One published table from one or more comparison folders of one task (e.g. ptrnet and seq2seq trained and
    tested at n = 10, and ptrnet trained on 5-10): rows named by model, with ``(train a-b)`` when a folder's
    training sizes are not its one test size; metrics per test size; the docs block from the table."""
    results = Path(results)
    rows, commands, comparisons, dirs = {}, [], [], {}
    for run in map(Path, run_dirs):
        comparison = json.loads((run / "comparison.json").read_text())
        comparisons.append(comparison)
        commands.append(comparison["command"])
        train = sorted(set(comparison["train_n"]))
        fixed = len(train) == 1 and comparison["test_n"] == train
        for model, summary in comparison["summaries"].items():
            name = model if fixed else f"{model} (train {'-'.join(map(str, train))})"
            if name in rows:
                raise ValueError(f"row {name!r} appears in two comparisons")
            rows[name] = summary
            dirs[name] = [d for k in summary.get("seeds", ()) if (d := cli.seed_dir(run, model, k)).is_dir()]
            if (row_run(run, model) / "examples.png").exists():
                results.mkdir(parents=True, exist_ok=True)
                shutil.copy(row_run(run, model) / "examples.png", results / f"examples_{file_stem(name)}.png")
    tasks = {c["task"] for c in comparisons}
    if len(tasks) != 1:
        raise ValueError(f"a table holds one task; got {sorted(tasks)}")
    (task,) = tasks
    sizes = sorted({n for c in comparisons for n in c["test_n"]})
    table = tables.from_summaries(rows, commands[0] if len(commands) == 1 else commands)
    tables.write(results, table)
    columns, higher = [], {}
    for key, label, fmt, up in TABLE_METRICS[task]:
        for n in sizes:
            if any(f"{key}_n{n}" in r["metrics"] for r in table["rows"].values()):
                columns.append((f"{key}_n{n}", f"{label} n={n}", fmt))
                higher[f"{key}_n{n}"] = up
    curve = []
    if all(dirs.values()):  # the held-out headline metric at the largest test size over training, seed bands
        key_name, label, _, _ = TABLE_METRICS[task][0]
        key = curve_key(dirs, f"eval/{key_name}_n{sizes[-1]}", "loss")
        results.mkdir(parents=True, exist_ok=True)
        plot_metric_curves(dirs, key, results / "learning_curve.png", f"pointer: {task}",
                           f"{label}, n={sizes[-1]} (held out)" if key != "loss" else "loss (training batches)",
                           log_y=key == "loss")
        curve = ["", f"![learning curve]({repo_relative(results / 'learning_curve.png')})"]
    headline = TABLE_METRICS[task][0][0]
    paper = {f"paper n={n}": {r: PAPER[(task, r.split(" ")[0], n)] for r, summary in rows.items()
                              if (task, r.split(" ")[0], n) in PAPER and f"{headline}_n{n}" in summary["eval"]}
             for n in sizes}  # a row's paper figure only at a size the row was tested on
    paper = {h: v for h, v in paper.items() if v}
    first = comparisons[0]
    prov = table["provenance"]
    steps = next(iter(rows.values()))["steps"]
    text = "\n".join([
        f"Device: {prov['device']}; commit {tables.short_commit(prov['commit'])}; task `{task}`, {steps} steps x "
        f"{first['batch_size']} per run, beam {first['beam_size']}, {first['test_size']} test instances per size; "
        f"written by `python -m experiments.publish pointer {' '.join(map(str, run_dirs))} --block {block}"
        + (f" --table {results.name}" if results.name != block else "") + "` from "
        + ", ".join(f"`{c}`" for c in commands) + ". The paper's numbers (where it reports one for that row's "
        "model and n) come from training on 1M instances.", "",
        tables.markdown(table, columns, higher, extra=paper),
        *curve, "", *[f"![{p.stem}]({repo_relative(p)})" for p in sorted(results.glob("examples_*.png"))]])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
