"""One process of tests/test_distributed.py: ``python tests/mp_worker.py OUT MESH [COORDINATOR N ID]``.

Trains the LM of tests/mesh_worker.py for 3 steps on MESH over all processes' devices and prints one JSON line
(the eval loss and a checksum of the parameters, which every process computes from the global arrays)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attn_jax.train import distributed  # noqa: E402


def main(out: str, mesh: str, coordinator: str | None = None, n: str | None = None, pid: str | None = None):
    distributed.initialize(coordinator, None if n is None else int(n), None if pid is None else int(pid))
    import jax
    import jax.numpy as jnp
    from mesh_worker import LMTask

    from attn_jax.sharding import make_mesh
    from attn_jax.train import TrainConfig, train

    cfg = TrainConfig(steps=3, learning_rate=1e-2, log_every=1, checkpoint_every=2, progress=False)
    summary, params = train(LMTask(), cfg, Path(out), mesh=make_mesh(mesh))
    checksum = jax.jit(lambda p: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(p)),
                       out_shardings=None)(params)
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "loss": summary["eval"]["loss"],
                      "checksum": float(checksum)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
