"""LSTMN: the paper's equations in float64 numpy, causality by gradient, deep fusion's context."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn.lstmn import LSTMN, Context


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _reference(cell: LSTMN, x: np.ndarray):
    """Shallow-fusion LSTMN, eqs. 4-8, one example at a time in float64."""
    p = {k: np.asarray(getattr(cell, k)[...], np.float64) for k in ("w_h", "w_x", "w_s", "v", "w_gates", "b_gates")}
    b, t, _ = x.shape
    d = cell.hidden_features
    hs, ws = np.zeros((b, t, d)), np.zeros((b, t, t + 1))
    for n in range(b):
        hidden, cells, summary = [np.zeros(d)], [np.zeros(d)], np.zeros(d)
        for step in range(t):
            xt = x[n, step].astype(np.float64)
            a = np.array([p["v"] @ np.tanh(h @ p["w_h"] + xt @ p["w_x"] + summary @ p["w_s"]) for h in hidden])
            s = np.exp(a - a.max())
            s /= s.sum()
            summary, c_sum = s @ np.array(hidden), s @ np.array(cells)
            gates = np.concatenate([summary, xt]) @ p["w_gates"] + p["b_gates"]
            i, f, o, g = np.split(gates, 4)
            c = _sigmoid(f) * c_sum + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            hidden.append(h)
            cells.append(c)
            hs[n, step], ws[n, step, :step + 1] = h, s
    return hs, ws


def test_lstmn_equals_the_papers_equations():
    cell = LSTMN(5, 8, attention_features=6, rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 7, 5)))
    h, w = cell(jnp.asarray(x), return_weights=True)
    ref_h, ref_w = _reference(cell, x)
    np.testing.assert_allclose(h, ref_h, atol=1e-5)
    np.testing.assert_allclose(w, ref_w, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, atol=1e-6)


def test_outputs_never_depend_on_later_inputs():
    cell = LSTMN(4, 6, rngs=nnx.Rngs(2))
    x = jax.random.normal(jax.random.key(3), (1, 6, 4))
    jac = jax.jacobian(lambda x: cell(x)[0].sum(-1))(x)[:, 0]  # [T_out, T_in, E]
    norms = np.asarray(jnp.abs(jac).sum(-1))
    later = np.triu(np.ones((6, 6), bool), k=1)
    assert np.all(norms[later] == 0.0)
    assert np.all(norms[~later] > 0.0)  # every earlier input reaches every later output


def test_deep_fusion_reads_the_context_and_ignores_its_padding():
    cell = LSTMN(4, 6, context_features=6, rngs=nnx.Rngs(4))
    x = jax.random.normal(jax.random.key(5), (2, 5, 4))
    hid, cel = (jax.random.normal(jax.random.key(k), (2, 3, 6)) for k in (6, 7))
    ctx = Context(hid, cel, jnp.array([3, 2]))
    out = cell(x, context=ctx)
    padded = Context(*(jnp.concatenate([a, 9.0 * jnp.ones((2, 4, 6))], axis=1) for a in (hid, cel)),
                     jnp.array([3, 2]))
    np.testing.assert_allclose(cell(x, context=padded), out, atol=1e-6)
    changed = Context(hid.at[1, 1].add(1.0), cel, ctx.lengths)
    assert not np.allclose(cell(x, context=changed)[1], out[1], atol=1e-4)
    jac = jax.jacobian(lambda x: cell(x, context=ctx)[0].sum(-1))(x)[:, 0]
    assert np.all(np.asarray(jnp.abs(jac).sum(-1))[np.triu(np.ones((5, 5), bool), k=1)] == 0.0)


def test_lstmn_jit_grad_and_errors():
    cell = LSTMN(3, 4, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 4, 3))
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(cell)
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads["w_h"][...]).sum()) > 0  # the attention keys are trained
    with pytest.raises(ValueError, match="Context"):
        cell(x, context=Context(jnp.ones((2, 1, 4)), jnp.ones((2, 1, 4)), jnp.ones((2,), jnp.int32)))
    with pytest.raises(ValueError, match="context_features"):
        LSTMN(3, 4, context_features=5, rngs=nnx.Rngs(0))


def test_read_last_is_an_lstm_with_the_cells_gates():
    """The control ``read="last"``: weights one-hot on the newest slot, and h_t the LSTM recurrence on
    [h_{t-1}; x_t] with this module's gates (float64 numpy), without attention parameters."""
    cell = LSTMN(5, 8, rngs=nnx.Rngs(0), read="last")
    assert not hasattr(cell, "w_h") and not hasattr(cell, "v")
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 6, 5)))
    h, w = cell(jnp.asarray(x), return_weights=True)
    np.testing.assert_array_equal(np.asarray(w), np.broadcast_to(np.eye(6, 7), (2, 6, 7)))
    wg, bg = (np.asarray(getattr(cell, k)[...], np.float64) for k in ("w_gates", "b_gates"))
    hp, cp = np.zeros((2, 8)), np.zeros((2, 8))
    for t in range(6):
        i, f, o, g = np.split(np.concatenate([hp, x[:, t]], axis=-1) @ wg + bg, 4, axis=-1)
        cp = _sigmoid(f) * cp + _sigmoid(i) * np.tanh(g)
        hp = _sigmoid(o) * np.tanh(cp)
        np.testing.assert_allclose(h[:, t], hp, atol=1e-5)
    with pytest.raises(ValueError, match="unknown read"):
        LSTMN(5, 8, rngs=nnx.Rngs(0), read="first")
