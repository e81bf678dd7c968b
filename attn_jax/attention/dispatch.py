"""``dot_product_attention``: one function, several implementations.

Dispatch is one explicit chain on the ``implementation`` argument:

* a name or a sequence of names: the first implementation that supports the
  arguments on this backend is used; if none does, ``UnsupportedError`` says
  why each one declined. Unknown names raise ``ValueError``.
* ``None``: ``ring`` inside :func:`attn_jax.sharding.use_mesh` with a mesh whose ``seq`` axis has more
  than one device (context parallelism; T and S must divide into the ring); else
  ``pallas`` where it supports the arguments (GPU/TPU); else
  ``xla`` or ``chunked``. ``chunked`` whenever the dense float32 logits would
  exceed :data:`DENSE_LOGITS_LIMIT_BYTES` (the memory budget), and with
  symbolic shapes under ``jax.export``, where that size cannot be bounded (a
  static choice). Within the budget on CPU, the faster of the two for the
  problem, read off the table ``benchmarks.attention_memory`` measured on a
  CPU and committed beside this module (:data:`CPU_TABLE_PATH`): the entry of
  the same mask kind (causal or windowed vs not), head grouping (GQA or not)
  and the nearest ``sqrt(T·S)``, timed forward+backward (training steps are
  what dominate). On other backends, and without a table, ``xla`` within the
  budget. Never ``cudnn``. Every implementation draws the same dropout
  mask for the same key, so the choice never changes results beyond rounding. On a CPU backend the
  Pallas kernels run only in interpret mode, a test tool far slower than XLA,
  so ``None`` does not pick them there; ask for them by name. Each fallback's
  reason is logged at DEBUG level on the ``attn_jax`` logger.

Names: ``xla`` (dense reference), ``chunked`` (memory-efficient, Rabe & Staats),
``pallas`` / ``pallas_triton`` / ``pallas_mosaic_gpu`` / ``pallas_mosaic_tpu``
(fused kernels, ``attn_jax.kernels``), ``cudnn`` (``jax.nn``'s cuDNN path), ``ring`` (ring attention
over the active mesh's ``seq`` axis, :mod:`attn_jax.attention.ring`; no dropout).
tokamax's names are aliases: ``xla_chunked`` -> chunked, ``triton`` ->
pallas_triton, ``mosaic`` -> pallas_mosaic_tpu on TPU, else pallas_mosaic_gpu.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from attn_jax.attention import chunked as _chunked
from attn_jax.attention import xla as _xla
from attn_jax.attention.inputs import Problem, normalize
from attn_jax.attention.registry import OpRegistry, implementation_names
from attn_jax.shapes import ArrayLike, Bias, Key, KVSegments, Lengths, Mask, Out, QSegments, Query, Residual, Value

Array = jax.Array

# implementation=None switches from "xla" to "chunked" above this many bytes of
# float32 logits (B·N·T·S·4): 256 MiB, e.g. B=1, N=16, T=S=2048.
DENSE_LOGITS_LIMIT_BYTES = 256 * 2**20
#: implementation=None's measured CPU table (``python -m benchmarks.attention_memory --write-dispatch-table``).
CPU_TABLE_PATH = Path(__file__).with_name("cpu_dispatch.json")
# chunked is chosen only when the table has it faster than xla by more than this fraction
CHOICE_MARGIN = 0.05


@functools.cache
def cpu_table() -> dict | None:
    """The committed CPU timing table, or None if it is missing or unreadable."""
    try:
        table = json.loads(CPU_TABLE_PATH.read_text())
    except (OSError, ValueError):
        return None
    return table if table.get("entries") else None


def measured_choice(p: Problem, table: dict | None = None) -> tuple[str, dict] | None:
    """``("xla" | "chunked", entry)``: the faster path in ``table``'s nearest entry (None for symbolic dims)."""
    table = table or cpu_table()
    _, t, s, n, k, _, _ = p.dims
    if table is None or not all(isinstance(d, int) for d in (t, s)):
        return None
    causal = p.spec.is_causal or p.spec.window is not None
    same = [e for e in table["entries"] if e["causal"] == causal and e["gqa"] == (n != k)] or table["entries"]
    size = math.sqrt(max(t * s, 1))
    entry = min(same, key=lambda e: abs(math.log(e["seq_len"]) - math.log(size)))
    # within CHOICE_MARGIN (timing noise) the dense reference stays
    return ("chunked" if entry["chunked_s"] < (1 - CHOICE_MARGIN) * entry["xla_s"] else "xla"), entry


