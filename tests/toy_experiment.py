"""A tiny experiment for the harness tests: linear regression on generated data.

    python tests/toy_experiment.py --preset smoke --out DIR [--set train.steps=40]
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp

from attn_jax.train import TrainConfig
from attn_jax.train.cli import main


@dataclasses.dataclass(frozen=True)
class Config:
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
        return {"w": jax.random.normal(rng, (self.cfg.dim,)) * 0.1, "b": jnp.zeros(())}

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


if __name__ == "__main__":
    main("toy", PRESETS, Regression, sys.argv[1:], default_preset="smoke")
