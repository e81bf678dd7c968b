"""Peer checks: flax's and jax's own attention tests, rerun with attn_jax in place of their attention.

Each test below is our rewrite of a test from another project. Where the peer
test checked one of its own functions against itself, ours runs the same setup
twice, once with the peer's attention and once with attn_jax's, and compares the
answers (float32: atol = rtol = 1e-5; bfloat16 / float16 at the peer's own
tolerances). Random inputs replace the peers' all-ones inputs where ones would
make every attention weight irrelevant (identical values at every position).
"chunked" runs with small chunks (see ``_small_chunks``) so short sequences span
several query and key chunks; "pallas_triton" (interpret mode on CPU) joins a
few small cases. Sources, by group (read at flax commit 18f8f311 and jax commit
cec06d11; run against the installed flax 0.12.x and jax):

flax, ``tests/nnx/nn/attention_test.py`` (github.com/google/flax), ``nnx.MultiHeadAttention``
against flax's default ``attention_fn`` with ``attention_fn=attn_jax.nn.flax_attention_fn(impl)``:

* ``TestMultiHeadAttention.test_basic`` -> ``test_nnx_basic`` (also xla / chunked / pallas_triton,
  and a deliberately wrong option that the check must catch).
* ``test_multihead_sow_attention_weights`` -> ``test_nnx_sow_attention_weights``.
* ``test_autoregressive_decode_with_x64`` -> ``test_nnx_autoregressive_decode_x64``.
* ``test_causal_mask_equivalence`` -> ``test_nnx_causal_mask_equivalence`` (padding mask + is_causal,
  5-D inputs) and ``test_nnx_module_is_causal_and_padding_mask`` (the same through the module).
* ``TestLinenConsistency.test_nnx_attention_equivalence`` (product over use_bias / dtype /
  param_dtype / precision / decode / normalize_qk) -> ``test_nnx_constructor_variants``, a
  representative subset of the product.
* ``TestKVFeatures.test_varying_num_features`` -> ``test_nnx_cross_attention_kv_features``.
* ``TestGQADotProductAttention`` (``test_gqa_shapes``, ``test_gqa_parity_with_jax``,
  ``test_gqa_invalid_heads``, ``test_gqa_multihead_attention``) -> ``test_nnx_gqa_*`` (the module
  test shrunk from 32 heads / 2048 features to 8 heads / 32 features, decoded step by step).
* ``TestDotProductAttentionValidation.test_invalid_shapes`` -> ``test_nnx_invalid_shapes``.
* dropout (no nnx test compares values): ``test_nnx_dropout_properties`` and
  ``test_dropout_mask_shared_across_batch_and_heads`` check what flax's dropout promises
  (differs from deterministic, fixed by the rng, ``broadcast_dropout`` shares one [T, S] mask
  over batch and heads), on flax's attention and ours alike.

flax, ``tests/linen/linen_attention_test.py``, ``AttentionTest``, ``linen.MultiHeadDotProductAttention``:

* ``test_multihead_self_attention`` -> ``test_linen_self_attention``.
* ``test_multihead_encoder_decoder_attention`` -> ``test_linen_multiple_batch_dims``.
* ``test_multihead_kv_args`` -> ``test_linen_kv_args`` (the inputs_k / inputs_v cross-attention part).
* ``test_multihead_self_attention_w_dropout``, ``..._explicit_dropout``, ``..._w_dropout_disabled``
  -> ``test_linen_dropout_rng_semantics``, ``test_linen_dropout_disabled``.
* ``test_causal_mask_1d`` -> ``test_linen_causal_mask_float`` (flax's float causal mask, and our
  ``is_causal`` option, against flax's attention under that mask).
* padding masks built with ``make_attention_mask`` -> ``test_linen_padding_mask`` (not a peer test
  of its own; the mask helper is exercised by flax's examples).
* ``test_decoding`` ((5,) over axis 1; (6, 5) over axis 2) -> ``test_linen_decoding``.
* ``test_autoregressive_receptive_field_1d`` -> ``test_linen_receptive_field``.
* ``test_multihead_sow_attention_weights`` -> ``test_linen_sow_attention_weights``.
* ``test_autoregressive_decode_with_x64`` -> ``test_linen_autoregressive_decode_x64``.
* ``test_mixed_precision_multihead_attention`` -> ``test_linen_mixed_precision_sown_weights``.
* ``test_dtype_infer`` (complex64) -> ``test_linen_complex_inputs_rejected``: attn_jax takes
  floating dtypes only and says so; flax's own attention computes in complex64.
* ``test_dot_product_attention_precision_and_einsum_override`` /
  ``..._specify_einsums_together`` -> ``test_linen_einsum_override_refused`` (our adapter's
  answer to an einsum override: a clear UnsupportedError).

jax, ``tests/nn_test.py`` (github.com/jax-ml/jax), ``NNFunctionsTest``, with
``attn_jax.dot_product_attention(..., implementation=impl)`` for impl in (xla, chunked) against
``jax.nn.dot_product_attention(..., implementation="xla")``, forward and gradients:

* ``testDotProductAttention`` (dtype x GQA groups x vmap, with and without the residual)
  -> ``test_jax_dot_product_attention``: four cases covering float32 / bfloat16 / float16, groups
  1 / 2 / 4 and vmap, at B=2, T=S=20, N=4, H=8 instead of T=S=128, H=32.
* ``testDotProductAttentionMask`` (bias / causal / padding / custom mask and their pairs,
  causal + sliding window) -> ``test_jax_mask_modes``, all eight modes, float32, T=S=32.
* ``testDotProductAttentionFloat64MaskDebugInfs`` -> ``test_jax_float64_mask_debug_infs``.
* ``testDotProductAttentionBiasGradient`` -> ``test_jax_bias_gradient`` (batch 4 float32 with
  vmap, batch 1 bfloat16; S=16 instead of 128).
* ``testDotProductAttention_localWindowSizeWithoutMask`` -> ``test_jax_local_window_without_mask``.
* plus our own extensions in the same style: ``test_jax_scale_and_precision_arguments`` (scale as a
  jnp / numpy scalar and traced, with its gradient; ``precision=``), ``test_jax_unbatched_with_4d_bias``,
  ``test_jax_causal_t_ne_s``.

Known differences accounted for:

* a query row that sees no key gives zeros in attn_jax (jax.nn and flax give the mean of the
  values): checked explicitly where a peer setup produces such rows.
* attn_jax's residual (logsumexp) is differentiable, jax.nn's is under stop_gradient: residual
  cotangents are checked against a differentiable logsumexp.
* in float64 jax.nn (and so flax's default nnx attention) runs its softmax in float32: float64
  peer comparisons use 1e-6, and attn_jax is also held to 1e-12 against conftest's numpy reference.
* jax.nn's float16 path asks for the F16_F16_F32 dot algorithm, which XLA:CPU refuses once
  compiled (eagerly jax.nn falls back): float16 references run eagerly or on upcast inputs.

The port found one real disagreement, since fixed: with ``force_fp32_for_softmax=True`` and a
bfloat16 module flax sows float32 ``attention_weights``, and ``flax_attention_fn`` sowed bfloat16
(``test_linen_mixed_precision_sown_weights[True]``).

Not ported, and why:

* nnx ``test_keep_rngs``: the module's rng attributes, not attention.
* linen ``test_mha_out_initializers``: parameter initialisers.
* linen ``test_multihead_mask_warning``: the deprecation of a positional mask in ``__call__``.
* linen ``test_attention_alias_equivalence`` / ``test_attention_alias_submodule``: the
  ``MultiHeadAttention`` alias and parameter naming.
* linen ``test_multihead_kv_args``: the deprecated ``inputs_kv`` warning and argument-combination
  errors (flax's argument handling; the cross-attention part is ported).
* linen ``test_causal_mask_1d``: the mask helper's own values (ported instead as a use of its mask).
* the einsum-conflict ValueErrors of ``linen.dot_product_attention`` itself (flax's own function).
* jax ``testScaledMatmul`` etc.: not attention; the cuDNN-only branches (``impl="cudnn"``,
  backend checks): no GPU in CI; attn_jax's "cudnn" is jax.nn's own path.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx
from flax.core import pop
from jax import lax

import attn_jax
from attn_jax.attention import chunked as _chunked
from attn_jax.errors import UnsupportedError
from attn_jax.nn import flax_attention_fn
from tests.conftest import np_attention

IMPLS = ("xla", "chunked")
IMPLS_WITH_TRITON = IMPLS + ("pallas_triton",)
F32 = dict(atol=1e-5, rtol=1e-5)
LOW = {jnp.bfloat16: dict(atol=1e-2, rtol=1e-2), jnp.float16: dict(atol=1e-2, rtol=1e-2)}
# Against jax.nn / flax in float64: jax.nn's softmax runs in float32 whatever the input dtype, so its
# float64 answers carry float32 rounding (attn_jax's are float64-exact; checked against numpy below).
X64_PEER = dict(atol=1e-6, rtol=1e-6)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """Small default chunks, so that "chunked" really chunks the short sequences used here."""
    monkeypatch.setattr(_chunked.ChunkSizes, "for_problem", classmethod(lambda cls, t, s, backend=None: cls(4, 8)))


def _np(x):
    return np.asarray(x).astype(np.float64)


def assert_close(actual, expected, atol=1e-5, rtol=1e-5):
    actual, expected = _np(actual), _np(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


def _normal(seed, shape, dtype=jnp.float32):
    """Inputs made with numpy (eager jax ops would each cost a compilation)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(dtype)


