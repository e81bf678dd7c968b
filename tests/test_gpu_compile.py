"""benchmarks.gpu_compile: the offline Triton compile check (runs only where the `triton` package is installed)."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")


def test_flash_kernels_compile_for_sm80_and_sm90_without_spills():
    from benchmarks import gpu_compile

    rows = gpu_compile.compile_rows(quick=True, families=("flash",))
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90"}
    assert {r["kernel"] for r in rows} == {"attn_jax_flash_fwd", "attn_jax_flash_dkv", "attn_jax_flash_dq",
                                          "attn_jax_flash_ds"}
    for r in rows:
        assert r["registers"] is not None and r["spill_bytes"] == 0, r
        assert 0 < r["smem_bytes"] <= r["smem_limit_bytes"], r
