"""Multi-process start-up: ``jax.distributed.initialize`` from command-line flags or from the environment.

    python -m experiments.transformer --coordinator host0:1234 --num-processes 2 --process-id 0 --mesh data=8

Without flags, the environment decides, as ``jax.distributed.initialize()`` does: on SLURM, Open MPI, TPU pod
slices, or with ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` set, it initialises
from them; otherwise the run is a single process and nothing is initialised. Every process runs the same
script; each computes the same global batch and contributes its devices' shards
(:func:`attn_jax.train.loop.train`), and only process 0 writes files.
"""

from __future__ import annotations

import os

import jax

# variables whose presence means a cluster launcher (or the user) asks for a multi-process run
_ENVIRONMENT = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS")


def wanted(coordinator: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """Whether this run should be multi-process: any flag given, or a launcher's variable in the environment.
    A SLURM or MPI job of a single task stays a single process."""
    if coordinator or num_processes or process_id is not None:
        return True
    if os.environ.get("SLURM_NTASKS", "1") != "1" or os.environ.get("OMPI_COMM_WORLD_SIZE", "1") != "1":
        return True
    return any(os.environ.get(v) for v in _ENVIRONMENT if v not in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Start the distributed runtime when :func:`wanted`; returns whether it did. Call before any other jax use.

    On CPU the cross-process collectives are gloo's (set here; harmless on GPU and TPU)."""
    if not wanted(coordinator, num_processes, process_id):
        return False
    if (coordinator is None) != (num_processes is None) or (num_processes is not None and process_id is None):
        raise ValueError("give --coordinator, --num-processes and --process-id together (or none: the environment)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} is outside 0..{num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    return True
