"""Bad input raises before computing, naming the argument and what it got; dispatch rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn_jax
from attn_jax import UnsupportedError
from attn_jax.attention import dispatch as attention_mod

Q = jnp.zeros((2, 5, 4, 8))
K = jnp.zeros((2, 7, 2, 8))
V = jnp.zeros((2, 7, 2, 8))


def dpa(q=Q, k=K, v=V, *args, **kw):
    return attn_jax.dot_product_attention(q, k, v, *args, **kw)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(k=jnp.zeros((7, 2, 8))), ValueError, r"same rank.*key \(7, 2, 8\)"),
        (dict(q=jnp.zeros((5, 8))), ValueError, r"rank >= 3.*\(5, 8\)"),
        (dict(k=jnp.zeros((2, 7, 2, 16)), v=jnp.zeros((2, 7, 2, 16))), ValueError, r"head_dim.*H=8.*H=16"),
        (dict(v=jnp.zeros((2, 6, 2, 8))), ValueError, r"lengths differ.*S=7.*S=6"),
        (dict(k=jnp.zeros((2, 7, 3, 8)), v=jnp.zeros((2, 7, 3, 8))), ValueError, r"multiple.*N=4.*K=3"),
        (dict(k=jnp.zeros((3, 7, 2, 8)), v=jnp.zeros((3, 7, 2, 8))), ValueError, r"batch dims"),
        (dict(bias=jnp.zeros((2, 4, 5, 6))), ValueError, r"bias of shape \(2, 4, 5, 6\).*\(2, 4, 5, 7\)"),
        (dict(mask=jnp.ones((3, 1, 5, 7), bool)), ValueError, r"mask of shape \(3, 1, 5, 7\)"),
        (dict(mask=jnp.ones((1, 1, 5, 7))), TypeError, r"mask must be boolean.*float32"),
        (dict(bias=jnp.zeros((1, 1, 5, 7), jnp.int32)), TypeError, r"bias must be a floating dtype"),
        (dict(local_window_size=-1), ValueError, r"non-negative.*-1"),
        (dict(local_window_size=(2, -3)), ValueError, r"non-negative.*\(2, -3\)"),
        (dict(local_window_size=(1, 2, 3)), TypeError, r"local_window_size"),
        (dict(query_seq_lengths=jnp.array([1, 2, 3])), ValueError, r"query_seq_lengths.*\(2,\).*\(3,\)"),
        (dict(key_value_seq_lengths=jnp.array([1.0, 2.0])), TypeError, r"key_value_seq_lengths.*integer"),
        (dict(key_value_seq_lengths=jnp.array([1, -2])), ValueError, r"non-negative"),
        (dict(q_segment_ids=jnp.zeros((2, 5), jnp.int32)), ValueError, r"given together"),
        (
            dict(q_segment_ids=jnp.zeros((2, 6), jnp.int32), kv_segment_ids=jnp.zeros((2, 7), jnp.int32)),
            ValueError,
            r"q_segment_ids.*\(2, 5\).*\(2, 6\)",
        ),
        (
            dict(q_segment_ids=jnp.zeros((2, 5)), kv_segment_ids=jnp.zeros((2, 7), jnp.int32)),
            TypeError,
            r"q_segment_ids must be an integer",
        ),
        (dict(q=jnp.zeros((2, 5, 4, 8), jnp.int32)), TypeError, r"query must be a floating dtype, got int32"),
        (dict(q=jnp.zeros((2, 5, 4, 8), jnp.bfloat16)), TypeError, r"same dtype.*bfloat16.*float32"),
        (dict(logits_soft_cap=0.0), ValueError, r"logits_soft_cap must be positive"),
        (dict(implementation="flash9000"), ValueError, r"unknown implementation 'flash9000'"),
        (dict(implementation=["xla", "nope"]), ValueError, r"unknown implementation 'nope'"),
    ],
)
def test_bad_input_raises_with_details(kwargs, exc, pattern):
    q, k, v = kwargs.pop("q", Q), kwargs.pop("k", K), kwargs.pop("v", V)
    bias, mask = kwargs.pop("bias", None), kwargs.pop("mask", None)
    with pytest.raises(exc, match=pattern):
        dpa(q, k, v, bias, mask, **kwargs)


def test_errors_raise_before_computation(monkeypatch):
    """Validation happens on shapes: no implementation is ever called."""
    called = []
    monkeypatch.setattr(attention_mod.REGISTRY, "run", lambda *a, **k: called.append(a))
    with pytest.raises(ValueError):
        dpa(v=jnp.zeros((2, 6, 2, 8)))
    assert not called


def test_unsupported_error_is_value_and_not_implemented_error():
    assert issubclass(UnsupportedError, ValueError)
    assert issubclass(UnsupportedError, NotImplementedError)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cudnn is available on GPU")
def test_cudnn_on_cpu_raises_unsupported():
    with pytest.raises(UnsupportedError, match=r"cudnn needs a GPU backend"):
        dpa(implementation="cudnn")


@pytest.mark.parametrize("name", ["pallas_mosaic_gpu"])
def test_unwritten_kernels_raise_unsupported(name):
    with pytest.raises(UnsupportedError, match="not implemented yet"):
        dpa(implementation=name)


def test_mosaic_alias_resolves_by_backend():
    expected = "pallas_mosaic_tpu" if jax.default_backend() == "tpu" else "pallas_mosaic_gpu"
    with pytest.raises(UnsupportedError, match=expected):
        dpa(implementation="mosaic")


def test_sequence_uses_first_supported_and_aliases():
    out = dpa(implementation=["pallas_mosaic_gpu", "cudnn", "xla_chunked"])
    np.testing.assert_allclose(out, dpa(implementation="xla"))
    assert attention_mod.implementation_for(["mosaic", "xla"], Q, K, V) == "xla"
    assert attention_mod.implementation_for(["triton", "xla"], Q, K, V) == "pallas_triton"
    assert attention_mod.implementation_for("xla_chunked", Q, K, V) == "chunked"


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cudnn is available on GPU")
def test_sequence_none_supported_lists_every_reason():
    with pytest.raises(UnsupportedError, match=r"pallas_mosaic_gpu: .*; cudnn: cudnn needs a GPU"):
        dpa(implementation=("pallas_mosaic_gpu", "cudnn"))


def test_default_is_xla_then_chunked_above_threshold(monkeypatch, caplog):
    monkeypatch.setattr(attention_mod, "cpu_table", lambda: None)  # the memory budget alone
    assert attention_mod.implementation_for(None, Q, K, V) == "xla"
    monkeypatch.setattr(attention_mod, "DENSE_LOGITS_LIMIT_BYTES", 16)
    with caplog.at_level("DEBUG", logger="attn_jax"):
        assert attention_mod.implementation_for(None, Q, K, V) == "chunked"
    assert any("chunked" in r.message for r in caplog.records)
    assert any("not pallas" in r.message for r in caplog.records)


def _table(*entries):
    return dict(entries=[dict(seq_len=t, causal=c, gqa=g, xla_s=x, chunked_s=ch) for t, c, g, x, ch in entries])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the measured table is read on CPU only")
def test_default_on_cpu_follows_the_measured_table(monkeypatch, caplog):
    table = _table((256, False, False, 1.0, 2.0), (4096, False, False, 9.0, 3.0),
                   (256, True, False, 2.0, 1.0), (256, False, True, 1.0, 2.0))
    monkeypatch.setattr(attention_mod, "cpu_table", lambda: table)
    q, kv, kv_gqa = jnp.zeros((1, 5, 4, 8)), jnp.zeros((1, 7, 4, 8)), jnp.zeros((1, 7, 1, 8))
    q_long, kv_long = jnp.zeros((1, 3000, 4, 8)), jnp.zeros((1, 3000, 4, 8))  # nearest entry: 4096
    assert attention_mod.implementation_for(None, q, kv, kv) == "xla"  # T=5: nearest 256, xla faster
    with caplog.at_level("DEBUG", logger="attn_jax"):
        assert attention_mod.implementation_for(None, q_long, kv_long, kv_long) == "chunked"
    assert any("measured chunked faster" in r.message for r in caplog.records)
    assert attention_mod.implementation_for(None, q, kv, kv, is_causal=True) == "chunked"  # the causal entry
    assert attention_mod.implementation_for(None, q, kv, kv, local_window_size=2) == "chunked"  # windows: causal
    assert attention_mod.implementation_for(None, q, kv_gqa, kv_gqa) == "xla"  # the GQA entry
    # the memory budget overrides the table
    monkeypatch.setattr(attention_mod, "DENSE_LOGITS_LIMIT_BYTES", 16)
    assert attention_mod.implementation_for(None, q, kv, kv) == "chunked"


def test_committed_cpu_table_is_read():
    table = attention_mod.cpu_table()
    assert table is not None and table["mode"] == "fwd+bwd"
    assert {(e["causal"], e["gqa"]) for e in table["entries"]} == {(False, False), (True, False), (False, True),
                                                                   (True, True)}
    assert all(e["xla_s"] > 0 and e["chunked_s"] > 0 for e in table["entries"])


def test_empty_implementation_sequence():
    with pytest.raises(ValueError, match="empty"):
        dpa(implementation=[])
