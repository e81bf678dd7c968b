"""decode_attention: contiguous and paged caches, xla and the split-KV Pallas kernel, vs float64 numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import np_attention

import attn_jax
from attn_jax.kernels.decode_triton import decode_attention as kernel_decode

IMPLS = ["xla", "pallas"]


def _np_decode(q, k, v, lens, softcap=None):
    out, _ = np_attention(q[:, None], k, v, kv_len=lens, softcap=softcap)
    return out[:, 0]


def _paged(rng, k, v, page):
    """Scatter a contiguous cache into a shuffled pool of pages; returns pool and page table."""
    b, s = k.shape[:2]
    npg = -(-s // page)
    k = np.pad(k, ((0, 0), (0, npg * page - s), (0, 0), (0, 0)))
    v = np.pad(v, ((0, 0), (0, npg * page - s), (0, 0), (0, 0)))
    perm = rng.permutation(b * npg + 3)  # a few unused pages in the pool
    pool_k = rng.normal(size=(b * npg + 3, page) + k.shape[2:]).astype(k.dtype)
    pool_v = rng.normal(size=(b * npg + 3, page) + v.shape[2:]).astype(v.dtype)
    table = perm[: b * npg].reshape(b, npg)
    for bi in range(b):
        for i in range(npg):
            pool_k[table[bi, i]] = k[bi, i * page:(i + 1) * page]
            pool_v[table[bi, i]] = v[bi, i * page:(i + 1) * page]
    return pool_k, pool_v, table


SHAPES = {  # (B, S, N, K, H, Hv)
    "gqa_h80": (3, 300, 8, 2, 80, 80),
    "mqa_hv": (2, 37, 4, 1, 32, 48),
    "mha_s1": (2, 1, 4, 4, 16, 16),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("paged", [False, True])
def test_matches_float64_reference(impl, shape, paged, rng):
    b, s, n, kh, h, hv = SHAPES[shape]
    q = rng.normal(size=(b, n, h)).astype(np.float32)
    k = rng.normal(size=(b, s, kh, h)).astype(np.float32)
    v = rng.normal(size=(b, s, kh, hv)).astype(np.float32)
    lens = rng.integers(1, s + 1, size=b)
    lens[-1] = 0 if b > 2 else lens[-1]
    ref = _np_decode(q, k, v, lens, softcap=7.0)
    kw = dict(logits_soft_cap=7.0, implementation=impl)
    if paged:
        pool_k, pool_v, table = _paged(rng, k, v, 16)
        out = attn_jax.decode_attention(q, pool_k, pool_v, jnp.asarray(lens), page_table=jnp.asarray(table), **kw)
    else:
        out = attn_jax.decode_attention(q, k, v, jnp.asarray(lens), **kw)
    assert out.shape == (b, n, hv) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
    if b > 2:
        assert np.all(np.asarray(out)[-1] == 0)  # zero length -> zeros


@pytest.mark.parametrize("splits", [1, 3, 16])
def test_kernel_split_counts_agree(splits, rng):
    q = jnp.asarray(rng.normal(size=(2, 4, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 200, 2, 16)), jnp.float32)
    lens = jnp.array([200, 70])
    out = kernel_decode(q, k, k, lens, num_splits=splits, block=16, interpret=jax.default_backend() != "gpu")
    ref = attn_jax.decode_attention(q, k, k, lens, implementation="xla")
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_bfloat16(rng):
    q, k = (jnp.asarray(rng.normal(size=sh), jnp.bfloat16) for sh in [(2, 8, 64), (2, 100, 2, 64)])
    lens = jnp.array([100, 40])
    out = attn_jax.decode_attention(q, k, k, lens, implementation="pallas")
    ref = attn_jax.decode_attention(q, k, k, lens, implementation="xla")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=2e-2, rtol=2e-2)


def test_errors():
    q, k = jnp.zeros((2, 4, 8)), jnp.zeros((2, 10, 2, 8))
    lens = jnp.array([3, 4])
    with pytest.raises(ValueError, match=r"query must be \[B, N, H\]"):
        attn_jax.decode_attention(q[0], k, k, lens)
    with pytest.raises(ValueError, match="head_dim differ"):
        attn_jax.decode_attention(jnp.zeros((2, 4, 16)), k, k, lens)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        attn_jax.decode_attention(jnp.zeros((2, 3, 8)), k, k, lens)
    with pytest.raises(ValueError, match=r"\[B\]"):
        attn_jax.decode_attention(q, k, k, jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match="integer"):
        attn_jax.decode_attention(q, k, k, jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"lie in \[0, 10\]"):
        attn_jax.decode_attention(q, k, k, jnp.array([1, 11]))
    with pytest.raises(ValueError, match="page_table"):
        attn_jax.decode_attention(q, k, k, lens, page_table=jnp.zeros((3, 2), jnp.int32))
    with pytest.raises(ValueError, match="unknown implementation"):
        attn_jax.decode_attention(q, k, k, lens, implementation="flash")  # cudnn: known, declines
    with pytest.raises(attn_jax.UnsupportedError, match="page size"):
        pool = jnp.zeros((6, 10, 2, 8))
        attn_jax.decode_attention(q, pool, pool, lens, page_table=jnp.zeros((2, 3), jnp.int32), implementation="pallas")


def test_lowers_to_triton_ir_for_cuda():
    from attn_jax.kernels.lowering import export_for

    spec = jax.ShapeDtypeStruct
    contiguous = export_for("cuda", lambda q, k, v, l: kernel_decode(q, k, v, l),
                            spec((4, 8, 128), jnp.bfloat16), spec((4, 4096, 2, 128), jnp.bfloat16),
                            spec((4, 4096, 2, 128), jnp.bfloat16), spec((4,), jnp.int32))
    paged = export_for("cuda", lambda q, k, v, l, t: kernel_decode(q, k, v, l, t),
                       spec((4, 8, 80), jnp.float16), spec((64, 32, 8, 80), jnp.float16),
                       spec((64, 32, 8, 80), jnp.float16), spec((4,), jnp.int32), spec((4, 16), jnp.int32))
    for exp in (contiguous, paged):
        assert "__gpu$xla.gpu.triton" in exp.mlir_module()
