"""One implementation vocabulary for every op: sequences, aliases, reasons, the same errors."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
import pytest

import attn_jax
from attn_jax import additive_attention, decode_attention, dot_product_attention
from attn_jax.attention.registry import implementation_names


def _dpa(impl):
    q = jnp.ones((1, 4, 2, 8))
    return dot_product_attention(q, q, q, implementation=impl)


def _additive(impl):
    x = jnp.ones((1, 4, 8))
    return additive_attention(x, x, x, jnp.ones((8, 4)), jnp.ones((8, 4)), jnp.ones(4), implementation=impl)


def _decode(impl):
    return decode_attention(jnp.ones((1, 2, 8)), jnp.ones((1, 16, 2, 8)), jnp.ones((1, 16, 2, 8)), jnp.array([5]),
                            implementation=impl)


OPS = {"dot_product_attention": _dpa, "additive_attention": _additive, "decode_attention": _decode}


@pytest.mark.parametrize("op", OPS)
def test_every_op_knows_the_whole_vocabulary(op):
    module = {"dot_product_attention": attn_jax.attention.dispatch, "additive_attention": attn_jax.attention.additive,
              "decode_attention": attn_jax.attention.decode}[op]
    assert set(module.REGISTRY.names) == set(attn_jax.attention.dispatch.REGISTRY.names)


@pytest.mark.parametrize("op", OPS)
def test_sequences_take_the_first_that_serves_and_aliases_resolve(op, caplog):
    run = OPS[op]
    want = np.asarray(run("xla"))
    with caplog.at_level(logging.DEBUG, logger="attn_jax"):
        got = run(("pallas_mosaic_gpu", "cudnn", "xla_chunked"))  # the first two decline on CPU
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert "'pallas_mosaic_gpu' declined" in caplog.text and "'cudnn' declined" in caplog.text
    np.testing.assert_allclose(run(["triton"]), want, rtol=1e-5, atol=1e-6)  # tokamax's alias of pallas_triton


@pytest.mark.parametrize("op", OPS)
def test_unsupported_lists_every_reason(op):
    with pytest.raises(attn_jax.UnsupportedError, match=rf"{op}: .*pallas_mosaic_gpu: .*; cudnn: "):
        OPS[op](["pallas_mosaic_gpu", "cudnn"])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad, exc", [("flash", ValueError), (3, TypeError), ([], ValueError), ({"xla": 1}, TypeError)])
def test_bad_names_and_types(op, bad, exc):
    with pytest.raises(exc, match="implementation"):
        OPS[op](bad)


def test_implementation_names():
    assert implementation_names(None) is None
    assert implementation_names("xla") == ("xla",)
    assert implementation_names(["xla", "chunked"]) == ("xla", "chunked")