def _pallas_reason(name: str):
    def reason(p: Problem, automatic: bool) -> str | None:
        from attn_jax import kernels  # lazily: importing attn_jax never imports Pallas

        return kernels.unsupported_reason(name, p, automatic=automatic)

    return reason


def _run_pallas(name: str):
    def run(p: Problem, return_residual: bool) -> tuple[Array, Array]:
        from attn_jax import kernels

        return kernels.attention(name, p)

    return run


def _xla_reason(p: Problem, automatic: bool) -> str | None:
    if not automatic:
        return None
    try:
        too_big = bool(p.dense_logits_bytes > DENSE_LOGITS_LIMIT_BYTES)
    except Exception:  # jax.export: a symbolic size that no bound decides
        return f"with symbolic shapes the dense logits ({p.dense_logits_bytes} bytes) cannot be bounded"
    if too_big:
        return f"the dense logits would take {p.dense_logits_bytes} bytes > {DENSE_LOGITS_LIMIT_BYTES}"
    if jax.default_backend() == "cpu":
        choice = measured_choice(p)
        if choice is not None and choice[0] == "chunked":
            e = choice[1]
            return (f"{CPU_TABLE_PATH.name} measured chunked faster on CPU at T = S = {e['seq_len']} "
                    f"(causal={e['causal']}, gqa={e['gqa']}): {e['chunked_s'] * 1e3:.1f} ms vs "
                    f"{e['xla_s'] * 1e3:.1f} ms forward+backward")
    return None


def _cudnn_reason(p: Problem, automatic: bool) -> str | None:
    if automatic:
        return "cudnn is never chosen automatically (it does not honour the whole contract)"
    if jax.default_backend() != "gpu":
        return f"cudnn needs a GPU backend, this is {jax.default_backend()!r}"
    b, t, s, n, k, h, hv = p.dims
    if hv != h:
        return f"cudnn needs the value head_dim to equal the query's, got H={h}, Hv={hv}"
    if p.query.dtype not in (jnp.bfloat16, jnp.float16):
        return f"cudnn needs bfloat16 or float16 inputs, got {p.query.dtype}"
    if p.spec.q_segment_ids is not None:
        return "cudnn (through jax.nn) has no segment ids"
    if p.logits_soft_cap is not None:
        return "cudnn (through jax.nn) has no logits_soft_cap"
    if p.dropout.active:
        return "cudnn (through jax.nn) has no attention dropout"
    window = p.spec.window
    if window is not None and window[1] != 0 and not p.spec.is_causal:
        return f"cudnn supports only left windows unless causal, got {window}"
    if h > 256 or h % 8:
        return f"cudnn needs head_dim <= 256 and a multiple of 8, got {h}"
    return None


def _run_cudnn(p: Problem, return_residual: bool) -> tuple[Array, Array | None]:
    """jax.nn's cuDNN path, as it is.

    Known deviations from the attn_jax contract, which it cannot detect before
    running: rows with nothing to attend to are not guaranteed zero output /
    ``-inf`` residual, and the residual's gradient is whatever jax.nn gives.
    ``precision`` is a no-op here (cuDNN fixes its own; jax.nn takes none).
    """
    res = jax.nn.dot_product_attention(
        p.query,
        p.key,
        p.value,
        p.bias,
        p.mask,
        scale=p.scale,
        is_causal=p.spec.is_causal,
        query_seq_lengths=p.spec.q_lengths,
        key_value_seq_lengths=p.spec.kv_lengths,
        local_window_size=p.spec.window,
        implementation="cudnn",
        return_residual=return_residual,
    )
    if return_residual:
        return res
    return res, None


#: The mesh axis ring attention runs over when a mesh is active (attn_jax.sharding.use_mesh).
RING_AXIS = "seq"


def _ring_mesh():
    from attn_jax import sharding

    active = sharding.active_mesh()
    if active is None or active[0].shape.get(RING_AXIS, 1) <= 1:
        return None
    return active