# Everything below runs under jit: eager execution compiles every primitive separately, several times
# slower on CPU. Compilation dominates this file's runtime, so these jits ask XLA:CPU for a cheap
# compile (no backend optimisation, the classic emitters instead of the fusion emitters: several times
# faster to compile these small programs; IEEE semantics either way, no fast-math). The default
# pipeline is what the rest of the suite runs. Equal module configurations share one compilation,
# so flax's reference is compiled once for all implementations.
def _supported_compile_options(options: dict) -> dict:
    """The options this jaxlib's XLA knows (jax 0.12 dropped ``xla_cpu_use_fusion_emitters``)."""
    kept = {}
    for name, value in options.items():
        try:
            jax.jit(lambda x: x + 1, compiler_options={**kept, name: value}).lower(1.0).compile()
        except Exception:  # noqa: BLE001 - "No such compile option": leave it out
            continue
        kept[name] = value
    return kept


_FAST_COMPILE = _supported_compile_options({"xla_backend_optimization_level": 0,
                                            "xla_llvm_disable_expensive_passes": True,
                                            "xla_cpu_use_fusion_emitters": False})


def jit(fun=None, **kw):
    if fun is None:
        return functools.partial(jit, **kw)
    return jax.jit(fun, compiler_options=_FAST_COMPILE, **kw)


@functools.cache
def ours_fn(impl, **options):
    """One attention_fn object per configuration, so that jitted modules using it share compilations."""
    return flax_attention_fn(impl, **options)


def _split(kwargs):
    """Keyword arguments: (traced arrays / key dicts, static rest as a hashable tuple)."""
    traced = {k: v for k, v in kwargs.items() if isinstance(v, (jax.Array, np.ndarray, dict))}
    return traced, tuple(sorted((k, v) for k, v in kwargs.items() if k not in traced))


@jit(static_argnums=(0, 3, 4, 6))
def _nnx_jitted(graphdef, state, args, static, capture, traced, rngs_def, rngs_state):
    m = nnx.merge(graphdef, state)
    kw = dict(traced, **dict(static))
    if rngs_def is not None:
        kw["rngs"] = nnx.merge(rngs_def, rngs_state)
    if capture:
        y, inter = nnx.capture(m, nnx.Intermediate)(*args, **kw)
    else:
        y, inter = m(*args, **kw), None
    return y, inter, nnx.state(m)


def _run(m, args, kwargs, capture):
    rngs = kwargs.pop("rngs", None)
    rngs_def, rngs_state = nnx.split(rngs) if rngs is not None else (None, None)
    traced, static = _split(kwargs)
    graphdef, state = nnx.split(m)
    y, inter, new_state = _nnx_jitted(graphdef, state, args, static, capture, traced, rngs_def, rngs_state)
    nnx.update(m, new_state)  # e.g. the decode cache
    return (y, inter) if capture else y


def run(m, *args, **kwargs):
    """``m(*args, **kwargs)`` for an nnx module, jitted; the module's state updates are kept."""
    return _run(m, args, kwargs, capture=False)


def run_capture(m, *args, **kwargs):
    """``nnx.capture(m, nnx.Intermediate)(*args, **kwargs)``, jitted."""
    return _run(m, args, kwargs, capture=True)


@jit(static_argnums=(0, 1, 4))
def _linen_jitted(module, method, variables, args, static, traced):
    return getattr(module, method)(variables, *args, **traced, **dict(static))


def apply(module, variables, *args, **kwargs):
    """``module.apply(variables, *args, **kwargs)`` under jit (``mutable`` must be a tuple or bool)."""
    traced, static = _split(kwargs)
    return _linen_jitted(module, "apply", variables, args, static, traced)


def init(module, rngs, *args, **kwargs):
    traced, static = _split(kwargs)
    return _linen_jitted(module, "init", rngs, args, static, traced)


# --------------------------------------------------------------------------------------------
# flax nnx: MultiHeadAttention
# --------------------------------------------------------------------------------------------


def _nnx_pair(impl, seed=0, **kw):
    """The same nnx.MultiHeadAttention twice: flax's attention, then attn_jax's (same params)."""
    ref = nnx.MultiHeadAttention(**kw, rngs=nnx.Rngs(seed))
    ours = nnx.MultiHeadAttention(**kw, attention_fn=ours_fn(impl), rngs=nnx.Rngs(seed))
    nnx.update(ours, nnx.state(ref, nnx.Param))
    assert ours.attention_fn is not ref.attention_fn
    return ref, ours


@pytest.mark.parametrize("impl", IMPLS_WITH_TRITON)
def test_nnx_basic(impl):
    kw = dict(num_heads=2, in_features=3, qkv_features=6, out_features=6)
    ref, ours = _nnx_pair(impl, **kw)
    x = _normal(1, (1, 7, 3))
    y_ref = run(ref, x, decode=False)
    y = run(ours, x, decode=False)
    assert y.shape == (1, 7, 6)
    assert_close(y, y_ref, **F32)
    # The check can fail: a wrong scale is caught.
    wrong = nnx.MultiHeadAttention(**kw, attention_fn=ours_fn(impl, scale=0.25), rngs=nnx.Rngs(0))
    nnx.update(wrong, nnx.state(ref, nnx.Param))
    assert not np.allclose(_np(run(wrong, x, decode=False)), _np(y_ref), atol=1e-4)


