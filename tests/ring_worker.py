"""Run with 8 fake CPU devices (tests/test_ring.py): ring attention vs dense attention, forward and backward,
and the compiled per-device temporaries of the forward + backward at two sequence lengths."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from attn_jax import dot_product_attention
from attn_jax.attention.ring import ring_attention_sharded
from attn_jax.sharding import make_mesh


def errors(mesh) -> dict:
    q = jax.random.normal(jax.random.key(0), (2, 80, 4, 16))  # 10 rows per device; GQA 4:2; Hv 8 != H 16
    k = jax.random.normal(jax.random.key(1), (2, 80, 2, 16))
    v = jax.random.normal(jax.random.key(2), (2, 80, 2, 8))
    out = {}
    for causal in (False, True):
        for layout in ("contiguous", "zigzag"):
            for block in (512, 3):  # one tile per block; tiles of 3 rows (the last one padded)
                def ring(q, k, v, causal=causal, layout=layout, block=block):
                    return ring_attention_sharded(q, k, v, mesh, is_causal=causal, layout=layout, block_size=block)

                def dense(q, k, v, causal=causal):
                    return dot_product_attention(q, k, v, is_causal=causal, implementation="xla")

                a, b = ring(q, k, v), dense(q, k, v)
                ga = jax.grad(lambda q, k, v: jnp.sum(jnp.sin(ring(q, k, v))), argnums=(0, 1, 2))(q, k, v)
                gb = jax.grad(lambda q, k, v: jnp.sum(jnp.sin(dense(q, k, v))), argnums=(0, 1, 2))(q, k, v)
                out[f"{'causal' if causal else 'full'}-{layout}-{block}"] = {
                    "forward": float(jnp.max(jnp.abs(a - b))),
                    "backward": max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(ga, gb, strict=True))}
    return out


def temp_bytes(mesh, length: int) -> int:
    """Compiled temporary bytes of a causal zigzag forward + backward at global length ``length``."""
    shape = jax.ShapeDtypeStruct((1, length, 2, 32), jnp.float32)

    def loss(q, k, v):
        return jnp.sum(ring_attention_sharded(q, k, v, mesh, is_causal=True, block_size=128))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(shape, shape, shape).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main() -> None:
    mesh = make_mesh("seq=8")
    out = {"errors": errors(mesh), "temp_bytes": {n: temp_bytes(mesh, n) for n in (8192, 16384, 32768)}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
