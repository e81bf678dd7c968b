"""Multi-process: 2 processes x 4 CPU devices on localhost train like 1 process x 8 (jax.distributed + gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from attn_jax.train import distributed

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "mp_worker.py")


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS")}
    return {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def _result(proc) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_of_four_devices_equal_one_process_of_eight(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, WORKER, str(tmp_path / "two"), "data=2,model=4", f"localhost:{port}",
                               "2", str(i)], env=_env(4), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    single = _result(subprocess.Popen([sys.executable, WORKER, str(tmp_path / "one"), "data=2,model=4"], env=_env(8),
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [_result(p) for p in procs]
    assert single["processes"] == 1 and single["devices"] == 8
    assert [r["process"] for r in results] == [0, 1] and all(r["processes"] == 2 and r["devices"] == 8
                                                            for r in results)
    for r in results:
        assert r["loss"] == pytest.approx(single["loss"], abs=1e-5)
        assert r["checksum"] == pytest.approx(single["checksum"], rel=1e-6)
    # process 0 alone wrote the run's files; the checkpoint holds every shard
    assert (tmp_path / "two" / "summary.json").exists() and (tmp_path / "two" / "checkpoints").is_dir()


def test_initialize_arguments(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.wanted(None, None, None) and not distributed.initialize()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not distributed.wanted(None, None, None)  # a one-task SLURM job stays one process
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.wanted(None, None, None)
    with pytest.raises(ValueError, match="together"):
        distributed.initialize("localhost:1", None, 0)
    with pytest.raises(ValueError, match="outside"):
        distributed.initialize("localhost:1", 2, 2)
