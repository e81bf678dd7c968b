"""The Mosaic TPU flash kernel, in TPU interpret mode on CPU (compiled on a TPU).

The GPU kernel's suite (test_flash_triton's checks) run against this kernel,
plus a comparison with jax's splash attention (interpret mode) for the masks
both support. There is no TPU here: Mosaic lowering needs a TPU device, so it is
not checked beyond interpret mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_with_inf
from test_flash_triton import CASES, CI_SHAPES, FlashTritonTest

import attn_jax
from attn_jax.kernels import flash_tpu

INTERPRET = jax.default_backend() != "tpu"
BLOCKS = flash_tpu.BlockSizes(8, 128) if INTERPRET else None


def _kernel(*args, **kw):
    return flash_tpu.flash_attention(*args, block_sizes=BLOCKS, interpret=INTERPRET, **kw)


@pytest.mark.parametrize("shape", ["t1", "t37_gqa", "hv_ne_h", "all_ones"])
@pytest.mark.parametrize("case", CASES)
def test_forward(shape, case):
    FlashTritonTest.check_forward(CI_SHAPES[shape], case, jnp.float32, kernel=_kernel)


@pytest.mark.parametrize("case", ["causal", "all"])
def test_grads(case):
    FlashTritonTest.check_grads(CI_SHAPES["t37_gqa"], case, jnp.float32, kernel=_kernel)


def test_bias_soft_cap_bf16():
    FlashTritonTest.check_forward(CI_SHAPES["t37_gqa"], "causal", jnp.float32, bias=True, soft_cap=3.0, kernel=_kernel)
    FlashTritonTest.check_grads(CI_SHAPES["t37_gqa"], "window", jnp.float32, bias=True, soft_cap=3.0, kernel=_kernel)
    FlashTritonTest.check_forward(CI_SHAPES["t37_gqa"], "causal", jnp.bfloat16, kernel=_kernel)


def test_fully_masked_rows_and_public_api(rng):
    q = jnp.asarray(rng.normal(size=(2, 19, 4, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 23, 2, 16)), jnp.float32)
    kw = dict(query_seq_lengths=jnp.array([7, 19]), key_value_seq_lengths=jnp.array([23, 0]), is_causal=True)
    out, lse = attn_jax.dot_product_attention(q, k, k, implementation="pallas_mosaic_tpu", return_residual=True, **kw)
    ref, ref_lse = attn_jax.dot_product_attention(q, k, k, implementation="xla", return_residual=True, **kw)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert_close_with_inf(lse, ref_lse, atol=2e-5)
    assert np.all(np.asarray(out)[1] == 0)

    def loss(impl, q_):
        return jnp.sum(attn_jax.dot_product_attention(q_, k, k, implementation=impl, **kw) ** 2)

    with jax.debug_nans(True):
        g = jax.grad(loss, argnums=1)("pallas_mosaic_tpu", q)
    np.testing.assert_allclose(g, jax.grad(loss, argnums=1)("xla", q), atol=1e-4)
    assert np.all(np.asarray(g)[1] == 0)


@pytest.mark.parametrize("mask_kind", ["causal", "full", "local"])
def test_matches_splash_attention(mask_kind, rng):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    t, n, h = 256, 2, 128
    one = {"causal": sm.CausalMask((t, t)), "full": sm.FullMask((t, t)),
           "local": sm.LocalMask((t, t), window_size=(32, 8), offset=0)}[mask_kind]
    splash = sk.make_splash_mha(sm.MultiHeadMask([one] * n), head_shards=1, q_seq_shards=1, interpret=True)
    q, k, v = (jnp.asarray(rng.normal(size=(n, t, h)), jnp.float32) for _ in range(3))
    expected = splash(q / np.sqrt(h), k, v)  # splash applies no scale
    kw = {"causal": dict(is_causal=True), "full": {}, "local": dict(window=(32, 8))}[mask_kind]
    bt = lambda x: jnp.swapaxes(x, 0, 1)[None]  # noqa: E731  [N, T, H] -> [1, T, N, H]
    out, _ = _kernel(bt(q), bt(k), bt(v), **kw)
    np.testing.assert_allclose(jnp.swapaxes(out[0], 0, 1), expected, atol=2e-5, rtol=1e-5)


def test_block_sizes_follow_tpu_tiling():
    with pytest.raises(ValueError, match="multiple of 8"):
        flash_tpu.BlockSizes(block_q=12)
    with pytest.raises(ValueError, match="multiple of 128"):
        flash_tpu.BlockSizes(block_k=64)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["t130_mqa_h80", "t37_gqa"])
@pytest.mark.parametrize("case", CASES)
def test_full_product(shape, case):
    FlashTritonTest.check_forward(CI_SHAPES[shape], case, jnp.float32, bias=case == "causal", kernel=_kernel)
    FlashTritonTest.check_grads(CI_SHAPES[shape], case, jnp.float32, bias=case == "causal",
                                soft_cap=5.0 if case == "window" else None, kernel=_kernel)
    FlashTritonTest.check_grads(CI_SHAPES[shape], case, jnp.bfloat16, kernel=_kernel)


TPU_LOWERING_CASES = {
    # name: (query [B, T, N, H], kv heads, value head dim, dtype, what masks)
    "none_f32": ((1, 128, 2, 128), 2, 128, jnp.float32, "none"),
    "causal_gqa_bf16": ((2, 200, 4, 128), 2, 128, jnp.bfloat16, "causal"),
    "window_mqa_h64": ((1, 130, 4, 64), 1, 64, jnp.bfloat16, "window"),
    "all_masks_bias_softcap": ((2, 200, 4, 128), 2, 128, jnp.bfloat16, "all"),
    "hv_ne_h": ((1, 96, 2, 128), 2, 64, jnp.float32, "lengths"),
}


@pytest.mark.parametrize("case", list(TPU_LOWERING_CASES))
def test_lowers_for_a_tpu(case):
    """Mosaic TPU lowering on a CPU host (an abstract TPU v5e): one kernel forward, dK/dV + dQ (+ dS) backward."""
    from attn_jax.kernels.lowering import export_for

    qs, kh, hv, dtype, masks = TPU_LOWERING_CASES[case]
    b, t, n, h = qs
    s = 300
    spec = jax.ShapeDtypeStruct
    args = [spec(qs, dtype), spec((b, s, kh, h), dtype), spec((b, s, kh, hv), dtype)]
    extra = dict(none={}, causal=dict(is_causal=True), window=dict(window=(64, 16)),
                 all=dict(is_causal=True, window=(64, 0), logits_soft_cap=30.0), lengths={})[masks]
    if masks == "all":
        args += [spec((1, n, t, s), jnp.float32), spec((b, 1, t, s), jnp.bool_), spec((b,), jnp.int32),
                 spec((b, t), jnp.int32), spec((b, s), jnp.int32)]
    elif masks == "lengths":
        args += [spec((b,), jnp.int32), spec((b,), jnp.int32)]

    def f(q, k, v, *rest):
        if masks == "all":
            bias, mask, lens, sq, sk = rest
            return flash_tpu.flash_attention(q, k, v, bias, mask, key_value_seq_lengths=lens, q_segment_ids=sq,
                                             kv_segment_ids=sk, **extra)
        if masks == "lengths":
            return flash_tpu.flash_attention(q, k, v, query_seq_lengths=rest[0], key_value_seq_lengths=rest[1])
        return flash_tpu.flash_attention(q, k, v, **extra)

    def loss(*a):
        out, lse = f(*a)
        return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

    argnums = (0, 1, 2, 3) if masks == "all" else (0, 1, 2)
    fwd = export_for("tpu", f, *args).mlir_module()
    bwd = export_for("tpu", jax.grad(loss, argnums=argnums), *args).mlir_module()
    assert fwd.count("tpu_custom_call") == 1
    assert bwd.count("tpu_custom_call") == (4 if masks == "all" else 3)  # fwd + dK/dV + dQ (+ dS for the bias)
