"""Long Short-Term Memory-Network (Cheng, Dong and Lapata 2016): an LSTM whose single memory cell is
replaced by tapes of every previous hidden state and memory cell, read by intra-attention.

At step t, with hidden tape ``h_1..h_{t-1}``, memory tape ``c_1..c_{t-1}`` and the previous
adaptive summary ``h̃_{t-1}`` (shallow fusion, the paper's eqs. 4-8)::

    a_i = vᵀ tanh(W_h h_i + W_x x_t + W_h̃ h̃_{t-1})        s = softmax_i(a)
    h̃_t = Σ_i s_i h_i        c̃_t = Σ_i s_i c_i
    [i, f, o, ĉ] = [σ, σ, σ, tanh](W [h̃_t; x_t] + b)
    c_t = f ⊙ c̃_t + i ⊙ ĉ_t        h_t = o ⊙ tanh(c_t)

The tapes start with one zero slot (h_0 = c_0 = 0), so the first step attends to it and the cell
reduces to an LSTM from a zero state. ``W_h h_i`` is computed once, when ``h_i`` is written.

Deep fusion (eqs. 13-16, for encoder-decoders) adds inter-attention over an encoder's tapes
``γ_j`` (hidden) and ``α_j`` (cells): ``p_j = uᵀ tanh(W_γ γ_j + W_x' x_t + W_γ̃ γ̃_{t-1})``,
``q = softmax_j(p)``, ``γ̃_t = Σ q_j γ_j``, ``α̃_t = Σ q_j α_j``, ``r_t = σ(W_r [γ̃_t; x_t])`` and
``c_t = r_t ⊙ α̃_t + f ⊙ c̃_t + i ⊙ ĉ_t``. It is used when the module is built with
``context_features`` and called with a :class:`Context`.

``read="last"`` is a control, not the paper's model: the read is pinned to the newest slot (``s`` one-hot on
``t - 1``, no attention parameters), so ``h̃_t = h_{t-1}``, ``c̃_t = c_{t-1}`` and the cell is an LSTM with
this module's gates. Comparing it with ``read="attention"`` measures what the intra-attention read costs or
gains with everything else held fixed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax.nn.attention import masked_softmax

Array = jax.Array


class Context(NamedTuple):
    """An encoder's tapes for deep fusion: ``hidden [B, S, Dc]``, ``cells [B, S, Dc]``, ``lengths [B]``."""

    hidden: Array
    cells: Array
    lengths: Array


class LSTMNState(NamedTuple):
    """Tapes of ``L`` slots (slot 0 is the zero start): ``hidden``, ``cells [B, L, D]``, ``keys [B, L, A]``
    (``W_h h_i``), the last summary ``summary [B, D]``, ``inter [B, Dc]`` (deep fusion's last ``γ̃``, else
    ``[B, 0]``) and ``t`` (filled slots, a scalar)."""

    hidden: Array
    cells: Array
    keys: Array
    summary: Array
    inter: Array
    t: Array


READS = ("attention", "last")


def _linear(rngs: nnx.Rngs, fan_in: int, fan_out: int) -> nnx.Param:
    return nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (fan_in, fan_out)))