class _NnxThreeLayers(nnx.Module):
    def __init__(self, attention_fn, rngs):
        kw = dict(in_features=8, num_heads=8, kernel_init=nnx.initializers.lecun_normal(),
                  bias_init=nnx.initializers.zeros_init(), deterministic=False, decode=False)
        if attention_fn is not None:
            kw["attention_fn"] = attention_fn
        self.l0 = nnx.MultiHeadAttention(**kw, rngs=rngs)
        self.l1 = nnx.MultiHeadAttention(**kw, rngs=rngs)
        self.l2 = nnx.MultiHeadAttention(**kw, rngs=rngs)

    def __call__(self, x, sow_weights=False):
        x = self.l0(x, sow_weights=sow_weights)
        x = self.l1(x)
        return self.l2(x, sow_weights=sow_weights)


@pytest.mark.parametrize("impl", IMPLS)
def test_nnx_sow_attention_weights(impl):
    ref = _NnxThreeLayers(None, nnx.Rngs(0))
    ours = _NnxThreeLayers(ours_fn(impl), nnx.Rngs(0))
    nnx.update(ours, nnx.state(ref, nnx.Param))
    x = _normal(1, (4, 6, 8))
    y_ref, inter_ref = run_capture(ref, x, sow_weights=True)
    y, inter = run_capture(ours, x, sow_weights=True)
    assert_close(y, y_ref, **F32)
    for layer in ("l0", "l2"):
        w = inter[layer]["attention_weights"][0]
        assert w.shape == (4, 8, 6, 6)
        assert_close(w, inter_ref[layer]["attention_weights"][0], **F32)
        assert_close(np.sum(_np(w), -1), np.ones((4, 8, 6)), **F32)
    assert "l1" not in inter
    y2, inter2 = run_capture(ours, x)
    assert not inter2
    assert_close(y2, y_ref, **F32)


