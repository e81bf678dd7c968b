"""Shared experiment harness: configs with presets and overrides, the training loop, the CLI."""

from attn_jax.train.config import build, keys, override
from attn_jax.train.loop import Task, TrainConfig, add_to_summary, make_optimizer, train

__all__ = ["Task", "TrainConfig", "add_to_summary", "build", "keys", "make_optimizer", "override", "train"]
