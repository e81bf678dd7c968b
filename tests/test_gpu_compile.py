"""benchmarks.gpu_compile: the offline Triton compile check, its committed table, and the autotuner's use of it."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import pytest

from attn_jax.kernels import autotune
from benchmarks import gpu_compile

ROW_KEYS = {"kernel", "arch", "head_dim", "dtype", "blocks", "default_blocks", "registers", "spill_bytes",
            "smem_bytes", "smem_limit_bytes", "ok"}


def test_flash_kernels_compile_for_sm80_and_sm90_without_spills():
    pytest.importorskip("triton")
    rows = gpu_compile.compile_rows(quick=True, families=("flash",))
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90"}
    assert {r["kernel"] for r in rows} == {"attn_jax_flash_fwd", "attn_jax_flash_dkv", "attn_jax_flash_dq",
                                          "attn_jax_flash_ds"}
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["registers"] is not None and r["spill_bytes"] == 0, r
        assert 0 < r["smem_bytes"] <= r["smem_limit_bytes"], r


def test_the_committed_table_has_its_schema_and_every_default_row_is_clean():
    table = json.loads(gpu_compile.OUT.read_text())
    assert {"commit", "jax", "triton", "ptxas", "date"} <= set(table["provenance"])
    rows = table["rows"]
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90"}
    assert {r["family"] for r in rows} == {"flash", "additive", "decode"}
    assert {(r["head_dim"], r["dtype"]) for r in rows if r["family"] == "flash"} == {
        (h, d) for h in (64, 128) for d in ("bfloat16", "float32")}
    for r in rows:
        assert ROW_KEYS <= set(r), r
        if r["default_blocks"]:
            assert r["ok"] and r["spill_bytes"] == 0 and r["smem_bytes"] <= r["smem_limit_bytes"], r


def _table(tmp_path, failing_blocks, arch="sm_90"):
    row = dict(kernel="attn_jax_flash_fwd", family="flash", arch=arch, head_dim=64, dtype="bfloat16",
               blocks=dataclasses.asdict(failing_blocks), default_blocks=False, ok=False)
    path = tmp_path / "gpu_compile.json"
    path.write_text(json.dumps({"provenance": {}, "rows": [row, {**row, "ok": True, "blocks": {}}]}))
    return path


def test_the_autotuner_leaves_out_candidates_the_table_marks_failing_for_this_arch(tmp_path):
    every = autotune.default_candidates(64, jnp.bfloat16, "NVIDIA H200", arch=None)
    path = _table(tmp_path, every[3])
    kept = autotune.default_candidates(64, jnp.bfloat16, "NVIDIA H200", arch="sm_90", compile_table=path)
    assert kept == every[:3] + every[4:]
    # another arch, another head dim class, another dtype, no table: nothing is left out
    assert autotune.default_candidates(64, jnp.bfloat16, "NVIDIA H200", arch="sm_80", compile_table=path) == every
    assert len(autotune.default_candidates(128, jnp.bfloat16, "NVIDIA H200", arch="sm_90",
                                           compile_table=path)) == len(every)
    assert autotune.compile_failures("sm_90", 64, jnp.float32, path) == []
    assert autotune.compile_failures("sm_90", 64, jnp.bfloat16, tmp_path / "missing.json") == []
    assert autotune.compile_failures(None, 64, jnp.bfloat16, path) == []
    assert autotune.device_arch() is None  # this CPU has no NVIDIA arch
