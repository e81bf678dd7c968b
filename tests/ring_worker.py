"""Run with 8 fake CPU devices (tests/test_ring.py). Prints one JSON line:

* ``errors``: ring attention vs single-device "xla" over the contract's cases (causal, window, lengths, packed
  segments across device boundaries, bias, soft-cap, GQA, Hv != H, empty rows, the residual), forward and
  gradients, both layouts, through ``ring_attention_sharded`` and through ``dot_product_attention`` under a
  ``seq`` mesh;
* ``dispatch``: what ``implementation="ring"`` / ``None`` do with and without a ``seq`` mesh;
* ``lm``: three Adam steps of a GQA/RoPE LM under ``data=2,seq=4`` vs one device, and whether the ring ran;
* ``temp_bytes`` / ``lm_temp_bytes``: compiled per-device temporaries at several T.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax import UnsupportedError, dot_product_attention
from attn_jax.attention.dispatch import implementation_for
from attn_jax.attention.ring import ring_attention_sharded
from attn_jax.sharding import make_mesh, use_mesh

B, T, N, K, H, HV = 2, 32, 4, 2, 8, 6


def _inputs():
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (B, T, N, H))
    k = jax.random.normal(ks[1], (B, T, K, H))
    v = jax.random.normal(ks[2], (B, T, K, HV))
    bias = jax.random.normal(ks[3], (B, 1, T, T))  # broadcast over heads
    # packed sequences whose boundaries fall inside device blocks and across them (4 rows per device)
    seg = jnp.asarray(np.array([[0] * 5 + [1] * 20 + [2] * 7, [0] * 16 + [1] * 3 + [2] * 13]), jnp.int32)
    return q, k, v, bias, seg


def cases(seg):
    return {
        "full": {}, "causal": dict(is_causal=True), "window": dict(local_window_size=(5, 2)),
        "causal+window": dict(is_causal=True, local_window_size=3),
        "lengths+empty rows": dict(query_seq_lengths=jnp.array([32, 9]), key_value_seq_lengths=jnp.array([20, 0])),
        "packed causal": dict(q_segment_ids=seg, kv_segment_ids=seg, is_causal=True),
        "soft-cap+scale": dict(logits_soft_cap=2.0, scale=0.7),
        "bias": dict(bias=True),
        "mask+lengths": dict(mask=True, key_value_seq_lengths=jnp.array([30, 17])),
        # the fast subset (CI): several features at once
        "packed causal+bias+lengths": dict(q_segment_ids=seg, kv_segment_ids=seg, is_causal=True, bias=True,
                                           query_seq_lengths=jnp.array([32, 21])),
        "window+mask+lengths+soft-cap": dict(local_window_size=(5, 2), mask=True, logits_soft_cap=3.0,
                                             key_value_seq_lengths=jnp.array([30, 0])),
    }


FAST = ("packed causal+bias+lengths", "window+mask+lengths+soft-cap")


def _loss(fn):
    def loss(q, k, v, bias):
        o, lse = fn(q, k, v, bias)
        return jnp.sum(jnp.sin(o)) + jnp.sum(jnp.where(jnp.isfinite(lse), jnp.cos(lse), 0.0))
    return loss


def errors(mesh, names=None) -> dict:
    q, k, v, bias, seg = _inputs()
    mask = jax.random.bernoulli(jax.random.key(9), 0.7, (B, N, T, T))
    out = {}
    for name, kw in cases(seg).items():
        if names is not None and name not in names:
            continue
        kw = dict(kw)
        b = bias if kw.pop("bias", False) else None
        if kw.pop("mask", False):
            kw["mask"] = mask
        layouts = ("contiguous", "zigzag") if kw.get("is_causal") else ("contiguous",)
        ref = lambda q, k, v, b, kw=kw: dot_product_attention(q, k, v, b, implementation="xla",  # noqa: E731
                                                              return_residual=True, **kw)
        o_ref, l_ref = jax.jit(ref)(q, k, v, b)
        argn = (0, 1, 2, 3) if b is not None else (0, 1, 2)
        g_ref = jax.jit(jax.grad(_loss(ref), argnums=argn))(q, k, v, b)
        runs = {f"{name} ({layout})": (lambda q, k, v, b, kw=kw, layout=layout: ring_attention_sharded(
            q, k, v, mesh, b, layout=layout, block_size=3, return_residual=True, **kw)) for layout in layouts}

        def dispatched(q, k, v, b, kw=kw):
            with use_mesh(mesh):
                return dot_product_attention(q, k, v, b, implementation="ring", return_residual=True, **kw)

        runs[f"{name} (dispatch)"] = dispatched
        for label, fn in runs.items():
            o, lse = jax.jit(fn)(q, k, v, b)
            g = jax.jit(jax.grad(_loss(fn), argnums=argn))(q, k, v, b)
            finite = jnp.isfinite(l_ref)
            out[label] = {
                "forward": float(jnp.max(jnp.abs(o - o_ref))),
                "residual": float(jnp.max(jnp.abs(jnp.where(finite, lse - l_ref, 0.0)))),
                "same_empty_rows": bool(jnp.all(finite == jnp.isfinite(lse))),
                "backward": max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(g, g_ref, strict=True))}
    return out


class _Choices(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def dispatch(mesh) -> dict:
    q, k, v, _, _ = _inputs()
    r = {}
    try:
        dot_product_attention(q, k, v, implementation="ring")
        r["no_mesh"] = "ran"
    except UnsupportedError as err:
        r["no_mesh"] = str(err)
    with use_mesh(mesh):
        r["auto_under_seq_mesh"] = implementation_for(None, q, k, v, is_causal=True)
        r["auto_indivisible"] = implementation_for(None, q[:, :30], k[:, :30], v[:, :30], is_causal=True)
        try:
            dot_product_attention(q, k, v, implementation="ring", dropout_rate=0.1, dropout_rng=jax.random.key(0))
            r["dropout"] = "ran"
        except UnsupportedError as err:
            r["dropout"] = str(err)
    with use_mesh(make_mesh("data=8")):
        r["auto_without_seq"] = implementation_for(None, q, k, v, is_causal=True)
    return r


def lm(out: str) -> dict:
    """Three Adam steps of a GQA/RoPE LM (dropout on) under data=2,seq=4 vs one device."""
    sys.path.insert(0, str(Path(__file__).parent))
    from mesh_worker import LMTask, flat

    from attn_jax.train import TrainConfig, train

    class LongerLM(LMTask):
        def batch(self, step):  # 16 positions: divisible into the zigzag layout's 2 x 4 chunks
            return {"tokens": np.random.default_rng(step).integers(0, 16, (8, 17)).astype(np.int32)}

    cfg = TrainConfig(steps=3, learning_rate=1e-2, log_every=1, checkpoint_every=0, progress=False)
    _, single = train(LongerLM(), cfg, Path(out) / "single")
    handler = _Choices()
    logger = logging.getLogger("attn_jax")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        _, sharded = train(LongerLM(), cfg, Path(out) / "data2seq4", mesh=make_mesh("data=2,seq=4"))
    finally:
        logger.removeHandler(handler)
    return {"max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(flat(sharded), flat(single), strict=True)),
            "ring_chosen": sum("implementation=None chose ring" in m for m in handler.messages)}


def temp_bytes(mesh, length: int) -> int:
    """Compiled temporary bytes of a causal zigzag forward + backward at global length ``length``."""
    shape = jax.ShapeDtypeStruct((1, length, 2, 32), jnp.float32)

    def loss(q, k, v):
        return jnp.sum(ring_attention_sharded(q, k, v, mesh, is_causal=True, block_size=128))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(shape, shape, shape).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def lm_temp_bytes(length: int) -> int:
    """Compiled per-device temporaries of the LM's loss gradient under data=2,seq=4 at ``length`` tokens."""
    from flax import nnx

    from attn_jax.nn.transformer import TransformerConfig, TransformerLM

    cfg = TransformerConfig(vocab_size=16, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64, decoder_layers=1,
                            dropout=0.0, positions="rope", norm="pre")
    model = TransformerLM(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    mesh = make_mesh("data=2,seq=4")

    def loss(params, tokens):
        with use_mesh(mesh):
            logits = nnx.merge(graphdef, params)(tokens)
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    tokens = jax.ShapeDtypeStruct((2, length), jnp.int32)
    compiled = jax.jit(jax.grad(loss)).lower(params, tokens).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(out: str, mode: str = "fast") -> None:
    """``mode``: "fast" (CI: the combined cases) or "full" (every case; the slow test)."""
    mesh = make_mesh("seq=8")
    result = {"errors": errors(mesh, FAST if mode == "fast" else None), "dispatch": dispatch(mesh), "lm": lm(out),
              "temp_bytes": {n: temp_bytes(mesh, n) for n in (8192, 16384, 32768)},
              "lm_temp_bytes": {n: lm_temp_bytes(n) for n in (8192, 16384, 32768)}}
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
