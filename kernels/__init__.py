"""Fused Pallas attention kernels, importable as ``attn_jax.kernels``.

Kernels import jax, ``attn_jax.masks`` and ``attn_jax.softmax`` only (docs/design.md).
``attn_jax.dot_product_attention``
asks :func:`unsupported_reason` whether a kernel serves a problem and then
calls :func:`attention`, lazily, so importing attn_jax never imports Pallas.

Kernels here:

* ``pallas_triton`` (:mod:`attn_jax.kernels.flash_triton`): Triton-style
  lowering, compiled on NVIDIA GPUs, run in interpret mode on a CPU backend
  (that is how the test suite exercises it).
* ``pallas_mosaic_tpu`` (:mod:`attn_jax.kernels.flash_tpu`): Mosaic TPU
  lowering, compiled on TPUs, run in TPU interpret mode on CPU.
* ``pallas_mosaic_gpu``: not written yet (a separate issue); it always declines.

Beside them, :mod:`attn_jax.kernels.additive_triton` (fused Bahdanau attention,
behind ``attn_jax.additive_attention(implementation="pallas")``) and
:mod:`attn_jax.kernels.decode_triton` (split-KV decoding, behind
``attn_jax.decode_attention(implementation="pallas")``).

``pallas`` resolves to the best kernel for the backend: Mosaic GPU on sm90+
once it exists, Triton-style on other GPUs and on sm90+ meanwhile, Triton-style
in interpret mode on CPU, Mosaic TPU on TPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KERNEL_NAMES = ("pallas", "pallas_triton", "pallas_mosaic_gpu", "pallas_mosaic_tpu")
MAX_HEAD_DIM = 256


def _resolve(name: str) -> str:
    if name != "pallas":
        return name
    return "pallas_mosaic_tpu" if jax.default_backend() == "tpu" else "pallas_triton"


def _common_reason(name: str, problem) -> str | None:
    if not all(isinstance(d, int) for d in problem.dims):
        return f"{name} needs concrete shapes (it pads T and S to its blocks); got symbolic dims {problem.dims}"
    return None


def _triton_reason(problem, automatic: bool) -> str | None:
    backend = jax.default_backend()
    if backend not in ("gpu", "cpu"):
        return f"pallas_triton runs on GPUs (or interpreted on CPU), not on {backend!r}"
    if backend == "cpu" and automatic:
        return "on CPU the Pallas kernels run only in interpret mode (a test tool); ask for them by name"
    h, hv = problem.query.shape[-1], problem.value.shape[-1]
    if h > MAX_HEAD_DIM or hv > MAX_HEAD_DIM:
        return f"pallas_triton supports head dims up to {MAX_HEAD_DIM}, got H={h}, Hv={hv}"
    allowed = (jnp.float32, jnp.bfloat16, jnp.float16) + ((jnp.float64,) if backend == "cpu" else ())
    if problem.query.dtype not in allowed:
        return f"pallas_triton does not support dtype {problem.query.dtype}"
    return None


def _tpu_reason(problem, automatic: bool) -> str | None:
    backend = jax.default_backend()
    if backend not in ("tpu", "cpu"):
        return f"pallas_mosaic_tpu runs on TPUs (or interpreted on CPU), not on {backend!r}"
    if backend == "cpu" and automatic:
        return "on CPU the Pallas kernels run only in interpret mode (a test tool); ask for them by name"
    allowed = (jnp.float32, jnp.bfloat16, jnp.float16) + ((jnp.float64,) if backend == "cpu" else ())
    if problem.query.dtype not in allowed:
        return f"pallas_mosaic_tpu does not support dtype {problem.query.dtype}"
    if problem.dropout.active:
        return "pallas_mosaic_tpu has no attention dropout yet (use pallas_triton, chunked or xla: the same mask)"
    return None


def unsupported_reason(name: str, problem, *, automatic: bool = False) -> str | None:
    """Why kernel ``name`` cannot serve ``problem`` (an attn_jax Problem), or None.

    ``automatic`` is True when the dispatcher is choosing on its own
    (``implementation=None``) rather than honouring a requested name.
    """
    if name not in KERNEL_NAMES:
        return f"{name!r} is not a Pallas kernel name"
    resolved = _resolve(name)
    reason = _common_reason(resolved, problem)
    if reason is not None:
        return reason
    if resolved == "pallas_triton":
        return _triton_reason(problem, automatic)
    if resolved == "pallas_mosaic_tpu":
        return _tpu_reason(problem, automatic)
    return f"{resolved}: this kernel is not implemented yet"


def attention(name: str, problem):
    """Run kernel ``name`` on a normalised problem: ``(out [B,T,N,Hv], lse [B,T,N] float32)``.

    ``problem.precision`` is not passed on: the kernels fix their tile matmuls'
    precision (float32 tiles exact, no TF32; bf16/f16 tiles accumulate in float32).
    """
    reason = unsupported_reason(name, problem)
    if reason is not None:  # the dispatcher checks first; this guards direct callers
        raise NotImplementedError(reason)
    spec = problem.spec
    interpret = jax.default_backend() == "cpu"
    if _resolve(name) == "pallas_mosaic_tpu":
        from attn_jax.kernels import flash_tpu as module

        block_sizes = None
        dropout = {}
    else:
        from attn_jax.kernels import autotune
        from attn_jax.kernels import flash_triton as module

        block_sizes = autotune.cached_block_sizes(problem.query, problem.key, problem.value, spec.is_causal)
        dropout = {"dropout": problem.dropout, "dropout_seed": problem.dropout_seed}
    return module.flash_attention(
        problem.query,
        problem.key,
        problem.value,
        problem.bias,
        problem.mask,
        q_segment_ids=spec.q_segment_ids,
        kv_segment_ids=spec.kv_segment_ids,
        query_seq_lengths=spec.q_lengths,
        key_value_seq_lengths=spec.kv_lengths,
        scale=problem.scale,
        is_causal=spec.is_causal,
        window=spec.window,
        logits_soft_cap=problem.logits_soft_cap,
        block_sizes=block_sizes,
        interpret=interpret,
        **dropout,
    )