def _ring_reason(p: Problem, automatic: bool) -> str | None:
    active = _ring_mesh()
    if active is None:
        return (f"ring attention needs an active mesh (attn_jax.sharding.use_mesh) with a {RING_AXIS!r} axis of "
                "size > 1")
    if p.is_symbolic:
        return "ring attention needs concrete shapes"
    if p.dropout.active:
        return "ring attention has no attention dropout"
    _, t, s, *_ = p.dims
    parts = active[0].shape[RING_AXIS] * (2 if p.spec.is_causal else 1)  # causal: the zigzag layout's 2P chunks
    if t % parts or s % parts:
        return f"ring attention over {active[0].shape[RING_AXIS]} devices needs T and S divisible by {parts}, got "\
               f"T={t}, S={s}"
    return None


def _run_ring(p: Problem, return_residual: bool) -> tuple[Array, Array]:
    """``ring_attention_sharded`` over the active mesh's ``seq`` axis, the batch over its batch axes."""
    from attn_jax import sharding
    from attn_jax.attention.ring import ring_attention_sharded

    mesh, rules = _ring_mesh()
    batch = sharding.logical_spec(("batch",), (p.dims[0],), mesh, rules)[0]
    batch_axes = () if batch is None else (batch,) if isinstance(batch, str) else tuple(batch)
    spec = p.spec
    return ring_attention_sharded(
        p.query, p.key, p.value, mesh, p.bias, p.mask, axis=RING_AXIS, batch_axes=batch_axes,
        scale=p.scale, is_causal=spec.is_causal, local_window_size=spec.window,
        query_seq_lengths=spec.q_lengths, key_value_seq_lengths=spec.kv_lengths, q_segment_ids=spec.q_segment_ids,
        kv_segment_ids=spec.kv_segment_ids, logits_soft_cap=p.logits_soft_cap, precision=p.precision,
        return_residual=True)


#: dot_product_attention's implementations; None tries ring (under a mesh with a seq axis), pallas, xla, chunked.
REGISTRY = OpRegistry("dot_product_attention", automatic=("ring", "pallas", "xla", "chunked"))
REGISTRY.register("ring", _ring_reason, _run_ring)
REGISTRY.register("xla", _xla_reason, lambda p, return_residual: _xla.attention(p))
REGISTRY.register("chunked", lambda p, automatic: None, lambda p, return_residual: _chunked.attention(p))
for _name in ("pallas", "pallas_triton", "pallas_mosaic_gpu", "pallas_mosaic_tpu"):
    REGISTRY.register(_name, _pallas_reason(_name), _run_pallas(_name))
REGISTRY.register("cudnn", _cudnn_reason, _run_cudnn)
NAMES = REGISTRY.names


