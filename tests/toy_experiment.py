"""A tiny experiment for the harness tests: linear regression on generated data.

    python tests/toy_experiment.py --preset smoke --out DIR [--set train.steps=40]
    python tests/toy_experiment.py --compare --out DIR [--set models=linear,scaled]   # the model/models convention
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from attn_jax.train import TrainConfig, cli, train
from attn_jax.train.cli import main
from attn_jax.train.config import to_dict


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "linear"  # linear | scaled (a larger initialisation); for the comparison-mode tests
    models: tuple[str, ...] = ()
    dim: int = 8
    batch: int = 16
    noise: float = 0.1
    sleep_per_step: float = 0.0  # lets a test kill the process mid-run
    train: TrainConfig = TrainConfig(steps=40, learning_rate=0.05, log_every=5, checkpoint_every=5,
                                     keep_checkpoints=2, progress=False)


PRESETS = {"smoke": Config, "quick": lambda: dataclasses.replace(Config(), dim=16)}


class Regression:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.w_true = jax.random.normal(jax.random.key(123), (cfg.dim,))

    def init(self, rng):
        scale = 0.1 if self.cfg.model == "linear" else 1.0
        return {"w": jax.random.normal(rng, (self.cfg.dim,)) * scale, "b": jnp.zeros(())}

    def batch(self, step):
        if self.cfg.sleep_per_step:
            time.sleep(self.cfg.sleep_per_step)
        k = jax.random.fold_in(jax.random.key(7), step)
        x = jax.random.normal(k, (self.cfg.batch, self.cfg.dim))
        return x, x @ self.w_true + self.cfg.noise * jax.random.normal(jax.random.fold_in(k, 1), (self.cfg.batch,))

    def loss(self, params, batch, rng):
        x, y = batch
        dropout = jax.random.bernoulli(rng, 0.9, x.shape) / 0.9  # uses the per-step key
        pred = (x * dropout) @ params["w"] + params["b"]
        mse = jnp.mean((pred - y) ** 2)
        return mse, {"mse": mse}

    def evaluate(self, params):
        return {"weight_error": float(jnp.linalg.norm(params["w"] - self.w_true))}


MODELS = ("linear", "scaled")


def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    config = {"experiment": "toy", "preset": preset, **to_dict(cfg)}
    summary, _ = train(Regression(cfg), cfg.train, out, config=config, mesh=mesh)
    (out / "report.txt").write_text(f"{cfg.model}: {summary['final_train_loss']}\n")
    return summary


def compare(argv=None) -> dict | None:
    """An experiment of the seq2seq kind: one model in ``--out``, or ``models=a,b`` in ``--out/<model>`` with
    ``report.txt`` (every mode) and ``comparison.json`` (comparisons) written beside them."""
    parsed = cli.parse("toy", PRESETS, argv, default_preset="smoke")
    if parsed is None:
        return None
    with cli.run_dir(parsed):
        summaries, _ = cli.run_models(parsed, run_one, MODELS)
        (Path(parsed.out) / "report.txt").write_text("".join(f"{m}: {s['final_train_loss']}\n"
                                                             for m, s in summaries.items()))
        if parsed.cfg.models:
            cli.save_comparison(parsed.out, "toy", argv, summaries)
    return summaries


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        compare(sys.argv[2:])
    else:
        main("toy", PRESETS, Regression, sys.argv[1:], default_preset="smoke")
