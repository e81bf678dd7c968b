"""Ring attention over 8 fake CPU devices equals single-device attention, forward and backward, over the
contract's cases; the dispatch serves it under a ``seq`` mesh; the LM trains on it; memory is O(T/P)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax import UnsupportedError
from attn_jax.attention.ring import _ring_shifts, _runs, ring_attention, unzigzag, zigzag

ROOT = Path(__file__).resolve().parents[1]


def test_zigzag_layout_and_inverse():
    x = jnp.arange(16)[None]
    z = zigzag(x, 4)
    assert z[0].tolist() == [0, 1, 14, 15, 2, 3, 12, 13, 4, 5, 10, 11, 6, 7, 8, 9]
    np.testing.assert_array_equal(unzigzag(z, 4), x)


def test_a_window_narrower_than_the_ring_skips_the_blocks_no_query_sees():
    # 8 devices of 4 rows, window (5, 2): two blocks behind, one ahead; causal: every block behind
    assert _ring_shifts(8, "contiguous", (5, 2), 4, False) == (0, 1, 2, 7)
    assert _ring_shifts(8, "contiguous", (3, 0), 4, True) == (0, 1)
    assert _ring_shifts(8, "contiguous", None, 4, True) == tuple(range(8))
    assert _ring_shifts(8, "zigzag", (3, 0), 4, True) == tuple(range(8))  # zigzag: positions decide, all visit
    assert _runs((0, 1, 2, 7)) == [(0, 3), (7, 1)]


def _worker(tmp_path, mode: str) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "ring_worker.py"), str(tmp_path), mode], env=env,
                          capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(r: dict, cases: set[str]) -> None:
    assert {name.rsplit(" (", 1)[0] for name in r["errors"]} == cases
    for name, d in r["errors"].items():
        assert d["forward"] < 1e-5 and d["residual"] < 1e-5 and d["backward"] < 1e-4, (name, d)
        assert d["same_empty_rows"], name
    assert any(name.endswith("(zigzag)") for name in r["errors"]) and any(
        name.endswith("(dispatch)") for name in r["errors"])
    # the one dispatch: ring under a seq mesh, with the reason it declines otherwise
    d = r["dispatch"]
    assert "needs an active mesh" in d["no_mesh"] and "no attention dropout" in d["dropout"]
    assert d["auto_under_seq_mesh"] == "ring" and d["auto_indivisible"] != "ring" and d["auto_without_seq"] != "ring"
    # three Adam steps of the GQA/RoPE LM under data=2,seq=4 (each layer's attention on the ring) = one device
    assert r["lm"]["ring_chosen"] >= 2 and r["lm"]["max_diff"] < 1e-4, r["lm"]
    # per-device memory O(T/P): doubling T at most doubles the compiled temporaries (plus a little), for ring
    # attention alone and for the LM's gradient step (dense [T, S] logits would quadruple them)
    for key in ("temp_bytes", "lm_temp_bytes"):
        mem = [b for _, b in sorted((int(n), b) for n, b in r[key].items())]
        assert all(b / a < 2.3 for a, b in zip(mem, mem[1:])), (key, r[key])


def test_ring_attention_serves_the_contract_the_dispatch_and_the_lm_on_8_devices(tmp_path):
    _check(_worker(tmp_path, "fast"), {"packed causal+bias+lengths", "window+mask+lengths+soft-cap"})


@pytest.mark.slow
def test_ring_attention_equals_xla_on_every_contract_case(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from ring_worker import cases

    _check(_worker(tmp_path, "full"), set(cases(None)))


def test_ring_attention_errors():
    q = jnp.ones((1, 4, 3, 8))
    with pytest.raises(ValueError, match="multiple of key heads"):
        ring_attention(q, jnp.ones((1, 4, 2, 8)), jnp.ones((1, 4, 2, 8)), axis_name="seq")
    with pytest.raises(ValueError, match="unknown layout"):
        ring_attention(q, jnp.ones((1, 4, 3, 8)), jnp.ones((1, 4, 3, 8)), axis_name="seq", layout="striped")
    with pytest.raises(ValueError, match="block_size must be positive"):
        ring_attention(q, jnp.ones((1, 4, 3, 8)), jnp.ones((1, 4, 3, 8)), axis_name="seq", block_size=0)
    with pytest.raises(UnsupportedError, match="dropout"):
        ring_attention(q, q, q, axis_name="seq", dropout_rate=0.1)
    with pytest.raises(ValueError, match="go together"):
        ring_attention(q, q, q, axis_name="seq", q_segment_ids=jnp.zeros((1, 4), jnp.int32))