def dot_product_attention(
    query: Query,
    key: Key,
    value: Value,
    bias: Bias | None = None,
    mask: Mask | None = None,
    *,
    scale: float | ArrayLike | None = None,
    is_causal: bool = False,
    query_seq_lengths: Lengths | None = None,
    key_value_seq_lengths: Lengths | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    q_segment_ids: QSegments | None = None,
    kv_segment_ids: KVSegments | None = None,
    logits_soft_cap: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    precision: Any = None,
    implementation: str | Sequence[str] | None = None,
    return_residual: bool = False,
) -> Out | tuple[Out, Residual]:
    """Scaled dot-product attention, a drop-in for ``jax.nn.dot_product_attention``.

    ``softmax(scale · q kᵀ + bias, masked) v`` per head, with optional soft-cap
    ``c · tanh(logits / c)`` applied after scale and bias.

    Args:
      query: ``[*B, T, N, H]``; ``*B`` is zero or more batch dims.
      key: ``[*B, S, K, H]``; ``N`` must be a multiple of ``K`` (GQA/MQA; K/V
        are never repeated in memory).
      value: ``[*B, S, K, Hv]``; ``Hv`` may differ from ``H``.
      bias: added to the logits; broadcastable to ``[*B, N, T, S]``.
      mask: boolean, True = attend; broadcastable to ``[*B, N, T, S]``.
      scale: logit scale, default ``1 / sqrt(H)``: a Python float, a numpy/jax
        scalar, or a traced value (folded into the query, ``q · scale`` in the
        query dtype, so every implementation serves it).
      is_causal: key ``j`` visible from query ``i`` iff ``j <= i`` (top-left
        alignment when ``T != S``, as jax.nn).
      query_seq_lengths: ``[*B]`` int; rows ``i >= length`` attend to nothing.
      key_value_seq_lengths: ``[*B]`` int; keys ``j >= length`` are invisible.
      local_window_size: ``w`` or ``(left, right)``: visible iff
        ``i - left <= j <= i + right``.
      q_segment_ids: ``[*B, T]`` int, with kv_segment_ids ``[*B, S]``: attend
        only where ids are equal (packed sequences).
      logits_soft_cap: ``c > 0``: logits become ``c · tanh(logits / c)``.
      dropout_rate: in ``[0, 1)``: inverted dropout on the normalised attention
        weights (kept weights scaled by ``1 / P(keep)``); the residual is the
        logsumexp of the logits, before dropout.
      dropout_rng: a jax.random key, needed when ``dropout_rate > 0``. The mask
        is a hash of the key and the absolute ``(batch, head, query, key)``
        position (:func:`attn_jax.dropout.dropout_mask` builds it densely), the
        same in forward and backward and in every implementation.
      precision: ``jax.lax`` precision of the matmuls ("xla", "chunked"). The
        Pallas kernels fix theirs (float32 tiles exact, no TF32; bf16/f16 tiles
        with float32 accumulation) and accept it as a no-op, as does "cudnn".
      implementation: None, a name, or a sequence of names (module docstring).
      return_residual: also return the logsumexp of the logits.

    Returns:
      ``[*B, T, N, Hv]`` in the query dtype; with ``return_residual`` also the
      logsumexp ``[*B, T, N]`` (query dtype, differentiable). A row with nothing
      to attend to gives zeros, residual ``-inf`` and zero gradients; that
      includes a row whose bias is ``-inf`` on every key, and every row when
      ``S = 0``. Zero-size ``*B``, ``T`` or ``N`` give an empty result.

    Garbage in keys nobody may see: a key that one argument alone hides from
    every query of its sequence (past ``key_value_seq_lengths``, beyond the
    reach of causal/window within ``query_seq_lengths``, a segment id no query
    carries, a ``mask`` column False for every query of its kv head) is
    selected away before the weighted sum, so NaN or inf stored in its K or V
    reaches no output and no gradient, in every implementation. A key that
    some query may see is a real input: NaN there may reach outputs through
    ``P @ V`` (as ``0 * NaN = NaN``), also in rows that do not attend to it.

    Scalars and lengths: ``scale`` and ``logits_soft_cap`` must be finite;
    ``is_causal`` a bool; concrete lengths must lie in ``[0, T]`` / ``[0, S]``
    (traced ones are clipped into that range, never wrapped).

    Raises:
      ValueError / TypeError: malformed arguments (before any computation),
        including ``H = 0``, non-finite scalars, and an ``implementation`` that
        is not None, a name or a list/tuple of names (TypeError).
      UnsupportedError: a requested implementation cannot serve the arguments.

    >>> import jax.numpy as jnp
    >>> q = jnp.ones((2, 5, 4, 8)); kv = jnp.ones((2, 7, 2, 8))
    >>> dot_product_attention(q, kv, kv, is_causal=True).shape
    (2, 5, 4, 8)
    """
    implementation_names(implementation)  # type errors before any work
    p = normalize(
        query,
        key,
        value,
        bias,
        mask,
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        local_window_size=local_window_size,
        q_segment_ids=q_segment_ids,
        kv_segment_ids=kv_segment_ids,
        logits_soft_cap=logits_soft_cap,
        precision=precision,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
    )
    return run_problem(p, implementation, return_residual)


def run_problem(p: Problem, implementation=None, return_residual: bool = False):
    """Run the resolved implementation on a normalised problem; restore the batch dims."""
    name = REGISTRY.resolve(implementation, p)
    b, t, s_len, n, _, _, hv = p.dims
    if any(isinstance(d, int) and d == 0 for d in (b, t, s_len, n)):  # nothing to compute, or S = 0: every row is empty
        out = jnp.zeros((b, t, n, hv), p.query.dtype)
        lse = jnp.full((b, t, n), -jnp.inf, p.query.dtype)
    else:
        out, lse = REGISTRY.run(name, p, return_residual=return_residual)
    batch = p.batch_shape
    t, n, hv = out.shape[1:]
    out = out.reshape(batch + (t, n, hv))
    if not return_residual:
        return out
    return out, lse.reshape(batch + (t, n)).astype(p.query.dtype)


def implementation_for(implementation: Any, *args, return_residual: bool = False, **kwargs) -> str:
    """The implementation name ``dot_product_attention`` would use (for logs/benchmarks)."""
    implementation_names(implementation)
    p = normalize(*args, **kwargs)
    return REGISTRY.resolve(implementation, p)