@pytest.mark.parametrize("impl", IMPLS)
def test_nnx_autoregressive_decode_x64(impl):
    with jax.enable_x64(True):
        x = _normal(1, (1, 4, 4)).astype(jnp.float64)
        ref, ours = _nnx_pair(impl, in_features=4, num_heads=2, qkv_features=4, decode=True)
        for m in (ref, ours):
            m.init_cache(x.shape, dtype=x.dtype)
            assert m.cached_key.shape == (1, 4, 2, 2)
        steps = []
        for i in range(4):
            y_ref, y = run(ref, x[:, i:i + 1, :]), run(ours, x[:, i:i + 1, :])
            assert y.shape == (1, 1, 4) and y.dtype == jnp.float64
            assert_close(y, y_ref, **X64_PEER)
            steps.append(y)
        # Step-by-step decoding equals one causal pass over the whole sequence, to float64 accuracy.
        full = run(ours, x, decode=False, is_causal=True)
        assert_close(np.concatenate(steps, axis=1), full, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("is_cross_attention", [True, False])
def test_nnx_causal_mask_equivalence(is_cross_attention, impl):
    b, n, t, h = 1, 2, 2, 4
    s = 4 if is_cross_attention else t
    q, k, v = _normal(0, (b, 1, t, n, h)), _normal(1, (b, 1, s, n, h)), _normal(2, (b, 1, s, n, h))
    causal = np.broadcast_to(np.tril(np.ones((t, s), bool)), (b, 1, n, t, s))
    padding = np.ones((b, 1, 1, t, s), bool)
    padding[..., -2:] = False
    fn = ours_fn(impl)

    @jit
    def both(q, k, v):
        res = {}
        for name, pad in (("padded", padding), ("unpadded", None)):
            combined = nnx.combine_masks(pad, causal, dtype=q.dtype)  # float 1.0 / 0.0
            res[name] = dict(
                combined=combined,
                ref=nnx.dot_product_attention(q, k, v, mask=combined, deterministic=True),
                ours_causal=fn(q, k, v, mask=pad, is_causal=True, deterministic=True),
                ours_combined=fn(q, k, v, mask=combined, deterministic=True),
            )
        return res

    for name, r in both(q, k, v).items():
        assert_close(r["ours_combined"], r["ours_causal"], **F32)
        visible = np.asarray(jnp.broadcast_to(r["combined"], (b, 1, n, t, s))).any(-1)  # [b, 1, n, t]
        visible = np.moveaxis(visible, -2, -1)[..., None]  # [b, 1, t, n, 1]
        assert_close(np.where(visible, r["ours_causal"], 0), np.where(visible, r["ref"], 0), **F32)
        if name == "unpadded" or is_cross_attention:
            assert visible.all()
        else:
            # Self-attention with the last two keys padded: nothing left to see. Known, intended
            # difference: attn_jax gives zeros where flax gives the mean of the values.
            assert not visible.any()
            assert np.all(np.asarray(r["ours_causal"]) == 0)
            assert_close(r["ref"], jnp.broadcast_to(jnp.mean(v, axis=2, keepdims=True), r["ref"].shape), **F32)


@pytest.mark.parametrize("impl", IMPLS)
def test_nnx_module_is_causal_and_padding_mask(impl):
    ref, ours = _nnx_pair(impl, num_heads=2, in_features=8, qkv_features=8, decode=False)
    x = _normal(1, (2, 6, 8))
    kv_valid = jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    pad = nnx.make_attention_mask(jnp.ones((2, 6)), kv_valid)  # float [2, 1, 6, 6], key padding only
    for kwargs in (dict(is_causal=True), dict(mask=pad), dict(mask=pad, is_causal=True),
                   dict(mask=nnx.make_causal_mask(jnp.ones((2, 6))))):
        assert_close(run(ours, x, **kwargs), run(ref, x, **kwargs), **F32)


_VARIANTS = [  # (use_bias, dtype, param_dtype, precision, decode, normalize_qk)
    (False, jnp.float32, jnp.float16, lax.Precision.HIGHEST, False, True),
    (True, jnp.float16, jnp.float32, lax.Precision.HIGH, False, True),
    (True, jnp.float32, jnp.float32, lax.Precision.HIGHEST, True, True),
    (False, jnp.float16, jnp.float16, lax.Precision.DEFAULT, True, False),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("use_bias,dtype,param_dtype,precision,decode,normalize_qk", _VARIANTS)
def test_nnx_constructor_variants(use_bias, dtype, param_dtype, precision, decode, normalize_qk, impl):
    ref, ours = _nnx_pair(impl, seed=42, num_heads=2, in_features=3, qkv_features=6, out_features=6,
                          use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, precision=precision,
                          decode=decode, normalize_qk=normalize_qk)
    tol = F32 if dtype == jnp.float32 else LOW[dtype]
    # flax's float16 attention is jax.nn's, whose F16_F16_F32 dot algorithm CPU refuses at compile time
    # (eagerly jax.nn falls back to the default precision): the float16 reference runs eagerly.
    run_ref = run if dtype != jnp.float16 else (lambda m, *a, **kw: m(*a, **kw))
    x = _normal(3, (2, 5, 3))
    if not decode:
        y_ref, y = run_ref(ref, x), run(ours, x)
        assert y.dtype == y_ref.dtype == dtype
        assert_close(y, y_ref, **tol)
        return
    for m in (ref, ours):
        m.init_cache(x.shape, dtype=dtype)
    for i in range(x.shape[1]):
        y_ref, y = run_ref(ref, x[:, i:i + 1]), run(ours, x[:, i:i + 1])
        assert y.dtype == y_ref.dtype == dtype
        assert_close(y, y_ref, **tol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("q_shape,kv_shape", [((1, 3), (1, 4)), ((2, 5, 3), (2, 9, 4))])
def test_nnx_cross_attention_kv_features(q_shape, kv_shape, impl):
    ref, ours = _nnx_pair(impl, num_heads=2, in_features=3, qkv_features=6, out_features=6,
                          in_kv_features=4, decode=False)
    x, y_in = _normal(1, q_shape), _normal(2, kv_shape)
    out = run(ours, x, y_in)
    assert out.shape == q_shape[:-1] + (6,)
    assert_close(out, run(ref, x, y_in), **F32)


class _Dummy(nnx.Module):
    pass


@jit(static_argnums=3)
def _gqa_outputs(q, k, v, fn):
    flax_out, _ = nnx.capture(lambda m: nnx.dot_product_attention(q, k, v, module=m), nnx.Intermediate)(_Dummy())
    return fn(q, k, v), jax.nn.dot_product_attention(q, k, v), flax_out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("b,t,s,d,nq,nkv", [(2, 4, 5, 8, 6, 3), (2, 8, 8, 16, 4, 2)])
def test_nnx_gqa_functional(b, t, s, d, nq, nkv, impl):
    q, k, v = _normal(0, (b, t, nq, d)), _normal(1, (b, s, nkv, d)), _normal(2, (b, s, nkv, d))
    out, jax_out, flax_out = _gqa_outputs(q, k, v, ours_fn(impl))
    assert out.shape == (b, t, nq, d)
    assert_close(out, jax_out, **F32)
    assert_close(out, flax_out, **F32)  # flax's weights path (taken when a module is given) does its own GQA
    with pytest.raises(ValueError, match="multiple"):
        ours_fn(impl)(jnp.ones((1, 4, 5, 8)), jnp.ones((1, 4, 2, 8)), jnp.ones((1, 4, 2, 8)))


@pytest.mark.parametrize("impl", IMPLS)
def test_nnx_gqa_multihead_attention(impl):
    in_feat, n_heads, n_kv, qkv = 16, 8, 2, 32
    ref, ours = _nnx_pair(impl, num_heads=n_heads, in_features=in_feat, qkv_features=qkv, num_kv_heads=n_kv)
    assert ours.key.kernel.shape == (in_feat, n_kv, qkv // n_heads)
    x = _normal(1, (2, 6, in_feat))
    assert_close(run(ours, x, decode=False), run(ref, x, decode=False), **F32)
    causal = run(ours, x, decode=False, is_causal=True)
    assert_close(causal, run(ref, x, decode=False, is_causal=True), **F32)
    for m in (ref, ours):
        m.init_cache(x.shape)
    steps = []
    for i in range(6):
        y_ref, y = run(ref, x[:, i:i + 1], decode=True), run(ours, x[:, i:i + 1], decode=True)
        assert_close(y, y_ref, **F32)
        steps.append(y)
    assert int(ours.cache_index[...]) == 6
    assert_close(np.concatenate(steps, 1), causal, **F32)


@pytest.mark.parametrize(
    "q_shape,k_shape,v_shape,match",
    [((2, 16, 4, 8), (16, 4, 8), (16, 4, 8), "same rank"),
     ((2, 16, 4, 8), (3, 16, 4, 8), (3, 16, 4, 8), "batch dims"),
     ((2, 16, 4, 8), (2, 16, 4, 8), (2, 15, 4, 8), "lengths differ"),
     ((2, 16, 4, 8), (2, 16, 4, 7), (2, 16, 4, 8), "head_dim differ")],
)
def test_nnx_invalid_shapes(q_shape, k_shape, v_shape, match):
    args = (jnp.ones(q_shape), jnp.ones(k_shape), jnp.ones(v_shape))
    with pytest.raises(ValueError, match=match):
        ours_fn("xla")(*args, dropout_rate=0.1, dropout_rng=jax.random.key(0), deterministic=False)
    with pytest.raises(ValueError):  # flax refuses the same shapes
        nnx.dot_product_attention(*args, dropout_rate=0.1, dropout_rng=jax.random.key(0))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("broadcast", [True, False])
def test_nnx_dropout_properties(broadcast, impl):
    ref, ours = _nnx_pair(impl, num_heads=2, in_features=8, qkv_features=8, dropout_rate=0.5,
                          broadcast_dropout=broadcast, decode=False)
    x0 = _normal(1, (1, 6, 8))
    x = np.concatenate([x0, x0])  # two identical batch rows
    det = run(ours, x, deterministic=True)
    assert_close(det, run(ref, x, deterministic=True), **F32)
    for m in (ref, ours):  # the same properties for flax's dropout and ours
        d1 = run(m, x, deterministic=False, rngs=nnx.Rngs(dropout=1))
        d1_again = run(m, x, deterministic=False, rngs=nnx.Rngs(dropout=1))
        d2 = run(m, x, deterministic=False, rngs=nnx.Rngs(dropout=2))
        assert not np.allclose(_np(d1), _np(det), atol=1e-3)
        np.testing.assert_array_equal(np.asarray(d1), np.asarray(d1_again))
        assert not np.allclose(_np(d1), _np(d2), atol=1e-3)
        if broadcast:
            np.testing.assert_array_equal(np.asarray(d1[0]), np.asarray(d1[1]))
        else:
            assert not np.allclose(_np(d1[0]), _np(d1[1]), atol=1e-3)
    # sown weights are the weights before dropout, in flax and in ours
    _, inter_ref = run_capture(ref, x, deterministic=False, rngs=nnx.Rngs(dropout=1), sow_weights=True)
    _, inter = run_capture(ours, x, deterministic=False, rngs=nnx.Rngs(dropout=1), sow_weights=True)
    assert_close(inter["attention_weights"][0], inter_ref["attention_weights"][0], **F32)


@jit(static_argnums=(0, 3, 5))
def _dropped_weights(fn, q, k, broadcast, rng, rate):
    """Dropped attention weights ``[*B, T, N, S]``, read off with one-hot values (v[s] = e_s)."""
    s, kh = k.shape[-3], k.shape[-2]
    v = jnp.broadcast_to(jnp.eye(s)[:, None, :], k.shape[:-3] + (s, kh, s))
    return fn(q, k, v, dropout_rng=rng, dropout_rate=rate, broadcast_dropout=broadcast, deterministic=False)


@pytest.mark.parametrize("impl", IMPLS_WITH_TRITON)
@pytest.mark.parametrize("broadcast", [True, False])
def test_dropout_mask_shared_across_batch_and_heads(broadcast, impl):
    if impl == "pallas_triton" and not broadcast:
        pytest.skip("one pallas_triton case is enough (interpret mode is slow)")
    t, s, n, h, rate = 16, 16, 3, 8, 0.5
    q, k = _normal(0, (2, 2, t, n, h)), _normal(1, (2, 2, s, n, h))  # two batch dims
    rng = jax.random.key(7)
    fn = ours_fn(impl)
    probs = _dropped_weights(fn, q, k, broadcast, rng, 0.0)  # rate 0: the plain weights
    assert_close(probs, jax.nn.softmax(jnp.einsum("...tnh,...snh->...tns", q, k) / np.sqrt(h), -1), **F32)
    for name, f in (("ours", fn), ("flax", nnx.dot_product_attention)):
        dropped = _dropped_weights(f, q, k, broadcast, rng, rate)
        keep = np.asarray(dropped) != 0  # [2, 2, T, N, S]
        # kept weights are scaled by 1 / (1 - rate), the rest are zero
        assert_close(np.where(keep, dropped, 0), np.where(keep, probs / (1 - rate), 0), **F32)
        assert 0.4 < keep.mean() < 0.6, (name, keep.mean())
        shared = [bool((keep[i, j] == keep[0, 0]).all()) for i, j in ((0, 1), (1, 0))]  # over both batch dims
        shared += [bool((keep[..., hd, :] == keep[..., 0, :]).all()) for hd in (1, 2)]  # over heads
        assert shared == [broadcast] * 4, (name, shared)


# --------------------------------------------------------------------------------------------
# flax linen: MultiHeadDotProductAttention
# --------------------------------------------------------------------------------------------


def _linen_pair(impl, **kw):
    ref = linen.MultiHeadDotProductAttention(**kw)
    return ref, ref.clone(attention_fn=ours_fn(impl))


_ONES_KW = dict(num_heads=8, qkv_features=16, kernel_init=jax.nn.initializers.ones,
                bias_init=jax.nn.initializers.zeros, deterministic=False)


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_self_attention(impl):
    x = _normal(1, (4, 6, 5))
    for kw in (dict(num_heads=8, qkv_features=16, deterministic=False), _ONES_KW):  # flax's all-ones kernels too
        ref, ours = _linen_pair(impl, **kw)
        variables = init(ref, jax.random.key(0), x)
        y = apply(ours, variables, x)
        assert y.shape == x.shape and y.dtype == jnp.float32
        assert_close(y, apply(ref, variables, x), **F32)


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_multiple_batch_dims(impl):
    ref, ours = _linen_pair(impl, num_heads=8, qkv_features=16, deterministic=False)
    q = _normal(1, (4, 2, 3, 5))
    kv = _normal(2, (4, 2, 7, 5))
    variables = init(ref, jax.random.key(0), q)
    mask = linen.make_causal_mask(jnp.ones((4, 2, 3)))  # float [4, 2, 1, 3, 3]
    for args, kw in (((q,), {}), ((q,), dict(mask=mask)), ((q, kv), {})):
        assert_close(apply(ours, variables, *args, **kw), apply(ref, variables, *args, **kw), **F32)


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_kv_args(impl):
    ref, ours = _linen_pair(impl, num_heads=8, qkv_features=16, kernel_init=jax.nn.initializers.lecun_normal(),
                            bias_init=jax.nn.initializers.uniform(), deterministic=False)
    query = np.random.default_rng(1).uniform(size=(3, 5)).astype(np.float32)
    key_value = np.random.default_rng(2).uniform(size=(9, 5)).astype(np.float32)
    variables = init(ref, jax.random.key(43279), query, inputs_k=key_value, inputs_v=key_value)
    y0 = apply(ours, variables, query, inputs_k=key_value, inputs_v=key_value)
    y1 = apply(ours, variables, query, inputs_k=key_value)
    assert y0.shape == (3, 5)
    assert_close(y0, apply(ref, variables, query, inputs_k=key_value, inputs_v=key_value), **F32)
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(y1))


class _TwoAttentions(linen.Module):
    """Two attention layers on the same input (flax's explicit-dropout test module)."""

    attention_kwargs: tuple  # items, so that the module is hashable (a static jit argument)

    @linen.compact
    def __call__(self, x, dropout_rng=None):
        kw = dict(self.attention_kwargs)
        a = linen.MultiHeadDotProductAttention(**kw)(x, x, dropout_rng=dropout_rng)
        b = linen.MultiHeadDotProductAttention(**kw)(x, x, dropout_rng=dropout_rng)
        return a, b


def _items(**kw):
    return tuple(sorted(kw.items()))


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_dropout_rng_semantics(impl):
    kw = dict(_ONES_KW, dropout_rate=0.5)  # flax's configuration: both layers have the same (all-ones) params
    module = _TwoAttentions(_items(**kw, attention_fn=ours_fn(impl)))
    r1, r2, r3, r4 = jax.random.split(jax.random.key(0), 4)
    x = _normal(5, (4, 2, 3, 5))
    v = init(module, {"params": r1, "dropout": r2}, x)
    det = apply(_TwoAttentions(_items(**dict(kw, deterministic=True), attention_fn=ours_fn(impl))), v, x)
    ref_det = apply(_TwoAttentions(_items(**dict(kw, deterministic=True))), v, x)
    for ours_out, ref_out in zip(det, ref_det):
        assert_close(ours_out, ref_out, **F32)
    a, b = apply(module, v, x, rngs={"dropout": r2})
    c, d = apply(module, v, x, rngs={"dropout": r2})
    e, f = apply(module, v, x, rngs={"dropout": r3})
    assert not np.allclose(_np(a), _np(det[0]), atol=1e-3)
    assert not (a == b).all()  # each layer draws its own key
    assert (a == c).all() and (b == d).all()
    assert not (a == e).all() and not (b == f).all()
    a, b = apply(module, v, x, rngs={"dropout": r2}, dropout_rng=r4)  # one explicit key for both layers
    assert (a == b).all()
    a2, b2 = apply(module, v, x, dropout_rng=r4)
    assert (a2 == a).all() and (b2 == b).all() and a.shape == x.shape


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_dropout_disabled(impl):
    x = _normal(5, (4, 2, 3, 5))
    r1, r2, r3, r4 = jax.random.split(jax.random.key(0), 4)
    rngs1, rngs2 = {"params": r1, "dropout": r2}, {"params": r3, "dropout": r4}
    base = dict(num_heads=8, qkv_features=16, kernel_init=jax.nn.initializers.lecun_normal(),
                bias_init=jax.nn.initializers.zeros)
    ref0, ours0 = _linen_pair(impl, **base, dropout_rate=0.0, deterministic=True)
    vs = init(ref0, rngs1, x)
    y1, y2 = apply(ours0, vs, x, rngs=rngs1), apply(ours0, vs, x, rngs=rngs2)
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert_close(y1, apply(ref0, vs, x), **F32)
    ref_m, ours_m = _linen_pair(impl, **base, dropout_rate=0.5)
    # deterministic at call time: the rate and the rng play no part
    y5 = apply(ours_m, vs, x, deterministic=True, rngs=rngs1)
    y6 = apply(ours_m, vs, x, deterministic=True, rngs=rngs2)
    np.testing.assert_array_equal(np.asarray(y5), np.asarray(y6))
    assert_close(y5, y1, **F32)
    # not deterministic: broadcast_dropout shares the mask over identical batch rows (as flax's does)
    xx = np.concatenate([x[:1], x[:1]])
    for m in (ref_m, ours_m):
        y = apply(m, vs, xx, deterministic=False, rngs={"dropout": r2})
        assert not np.allclose(_np(y), _np(apply(m, vs, xx, deterministic=True)), atol=1e-3)
        np.testing.assert_array_equal(np.asarray(y[0]), np.asarray(y[1]))


@pytest.mark.parametrize("impl", IMPLS_WITH_TRITON)
def test_linen_causal_mask_float(impl):
    x = _normal(1, (3, 16, 8))
    mask = linen.make_causal_mask(jnp.ones((3, 16)))
    assert mask.dtype == jnp.float32 and mask.shape == (3, 1, 16, 16)
    ref, ours = _linen_pair(impl, num_heads=2, qkv_features=8)
    variables = init(ref, jax.random.key(0), x)
    y_ref = apply(ref, variables, x, mask=mask)
    assert_close(apply(ours, variables, x, mask=mask), y_ref, **F32)
    causal_option = ref.clone(attention_fn=ours_fn(impl, is_causal=True))
    assert_close(apply(causal_option, variables, x), y_ref, **F32)


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_padding_mask(impl):
    x = _normal(1, (2, 7, 8))
    tokens = jnp.array([[3, 1, 4, 1, 5, 0, 0], [2, 7, 1, 8, 2, 8, 0]])
    ref, ours = _linen_pair(impl, num_heads=2, qkv_features=8)
    variables = init(ref, jax.random.key(0), x)
    key_pad = linen.make_attention_mask(jnp.ones_like(tokens), tokens > 0)
    causal_pad = linen.combine_masks(key_pad, linen.make_causal_mask(tokens))
    for mask in (key_pad, causal_pad):
        assert_close(apply(ours, variables, x, mask=mask), apply(ref, variables, x, mask=mask), **F32)
    # Padding on both sides: padded query rows see no key. Valid rows agree; on padded rows attn_jax
    # gives zero attention (the output is the out-projection's bias), flax the mean of the values.
    both = linen.make_attention_mask(tokens > 0, tokens > 0)
    y, y_ref = apply(ours, variables, x, mask=both), apply(ref, variables, x, mask=both)
    valid = np.asarray(tokens > 0)
    assert_close(y[valid], y_ref[valid], **F32)
    out_bias = variables["params"]["out"]["bias"]
    assert_close(y[~valid], jnp.broadcast_to(out_bias, y[~valid].shape), **F32)
    assert not np.allclose(_np(y_ref[~valid]), _np(out_bias), atol=1e-3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("spatial_shape,axis", [((5,), 1), ((6, 5), 2)])
def test_linen_decoding(spatial_shape, axis, impl):
    bs, num_heads, num_features = 2, 3, 4
    inputs = _normal(0, (bs,) + spatial_shape + (num_heads * num_features,))
    k2 = jax.random.key(1)
    ref, ours = _linen_pair(impl, num_heads=num_heads, qkv_features=num_heads * num_features,
                            precision=lax.Precision.HIGHEST, deterministic=False, decode=False)
    decode_ours = ours.clone(decode=True)
    state, params = pop(init(decode_ours, k2, inputs), "params")
    causal = linen.make_causal_mask(jnp.ones((bs,) + spatial_shape))
    y_ref = apply(ref, {"params": params}, inputs, mask=causal)
    assert_close(apply(ours, {"params": params}, inputs, mask=causal), y_ref, **F32)
    ys = []
    for i in range(inputs.shape[axis]):  # feed one position at a time
        y, state = apply(decode_ours, {"params": params, **state}, np.take(inputs, [i], axis=axis), mutable=("cache",))
        ys.append(y)
    assert_close(np.concatenate(ys, axis=axis), y_ref, **F32)


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_receptive_field(impl):
    length = 10
    inputs = _normal(2, (1, length, 1))
    ref, ours = _linen_pair(impl, num_heads=1, kernel_init=jax.nn.initializers.ones, deterministic=False)
    variables = init(ref, jax.random.key(1), inputs)
    causal = linen.make_causal_mask(jnp.ones((1, length)))

    @jit
    def jacobians(x):
        return [jax.jacrev(lambda x, m=m: m.apply(variables, x, mask=causal)[0, :, 0])(x)[:, 0, :, 0]
                for m in (ours, ref)]

    j, j_ref = (np.asarray(a) for a in jacobians(inputs))
    reach = np.abs(j) > 1e-5  # reach[i, p]: output i depends on input p
    for i in range(length):
        assert reach[i, :i].all(), f"position {i} does not reach back to all earlier positions"
        assert not reach[i, i + 1:].any(), f"position {i} sees the future"
    assert_close(j, j_ref, **F32)


class _ThreeAttentions(linen.Module):
    attention_kwargs: tuple

    @linen.compact
    def __call__(self, x, sow_weights=False):
        kw = dict(self.attention_kwargs)
        x = linen.MultiHeadDotProductAttention(**kw)(x, sow_weights=sow_weights)
        x = linen.MultiHeadDotProductAttention(**kw)(x)
        return linen.MultiHeadDotProductAttention(**kw)(x, sow_weights=sow_weights)


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_sow_attention_weights(impl):
    kw = dict(_ONES_KW, kernel_init=jax.nn.initializers.lecun_normal())
    ref, ours = _ThreeAttentions(_items(**kw)), _ThreeAttentions(_items(**kw, attention_fn=ours_fn(impl)))
    x = _normal(1, (4, 6, 5))
    v = init(ref, jax.random.key(0), x)
    y_ref, inter_ref = apply(ref, v, x, mutable=("intermediates",), sow_weights=True)
    y, inter = apply(ours, v, x, mutable=("intermediates",), sow_weights=True)
    assert_close(y, y_ref, **F32)
    for name in ("MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention_2"):
        w = inter["intermediates"][name]["attention_weights"][0]
        assert w.shape == (4, 8, 6, 6)
        assert_close(w, inter_ref["intermediates"][name]["attention_weights"][0], **F32)
    assert "MultiHeadDotProductAttention_1" not in inter["intermediates"]
    _, inter = apply(ours, v, x, mutable=("intermediates",), sow_weights=False)
    assert "intermediates" not in inter


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_autoregressive_decode_x64(impl):
    with jax.enable_x64(True):
        x = _normal(1, (1, 4, 4)).astype(jnp.float64)
        ref, ours = _linen_pair(impl, num_heads=2, qkv_features=4, decode=True)
        variables = init(ref, jax.random.PRNGKey(0), x)  # flax passes (x, x, x): the same self-attention
        params = variables["params"]
        cache_ref = cache = variables["cache"]
        for i in range(4):
            y_ref, upd = apply(ref, {"params": params, "cache": cache_ref}, x[:, i:i + 1], mutable=("cache",))
            cache_ref = upd["cache"]
            y, upd = apply(ours, {"params": params, "cache": cache}, x[:, i:i + 1], mutable=("cache",))
            cache = upd["cache"]
            assert y.shape == (1, 1, 4) and y.dtype == jnp.float64
            assert_close(y, y_ref, **X64_PEER)


@pytest.mark.parametrize(
    "force_fp32",
    [True, False],
)
def test_linen_mixed_precision_sown_weights(force_fp32):
    params_key, dropout_key = jax.random.split(jax.random.key(0))
    x = np.random.default_rng(0).uniform(size=(2, 4)).astype(np.float32)
    kw = dict(num_heads=2, qkv_features=4, kernel_init=jax.nn.initializers.lecun_normal(),
              bias_init=jax.nn.initializers.uniform(), force_fp32_for_softmax=force_fp32, deterministic=False,
              dtype=jnp.bfloat16)
    ref, ours = _linen_pair("xla", **kw)
    variables = init(ref, {"params": params_key, "dropout": dropout_key}, x)
    y_ref, upd_ref = apply(ref, variables, x, mutable=("intermediates",), sow_weights=True)
    y, upd = apply(ours, variables, x, mutable=("intermediates",), sow_weights=True)
    w_ref = upd_ref["intermediates"]["attention_weights"][0]
    w = upd["intermediates"]["attention_weights"][0]
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    assert_close(y, y_ref, **LOW[jnp.bfloat16])
    assert_close(w, w_ref, **LOW[jnp.bfloat16])
    assert w_ref.dtype == (jnp.float32 if force_fp32 else jnp.bfloat16)
    assert w.dtype == w_ref.dtype


def test_linen_complex_inputs_rejected():
    x = jnp.ones((4, 6, 5), jnp.complex64)
    ref, ours = _linen_pair("xla", **_ONES_KW)
    y_ref, variables = ref.init_with_output(jax.random.key(0), x)
    assert y_ref.dtype == jnp.complex64  # flax computes in complex64
    with pytest.raises(TypeError, match="floating"):
        ours.apply(variables, x)


def test_linen_einsum_override_refused():
    kw = dict(num_heads=2, qkv_features=4, qk_attn_weights_einsum_cls=lambda: jnp.einsum,
              attn_weights_value_einsum_cls=lambda: jnp.einsum)
    ref, ours = _linen_pair("xla", **kw)
    x = _normal(1, (2, 3, 4))
    variables = ref.init(jax.random.key(0), x)
    assert ref.apply(variables, x).shape == (2, 3, 4)
    with pytest.raises(UnsupportedError, match="einsum"):
        ours.apply(variables, x)


# --------------------------------------------------------------------------------------------
# jax: tests/nn_test.py, dot_product_attention
# --------------------------------------------------------------------------------------------


def _tol(dtype):
    return F32 if dtype == jnp.float32 else LOW[dtype]


# Fixed function objects (static jit arguments): the jax.nn reference compiles once for both impls.
JAX_NN = functools.partial(jax.nn.dot_product_attention, implementation="xla")
OURS = {impl: functools.partial(attn_jax.dot_product_attention, implementation=impl) for impl in IMPLS}


def _ref_lse(q, k, scale):
    """A differentiable logsumexp of the logits (jax.nn's residual is under stop_gradient)."""
    g = q.shape[-2] // k.shape[-2]
    k = jnp.repeat(k, g, axis=-2).astype(jnp.float32)
    logits = jnp.einsum("...tnh,...snh->...nts", q.astype(jnp.float32), k) * scale
    return jnp.swapaxes(jax.nn.logsumexp(logits, -1), -1, -2)


@jit(static_argnums=0)
def _sdpa_reference(g, q, k, v, grad, lse_grad):
    """jax's way: the non-GQA jax.nn call on repeated K/V, its K/V gradients summed over each group.

    float16 inputs are upcast to float32 first: jax.nn's float16 path asks for the F16_F16_F32 dot
    algorithm, which CPU refuses once compiled (eagerly jax.nn falls back; under jit it cannot).
    """
    if q.dtype == jnp.float16:
        q, k, v, grad, lse_grad = (x.astype(jnp.float32) for x in (q, k, v, grad, lse_grad))
    b, s, kh, h = k.shape
    k_rep, v_rep = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
    out, vjp = jax.vjp(lambda *a: jax.nn.dot_product_attention(*a, implementation="xla"), q, k_rep, v_rep)
    dq, dk, dv = vjp(grad)
    dk, dv = (d.reshape(b, s, kh, g, h).sum(axis=3) for d in (dk, dv))
    _, lse = jax.nn.dot_product_attention(q, k_rep, v_rep, implementation="xla", return_residual=True)

    def loss(q, k, v):  # out·g + lse·lg with a differentiable lse
        o = jax.nn.dot_product_attention(q, jnp.repeat(k, g, 2), jnp.repeat(v, g, 2), implementation="xla")
        return jnp.sum(o.astype(jnp.float32) * grad) + jnp.sum(_ref_lse(q, k, 1 / np.sqrt(h)) * lse_grad)

    return out, (dq, dk, dv), lse, jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


@jit(static_argnums=(0, 1))
def _sdpa_ours(impl, use_vmap, q, k, v, grad, lse_grad):
    def f(q, k, v):
        return attn_jax.dot_product_attention(q, k, v, implementation=impl)

    def f_lse(q, k, v):
        return attn_jax.dot_product_attention(q, k, v, implementation=impl, return_residual=True)

    if use_vmap:  # per-example 3-D inputs
        f, f_lse = jax.vmap(f), jax.vmap(f_lse)
    out, vjp = jax.vjp(f, q, k, v)
    (out2, lse), vjp2 = jax.vjp(f_lse, q, k, v)
    return out, vjp(grad), out2, lse, vjp2((grad, lse_grad))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,group_num,use_vmap", [  # a cover of jax's dtype x groups x vmap product
    (jnp.float32, 1, False), (jnp.float32, 4, True), (jnp.bfloat16, 2, False), (jnp.float16, 4, False),
])
def test_jax_dot_product_attention(dtype, group_num, use_vmap, impl):
    b, s, t, n, h, g = 2, 20, 20, 4, 8, group_num
    q = _normal(0, (b, t, n, h), dtype)
    k, v = _normal(1, (b, s, n // g, h), dtype), _normal(2, (b, s, n // g, h), dtype)
    grad, lse_grad = _normal(3, (b, t, n, h), dtype), _normal(4, (b, t, n), dtype)
    tol = _tol(dtype)
    out_ref, grads_ref, lse_ref, grads_lse_ref = _sdpa_reference(g, q, k, v, grad, lse_grad)
    out, grads, out2, lse, grads_lse = _sdpa_ours(impl, use_vmap, q, k, v, grad, lse_grad)
    assert out.dtype == dtype
    assert_close(out, out_ref, **tol)
    assert_close(out2, out_ref, **tol)
    assert_close(lse, lse_ref, **tol)
    for d, d_ref in zip(grads, grads_ref):
        assert_close(d, d_ref, **tol)
    for d, d_ref in zip(grads_lse, grads_lse_ref):
        assert_close(d, d_ref, **{k_: 2 * x for k_, x in tol.items()})


_MASK_MODES = ["bias", "causal", "padding", "custom", ("causal", "padding"), ("custom", "padding"),
               ("bias", "causal"), ("causal", "sliding_window")]


@jit(static_argnums=(0, 1, 2))
def _masked_vjp(f, is_causal, window, q, k, v, bias, mask, q_len, kv_len, grad):
    out, vjp = jax.vjp(lambda q, k, v, bias: f(q, k, v, bias, mask, is_causal=is_causal, query_seq_lengths=q_len,
                                                 key_value_seq_lengths=kv_len, local_window_size=window),
                       q, k, v, bias)
    return out, vjp(grad)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mask_mode", _MASK_MODES, ids=lambda m: m if isinstance(m, str) else "+".join(m))
def test_jax_mask_modes(mask_mode, impl):
    mask_mode = (mask_mode,) if isinstance(mask_mode, str) else mask_mode
    b, s, t, n, h = 2, 32, 32, 4, 8
    q, k, v, grad = (_normal(i, shape) for i, shape in enumerate(
        [(b, t, n, h), (b, s, n, h), (b, s, n, h), (b, t, n, h)]))
    bias = mask = q_len = kv_len = window = None
    is_causal = "causal" in mask_mode
    if "padding" in mask_mode:
        q_len = np.array([t // 2, t // 4], np.int32)
        kv_len = np.array([s // 4, s // 2], np.int32)
    if "custom" in mask_mode:
        mask = np.tril(np.ones((t, s), bool))[None, None]
    if "bias" in mask_mode:
        bias = _normal(4, (1, n, t, s))
    if "sliding_window" in mask_mode:
        window = (3, 2) if is_causal else (3, 0)
    args = (q, k, v, bias, mask, q_len, kv_len, grad)
    out_ref, grads_ref = _masked_vjp(JAX_NN, is_causal, window, *args)
    out, grads = _masked_vjp(OURS[impl], is_causal, window, *args)
    assert_close(out, out_ref, **F32)  # padded query rows are zero in both
    for d, d_ref in zip(grads, grads_ref):
        if d_ref is None:
            assert d is None
        else:
            assert_close(d, d_ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_jax_float64_mask_debug_infs(impl):
    # jax's regression test: float64 with a mask must not create infs that jax.debug_infs reports.
    t, s, kh, n, h = 5, 7, 3, 6, 11
    with jax.enable_x64(True):
        mask = np.arange(s) <= s // 2
        f = jit(functools.partial(attn_jax.dot_product_attention, implementation=impl))
        f_ref = jit(jax.nn.dot_product_attention)
        for q, k, v in ((np.zeros((t, n, h)), np.zeros((s, kh, h)), np.zeros((s, kh, h))),
                        (_normal(0, (t, n, h)), _normal(1, (s, kh, h)), _normal(2, (s, kh, h)))):
            q, k, v = (x.astype(jnp.float64) for x in (q, k, v))
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with jax.debug_infs(True):
                    out = f(q, k, v, mask=mask)
                    out.block_until_ready()
            assert out.dtype == jnp.float64
            assert_close(out, f_ref(q, k, v, mask=mask), **X64_PEER)
            exact, _ = np_attention(q[None], k[None], v[None], mask=np.asarray(mask))
            assert_close(out, exact[0], atol=1e-12, rtol=1e-12)


@jit(static_argnums=(0, 1))
def _bias_vjp(f, use_vmap, x, bias, mask):
    def attention(x, bias, mask):
        return f(x, x, x, bias=bias, mask=mask, is_causal=False)

    if use_vmap:
        attention = jax.vmap(attention, in_axes=(0, 0, None))
    y, vjp = jax.vjp(lambda x, bias: attention(x, bias, mask), x, bias)
    return y, vjp(x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch_size,dtype,use_vmap", [(4, jnp.float32, True), (1, jnp.bfloat16, False)])
def test_jax_bias_gradient(batch_size, dtype, use_vmap, impl):
    b, s, n, h = batch_size, 16, 4, 8
    x = _normal(0, (b, s, n, h), dtype)
    bias = _normal(1, (b, n, s, s), dtype)
    mask = np.ones((1, 1, s), bool)
    y_ref, grads_ref = _bias_vjp(JAX_NN, use_vmap, x, bias, mask)
    y, grads = _bias_vjp(OURS[impl], use_vmap, x, bias, mask)
    tol = _tol(dtype)
    assert_close(y, y_ref, **tol)
    for d, d_ref in zip(grads, grads_ref):
        # jax's own tolerance for bf16 bias gradients is 0.1
        assert_close(d, d_ref, **(tol if dtype == jnp.float32 else dict(atol=0.1, rtol=0.1)))


_WINDOWS = ((8, 8), (1, 1), (4, 0), 2, None)


@jit(static_argnums=0)
def _windowed(f, q, k, v):
    return [f(q, k, v, local_window_size=w) for w in _WINDOWS]


@pytest.mark.parametrize("impl", IMPLS)
def test_jax_local_window_without_mask(impl):
    b, s, t, n, h = 2, 32, 32, 4, 8
    q, k, v = _normal(0, (b, t, n, h)), _normal(1, (b, s, n, h)), _normal(2, (b, s, n, h))
    outs = _windowed(OURS[impl], q, k, v)
    refs = _windowed(jax.nn.dot_product_attention, q, k, v)
    for out, ref in zip(outs, refs):
        assert_close(out, ref, **F32)
    large, small, full = _np(outs[0]), _np(outs[1]), _np(outs[-1])
    assert not np.allclose(large, small, atol=1e-3)
    assert not np.allclose(large, full, atol=1e-3)


@pytest.mark.parametrize("impl", IMPLS)
def test_jax_scale_and_precision_arguments(impl):
    q, k, v = _normal(0, (2, 12, 4, 8)), _normal(1, (2, 12, 2, 8)), _normal(2, (2, 12, 2, 8))

    @jit
    def outputs(q, k, v, traced_scale):
        ours = functools.partial(attn_jax.dot_product_attention, q, k, v, is_causal=True, implementation=impl)
        ref = functools.partial(jax.nn.dot_product_attention, q, k, v, is_causal=True)
        res = [(ours(scale=sc), ref(scale=ref_sc))
               for sc, ref_sc in ((0.3, 0.3), (jnp.float32(0.3), 0.3), (np.float32(0.7), 0.7))]
        res.append((ours(scale=traced_scale), ref(scale=traced_scale)))  # scale is a tracer here
        grads = (jax.grad(lambda sc: ours(scale=sc).sum())(traced_scale),
                 jax.grad(lambda sc: ref(scale=sc).sum())(traced_scale))
        # precision= (jax.nn takes none; on CPU float32 matmuls are exact at every setting)
        res += [(ours(precision=p), ref()) for p in (lax.Precision.HIGHEST, "highest", lax.Precision.DEFAULT)]
        return res, grads

    res, (g, g_ref) = outputs(q, k, v, jnp.float32(0.45))
    for out, ref in res:
        assert_close(out, ref, **F32)
    assert_close(g, g_ref, atol=1e-4, rtol=1e-4)


@jit(static_argnums=0)
def _unbatched_vjp(f, q, k, v, bias, mask, ct):
    out, vjp = jax.vjp(lambda *a: f(*a, mask=mask, is_causal=True), q, k, v, bias)
    return out, vjp(ct)


@pytest.mark.parametrize("impl", IMPLS)
def test_jax_unbatched_with_4d_bias(impl):
    t, s, n, h = 9, 13, 4, 8
    args = (_normal(0, (t, n, h)), _normal(1, (s, 2, h)), _normal(2, (s, 2, h)), _normal(3, (1, n, t, s)),
            np.arange(s) < 11, _normal(4, (t, n, h)))
    out_ref, grads_ref = _unbatched_vjp(jax.nn.dot_product_attention, *args)
    out, grads = _unbatched_vjp(OURS[impl], *args)
    assert out.shape == out_ref.shape == (t, n, h)
    assert_close(out, out_ref, **F32)
    for d, d_ref in zip(grads, grads_ref):
        assert d.shape == d_ref.shape
        assert_close(d, d_ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_jax_causal_t_ne_s(impl):
    @jit
    def outputs(q_short, q_long, k_short, k_long, v_short, v_long):
        pairs = ((q_short, k_long, v_long), (q_long, k_short, v_short))  # T < S and T > S, top-left aligned
        return [(attn_jax.dot_product_attention(*a, is_causal=True, implementation=impl),
                 jax.nn.dot_product_attention(*a, is_causal=True)) for a in pairs]

    shapes = [(2, 6, 2, 8), (2, 17, 2, 8)] * 3
    for out, ref in outputs(*(_normal(i, sh) for i, sh in enumerate(shapes))):
        assert_close(out, ref, **F32)
