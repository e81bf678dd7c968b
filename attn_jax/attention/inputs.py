"""Checks and normalises the arguments of ``dot_product_attention``.

Every check runs on shapes and dtypes only, before any computation, and the
message names the argument and what it got. The result is a :class:`Problem`:
one flattened batch axis ``B``, 4-D bias/mask, a :class:`~attn_jax.masks.MaskSpec`
and resolved scalars, which every implementation consumes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.dropout import Dropout, check_rate, seeds
from attn_jax.masks import MaskSpec, decide, normalize_window, visible_keys

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Problem:
    """Normalised attention arguments (batch flattened to one axis ``B``).

    query ``[B, T, N, H]``, key ``[B, S, K, H]``, value ``[B, S, K, Hv]``;
    bias ``[Bb, Nb, Tb, Sb]`` and mask (bool) likewise, each axis 1 or full.
    """

    query: Array
    key: Array
    value: Array
    bias: Array | None
    mask: Array | None
    spec: MaskSpec
    scale: float
    logits_soft_cap: float | None
    batch_shape: tuple[int, ...]
    precision: Any = None
    dropout: Dropout = Dropout()
    dropout_seed: Array | None = None  # [2] int32 (attn_jax.dropout.seeds) when dropout is active

    @property
    def dims(self) -> tuple[int, int, int, int, int, int, int]:
        """``(B, T, S, N, K, H, Hv)``."""
        b, t, n, h = self.query.shape
        _, s, k, hv = self.value.shape
        return b, t, s, n, k, h, hv

    @property
    def dense_logits_bytes(self):
        """Bytes of one float32 ``[B, N, T, S]`` logits array (dense path's size; symbolic under shape polymorphism)."""
        b, t, s, n, *_ = self.dims
        return 4 * b * n * t * s

    @property
    def is_symbolic(self) -> bool:
        """True when some dim is symbolic (``jax.export`` shape polymorphism)."""
        return not all(isinstance(d, int) for d in self.dims)


def shape_of(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def dtype_of(x: Any) -> np.dtype:
    return np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)


def concrete_value(x) -> np.ndarray | None:
    """The value of ``x`` as numpy, or None when it is traced."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def is_float(dt: np.dtype) -> bool:
    return jnp.issubdtype(dt, jnp.floating)


def is_int(dt: np.dtype) -> bool:
    return jnp.issubdtype(dt, jnp.integer)


def check_qkv(query, key, value) -> tuple[tuple[int, ...], int, int, int, int, int, int]:
    """Validate query/key/value; returns ``(batch_shape, T, S, N, K, H, Hv)``."""
    qs, ks, vs = shape_of(query), shape_of(key), shape_of(value)
    if len(qs) < 3:
        raise ValueError(f"query must be [*B, T, N, H] (rank >= 3), got shape {qs}")
    if len(ks) != len(qs) or len(vs) != len(qs):
        raise ValueError(
            f"query, key and value must have the same rank, got query {qs}, key {ks}, value {vs}"
        )
    batch = qs[:-3]
    if ks[:-3] != batch or vs[:-3] != batch:
        raise ValueError(
            f"query, key and value must share batch dims, got query {qs}, key {ks}, value {vs}"
        )
    t, n, h = qs[-3:]
    s, k, hk = ks[-3:]
    sv, kv, hv = vs[-3:]
    if h == 0:
        raise ValueError(f"head_dim must be positive, got query {qs} with H=0")
    if hk != h:
        raise ValueError(f"query and key head_dim differ: query {qs} has H={h}, key {ks} has H={hk}")
    if sv != s:
        raise ValueError(f"key and value lengths differ: key {ks} has S={s}, value {vs} has S={sv}")
    if kv != k:
        raise ValueError(f"key and value head counts differ: key {ks} has K={k}, value {vs} has K={kv}")
    if k == 0 or n % k != 0:
        raise ValueError(
            f"query heads must be a multiple of key/value heads: query {qs} has N={n}, "
            f"key {ks} has K={k}"
        )
    dts = {name: dtype_of(x) for name, x in (("query", query), ("key", key), ("value", value))}
    for name, dt in dts.items():
        if not is_float(dt):
            raise TypeError(f"{name} must be a floating dtype, got {dt}")
    if len(set(dts.values())) != 1:
        raise TypeError(
            "query, key and value must have the same dtype, got "
            + ", ".join(f"{n}={d}" for n, d in dts.items())
        )
    return batch, t, s, n, k, h, hv


def flatten_batch(x: Array, batch_ndim: int) -> Array:
    """``[*B, ...]`` -> ``[prod(B) or 1, ...]``."""
    x = jnp.asarray(x)
    return x.reshape((math.prod(x.shape[:batch_ndim]),) + x.shape[batch_ndim:])


def _same_dim(a, b) -> bool:
    """``a == b`` for ints or symbolic dims (False when undecidable)."""
    return decide(lambda: a == b, False)


def _broadcasts_to(xs: tuple, full: tuple) -> bool:
    """``xs`` broadcasts to ``full`` (each trailing axis 1 or equal; symbolic dims allowed)."""
    return len(xs) <= len(full) and all(
        (isinstance(d, int) and d == 1) or _same_dim(d, f) for d, f in zip(xs[::-1], full[::-1])
    )


def _broadcast_4d(x, name: str, full: tuple[int, ...], batch_ndim: int) -> Array:
    """Check ``x`` broadcasts to ``full = (*B, N, T, S)``; return ``[Bb, Nb, Tb, Sb]``.

    Leading axes of size 1 beyond ``full``'s rank are dropped (jax.nn takes a
    4-D ``[1, N, T, S]`` bias with unbatched 3-D inputs).
    """
    xs = shape_of(x)
    extra = len(xs) - len(full)
    if extra > 0 and all(isinstance(d, int) and d == 1 for d in xs[:extra]):
        x, xs = jnp.reshape(jnp.asarray(x), xs[extra:]), xs[extra:]
    if not _broadcasts_to(xs, full):
        raise ValueError(f"{name} of shape {xs if extra <= 0 else shape_of(x)} is not broadcastable "
                         f"to [*B, N, T, S] = {full}")
    x = jnp.asarray(x)
    x = x.reshape((1,) * (len(full) - x.ndim) + x.shape)
    bshape = x.shape[:batch_ndim]
    if all(isinstance(d, int) and d == 1 for d in bshape):
        return x.reshape((1,) + x.shape[batch_ndim:])
    x = jnp.broadcast_to(x, full[:batch_ndim] + x.shape[batch_ndim:])
    return flatten_batch(x, batch_ndim)


def _nonzero(d) -> bool:
    """``d != 0`` for an int or a symbolic dim (symbolic dims are >= 1)."""
    return not _same_dim(d, 0)


def check_lengths(x, name: str, batch: tuple[int, ...], limit: int) -> Array | None:
    """Validate ``[*B]`` integer lengths in ``[0, limit]``; returns ``[prod(B)]`` int32 or None.

    Concrete lengths outside ``[0, limit]`` raise ValueError (whatever their
    integer dtype: nothing wraps to int32). Traced lengths cannot be checked;
    they are clipped to ``[0, limit]`` before the cast, the documented meaning.
    """
    if x is None:
        return None
    xs, dt = shape_of(x), dtype_of(x)
    if not is_int(dt):
        raise TypeError(f"{name} must be an integer array, got dtype {dt}")
    allowed = {batch} | ({(), (1,)} if batch == () else set())
    if xs not in allowed:
        raise ValueError(f"{name} must have shape [*B] = {batch}, got {xs}")
    arr = concrete_value(x)
    if arr is not None and arr.size and (arr.min() < 0 or arr.max() > limit):
        raise ValueError(f"{name} must be non-negative and at most {limit} (lie in [0, {limit}]), got {arr}")
    if arr is not None:
        return jnp.asarray(arr.astype(np.int32)).reshape(-1)
    return jnp.clip(x, 0, limit).astype(jnp.int32).reshape(-1)


def check_segment_ids(q_ids, kv_ids, batch: tuple[int, ...], t: int, s: int):
    """Validate ``[*B, T]`` / ``[*B, S]`` segment ids; both or neither."""
    if q_ids is None and kv_ids is None:
        return None, None
    if q_ids is None or kv_ids is None:
        raise ValueError(
            "q_segment_ids and kv_segment_ids must be given together, got "
            f"q_segment_ids={shape_of(q_ids) if q_ids is not None else None}, "
            f"kv_segment_ids={shape_of(kv_ids) if kv_ids is not None else None}"
        )
    for name, x, length in (("q_segment_ids", q_ids, t), ("kv_segment_ids", kv_ids, s)):
        if not is_int(dtype_of(x)):
            raise TypeError(f"{name} must be an integer array, got dtype {dtype_of(x)}")
        if shape_of(x) != batch + (length,):
            raise ValueError(f"{name} must have shape [*B, {length}] = {batch + (length,)}, got {shape_of(x)}")
    n = len(batch)
    return (
        flatten_batch(jnp.asarray(q_ids, jnp.int32), n),
        flatten_batch(jnp.asarray(kv_ids, jnp.int32), n),
    )


def _scalar(name: str, x, *, traced_ok: bool):
    """A Python/numpy/jax scalar as a float, or (``traced_ok``) the traced 0-d array itself."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer, np.ndarray, jax.Array)):
        raise TypeError(f"{name} must be a number (Python, numpy or jax scalar), got {type(x).__name__}")
    if shape_of(x) != ():
        raise ValueError(f"{name} must be a scalar, got shape {shape_of(x)}")
    if not (is_float(dtype_of(x)) or is_int(dtype_of(x))):
        raise TypeError(f"{name} must be a real number, got dtype {dtype_of(x)}")
    value = concrete_value(x)
    if value is None:
        if not traced_ok:
            raise TypeError(f"{name} must be concrete (a Python float), not a traced value")
        return x
    return float(value)


