"""Logical-axis sharding: the rules table, and sharded train steps on 8 fake CPU devices equal to one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import pytest
from jax.sharding import PartitionSpec as P

from attn_jax import sharding
from attn_jax.sharding import logical_spec, parse_mesh

ROOT = Path(__file__).resolve().parents[1]


def _mesh(**shape):
    return SimpleNamespace(shape={a: shape.get(a, 1) for a in sharding.MESH_AXES})


def test_parse_mesh_and_errors():
    assert parse_mesh("data=2,model=4") == {"data": 2, "model": 4}
    assert parse_mesh("") == {}
    for bad in ("dp=2", "data=x", "data=2,data=2", "model=0"):
        with pytest.raises(ValueError, match="mesh axis"):
            parse_mesh(bad)
    with pytest.raises(ValueError, match="needs 8 devices"):
        sharding.make_mesh("data=8", devices=jax.devices()[:1])


def test_logical_spec_follows_the_rules_and_divisibility():
    m = _mesh(data=2, fsdp=2, model=4)
    assert logical_spec(("embed", "heads", "head_dim"), (64, 8, 16), m) == P("fsdp", "model", None)
    assert logical_spec(("embed", "kv_heads", "head_dim"), (64, 2, 16), m) == P("fsdp", None, None)  # 2 % 4
    assert logical_spec(("batch", "seq", "embed"), (8, 10, 64), m, sharding.ACTIVATION_RULES) == P(
        ("data", "fsdp"), None, None)
    assert logical_spec(("batch", "seq"), (2, 10), m, sharding.ACTIVATION_RULES) == P("data", None)  # 2 % 4
    assert logical_spec(("vocab", "embed"), (30, 64), m) == P(None, "fsdp")
    assert logical_spec(("mlp", "mlp"), (8, 8), m) == P("model", None)  # a mesh axis once per array
    assert logical_spec(None, (3,), m) == P()
    with pytest.raises(ValueError, match="do not match"):
        logical_spec(("embed",), (3, 4), m)


def test_rules_overrides():
    params, acts = sharding.parse_rules("heads=none,batch=data+seq, mlp=fsdp")
    assert params["heads"] is None and params["batch"] == ("data", "seq") and params["mlp"] == "fsdp"
    assert params["embed"] == "fsdp" and acts["embed"] is None  # defaults kept; activations keep embed whole
    assert sharding.parse_rules("") == (sharding.DEFAULT_RULES, sharding.ACTIVATION_RULES)
    for bad in ("heads", "heads=tensor", "=model"):
        with pytest.raises(ValueError, match="bad sharding rule"):
            sharding.parse_rules(bad)


def test_constrain_is_the_identity_without_a_mesh():
    x = jax.numpy.ones((2, 3))
    assert sharding.constrain(x, ("batch", "embed")) is x


def test_sharded_train_steps_equal_one_device_and_checkpoints_restore_onto_another_mesh(tmp_path):
    """A 2-layer GQA/RoPE LM, 3 Adam steps with dropout: data=8, data=2 x model=4, fsdp=8 and
    data=2 x fsdp=2 x model=2 give the single-device parameters to float32 tolerance; the data=8 run's orbax
    checkpoint restores onto data=2 x model=4 with that mesh's shardings."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mesh_worker.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["devices"] == 8
    for mesh in ("data=8", "data=2,model=4", "fsdp=8", "data=2,fsdp=2,model=2"):
        assert r[mesh]["max_diff"] < 1e-5, (mesh, r[mesh])
        assert abs(r[mesh]["loss"] - r["single"]["loss"]) < 1e-5
    assert any("model" in s for s in r["data=2,model=4"]["sharded"])  # parameters really are split
    assert any("fsdp" in s for s in r["fsdp=8"]["sharded"])
    assert r["restored_max_diff"] == 0.0 and any("model" in s for s in r["restored_specs"])
    assert r["rules"]["max_diff"] < 1e-5 and not any("model" in s for s in r["rules"]["sharded"])
    assert "cannot be split 4 ways" in r["indivisible_batch"]  # batch 6 over data=2 x fsdp=2
