"""Cross-check against tokamax's XLA attention, where the two contracts coincide.

tokamax (``tokamax.dot_product_attention``, Python 3.12) is imported when it is
installed (CI's Python 3.12 leg installs it); elsewhere this file skips.
Each case runs ours ("xla" and "chunked", chunked with small chunks so the
sequences span several blocks) and tokamax's "xla" and "xla_chunked" on the
same float32 inputs and compares outputs and gradients (q, k, v; bias where
given) at atol = rtol = 2e-5.

Where they differ (docs/design.md, "tokamax"), and so what is not compared:
rows with nothing to attend to (ours: zeros, residual -inf, zero gradients;
tokamax "xla": the mean of the values, because a row of equal mask values
softmaxes to uniform), segment ids, dropout and the residual (not in tokamax's
public function), and K/V memory under GQA (tokamax repeats K and V; ours does
not), which is a cost, not a value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn_jax
from attn_jax.attention import chunked as _chunked

tokamax = pytest.importorskip("tokamax")

TOL = dict(atol=2e-5, rtol=2e-5)
OURS = ("xla", "chunked")
THEIRS = ("xla", "xla_chunked")


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(_chunked.ChunkSizes, "for_problem", classmethod(lambda cls, t, s, backend=None: cls(8, 16)))


def _inputs(seed, t=37, s=45, n=4, k=2, h=16, hv=None):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, t, n, h), np.float32)
    kk = rng.standard_normal((2, s, k, h), np.float32)
    v = rng.standard_normal((2, s, k, hv or h), np.float32)
    return jnp.asarray(q), jnp.asarray(kk), jnp.asarray(v)


def _run(fn, q, k, v, bias, kwargs, rows=None):
    """Output and gradients of a loss over ``rows`` (``[B, T]`` bool; all rows by default)."""
    weight = 1.0 if rows is None else jnp.asarray(rows, jnp.float32)[:, :, None, None]

    def loss(q, k, v, bias):
        out = fn(q, k, v, bias, **kwargs)
        return jnp.sum(weight * out * jnp.cos(out)), out  # a non-trivial cotangent

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3) if bias is not None else (0, 1, 2),
                                         has_aux=True)(q, k, v, bias)
    return out, grads


CASES = {
    "full": dict(),
    "causal": dict(is_causal=True),
    "scale": dict(scale=0.3),
    "window": dict(local_window_size=(5, 2)),
    "window_int": dict(local_window_size=4),
    "soft_cap": dict(logits_soft_cap=2.5),
    "causal_window_cap": dict(is_causal=True, local_window_size=(6, 0), logits_soft_cap=3.0),
}


@pytest.mark.parametrize("theirs", THEIRS)
@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_tokamax(case, ours, theirs):
    q, k, v = _inputs(sorted(CASES).index(case))
    kwargs = CASES[case]
    a = _run(lambda *x, **kw: attn_jax.dot_product_attention(*x, implementation=ours, **kw), q, k, v, None, kwargs)
    b = _run(lambda *x, **kw: tokamax.dot_product_attention(*x, implementation=theirs, **kw), q, k, v, None, kwargs)
    np.testing.assert_allclose(a[0], b[0], **TOL)
    for ga, gb in zip(a[1], b[1]):
        np.testing.assert_allclose(ga, gb, **TOL)


@pytest.mark.parametrize("ours", OURS)
def test_matches_tokamax_with_bias_mask_lengths_and_value_dim(ours):
    """Bias (with its gradient), a boolean mask, sequence lengths, Hv != H, MQA: no row left empty."""
    q, k, v = _inputs(3, t=29, s=33, n=4, k=1, h=16, hv=24)
    rng = np.random.default_rng(4)
    bias = jnp.asarray(rng.standard_normal((2, 4, 29, 33), np.float32))
    mask = rng.random((2, 1, 29, 33)) > 0.3
    mask[..., 0] = True  # every row keeps key 0
    kwargs = dict(mask=jnp.asarray(mask), query_seq_lengths=jnp.array([29, 20]),
                  key_value_seq_lengths=jnp.array([33, 11]))
    valid = np.arange(29)[None, :] < np.array([29, 20])[:, None]  # rows past the query length differ (below)
    a = _run(lambda *x, **kw: attn_jax.dot_product_attention(*x, implementation=ours, **kw), q, k, v, bias, kwargs,
             valid)
    b = _run(lambda *x, **kw: tokamax.dot_product_attention(*x, implementation="xla", **kw), q, k, v, bias, kwargs,
             valid)
    np.testing.assert_allclose(np.asarray(a[0])[valid], np.asarray(b[0])[valid], **TOL)
    for ga, gb in zip(a[1], b[1]):  # the loss reads valid rows only, so every gradient is comparable
        np.testing.assert_allclose(ga, gb, **TOL)


def test_empty_rows_are_where_they_differ():
    """The documented difference: a row that sees no key is zeros in ours, the mean of V in tokamax's xla."""
    q, k, v = _inputs(5, t=6, s=6)
    mask = np.ones((2, 1, 6, 6), bool)
    mask[0, :, 2] = False  # batch 0, query 2: nothing visible
    ours = attn_jax.dot_product_attention(q, k, v, mask=jnp.asarray(mask), implementation="xla")
    theirs = tokamax.dot_product_attention(q, k, v, mask=jnp.asarray(mask), implementation="xla")
    np.testing.assert_array_equal(np.asarray(ours)[0, 2], 0.0)
    np.testing.assert_allclose(np.asarray(theirs)[0, 2], np.repeat(np.asarray(v)[0].mean(0), 2, axis=0), **TOL)
    rest = np.ones((2, 6), bool)
    rest[0, 2] = False
    np.testing.assert_allclose(np.asarray(ours)[rest], np.asarray(theirs)[rest], **TOL)
