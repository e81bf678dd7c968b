"""Drop-in use: jax.nn's habits (scale, unbatched inputs, precision), shape-polymorphic export, flax's attention_fn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx
from jax import export

import attn_jax
from attn_jax.nn import flax_attention_fn
from tests.conftest import make_qkv

ALL = ("xla", "chunked", "pallas_triton", "pallas_mosaic_tpu")


# --- jax.nn habits ------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ALL)
def test_scale_as_numpy_jnp_or_traced_matches_jax_nn(rng, impl):
    q, k, v = make_qkv(rng, 2, 9, 11, 4, 2, 8)
    ref = jax.nn.dot_product_attention(q, k, v, scale=0.3)
    for scale in (np.float32(0.3), jnp.asarray(0.3), np.asarray(0.3)):
        out = attn_jax.dot_product_attention(q, k, v, scale=scale, implementation=impl)
        np.testing.assert_allclose(out, ref, atol=1e-6)
    traced = jax.jit(lambda s: attn_jax.dot_product_attention(q, k, v, scale=s, implementation=impl))(0.3)
    np.testing.assert_allclose(traced, ref, atol=1e-6)
    # the gradient reaches a learnable (traced) scale, as through jax.nn
    g = jax.grad(lambda s: jnp.sum(jnp.sin(attn_jax.dot_product_attention(q, k, v, scale=s, implementation=impl))))
    g_ref = jax.grad(lambda s: jnp.sum(jnp.sin(jax.nn.dot_product_attention(q, k, v, scale=s))))
    np.testing.assert_allclose(g(0.3), g_ref(0.3), rtol=1e-4)


def test_scale_of_one_over_sqrt_d_written_with_jnp(rng):
    q, k, v = make_qkv(rng, 1, 5, 5, 2, 2, 16)
    out = attn_jax.dot_product_attention(q, k, v, scale=1 / jnp.sqrt(16.0))
    np.testing.assert_allclose(out, attn_jax.dot_product_attention(q, k, v), atol=1e-6)


@pytest.mark.parametrize(
    "scale, error", [(jnp.ones(2), ValueError), ("0.5", TypeError), (jnp.asarray(1 + 1j), TypeError)])
def test_bad_scale_still_raises(rng, scale, error):
    q, k, v = make_qkv(rng, 1, 5, 5, 2, 2, 8)
    with pytest.raises(error, match="scale"):
        attn_jax.dot_product_attention(q, k, v, scale=scale)


@pytest.mark.parametrize("impl", ALL)
def test_unbatched_inputs_take_a_4d_bias_and_mask_of_leading_size_one(rng, impl):
    q, k, v = (x[0] for x in make_qkv(rng, 1, 7, 9, 4, 2, 8))  # [T, N, H]
    bias = rng.normal(size=(1, 4, 7, 9)).astype(np.float32)
    mask = rng.random((1, 1, 7, 9)) > 0.2
    mask[..., 0] = True
    # jax.nn wants equal head counts: repeat K/V for its reference
    ref = jax.nn.dot_product_attention(q, np.repeat(k, 2, 1), np.repeat(v, 2, 1), bias, mask)
    out = attn_jax.dot_product_attention(q, k, v, bias, mask, implementation=impl)
    assert out.shape == (7, 4, 8)
    np.testing.assert_allclose(out, ref, atol=2e-6)
    with pytest.raises(ValueError, match="bias"):
        attn_jax.dot_product_attention(q, k, v, np.zeros((2, 4, 7, 9), np.float32))


@pytest.mark.parametrize("impl", ALL)
def test_precision_is_accepted_by_every_implementation(rng, impl):
    q, k, v = make_qkv(rng, 1, 6, 6, 2, 2, 8)
    ref = attn_jax.dot_product_attention(q, k, v, implementation="xla")
    for precision in (None, "highest", jax.lax.Precision.HIGHEST, (jax.lax.Precision.DEFAULT,) * 2):
        out = attn_jax.dot_product_attention(q, k, v, precision=precision, implementation=impl)
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_precision_reaches_the_matmuls():
    """bf16_3x-style algorithms change the float32 result a little; DEFAULT and HIGHEST agree on CPU."""
    q = jnp.linspace(-1, 1, 2 * 4 * 8).reshape(1, 4, 2, 8)
    jaxpr = jax.make_jaxpr(lambda q: attn_jax.dot_product_attention(q, q, q, precision="highest",
                                                                    implementation="chunked"))(q)
    assert "HIGHEST" in str(jaxpr)
    jaxpr = jax.make_jaxpr(lambda q: attn_jax.dot_product_attention(q, q, q, precision="highest"))(q)
    assert "HIGHEST" in str(jaxpr)


def test_bad_precision_raises_naming_it(rng):
    q, k, v = make_qkv(rng, 1, 4, 4, 1, 1, 8)
    with pytest.raises(ValueError, match="precision"):
        attn_jax.dot_product_attention(q, k, v, precision="very-high")


# --- shape-polymorphic export -------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["xla", "chunked", None])
def test_export_with_symbolic_batch_and_sequence(rng, impl):
    b, s = export.symbolic_shape("b, s")
    qs = jax.ShapeDtypeStruct((b, s, 4, 8), jnp.float32)
    ks = jax.ShapeDtypeStruct((b, s, 2, 8), jnp.float32)
    bias = jax.ShapeDtypeStruct((b, 4, s, s), jnp.float32)
    mask = jax.ShapeDtypeStruct((b, 1, s, s), jnp.bool_)

    def f(q, k, v, bias, mask):
        return attn_jax.dot_product_attention(q, k, v, bias, mask, is_causal=True, implementation=impl)

    exported = export.export(jax.jit(f))(qs, ks, ks, bias, mask)
    for bn, t in ((2, 5), (1, 1), (3, 150)):  # 150 > the symbolic chunk: several chunks and padding
        q, k, v = make_qkv(rng, bn, t, t, 4, 2, 8)
        bb = rng.normal(size=(bn, 4, t, t)).astype(np.float32)
        mm = rng.random((bn, 1, t, t)) > 0.3
        np.testing.assert_allclose(exported.call(q, k, v, bb, mm), jax.jit(f)(q, k, v, bb, mm), atol=1e-6)


def test_symbolic_shapes_pick_a_static_implementation():
    b, s = export.symbolic_shape("b, s")
    qs = jax.ShapeDtypeStruct((b, s, 2, 8), jnp.float32)
    from attn_jax.attention.dispatch import implementation_for

    names = []
    jax.eval_shape(lambda q: names.append(implementation_for(None, q, q, q)) or q, qs)
    assert names == ["chunked"]
    with pytest.raises(attn_jax.UnsupportedError, match="concrete shapes"):
        jax.eval_shape(lambda q: attn_jax.dot_product_attention(q, q, q, implementation="pallas_triton"), qs)


def test_export_of_the_gradient_with_symbolic_sequence(rng):
    (s,) = export.symbolic_shape("s")
    qs = jax.ShapeDtypeStruct((1, s, 2, 8), jnp.float32)

    def loss(q):
        return jnp.sum(attn_jax.dot_product_attention(q, q, q, is_causal=True, implementation="chunked") ** 2)

    exported = export.export(jax.jit(jax.grad(loss)))(qs)
    q = rng.normal(size=(1, 20, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(exported.call(q), jax.grad(loss)(q), atol=1e-5)


# --- flax attention_fn --------------------------------------------------------------------------


def _nnx_pair(impl, **kw):
    ours = nnx.MultiHeadAttention(num_heads=4, in_features=16, attention_fn=flax_attention_fn(impl),
                                  rngs=nnx.Rngs(0), **kw)
    theirs = nnx.MultiHeadAttention(num_heads=4, in_features=16, rngs=nnx.Rngs(0), **kw)
    return ours, theirs


@pytest.mark.parametrize("impl", [None, "chunked", "pallas_triton"])
def test_nnx_multi_head_attention_equals_flax(impl):
    x = jax.random.normal(jax.random.key(0), (2, 7, 16))
    ours, theirs = _nnx_pair(impl, decode=False)
    causal = nnx.make_causal_mask(jnp.ones((2, 7)))  # float32 1/0
    valid = jnp.arange(7)[None] < jnp.array([[7], [4]])
    pad = nnx.make_attention_mask(valid, valid)
    pad = pad.astype(bool)
    pad = (pad | ~jnp.any(pad, axis=-1, keepdims=True)).astype(jnp.float32)  # no empty rows (flax would average)
    for mask in (None, causal, pad, causal.astype(jnp.int32)):
        np.testing.assert_allclose(ours(x, mask=mask), theirs(x, mask=mask), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ours(x, is_causal=True), theirs(x, is_causal=True), atol=1e-5, rtol=1e-5)


def test_nnx_decode_step_by_step_equals_flax():
    x = jax.random.normal(jax.random.key(1), (2, 6, 16))
    ours, theirs = _nnx_pair(None, decode=True)
    ours.init_cache((2, 6, 16))
    theirs.init_cache((2, 6, 16))
    for t in range(6):
        np.testing.assert_allclose(ours(x[:, t : t + 1]), theirs(x[:, t : t + 1]), atol=1e-5, rtol=1e-5)


def test_nnx_applies_attention_dropout_when_asked():
    x = jax.random.normal(jax.random.key(2), (2, 7, 16))
    ours, _ = _nnx_pair(None, decode=False, dropout_rate=0.5)
    det = ours(x, deterministic=True)
    a = ours(x, deterministic=False, rngs=nnx.Rngs(dropout=3))
    b = ours(x, deterministic=False, rngs=nnx.Rngs(dropout=3))
    c = ours(x, deterministic=False, rngs=nnx.Rngs(dropout=4))
    assert np.max(np.abs(a - det)) > 1e-2
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.max(np.abs(a - c)) > 1e-2


@pytest.mark.parametrize("broadcast", [True, False])
def test_broadcast_dropout_as_flax_means_it(broadcast):
    """One [T, S] mask for every batch element (and head) with broadcast_dropout, independent ones without."""
    x = jnp.tile(jax.random.normal(jax.random.key(5), (1, 7, 16)), (3, 1, 1))
    ours, _ = _nnx_pair(None, decode=False, dropout_rate=0.5, broadcast_dropout=broadcast)
    out = np.asarray(ours(x, deterministic=False, rngs=nnx.Rngs(dropout=0)))
    same = [np.allclose(out[i], out[0], atol=1e-6) for i in (1, 2)]
    assert same == [broadcast, broadcast]


def test_linen_equals_flax_and_applies_dropout():
    x = jax.random.normal(jax.random.key(3), (2, 5, 16))
    kw = dict(num_heads=4, qkv_features=16, dropout_rate=0.3)
    ours = linen.MultiHeadDotProductAttention(attention_fn=flax_attention_fn(), **kw)
    theirs = linen.MultiHeadDotProductAttention(**kw)
    params = theirs.init(jax.random.key(1), x, x, deterministic=True)
    mask = linen.make_causal_mask(jnp.ones((2, 5)))
    for m in (None, mask):
        np.testing.assert_allclose(ours.apply(params, x, x, mask=m, deterministic=True),
                                   theirs.apply(params, x, x, mask=m, deterministic=True), atol=1e-5, rtol=1e-5)
    det = ours.apply(params, x, x, deterministic=True)
    dropped = ours.apply(params, x, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert np.max(np.abs(dropped - det)) > 1e-2  # linen filters keywords by signature: ours names them all


def test_sow_weights_sows_flax_s_attention_weights():
    x = jax.random.normal(jax.random.key(4), (2, 5, 16))
    ours, theirs = _nnx_pair(None, decode=False)
    mask = nnx.make_causal_mask(jnp.ones((2, 5)))
    ours(x, mask=mask, sow_weights=True)
    theirs(x, mask=mask, sow_weights=True)
    w_ours, w_theirs = ours.attention_weights.get_value()[0], theirs.attention_weights.get_value()[0]
    assert w_ours.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(w_ours, w_theirs, atol=1e-6)


def test_dtype_is_the_computation_dtype():
    x = jax.random.normal(jax.random.key(0), (1, 4, 2, 8))
    fn = flax_attention_fn()
    assert fn(x, x, x, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    assert fn(x.astype(jnp.bfloat16), x, x).dtype == jnp.float32  # promoted, as flax does


def test_options_apply_to_every_call_and_bad_ones_raise():
    x = jax.random.normal(jax.random.key(0), (1, 6, 2, 8))
    fn = flax_attention_fn("chunked", local_window_size=(1, 0), logits_soft_cap=5.0)
    np.testing.assert_allclose(
        fn(x, x, x), attn_jax.dot_product_attention(x, x, x, local_window_size=(1, 0), logits_soft_cap=5.0), atol=1e-6)
    with pytest.raises(TypeError, match="unknown option"):
        flax_attention_fn(windw=3)
    with pytest.raises(TypeError, match="every call"):
        flax_attention_fn(mask=None)
    with pytest.raises(attn_jax.UnsupportedError, match="einsum"):
        fn(x, x, x, qk_attn_weights_einsum=jnp.einsum)
    with pytest.raises(ValueError, match="dropout_rng"):
        fn(x, x, x, dropout_rate=0.1, deterministic=False)


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_decode_attention_takes_a_jnp_or_traced_scale(rng, impl):
    q = rng.normal(size=(2, 4, 8)).astype(np.float32)
    kc = rng.normal(size=(2, 16, 2, 8)).astype(np.float32)
    lengths = np.array([16, 9])
    ref = attn_jax.decode_attention(q, kc, kc, lengths, scale=0.3, implementation=impl)
    out = attn_jax.decode_attention(q, kc, kc, lengths, scale=jnp.asarray(0.3), implementation=impl)
    traced = jax.jit(lambda s: attn_jax.decode_attention(q, kc, kc, lengths, scale=s, implementation=impl))(0.3)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    np.testing.assert_allclose(traced, ref, atol=1e-6)
