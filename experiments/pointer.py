"""Pointer Networks on convex hull, planar TSP and sorting (Vinyals et al. 2015).

    python -m experiments.pointer --preset smoke --out /tmp/ptr               # main variant: ptrnet on convex_hull
    python -m experiments.pointer --set task=tsp
    python -m experiments.pointer --list

``task`` in {convex_hull, tsp, sort}; ``model`` in {ptrnet} (the seq2seq-over-
positions baseline of the issue is still to come). Training instances have
``train_n`` points (a range), the test sets each size in ``test_n``. Labels:
Qhull hulls, Held-Karp tours (2-opt above 12 points), argsort
(:mod:`experiments.data.geometry`). Decoding uses beam search with the
validity constraints of :class:`~attn_jax.nn.pointer.PointerNetwork`.
Eval metrics per test size n: hull ``accuracy_n<k>`` (the predicted polygon is
the hull) and ``coverage_n<k>`` (area of the predicted polygon over the hull's,
0 when not a simple polygon); TSP ``tour_n<k>``, ``optimal_n<k>`` (mean tour
lengths) and ``gap_n<k>`` (tour / optimal - 1); sort ``accuracy_n<k>``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn import beam_search
from attn_jax.nn.pointer import PointerNetwork
from attn_jax.train import TrainConfig, cli, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import update_readme_block
from experiments.data import geometry

MODELS = ("ptrnet",)


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "convex_hull"
    model: str = "ptrnet"
    train_n: tuple[int, ...] = (5, 5)  # (min, max) points per training instance
    test_n: tuple[int, ...] = (5, 10)
    train_size: int = 50000
    test_size: int = 500
    batch_size: int = 128
    hidden: int = 128
    beam_size: int = 4
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


def label(task: str, x: np.ndarray) -> list[int]:
    if task == "convex_hull":
        return geometry.convex_hull(x)
    if task == "tsp":
        return geometry.tsp(x)
    return geometry.sort(x[:, 0])


@functools.lru_cache(maxsize=8)
def dataset(task: str, sizes: tuple[int, ...], count: int, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """``count`` instances with a size drawn from ``sizes`` (min, max): points ``[count, max, F]`` (zero-padded),
    sizes ``[count]``, labels (lists of indices)."""
    rng = np.random.default_rng(seed)
    features = 1 if task == "sort" else 2
    ns = rng.integers(sizes[0], sizes[-1] + 1, count)
    x = np.zeros((count, sizes[-1], features), np.float32)
    labels = []
    for i, n in enumerate(ns):
        x[i, :n] = rng.uniform(0.0, 1.0, (n, features))
        labels.append(label(task, x[i, :n].astype(np.float64)))
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
        self.y = targets(labels, self.x.shape[1])
        self.features = self.x.shape[-1]
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))

    def _model(self, rng):
        fixed = self.cfg.task in ("tsp", "sort")
        return PointerNetwork(self.features, self.cfg.hidden, rngs=nnx.Rngs(params=rng), fixed_length=fixed,
                              min_outputs=0 if fixed else 3)

    def init(self, rng):
        return nnx.state(self._model(rng), nnx.Param)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        rows = np.random.default_rng((self.cfg.train.seed, 5, step)).integers(0, len(self.x), self.cfg.batch_size)
        return {"x": self.x[rows], "n": self.n[rows], "y": self.y[rows]}

    def loss(self, params, batch, rng):
        del rng
        y = batch["y"]
        previous = jnp.concatenate([jnp.zeros_like(y[:, :1]), y[:, :-1]], axis=1)
        logits, _ = nnx.merge(self.graphdef, params)(batch["x"], batch["n"], previous)
        end = batch["x"].shape[1]
        # every label position up to and including the first end slot counts
        first_end = jnp.argmax(y == end, axis=1)
        mask = (jnp.arange(y.shape[1])[None] <= first_end[:, None]).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
        loss = jnp.sum(nll * mask) / jnp.sum(mask)
        acc = jnp.sum((jnp.argmax(logits, -1) == y) * mask) / jnp.sum(mask)
        return loss, {"pointer_accuracy": acc}

    @functools.cached_property
    def _decode(self):
        def run(params, x, n):
            width = x.shape[1]
            return beam_search(nnx.merge(self.graphdef, params), x, n, beam_size=self.cfg.beam_size,
                               max_length=width + 1, bos_id=0, eos_id=width, pad_id=width)

        return jax.jit(run)

    def predict(self, params, x: np.ndarray, n: np.ndarray) -> list[list[int]]:
        out = self._decode(params, jnp.asarray(x), jnp.asarray(n))
        width = x.shape[1]
        return [[int(t) for t in row if t != width] for row in np.asarray(out.tokens)]

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
    if task == "tsp":
        tours = [geometry.tour_length(xi[:k].astype(np.float64), p) for xi, p in zip(x, preds, strict=True)]
        best = [geometry.tour_length(xi[:k].astype(np.float64), lab) for xi, lab in zip(x, labels, strict=True)]
        return {f"tour_n{k}": float(np.mean(tours)), f"optimal_n{k}": float(np.mean(best)),
                f"gap_n{k}": float(np.mean(tours) / np.mean(best) - 1.0)}
    return {f"accuracy_n{k}": float(np.mean([p == lab for p, lab in zip(preds, labels, strict=True)]))}


def _same_polygon(pred, label) -> bool:
    if len(pred) != len(label) or set(pred) != set(label):
        return False
    k = pred.index(label[0])
    rotated = pred[k:] + pred[:k]
    return rotated == label or [rotated[0]] + rotated[1:][::-1] == label


def publish(run_dirs, results: Path, block: str, readme: Path | None = None) -> str:
    """Copy each run's config and summary to ``results`` and write README block ``block``: one row per run."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    rows = ["| task | trained on n | test n | ours | steps x batch | device |", "|---|---|---|---|---|---|"]
    for run in map(Path, run_dirs):
        config, summary = (json.loads((run / f).read_text()) for f in ("config.json", "summary.json"))
        name = f"{config['task']}-{run.name}"
        for f in ("config.json", "summary.json"):
            shutil.copy(run / f, results / f"{name}.{f}")
        e = summary["eval"]
        for k in config["test_n"]:
            if config["task"] == "convex_hull":
                ours = f"accuracy {e[f'accuracy_n{k}']:.1%}, area coverage {e[f'coverage_n{k}']:.1%}"
            elif config["task"] == "tsp":
                ours = f"tour {e[f'tour_n{k}']:.3f} vs optimal {e[f'optimal_n{k}']:.3f} ({e[f'gap_n{k}']:+.1%})"
            else:
                ours = f"accuracy {e[f'accuracy_n{k}']:.1%}"
            trained = "-".join(str(v) for v in sorted(set(config["train_n"])))
            rows.append(f"| {config['task']} | {trained} | {k} | {ours} | {summary['steps']} x {config['batch_size']} "
                        f"| {summary['device']} |")
    text = "\n".join([f"Written by `python -m experiments.publish pointer {' '.join(map(str, run_dirs))} "
                      f"--block {block}` from each run's summary.json (beam {config['beam_size']}, "
                      f"{config['test_size']} test instances per size).", "", *rows])
    update_readme_block(block, text, readme)
    return text


def main(argv=None) -> dict | None:
    parsed = cli.parse("pointer", PRESETS, argv, default_preset="quick", variants=VARIANTS)
    if parsed is None:
        return None
    cfg, out, preset = parsed
    if cfg.task not in geometry.TASKS:
        raise SystemExit(f"unknown task {cfg.task!r}; valid: {', '.join(geometry.TASKS)}")
    if cfg.model not in MODELS:
        raise SystemExit(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
    summary, _ = train(PointerTask(cfg), cfg.train, Path(out),
                       config={"experiment": "pointer", "preset": preset, **to_dict(cfg)})
    print(f"pointer, {cfg.task} ({cfg.model}, preset {preset}): " +
          ", ".join(f"{k} {v:.4g}" for k, v in summary["eval"].items()))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