def check_scalars(scale, logits_soft_cap):
    """``scale`` (None, a finite number, or a traced scalar) and ``logits_soft_cap`` (None or positive
    and finite, concrete). Returns them as floats (a traced scale stays traced)."""
    if scale is not None:
        scale = _scalar("scale", scale, traced_ok=True)
        if isinstance(scale, float) and not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
    if logits_soft_cap is not None:
        logits_soft_cap = _scalar("logits_soft_cap", logits_soft_cap, traced_ok=False)
        if not math.isfinite(logits_soft_cap) or logits_soft_cap <= 0:
            raise ValueError(f"logits_soft_cap must be positive and finite, got {logits_soft_cap}")
    return scale, logits_soft_cap


def check_precision(precision):
    """``precision`` as jax.lax takes it (None, a name, a ``lax.Precision``, a pair, a
    ``lax.DotAlgorithmPreset``); ValueError/TypeError naming it otherwise."""
    if precision is None:
        return None
    if isinstance(precision, list):
        precision = tuple(precision)
    x = jax.ShapeDtypeStruct((1, 1), jnp.float32)
    try:
        jax.eval_shape(lambda a: jax.lax.dot(a, a, precision=precision), x)
    except Exception as e:
        raise ValueError(f"precision={precision!r} is not a jax.lax precision: {e}") from None
    return precision


