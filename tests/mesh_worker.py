"""Run in a subprocess with 8 fake CPU devices (XLA_FLAGS set by the caller): sharded train steps and checkpoint
restores for tests/test_sharding.py. Prints one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn.transformer import TransformerConfig, TransformerLM
from attn_jax.sharding import make_mesh
from attn_jax.train import TrainConfig, train

CFG = TransformerConfig(vocab_size=16, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64, decoder_layers=2,
                        dropout=0.1, positions="rope", norm="pre")


class LMTask:
    """Next-token prediction on random tokens: enough to exercise every parameter and dropout."""

    def __init__(self):
        self.graphdef = nnx.graphdef(TransformerLM(CFG, rngs=nnx.Rngs(0)))

    def init(self, rng):
        return nnx.state(TransformerLM(CFG, rngs=nnx.Rngs(params=rng)), nnx.Param)

    def batch(self, step):
        return {"tokens": np.random.default_rng(step).integers(0, 16, (16, 12)).astype(np.int32)}

    def loss(self, params, batch, rng):
        tokens = batch["tokens"]
        logits = nnx.merge(self.graphdef, params)(tokens[:, :-1], rng=rng)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])), {}

    def evaluate(self, params):
        return {"loss": float(self.loss(params, self.batch(10_000), None)[0])}


def flat(params) -> list[np.ndarray]:
    return [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(params)]


def main(out: str) -> None:
    cfg = TrainConfig(steps=3, learning_rate=1e-2, log_every=1, checkpoint_every=0, progress=False)
    base, kept = None, {}
    result = {"devices": jax.device_count()}
    for mesh in ("", "data=8", "data=2,model=4", "fsdp=8", "data=2,fsdp=2,model=2"):
        summary, params = train(LMTask(), cfg, Path(out) / (mesh or "single"), mesh=make_mesh(mesh) if mesh else None)
        kept[mesh] = leaves = flat(params)
        base = leaves if base is None else base
        result[mesh or "single"] = {
            "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(leaves, base, strict=True)),
            "loss": summary["eval"]["loss"],
            "sharded": sorted({str(getattr(x.sharding, "spec", "single")) for x in jax.tree.leaves(params)}),
        }
    # the rules table from the config: no tensor parallelism, the model axis replicates everything
    import dataclasses

    plain = dataclasses.replace(cfg, sharding_rules="heads=none,kv_heads=none,mlp=none,vocab=none")
    _, params = train(LMTask(), plain, Path(out) / "rules", mesh=make_mesh("data=2,model=4"))
    result["rules"] = {"max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(flat(params), base, strict=True)),
                       "sharded": sorted({str(x.sharding.spec) for x in jax.tree.leaves(params)})}
    # the data=8 run's checkpoint, restored onto another mesh (a finished run is restored, not retrained)
    _, restored = train(LMTask(), cfg, Path(out) / "data=8", mesh=make_mesh("data=2,model=4"))
    result["restored_max_diff"] = max(float(np.max(np.abs(a - b)))
                                      for a, b in zip(flat(restored), kept["data=8"], strict=True))
    result["restored_specs"] = sorted({str(x.sharding.spec) for x in jax.tree.leaves(restored)})
    from attn_jax.train.loop import _global_batch

    try:
        _global_batch({"x": np.zeros((6, 2))}, make_mesh("data=2,fsdp=2,model=2"))
        result["indivisible_batch"] = "accepted"
    except ValueError as err:
        result["indivisible_batch"] = str(err)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
