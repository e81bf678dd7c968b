"""Compact attention-mask descriptions, shared by every implementation.

A mask is never stored as a ``[T, S]`` array unless a caller asks for one
(:func:`dense_mask`, used by the dense reference, tests and plots). Instead a
:class:`MaskSpec` keeps the *structure*: causal alignment and local window as
static Python values, query/key lengths and segment ids as small arrays. Each
implementation evaluates the predicate only on the block it is working on
(:meth:`MaskSpec.block`), and skips blocks the static structure excludes
(:meth:`MaskSpec.key_block_range`, :meth:`MaskSpec.query_block_range`).

This module imports jax only: the Pallas kernels in ``attn_jax.kernels`` use it
too (with :mod:`attn_jax.softmax`, the online-softmax bookkeeping), so the mask
predicate and block-skipping arithmetic exist exactly once.

Positions are top-left aligned, as ``jax.nn.dot_product_attention``: query ``i``
and key ``j`` are compared as integers, so ``is_causal`` means ``j <= i`` even
when ``T != S``, and ``window=(left, right)`` means ``i - left <= j <= i + right``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# A large *finite* negative logit for masked entries (as jax.nn and jax's Pallas
# ops): exp(MASK_VALUE - m) underflows to 0 without producing inf, so nothing
# trips jax.debug_infs. Kept within float32 range for every input dtype.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def normalize_window(window: Any) -> tuple[int, int] | None:
    """``None``, an int ``w`` (meaning ``(w, w)``) or ``(left, right)`` -> tuple.

    Raises TypeError for non-integers and ValueError for negative sizes.
    """
    if window is None:
        return None
    if isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        pair = (int(window), int(window))
    elif isinstance(window, (tuple, list)) and len(window) == 2 and all(
        isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in window
    ):
        pair = (int(window[0]), int(window[1]))
    else:
        raise TypeError(
            f"local_window_size must be an int or a (left, right) pair of ints, got {window!r}"
        )
    if pair[0] < 0 or pair[1] < 0:
        raise ValueError(f"local_window_size must be non-negative, got {window!r}")
    return pair


def position_predicate(q_pos, k_pos, *, is_causal: bool, window: tuple[int, int] | None):
    """Elementwise visibility from positions alone (causal, local window).

    ``q_pos`` and ``k_pos`` are integer arrays that broadcast against each other
    (typically ``[Tq, 1]`` and ``[1, Tk]``). Returns a boolean array, or None when
    neither constraint is set. Backend-neutral: usable inside Pallas kernels.
    """
    keep = None
    if is_causal:
        keep = k_pos <= q_pos
    if window is not None:
        left, right = window
        w = (k_pos >= q_pos - left) & (k_pos <= q_pos + right)
        keep = w if keep is None else keep & w
    return keep


def and_masks(a, b):
    """``a & b`` where either may be None (meaning: nothing masked)."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Structure of an attention mask over a flattened batch ``B``.

    Attributes:
      is_causal: key ``j`` visible from query ``i`` only if ``j <= i`` (static).
      window: ``(left, right)``: visible iff ``i - left <= j <= i + right`` (static).
      q_lengths: ``[B]`` int; query rows ``i >= q_lengths[b]`` attend to nothing.
      kv_lengths: ``[B]`` int; keys ``j >= kv_lengths[b]`` are invisible.
      q_segment_ids: ``[B, T]`` int; with ``kv_segment_ids`` ``[B, S]``, query and
        key attend only when their ids are equal (packed sequences).
      offset: scalar int, or None (0): the global position of query row 0 minus that of key row 0, for a
        block cut out of a longer sequence (ring attention's (query block, visiting key block) pairs). Causal
        and window compare ``i + offset`` with ``j``; lengths and segment ids stay local to the block.
    """

    is_causal: bool = dataclasses.field(default=False, metadata=dict(static=True))
    window: tuple[int, int] | None = dataclasses.field(default=None, metadata=dict(static=True))
    q_lengths: Array | None = None
    kv_lengths: Array | None = None
    q_segment_ids: Array | None = None
    kv_segment_ids: Array | None = None
    offset: Array | None = None

    @classmethod
    def from_arguments(
        cls,
        *,
        is_causal: bool = False,
        local_window_size=None,
        query_seq_lengths=None,
        key_value_seq_lengths=None,
        q_segment_ids=None,
        kv_segment_ids=None,
    ) -> MaskSpec:
        """The spec ``dot_product_attention`` builds from its keyword arguments of the same names.

        Lengths ``[B]`` and segment ids ``[B, T]`` / ``[B, S]`` with one batch axis;
        for plots and tests (``dense_mask(MaskSpec.from_arguments(...), T, S)``).
        """
        as_int = lambda x: None if x is None else jnp.asarray(x, jnp.int32)  # noqa: E731
        return cls(
            is_causal=bool(is_causal),
            window=normalize_window(local_window_size),
            q_lengths=as_int(query_seq_lengths),
            kv_lengths=as_int(key_value_seq_lengths),
            q_segment_ids=as_int(q_segment_ids),
            kv_segment_ids=as_int(kv_segment_ids),
        )

    @property
    def has_static_structure(self) -> bool:
        """True when causal or window constraints allow skipping whole blocks."""
        return self.is_causal or self.window is not None

    @property
    def is_empty(self) -> bool:
        """True when the spec masks nothing at all."""
        return not self.has_static_structure and all(
            x is None for x in (self.q_lengths, self.kv_lengths, self.q_segment_ids)
        )

    def block(
        self,
        q_start,
        q_size: int,
        k_start,
        k_size: int,
        *,
        q_bound: int | None = None,
        k_bound: int | None = None,
    ) -> Array | None:
        """Visibility of a ``[q_size, k_size]`` block at offsets ``(q_start, k_start)``.

        ``q_start``/``k_start`` may be traced integers. ``q_bound``/``k_bound``
        mark positions at or beyond them invisible (padding added by a chunked
        or blocked implementation). Segment ids are sliced with
        ``lax.dynamic_slice``, so the caller must have padded them to cover the
        block. Returns ``[B or 1, q_size, k_size]`` bool, or None if nothing masks.
        """
        q_pos = q_start + jnp.arange(q_size, dtype=jnp.int32)[:, None]
        k_pos = k_start + jnp.arange(k_size, dtype=jnp.int32)[None, :]
        q_glob = q_pos if self.offset is None else q_pos + self.offset
        keep = position_predicate(q_glob, k_pos, is_causal=self.is_causal, window=self.window)
        if q_bound is not None:
            keep = and_masks(keep, q_pos < q_bound)
        if k_bound is not None:
            keep = and_masks(keep, k_pos < k_bound)
        if keep is not None:
            keep = keep[None]
        if self.q_lengths is not None:
            keep = and_masks(keep, q_pos[None] < self.q_lengths[:, None, None])
        if self.kv_lengths is not None:
            keep = and_masks(keep, k_pos[None] < self.kv_lengths[:, None, None])
        if self.q_segment_ids is not None:
            qs = jax.lax.dynamic_slice_in_dim(self.q_segment_ids, q_start, q_size, axis=1)
            ks = jax.lax.dynamic_slice_in_dim(self.kv_segment_ids, k_start, k_size, axis=1)
            keep = and_masks(keep, qs[:, :, None] == ks[:, None, :])
        return keep

    def key_block_range(self, q_start, q_stop, block_k: int, num_k_blocks: int):
        """Key blocks ``[lo, hi)`` that queries ``[q_start, q_stop)`` may see.

        Uses only the static structure (causal, window); blocks outside the
        range are fully masked and can be skipped. Works on Python or traced ints.
        """
        lo, hi = 0, num_k_blocks
        last_q = q_stop - 1
        if self.offset is not None:
            q_start, last_q = q_start + self.offset, last_q + self.offset
        if self.is_causal:
            hi = jnp.minimum(hi, last_q // block_k + 1)
        if self.window is not None:
            left, right = self.window
            lo = jnp.maximum(lo, (q_start - left) // block_k)
            hi = jnp.minimum(hi, (last_q + right) // block_k + 1)
        return jnp.asarray(lo, jnp.int32), jnp.asarray(jnp.maximum(hi, 0), jnp.int32)

    def query_block_range(self, k_start, k_stop, block_q: int, num_q_blocks: int):
        """Query blocks ``[lo, hi)`` that may see keys ``[k_start, k_stop)``."""
        lo, hi = 0, num_q_blocks
        last_k = k_stop - 1
        if self.offset is not None:
            k_start, last_k = k_start - self.offset, last_k - self.offset
        if self.is_causal:
            lo = jnp.maximum(lo, k_start // block_q)
        if self.window is not None:
            left, right = self.window
            lo = jnp.maximum(lo, (k_start - right) // block_q)
            hi = jnp.minimum(hi, (last_k + left) // block_q + 1)
        return jnp.asarray(jnp.maximum(lo, 0), jnp.int32), jnp.asarray(jnp.maximum(hi, 0), jnp.int32)


def dense_mask(spec: MaskSpec, q_len: int, kv_len: int) -> Array:
    """The full boolean mask ``[B or 1, T, S]`` (True = attend), for references and plots."""
    keep = spec.block(0, q_len, 0, kv_len)
    if keep is None:
        return jnp.ones((1, q_len, kv_len), bool)
    return jnp.broadcast_to(keep, (keep.shape[0], q_len, kv_len))


def decide(comparison, undecided: bool) -> bool:
    """``bool(comparison())`` of ints or symbolic dims; ``undecided`` when jax.export's symbolic dims leave it open."""
    try:
        return bool(comparison())
    except Exception:  # jax.export's InconclusiveDimensionOperation
        return undecided


def visible_keys(spec: MaskSpec, mask: Array | None, t: int, s: int, num_kv_heads: int) -> Array | None:
    """Which keys some query may see: ``[B or 1, S, K or 1]`` bool, or None (all may).

    A key is invisible when one argument alone excludes it for every query of
    its sequence: it lies at or beyond ``kv_lengths``; causal or the window's
    right edge keep every query (within ``q_lengths``) short of it; its segment
    id is carried by no query; or ``mask`` (``[Bb, Nb, Tb, Sb]``, heads grouped
    by kv head) is False in its whole column. Implementations select such keys
    away (``where``, not a zero weight, since ``0 * NaN = NaN``), so garbage in a
    cache slot nobody may read never reaches an output or a gradient. A key that
    passes every test alone but is excluded for each query by a combination of
    arguments counts as visible.
    """
    k_pos = jnp.arange(s, dtype=jnp.int32)[None, :]  # [1, S]
    vis = None
    if spec.kv_lengths is not None:
        vis = and_masks(vis, k_pos < spec.kv_lengths[:, None])
    q_reach = None  # one past the last key a query may see, from causal / window: [B or 1, 1]
    q_max = jnp.full((1, 1), t, jnp.int32) if spec.q_lengths is None else spec.q_lengths[:, None]
    if spec.is_causal:
        q_reach = q_max
    elif spec.window is not None:
        q_reach = q_max + spec.window[1]
    reach_short = q_reach is not None and decide(lambda: t + (0 if spec.is_causal else spec.window[1]) < s, True)
    if q_reach is not None and (spec.q_lengths is not None or reach_short):
        vis = and_masks(vis, k_pos < q_reach)
    if spec.q_lengths is not None:
        vis = and_masks(vis, q_max > 0)
    if spec.q_segment_ids is not None:
        q_ids, kv_ids = spec.q_segment_ids, spec.kv_segment_ids
        if spec.q_lengths is not None:  # rows past a query length carry no id: repeat row 0's
            rows = jnp.arange(t, dtype=jnp.int32)[None, :]
            q_ids = jnp.where(rows < spec.q_lengths[:, None], q_ids, q_ids[:, :1])
        ids = jnp.sort(q_ids, axis=1)
        at = jax.vmap(jnp.searchsorted)(ids, kv_ids)
        found = jnp.take_along_axis(ids, jnp.clip(at, 0, t - 1), axis=1) == kv_ids
        vis = and_masks(vis, found)
    if vis is not None:
        vis = vis[:, :, None]  # [B or 1, S, 1]
    if mask is not None:
        bb, nb, tb, sb = mask.shape
        kb = 1 if nb == 1 else num_kv_heads
        grouped = mask.reshape(bb, kb, nb // kb, tb, sb)
        col = jnp.swapaxes(jnp.any(grouped, axis=(2, 3)), 1, 2)  # [Bb, Sb, Kb]
        vis = and_masks(vis, col)
    return vis
