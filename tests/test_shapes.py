"""The public primitives' jaxtyping annotations agree with their contract: under shape checking, good calls
(batch dims, GQA, Hv != H, broadcast masks, numpy inputs) pass and inconsistent shapes are refused; without it
(the default) nothing is checked and the library does not need beartype."""

from __future__ import annotations

import numpy as np
import pytest

import attn_jax
from attn_jax import shapes

pytest.importorskip("beartype")
from jaxtyping import TypeCheckError  # noqa: E402

rng = np.random.default_rng(0)


def _arr(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_dot_product_attention_shapes_pass_and_fail_under_checking():
    checked = shapes.typechecked(attn_jax.dot_product_attention)
    q, k, v = _arr(2, 5, 4, 8), _arr(2, 7, 2, 8), _arr(2, 7, 2, 6)  # GQA (4 over 2 heads), Hv 6 != H 8
    out = checked(q, k, v, mask=np.ones((1, 1, 5, 7), bool), key_value_seq_lengths=np.array([7, 3]),
                  q_segment_ids=np.zeros((2, 5), np.int32), kv_segment_ids=np.zeros((2, 7), np.int32))
    assert out.shape == (2, 5, 4, 6)
    out, lse = checked(q[0], k[0], v[0], return_residual=True)  # no batch dims: *B is empty
    assert out.shape == (5, 4, 6) and lse.shape == (5, 4)
    with pytest.raises(TypeCheckError):
        checked(q, _arr(2, 7, 2, 16), v)  # the key's head size is not the query's
    with pytest.raises(TypeCheckError):
        checked(q, _arr(3, 7, 2, 8), _arr(3, 7, 2, 6))  # batch differs between query and keys
    with pytest.raises(TypeCheckError):
        checked(q, k, v, key_value_seq_lengths=np.array([7, 3, 1]))  # one length per batch row


def test_unchecked_is_the_default():
    """Without the wrapper a wrong call reaches the library's own validation (a ValueError), not jaxtyping."""
    with pytest.raises(ValueError):
        attn_jax.dot_product_attention(_arr(2, 5, 4, 8), _arr(2, 7, 2, 16), _arr(2, 7, 2, 6))


def test_decode_additive_and_ring_annotations():
    dec = shapes.typechecked(attn_jax.decode_attention)
    out = dec(_arr(3, 4, 8), _arr(3, 9, 2, 8), _arr(3, 9, 2, 5), np.array([9, 1, 0], np.int32))
    assert out.shape == (3, 4, 5)
    with pytest.raises(TypeCheckError):
        dec(_arr(3, 4, 8), _arr(3, 9, 2, 8), _arr(3, 9, 2, 5), np.array([9, 1], np.int32))  # B lengths
    add = shapes.typechecked(attn_jax.additive_attention)
    ctx = add(_arr(2, 3, 6), _arr(2, 5, 4), _arr(2, 5, 7), _arr(6, 10), _arr(4, 10), _arr(10))
    assert ctx.shape == (2, 3, 7)
    with pytest.raises(TypeCheckError):
        add(_arr(2, 3, 6), _arr(2, 5, 4), _arr(2, 5, 7), _arr(6, 10), _arr(4, 11), _arr(10))  # A differs


def test_every_public_attention_primitive_is_annotated():
    import typing

    for fn, dims in ((attn_jax.dot_product_attention, "*B T N H"), (attn_jax.decode_attention, "B N H"),
                     (attn_jax.additive_attention, "*B T Dq"), (attn_jax.ring_attention, "*B T N H"),
                     (attn_jax.ring_attention_sharded, "*B T N H")):
        hints = typing.get_type_hints(fn)
        assert dims in str(hints["query"]) and "return" in hints, fn.__name__


def test_scores_memory_and_local_attention_annotations():
    import jax.numpy as jnp

    from attn_jax import memory, scores

    general = shapes.typechecked(scores.general)
    assert general(_arr(2, 3, 6), _arr(1, 5, 4), _arr(6, 4)).shape == (2, 3, 5)  # batch dims broadcast
    with pytest.raises(TypeCheckError):
        general(_arr(2, 3, 6), _arr(2, 5, 4), _arr(4, 6))  # w is [Dq, Dk]
    dot = shapes.typechecked(scores.dot)
    with pytest.raises(TypeCheckError):
        dot(_arr(3, 6), _arr(5, 4))  # dot needs keys as wide as the queries
    cosine = shapes.typechecked(scores.cosine)
    assert cosine(_arr(2, 3, 6), _arr(2, 5, 6), np.ones((2, 3), np.float32)).shape == (2, 3, 5)

    mem, w = jnp.asarray(_arr(2, 8, 4)), jnp.full((2, 8), 1 / 8)
    read, write = shapes.typechecked(memory.read), shapes.typechecked(memory.write)
    assert read(mem, w).shape == (2, 4)
    assert write(mem, w, jnp.zeros((2, 4)), jnp.ones((2, 4))).shape == (2, 8, 4)
    with pytest.raises(TypeCheckError):
        read(mem, jnp.full((2, 7), 1 / 7))  # a weighting over 7 slots of an 8-slot memory
    address = shapes.typechecked(memory.address)
    out = address(mem, w, jnp.asarray(_arr(2, 4)), np.ones(2, np.float32), np.ones(2, np.float32),
                  jnp.asarray([[0.0, 1.0, 0.0]] * 2), np.ones(2, np.float32))
    assert out.shape == (2, 8)

    center = shapes.typechecked(attn_jax.predictive_center)
    h = jnp.asarray(_arr(2, 3, 6))
    assert center(h, jnp.asarray(_arr(6, 5)), jnp.asarray(_arr(5)), np.array([7, 4])).shape == (2, 3)
    with pytest.raises(TypeCheckError):
        center(h, jnp.asarray(_arr(6, 5)), jnp.asarray(_arr(4)), np.array([7, 4]))  # A differs
    local = shapes.typechecked(attn_jax.local_attention_weights)
    assert local(jnp.asarray(_arr(2, 3, 7)), np.zeros((2, 3), np.float32), 2, True).shape == (2, 3, 7)
