"""MaskSpec: predicate blocks equal the dense mask; block ranges never drop a visible key."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import np_visible

from attn_jax.masks import MaskSpec, dense_mask, normalize_window


def test_normalize_window():
    assert normalize_window(None) is None
    assert normalize_window(3) == (3, 3)
    assert normalize_window((2, 0)) == (2, 0)
    assert normalize_window(np.int64(1)) == (1, 1)
    with pytest.raises(ValueError):
        normalize_window(-1)
    with pytest.raises(TypeError):
        normalize_window(2.5)
    with pytest.raises(TypeError):
        normalize_window(True)


SPECS = {
    "causal": dict(is_causal=True),
    "window": dict(window=(3, 1)),
    "causal_window": dict(is_causal=True, window=(4, 0)),
    "lengths": dict(q_lengths=[3, 9], kv_lengths=[11, 2]),
    "segments": dict(q_segment_ids=[[0] * 4 + [1] * 5, [2] * 9], kv_segment_ids=[[0] * 6 + [1] * 5, [1] * 5 + [2] * 6]),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_dense_mask_matches_numpy(name):
    kw = SPECS[name]
    spec = MaskSpec(**{k: (jnp.asarray(v) if isinstance(v, list) else v) for k, v in kw.items()})
    ref = np_visible(
        2, 9, 11,
        is_causal=kw.get("is_causal", False), window=kw.get("window"),
        q_len=kw.get("q_lengths"), kv_len=kw.get("kv_lengths"),
        q_seg=kw.get("q_segment_ids"), kv_seg=kw.get("kv_segment_ids"),
    )
    np.testing.assert_array_equal(np.broadcast_to(dense_mask(spec, 9, 11), ref.shape), ref)


@pytest.mark.parametrize("name", ["causal", "window", "causal_window"])
@pytest.mark.parametrize("t, s, bq, bk", [(9, 11, 2, 3), (17, 5, 4, 2), (1, 7, 1, 3), (30, 30, 7, 5)])
def test_block_ranges_cover_every_visible_key(name, t, s, bq, bk):
    spec = MaskSpec(**SPECS[name])
    dense = np.asarray(dense_mask(spec, t, s))[0]
    nq, nk = -(-t // bq), -(-s // bk)
    for i, j in itertools.product(range(nq), range(nk)):
        q0, k0 = i * bq, j * bk
        blk = dense[q0 : q0 + bq, k0 : k0 + bk]
        lo, hi = spec.key_block_range(q0, min(q0 + bq, t), bk, nk)
        qlo, qhi = spec.query_block_range(k0, min(k0 + bk, s), bq, nq)
        if blk.any():
            assert lo <= j < hi, (i, j, int(lo), int(hi))
            assert qlo <= i < qhi, (i, j, int(qlo), int(qhi))


@pytest.mark.parametrize("name", ["causal", "window", "causal_window"])
def test_block_ranges_skip_masked_blocks(name):
    spec = MaskSpec(**SPECS[name])
    t = 40
    bq = bk = 5
    n = t // bq
    visited = sum(int(hi - lo) for lo, hi in (spec.key_block_range(i * bq, i * bq + bq, bk, n) for i in range(n)))
    # causal visits the lower triangle (36 of 64); the narrow windows a band.
    assert visited <= 36, visited


def test_block_with_padding_bounds():
    spec = MaskSpec(is_causal=True)
    blk = np.asarray(spec.block(4, 4, 4, 4, q_bound=6, k_bound=7))[0]
    expected = np.zeros((4, 4), bool)
    for a in range(4):
        for b in range(4):
            qi, kj = 4 + a, 4 + b
            expected[a, b] = kj <= qi and qi < 6 and kj < 7
    np.testing.assert_array_equal(blk, expected)


def test_empty_spec_masks_nothing():
    spec = MaskSpec()
    assert spec.is_empty and spec.block(0, 3, 0, 4) is None
    assert np.all(np.asarray(dense_mask(spec, 3, 4)))


def test_online_softmax_blocks_equal_full_softmax(rng):
    from attn_jax.masks import MASK_VALUE
    from attn_jax.softmax import online_softmax_finish, online_softmax_step

    s = rng.normal(size=(3, 10)).astype(np.float32)
    keep = rng.random((3, 10)) > 0.3
    keep[2] = False  # an empty row
    v = rng.normal(size=(10, 4)).astype(np.float32)
    sm = np.where(keep, s, MASK_VALUE)
    m, l, acc = np.full(3, MASK_VALUE, np.float32), np.zeros(3, np.float32), np.zeros((3, 4), np.float32)
    for lo in (0, 4, 8):  # ragged blocks 4, 4, 2
        blk = slice(lo, lo + 4)
        m, alpha, p, l = online_softmax_step(m, l, jnp.asarray(sm[:, blk]), jnp.asarray(keep[:, blk]))
        acc = alpha[:, None] * acc + p @ v[blk]
    out, lse = online_softmax_finish(acc, m, l)
    for r in range(2):
        w = np.exp(s[r][keep[r]] - s[r][keep[r]].max())
        np.testing.assert_allclose(out[r], (w / w.sum()) @ v[keep[r]], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lse[r], np.log(w.sum()) + s[r][keep[r]].max(), rtol=1e-6)
    assert np.all(out[2] == 0) and lse[2] == MASK_VALUE
