"""NTM addressing (attn_jax.memory) against a float64 numpy transcription of Graves et al. (2014) eqs. 3.1-3.9."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from attn_jax import memory as mem

B, N, M, L = 3, 7, 5, 3


def np_cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def np_address(memory, w_prev, key, beta, gate, s, gamma):
    """Eqs. 3.5-3.9, one example at a time, with explicit loops."""
    out = np.zeros_like(w_prev)
    for b in range(memory.shape[0]):
        logits = np.array([beta[b] * np_cos(key[b], memory[b, i]) for i in range(N)])
        wc = np.exp(logits - logits.max())
        wc /= wc.sum()                                              # (3.5)-(3.6)
        wg = gate[b] * wc + (1 - gate[b]) * w_prev[b]               # (3.7)
        wt = np.zeros(N)
        for i in range(N):                                          # (3.8): w~(i) = Σ_k w(k) s(i - k)
            for k in range(N):
                offset = (i - k) % N
                offset = offset - N if offset > N // 2 else offset  # offsets -1, 0, +1 as indices of s
                if -(L // 2) <= offset <= L // 2:
                    wt[i] += wg[k] * s[b, offset + L // 2]
        ws = wt ** gamma[b]
        out[b] = ws / ws.sum()                                      # (3.9)
    return out


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    softmax = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)  # noqa: E731
    return dict(memory=rng.normal(size=(B, N, M)), w_prev=softmax(rng.normal(size=(B, N))),
                key=rng.normal(size=(B, M)), beta=rng.uniform(0.5, 5, B), gate=rng.uniform(0, 1, B),
                s=softmax(rng.normal(size=(B, L))), gamma=rng.uniform(1, 4, B))


def test_address_matches_the_papers_equations():
    x = _inputs()
    got = mem.address(**{k: jnp.asarray(v, jnp.float32) for k, v in x.items()})
    np.testing.assert_allclose(np.asarray(got), np_address(**x), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, rtol=1e-5)


def test_each_step():
    x = _inputs(1)
    j = {k: jnp.asarray(v, jnp.float32) for k, v in x.items()}
    wc = np.asarray(mem.content_weights(j["memory"], j["key"], j["beta"]))
    for b in range(B):
        logits = np.array([x["beta"][b] * np_cos(x["key"][b], x["memory"][b, i]) for i in range(N)])
        np.testing.assert_allclose(wc[b], np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    w = np.asarray(mem.interpolate(j["w_prev"], j["w_prev"] * 0 + 1 / N, j["gate"]))
    np.testing.assert_allclose(w, x["gate"][:, None] * x["w_prev"] + (1 - x["gate"][:, None]) / N, rtol=1e-5)
    one_hot = jnp.eye(N)[jnp.array([0, 3, N - 1])]
    plus_one = jnp.tile(jnp.array([0.0, 0.0, 1.0]), (B, 1))
    np.testing.assert_array_equal(np.argmax(np.asarray(mem.shift(one_hot, plus_one)), -1), [1, 4, 0])  # wraps
    minus_two = jnp.tile(jnp.eye(5)[0], (B, 1))  # L = 5, all on offset -2
    np.testing.assert_array_equal(np.argmax(np.asarray(mem.shift(one_hot, minus_two)), -1), [N - 2, 1, N - 3])
    np.testing.assert_allclose(np.asarray(mem.sharpen(j["w_prev"], jnp.ones(B))), x["w_prev"], rtol=1e-5)
    sharp = np.asarray(mem.sharpen(j["w_prev"], jnp.full(B, 50.0)))
    np.testing.assert_allclose(sharp.max(-1), 1.0, atol=1e-3)  # large gamma -> one-hot
    np.testing.assert_array_equal(np.argmax(sharp, -1), np.argmax(x["w_prev"], -1))


def test_read_and_write():
    x = _inputs(2)
    rng = np.random.default_rng(3)
    erase, add = rng.uniform(0, 1, (B, M)), rng.normal(size=(B, M))
    r = mem.read(jnp.asarray(x["memory"]), jnp.asarray(x["w_prev"]))
    np.testing.assert_allclose(np.asarray(r), np.einsum("bn,bnm->bm", x["w_prev"], x["memory"]), rtol=1e-5)
    new = mem.write(*(jnp.asarray(a, jnp.float32) for a in (x["memory"], x["w_prev"], erase, add)))
    expected = np.empty_like(x["memory"])
    for b in range(B):
        for i in range(N):  # (3.2) erase, then (3.3) add
            expected[b, i] = x["memory"][b, i] * (1 - x["w_prev"][b, i] * erase[b]) + x["w_prev"][b, i] * add[b]
    np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5, atol=1e-6)
    # full erase on a one-hot slot replaces that slot by the add vector and leaves the others alone
    w = jnp.eye(N)[jnp.array([2, 2, 2])]
    new = np.asarray(mem.write(jnp.asarray(x["memory"]), w, jnp.ones((B, M)), jnp.asarray(add)))
    np.testing.assert_allclose(new[:, 2], add, rtol=1e-6)
    np.testing.assert_allclose(np.delete(new, 2, axis=1), np.delete(x["memory"], 2, axis=1), rtol=1e-6)


def test_zero_vectors_are_finite_with_finite_gradients():
    memory = jnp.zeros((B, N, M)).at[:, 0].set(1.0)  # mostly zero slots, as at the start of an episode
    key = jnp.zeros((B, M))
    beta = jnp.full((B,), 3.0)
    w = mem.content_weights(memory, key, beta)
    np.testing.assert_allclose(np.asarray(w), 1.0 / N, rtol=1e-6)  # cos = 0 everywhere: uniform

    def loss(memory, key, beta, gamma):
        w = mem.address(memory, jnp.full((B, N), 1.0 / N), key, beta, jnp.full((B,), 0.7),
                        jnp.tile(jnp.array([0.1, 0.8, 0.1]), (B, 1)), gamma)
        return jnp.sum(mem.read(memory, w) ** 2) + jnp.sum(w * jnp.arange(N))

    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(memory, key, beta, jnp.full((B,), 2.0))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    zero_w = jnp.zeros((B, N)).at[:, 1].set(1.0)  # sharpening exact zeros keeps them zero, grads finite
    g = jax.grad(lambda w, gamma: jnp.sum(mem.sharpen(w, gamma) * jnp.arange(N)), argnums=(0, 1))(
        zero_w, jnp.full((B,), 1.5))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in g)


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        x = {k: jnp.asarray(v, jnp.float64) for k, v in _inputs(4).items()}
        check_grads(lambda m, k, b, g, s, ga: mem.address(m, x["w_prev"], k, b, g, s, ga),
                    (x["memory"], x["key"], x["beta"], x["gate"], x["s"], x["gamma"]), order=1,
                    modes=["rev"], atol=1e-6, rtol=1e-6)


def test_errors():
    x = {k: jnp.asarray(v, jnp.float32) for k, v in _inputs().items()}
    with pytest.raises(ValueError, match="odd length L"):
        mem.shift(x["w_prev"], jnp.ones((B, 2)) / 2)
    with pytest.raises(ValueError, match="beta must be"):
        mem.content_weights(x["memory"], x["key"], jnp.ones(()))
    with pytest.raises(ValueError, match="key"):
        mem.content_weights(x["memory"], x["key"][:, :2], x["beta"])
    with pytest.raises(ValueError, match="erase and add"):
        mem.write(x["memory"], x["w_prev"], x["key"][:, :2], x["key"])
    with pytest.raises(ValueError, match="gamma must be"):
        mem.sharpen(x["w_prev"], jnp.ones((B, 1)))
    with pytest.raises(ValueError, match="w must be"):
        mem.read(x["memory"], x["w_prev"][:, :3])