class LSTMN(nnx.Module):
    """``x [B, T, E]`` -> hidden states ``[B, T, D]`` (and intra-attention weights ``[B, T, T + 1]``).

    >>> cell = LSTMN(8, 16, rngs=nnx.Rngs(0))
    >>> h, w = cell(jnp.ones((2, 5, 8)), return_weights=True)  # h [2, 5, 16], w [2, 5, 6]
    """

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs,
                 attention_features: int | None = None, context_features: int | None = None,
                 read: str = "attention"):
        if read not in READS:
            raise ValueError(f"unknown read {read!r}; valid: {', '.join(READS)}")
        d, a = hidden_features, attention_features or hidden_features
        self.in_features, self.hidden_features, self.attention_features, self.read = in_features, d, a, read
        if read == "attention":
            self.w_h, self.w_x, self.w_s = _linear(rngs, d, a), _linear(rngs, in_features, a), _linear(rngs, d, a)
            self.v = nnx.Param(nnx.initializers.normal(a ** -0.5)(rngs.params(), (a,)))
        self.w_gates = _linear(rngs, d + in_features, 4 * d)
        # forget-gate bias 1 (Gers et al.), the usual LSTM initialisation
        self.b_gates = nnx.Param(jnp.zeros((4 * d,)).at[d:2 * d].set(1.0))
        self.context_features = context_features
        if context_features:
            c = context_features
            if c != d:
                raise ValueError(f"deep fusion adds the encoder's cells to this cell's: context_features {c} must "
                                 f"equal hidden_features {d}")
            self.u_c, self.u_x, self.u_s = _linear(rngs, c, a), _linear(rngs, in_features, a), _linear(rngs, c, a)
            self.u = nnx.Param(nnx.initializers.normal(a ** -0.5)(rngs.params(), (a,)))
            self.w_r = _linear(rngs, c + in_features, d)
            self.b_r = nnx.Param(jnp.zeros((d,)))

    def init_state(self, batch: int, length: int, dtype=jnp.float32) -> LSTMNState:
        """Empty tapes with room for ``length`` steps (``length + 1`` slots)."""
        d, a = self.hidden_features, self.attention_features
        zeros = lambda *s: jnp.zeros(s, dtype)  # noqa: E731
        return LSTMNState(zeros(batch, length + 1, d), zeros(batch, length + 1, d), zeros(batch, length + 1, a),
                          zeros(batch, d), zeros(batch, self.context_features or 0), jnp.asarray(1, jnp.int32))

    def _inter(self, x: Array, state: LSTMNState, ctx: Context):
        """Deep fusion's read of the encoder tapes: ``(γ̃_t, α̃_t)``, each ``[B, Dc]``."""
        keys = ctx.hidden @ self.u_c[...]  # [B, S, A]; cheap to recompute at these sizes
        scores = jnp.tanh(keys + (x @ self.u_x[...] + state.inter @ self.u_s[...])[:, None]) @ self.u[...]
        keep = jnp.arange(ctx.hidden.shape[1])[None, :] < ctx.lengths[:, None]
        q = masked_softmax(scores, keep)
        return jnp.einsum("BS,BSD->BD", q, ctx.hidden), jnp.einsum("BS,BSD->BD", q, ctx.cells)

    def step(self, state: LSTMNState, x: Array, context: Context | None = None) -> tuple[LSTMNState, Array, Array]:
        """One token ``x [B, E]``: returns the new state, ``h_t [B, D]`` and the weights ``s [B, L]``."""
        if (context is None) != (not self.context_features):
            raise ValueError("a Context is needed exactly when the module was built with context_features")
        slots = state.hidden.shape[1]
        if self.read == "last":
            s = jnp.broadcast_to(jax.nn.one_hot(state.t - 1, slots, dtype=x.dtype), state.hidden.shape[:2])
        else:
            query = x @ self.w_x[...] + state.summary @ self.w_s[...]  # [B, A]
            scores = jnp.tanh(state.keys + query[:, None]) @ self.v[...]  # [B, L]
            s = masked_softmax(scores, (jnp.arange(slots) < state.t)[None, :])
        h_sum = jnp.einsum("BL,BLD->BD", s, state.hidden)
        c_sum = jnp.einsum("BL,BLD->BD", s, state.cells)
        gates = jnp.concatenate([h_sum, x], axis=-1) @ self.w_gates[...] + self.b_gates[...]
        i, f, o, g = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c_sum + jax.nn.sigmoid(i) * jnp.tanh(g)
        inter = state.inter
        if context is not None:
            inter, a_sum = self._inter(x, state, context)
            r = jax.nn.sigmoid(jnp.concatenate([inter, x], axis=-1) @ self.w_r[...] + self.b_r[...])
            c = c + r * a_sum
        h = jax.nn.sigmoid(o) * jnp.tanh(c)

        def put(tape, row):
            return jax.lax.dynamic_update_slice_in_dim(tape, row[:, None].astype(tape.dtype), state.t, axis=1)

        key = h @ self.w_h[...] if self.read == "attention" else jnp.zeros(state.keys.shape[::2], h.dtype)
        new = LSTMNState(put(state.hidden, h), put(state.cells, c), put(state.keys, key), h_sum, inter, state.t + 1)
        return new, h, s

    def __call__(self, x: Array, *, context: Context | None = None, state: LSTMNState | None = None,
                 return_weights: bool = False):
        """Run over ``x [B, T, E]`` from ``state`` (default: empty tapes of T + 1 slots)."""
        b, t, _ = x.shape
        state = self.init_state(b, t, x.dtype) if state is None else state

        def body(st, xt):
            st, h, s = self.step(st, xt, context)
            return st, (h, s if return_weights else None)

        state, (h, s) = jax.lax.scan(body, state, jnp.swapaxes(x, 0, 1))
        h = jnp.swapaxes(h, 0, 1)
        return (h, jnp.swapaxes(s, 0, 1)) if return_weights else h
