"""The fused additive-attention Pallas kernel: compiled on GPU, interpreted on CPU.

Forward and every gradient (qp, kp, values, v, and through the projections
W_q, W_k) against float64 references, on odd shapes, every mask and fully
masked rows. A CI subset; the full product is marked slow.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import np_additive

import attn_jax
from attn_jax.kernels.additive_triton import BlockSizes, additive_attention, additive_attention_reference

INTERPRET = jax.default_backend() != "gpu"
BLOCKS = BlockSizes(16, 16, 16) if INTERPRET else None


def _case(rng, b, t, s, a, dv, masks):
    qp, kp, val, w = (rng.normal(size=shape) * 0.5 for shape in [(b, t, a), (b, s, a), (b, s, dv), (a,)])
    kw, vis = {}, np.ones((b, t, s), bool)
    if "lengths" in masks:
        lens = rng.integers(1, s + 1, size=b)
        lens[-1] = 0 if b > 1 else lens[-1]  # the last example sees nothing
        kw["key_value_seq_lengths"] = lens
        vis &= np.arange(s)[None, None] < lens[:, None, None]
    if "causal" in masks:
        kw["is_causal"] = True
        vis &= (np.arange(s)[None, :] <= np.arange(t)[:, None])[None]
    mask = None
    if "mask" in masks:
        mask = rng.random((b, t, s)) > 0.3
        vis &= mask
    return (qp, kp, val, w), mask, kw, vis


def _np_from_projected(qp, kp, val, w, vis):
    """float64 reference on projected inputs (identity projections)."""
    a = qp.shape[-1]
    return np_additive(qp, kp, val, np.eye(a), np.eye(a), w, vis)


def check(shape, masks, seed=0, grads=True):
    b, t, s, a, dv = shape
    rng = np.random.default_rng(seed)
    arrs, mask, kw, vis = _case(rng, b, t, s, a, dv, masks)
    f32 = [jnp.asarray(x, jnp.float32) for x in arrs]
    jmask = None if mask is None else jnp.asarray(mask)
    jkw = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    out, lse = additive_attention(*f32, jmask, block_sizes=BLOCKS, interpret=INTERPRET, **jkw)
    ref_out, ref_lse, _ = _np_from_projected(*arrs, vis)
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(ref_lse))
    fin = np.isfinite(ref_lse)
    np.testing.assert_allclose(np.asarray(lse)[fin], ref_lse[fin], atol=2e-5, rtol=1e-5)
    if not grads:
        return
    wt = rng.normal(size=(b, t, dv))

    def loss(fn, *xs):
        o, l = fn(*xs, jmask, **jkw)
        return jnp.sum(o * wt) + jnp.sum(jnp.where(jnp.isfinite(l), l, 0.0))

    kernel = lambda *xs: loss(lambda *a, **k: additive_attention(*a, block_sizes=BLOCKS, interpret=INTERPRET, **k),  # noqa: E731
                              *xs)
    g = jax.grad(kernel, argnums=(0, 1, 2, 3))(*f32)
    with jax.enable_x64(True):  # float64 autodiff of the dense reference
        f64 = [jnp.asarray(x, jnp.float64) for x in arrs]
        g_ref = jax.grad(lambda *xs: loss(additive_attention_reference, *xs), argnums=(0, 1, 2, 3))(*f64)
        g_ref = [np.asarray(x) for x in g_ref]
    for name, x, r in zip(("qp", "kp", "value", "v"), g, g_ref):
        assert np.all(np.isfinite(x)), name
        np.testing.assert_allclose(x, r, atol=1e-4, rtol=1e-4, err_msg=f"d{name}")
    if "lengths" in masks and b > 1:  # the example that sees nothing: zero output, zero gradients
        assert np.all(np.asarray(out)[-1] == 0)
        assert np.all(np.asarray(g[0])[-1] == 0) and np.all(np.asarray(g[1])[-1] == 0)


CI = [
    ((2, 1, 37, 16, 5), ("lengths",)),
    ((2, 37, 1, 80, 7), ()),
    ((2, 37, 45, 80, 24), ("lengths", "causal", "mask")),
    ((1, 37, 37, 256, 16), ("causal",)),
    ((2, 45, 33, 16, 40), ("mask",)),
]


@pytest.mark.parametrize("shape, masks", CI, ids=[f"{s}-{'+'.join(m) or 'none'}" for s, m in CI])
def test_forward_and_grads(shape, masks):
    check(shape, masks)


def test_public_api_pallas_through_projections(rng):
    b, t, s, dq, dk, dv, a = 2, 19, 23, 6, 5, 7, 40
    q, k, val = (jnp.asarray(rng.normal(size=sh), jnp.float32) for sh in [(b, t, dq), (b, s, dk), (b, s, dv)])
    w_q, w_k, v = (jnp.asarray(rng.normal(size=sh), jnp.float32) for sh in [(dq, a), (dk, a), (a,)])
    lens = jnp.array([23, 9])
    mask = jnp.asarray(rng.random((b, t, s)) > 0.2)

    def loss(impl, *params):
        ctx, lse, wts = attn_jax.additive_attention(*params, implementation=impl, mask=mask, key_value_seq_lengths=lens,
                                                     return_residual=True, return_weights=True)
        return jnp.sum(ctx**2) + jnp.sum(lse) + jnp.sum(wts[..., :3]), (ctx, lse, wts)

    (l1, r1), g1 = jax.value_and_grad(loss, argnums=(1, 2, 3, 4, 5, 6), has_aux=True)("pallas", q, k, val, w_q, w_k, v)
    (l2, r2), g2 = jax.value_and_grad(loss, argnums=(1, 2, 3, 4, 5, 6), has_aux=True)("xla", q, k, val, w_q, w_k, v)
    for a_, b_ in zip(r1, r2):
        np.testing.assert_allclose(a_, b_, atol=3e-5, rtol=1e-5)
    for name, a_, b_ in zip(("q", "k", "value", "w_q", "w_k", "v"), g1, g2):
        np.testing.assert_allclose(a_, b_, atol=3e-4, rtol=1e-4, err_msg=name)


def test_lowers_to_triton_ir_for_cuda():
    """Forward and backward pass Pallas' Triton lowering (no GPU needed; PTX compilation is not checked)."""

    spec = jax.ShapeDtypeStruct
    args = [spec((2, 100, 80), jnp.float32), spec((2, 70, 80), jnp.float32), spec((2, 70, 24), jnp.float32),
            spec((80,), jnp.float32), spec((2, 100, 70), jnp.bool_), spec((2,), jnp.int32)]

    def f(qp, kp, v, w, m, lens):
        return additive_attention(qp, kp, v, w, m, key_value_seq_lengths=lens, is_causal=True)

    def loss(*a):
        out, lse = f(*a)
        return jnp.sum(out) + jnp.sum(lse)

    from attn_jax.kernels.lowering import export_for

    for fn in (f, jax.grad(loss, argnums=(0, 1, 2, 3))):
        text = export_for("cuda", fn, *args).mlir_module()
        assert "__gpu$xla.gpu.triton" in text


def test_block_sizes_validation():
    with pytest.raises(ValueError, match="block_a=24"):
        BlockSizes(block_a=24)


FULL = list(itertools.product(
    [(2, t, s, a, dv) for (t, s), a, dv in itertools.product([(1, 1), (1, 37), (37, 1), (37, 37), (300, 300),
                                                              (37, 300), (300, 37)], [16, 80, 256], [12])],
    [(), ("lengths",), ("causal",), ("mask",), ("lengths", "causal", "mask")],
))


@pytest.mark.slow
@pytest.mark.parametrize("shape, masks", FULL, ids=[f"{s}-{'+'.join(m) or 'none'}" for s, m in FULL])
def test_full_product(shape, masks):
    check(shape, masks)
