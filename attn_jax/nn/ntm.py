"""Neural Turing Machine (Graves, Wayne & Danihelka 2014) and the LSTM baseline, in Flax NNX.

:class:`NTM` = a controller (LSTM or feed-forward) + ``read_heads`` read heads
and one write head over an ``N x M`` memory, addressed with
:mod:`attn_jax.memory` (content, interpolation, circular shift, sharpening).
Each step: the controller sees ``[x_t; r_{t-1}]``; every head emits its
addressing parameters from the controller state (key; β = softplus; g = sigmoid;
shift = softmax over offsets -1, 0, +1; γ = 1 + softplus; and for the write head
erase = sigmoid, add); the read heads read ``M_{t-1}``, then the write head
writes; the output is ``W [h_t; r_t]`` (logits). The initial memory, read vectors
and weightings are learned.

``__call__(x [B, T, I])`` returns logits ``[B, T, O]`` and a trace with the read
and write weightings ``[B, T, R, N]`` / ``[B, T, N]`` (and the memory
``[B, T, N, M]`` with ``trace_memory=True``) for plots.

>>> from flax import nnx
>>> import jax.numpy as jnp
>>> ntm = NTM(9, 8, memory_slots=16, memory_width=6, controller_features=12, rngs=nnx.Rngs(0))
>>> y, trace = ntm(jnp.zeros((2, 5, 9)))
>>> y.shape, trace["read_weights"].shape, trace["write_weights"].shape
((2, 5, 8), (2, 5, 1, 16), (2, 5, 16))
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from attn_jax import memory as mem

Array = jax.Array
CONTROLLERS = ("lstm", "feedforward")


class NTMState(NamedTuple):
    memory: Array  # [B, N, M]
    reads: Array  # [B, R, M]
    read_weights: Array  # [B, R, N]
    write_weights: Array  # [B, N]
    controller: tuple | None  # LSTM carry (c, h), or None


class NTM(nnx.Module):
    """``input_features`` -> ``output_features`` logits per step; see the module docstring."""

    def __init__(self, input_features: int, output_features: int, *, rngs: nnx.Rngs, controller: str = "lstm",
                 controller_features: int = 100, memory_slots: int = 128, memory_width: int = 20,
                 read_heads: int = 1, shift_range: int = 1):
        if controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {controller!r}; valid: {', '.join(CONTROLLERS)}")
        if read_heads < 1 or shift_range < 0:
            raise ValueError(f"need read_heads >= 1 and shift_range >= 0, got {read_heads=}, {shift_range=}")
        self.controller_kind = controller
        self.n, self.m, self.r, self.shifts = memory_slots, memory_width, read_heads, 2 * shift_range + 1
        in_features = input_features + read_heads * memory_width
        if controller == "lstm":
            self.controller = nnx.OptimizedLSTMCell(in_features, controller_features, rngs=rngs)
        else:
            self.controller = nnx.Linear(in_features, controller_features, rngs=rngs)
        self.address_size = memory_width + 3 + self.shifts  # key, beta, gate, shift, gamma
        self.heads = nnx.Linear(controller_features, (read_heads + 1) * self.address_size + 2 * memory_width,
                                rngs=rngs)
        self.readout = nnx.Linear(controller_features + read_heads * memory_width, output_features, rngs=rngs)
        self.memory0 = nnx.Param(jnp.full((memory_slots, memory_width), 1e-6))
        self.reads0 = nnx.Param(0.01 * jax.random.normal(rngs.params(), (read_heads, memory_width)))
        # initial weighting logits, learned; they start focused on slot 0 (a uniform weighting stays uniform
        # under shifts, so location-based iteration would have nothing to move)
        self.weights0 = nnx.Param(jnp.zeros((read_heads + 1, memory_slots)).at[:, 0].set(10.0))
        self.controller_features = controller_features

    def initial_state(self, batch: int) -> NTMState:
        w0 = jax.nn.softmax(self.weights0[...], axis=-1)
        carry = None
        if self.controller_kind == "lstm":
            zeros = jnp.zeros((batch, self.controller_features))
            carry = (zeros, zeros)
        tile = lambda x: jnp.broadcast_to(x, (batch, *x.shape))  # noqa: E731
        return NTMState(tile(self.memory0[...]), tile(self.reads0[...]), tile(w0[:-1]), tile(w0[-1]), carry)

    def _address(self, params: Array, memory: Array, w_prev: Array) -> Array:
        m = self.m
        key, beta, gate = params[:, :m], jax.nn.softplus(params[:, m]), jax.nn.sigmoid(params[:, m + 1])
        shift = jax.nn.softmax(params[:, m + 2:m + 2 + self.shifts], axis=-1)
        gamma = 1.0 + jax.nn.softplus(params[:, m + 2 + self.shifts])
        return mem.address(memory, w_prev, key, beta, gate, shift, gamma)

    def step(self, state: NTMState, x: Array) -> tuple[NTMState, Array]:
        """One time step: ``x [B, I]`` -> (new state, logits ``[B, O]``)."""
        b = x.shape[0]
        inp = jnp.concatenate([x, state.reads.reshape(b, -1)], axis=-1)
        if self.controller_kind == "lstm":
            carry, h = self.controller(state.controller, inp)
        else:
            carry, h = None, jax.nn.relu(self.controller(inp))
        p = self.heads(h)
        a = self.address_size
        read_w = jnp.stack([self._address(p[:, i * a:(i + 1) * a], state.memory, state.read_weights[:, i])
                            for i in range(self.r)], axis=1)
        reads = jnp.einsum("BRN,BNM->BRM", read_w, state.memory)
        write_w = self._address(p[:, self.r * a:(self.r + 1) * a], state.memory, state.write_weights)
        rest = p[:, (self.r + 1) * a:]
        erase, add = jax.nn.sigmoid(rest[:, :self.m]), rest[:, self.m:]
        memory = mem.write(state.memory, write_w, erase, add)
        y = self.readout(jnp.concatenate([h, reads.reshape(b, -1)], axis=-1))
        return NTMState(memory, reads, read_w, write_w, carry), y

    def __call__(self, x: Array, *, trace_memory: bool = False) -> tuple[Array, dict[str, Array]]:
        graphdef, params = nnx.split(self)

        def body(state, xt):
            state, y = nnx.merge(graphdef, params).step(state, xt)
            out = {"read_weights": state.read_weights, "write_weights": state.write_weights}
            if trace_memory:
                out["memory"] = state.memory
            return state, (y, out)

        _, (y, trace) = jax.lax.scan(body, self.initial_state(x.shape[0]), jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(y, 0, 1), jax.tree.map(lambda t: jnp.swapaxes(t, 0, 1), trace)


class LSTMBaseline(nnx.Module):
    """A stack of LSTMs with a linear readout: ``x [B, T, I]`` -> logits ``[B, T, O]`` (the paper's baseline)."""

    def __init__(self, input_features: int, output_features: int, *, rngs: nnx.Rngs, hidden_features: int = 256,
                 layers: int = 3):
        sizes = [input_features] + [hidden_features] * layers
        self.layers = nnx.List([nnx.RNN(nnx.OptimizedLSTMCell(i, hidden_features, rngs=rngs), rngs=False)
                                for i in sizes[:-1]])
        self.readout = nnx.Linear(hidden_features, output_features, rngs=rngs)
        self.hidden_features = hidden_features

    def __call__(self, x: Array, **_) -> tuple[Array, dict[str, Array]]:
        h = x
        zeros = jnp.zeros((x.shape[0], self.hidden_features), x.dtype)
        for layer in self.layers:
            h = layer(h, initial_carry=(zeros, zeros))
        return self.readout(h), {}