def normalize(
    query,
    key,
    value,
    bias=None,
    mask=None,
    *,
    scale=None,
    is_causal=False,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
    local_window_size=None,
    q_segment_ids=None,
    kv_segment_ids=None,
    logits_soft_cap=None,
    precision=None,
    dropout_rate=0.0,
    dropout_rng=None,
    dropout_broadcast=False,
) -> Problem:
    """Validate every argument and build the :class:`Problem`.

    A traced ``scale`` is folded into the query (``q · scale`` in the query
    dtype) and the Problem's scale is 1, so every implementation serves it.
    """
    batch, t, s, n, _, h, _ = check_qkv(query, key, value)
    nb = len(batch)
    full = batch + (n, t, s)
    if bias is not None:
        if not is_float(dtype_of(bias)):
            raise TypeError(f"bias must be a floating dtype, got {dtype_of(bias)}")
        bias = _broadcast_4d(bias, "bias", full, nb)
    if mask is not None:
        if dtype_of(mask) != np.dtype(bool):
            raise TypeError(f"mask must be boolean (True = attend), got dtype {dtype_of(mask)}")
        mask = _broadcast_4d(mask, "mask", full, nb)
    window = normalize_window(local_window_size)
    q_len = check_lengths(query_seq_lengths, "query_seq_lengths", batch, t)
    kv_len = check_lengths(key_value_seq_lengths, "key_value_seq_lengths", batch, s)
    q_seg, kv_seg = check_segment_ids(q_segment_ids, kv_segment_ids, batch, t, s)
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"is_causal must be a bool, got {is_causal!r}")
    scale, logits_soft_cap = check_scalars(scale, logits_soft_cap)
    precision = check_precision(precision)
    dropout = Dropout(check_rate(dropout_rate), bool(dropout_broadcast))
    seed = seeds(dropout_rng) if dropout.active else None
    if scale is None:
        scale = 1.0 / math.sqrt(h)
    elif not isinstance(scale, float):  # traced
        query = jnp.asarray(query) * jnp.asarray(scale).astype(dtype_of(query))
        scale = 1.0
    spec = MaskSpec(
        is_causal=bool(is_causal),
        window=window,
        q_lengths=q_len,
        kv_lengths=kv_len,
        q_segment_ids=q_seg,
        kv_segment_ids=kv_seg,
    )
    key, value = flatten_batch(key, nb), flatten_batch(value, nb)
    if _nonzero(t) and _nonzero(s):
        # Keys no query may see are selected away here, once for every implementation:
        # a cache slot past its length may hold NaN, and 0 * NaN = NaN in P @ V.
        visible = visible_keys(spec, mask, t, s, key.shape[2])
        if visible is not None:
            key = jnp.where(visible[..., None], key, jnp.zeros((), key.dtype))
            value = jnp.where(visible[..., None], value, jnp.zeros((), value.dtype))
    return Problem(
        query=flatten_batch(query, nb),
        key=key,
        value=value,
        bias=bias,
        mask=mask,
        spec=spec,
        scale=float(scale),
        logits_soft_cap=logits_soft_cap,
        batch_shape=batch,
        precision=precision,
        dropout=dropout,
        dropout_seed=seed,
    )


def group_heads(x: Array | None, k: int) -> Array | None:
    """A ``[Bb, Nb, Tb, Sb]`` bias or mask as ``[Bb, K or 1, Tb, G or 1, Sb]`` (Nb is 1 or N = K*G).

    The logits' layout of the "xla" and "chunked" paths: query ``i`` of head
    ``n = kv · G + g`` is row ``(i, g)`` of kv head ``kv``.
    """
    if x is None:
        return None
    b, n, t, s = x.shape
    if n == 1:
        return x[:, :, :, None]
    return jnp.swapaxes(x.reshape(b, k, n // k, t, s), 2, 3)


def compute_dtype(dtype) -> np.dtype:
    """Softmax statistics dtype: float32, or float64 for float64 inputs."""
    return np.dtype(jnp.promote_types(dtype, jnp.float32))
