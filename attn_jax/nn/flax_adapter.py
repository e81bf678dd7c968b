"""``flax_attention_fn``: attn_jax's attention as the ``attention_fn`` of flax's own modules.

``flax.nnx.MultiHeadAttention`` and ``flax.linen.MultiHeadDotProductAttention``
call their ``attention_fn(query, key, value, mask=..., dropout_rng=...,
dropout_rate=..., broadcast_dropout=..., deterministic=..., dtype=...,
precision=..., module=..., [is_causal=...])``; linen passes only the keywords
the function's signature names, so every keyword is a named parameter here.
What each one does:

* ``mask``: flax's masks are float (``make_causal_mask`` gives 1.0 / 0.0) or
  bool, ``[*B, N or 1, T, S]``; nonzero = attend.
* ``dropout_rate`` / ``dropout_rng`` / ``deterministic`` / ``broadcast_dropout``:
  attention dropout through ``dot_product_attention``'s counter-based mask,
  applied whenever ``not deterministic and dropout_rate > 0`` (a missing key is
  an error, never a silent no-op). ``broadcast_dropout`` (flax's default True)
  shares one ``[T, S]`` mask across the batch and head axes, as flax does.
* ``dtype``: the computation (and output) dtype: query, key and value are cast
  to it; None promotes them to their common dtype, as flax does.
* ``precision``: passed to the matmuls (``"xla"``, ``"chunked"``; the Pallas
  kernels fix their own).
* ``is_causal`` (nnx): causal masking, or-ed with an ``is_causal`` option.
* ``module`` (flax's ``sow_weights``): the dense attention weights (before
  dropout) are sown as ``attention_weights``, as flax does; computing them costs
  a dense ``[*B, N, T, S]`` array.
* ``force_fp32_for_softmax``: the softmax statistics are float32 anyway; with it
  the sown weights are float32, as flax sows them.
* ``qk_attn_weights_einsum`` / ``attn_weights_value_einsum``, ``promote_dtype``
  other than flax's default: a replacement einsum cannot be honoured by fused
  implementations, so a non-None einsum raises ``UnsupportedError``;
  ``promote_dtype`` is called on ``(query, key, value)`` when given.

Decode mode (``decode=True``) needs nothing special: flax keeps the cache and
passes a mask over its slots.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp

from attn_jax.attention import xla as _xla
from attn_jax.attention.dispatch import dot_product_attention, run_problem
from attn_jax.attention.inputs import normalize
from attn_jax.errors import UnsupportedError

Array = jax.Array

# Options flax supplies per call: giving them to flax_attention_fn would be ambiguous.
_PER_CALL = ("bias", "mask", "dropout_rate", "dropout_rng", "precision", "return_residual", "implementation")
_OPTIONS = tuple(
    name for name, prm in inspect.signature(dot_product_attention).parameters.items()
    if prm.kind is inspect.Parameter.KEYWORD_ONLY and name not in _PER_CALL
)


def _as_bool_mask(mask):
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    return mask if mask.dtype == jnp.bool_ else mask != 0


def flax_attention_fn(implementation=None, **options):
    """A flax ``attention_fn`` that runs ``attn_jax.dot_product_attention``.

    Args:
      implementation: as ``dot_product_attention``'s (None, a name, or a sequence).
      **options: further keyword arguments of ``dot_product_attention`` applied
        to every call: ``scale``, ``is_causal``, ``local_window_size``,
        ``logits_soft_cap``, lengths, segment ids. The per-call ones flax passes
        (``mask``, ``bias``, dropout, ``precision``) are not options.

    Returns:
      ``attention_fn(query [*B, T, N, H], key [*B, S, K, H], value [*B, S, K, Hv],
      bias=None, mask=None, *, <flax's keywords>) -> [*B, T, N, Hv]``.

    Raises:
      TypeError: an unknown option, or one flax passes per call.

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from attn_jax.nn import flax_attention_fn
    >>> mha = nnx.MultiHeadAttention(num_heads=4, in_features=32, decode=False, dropout_rate=0.1,
    ...                              attention_fn=flax_attention_fn(), rngs=nnx.Rngs(0))
    >>> x = jnp.ones((2, 7, 32))
    >>> mha(x, mask=nnx.make_causal_mask(jnp.ones((2, 7))), deterministic=True).shape
    (2, 7, 32)
    >>> y = mha(x, deterministic=False, rngs=nnx.Rngs(dropout=1))  # attention dropout applied
    """
    bad = sorted(set(options) - set(_OPTIONS))
    if bad:
        per_call = [b for b in bad if b in _PER_CALL]
        if per_call:
            raise TypeError(f"flax passes {per_call} on every call; they cannot be options of flax_attention_fn")
        raise TypeError(f"unknown option(s) {bad}; dot_product_attention takes {list(_OPTIONS)}")
    base_causal = bool(options.pop("is_causal", False))

    def attention_fn(
        query: Array,
        key: Array,
        value: Array,
        bias: Array | None = None,
        mask: Array | None = None,
        broadcast_dropout: bool = True,
        dropout_rng: Array | None = None,
        dropout_rate: float = 0.0,
        deterministic: bool = False,
        dtype: Any = None,
        precision: Any = None,
        module: Any = None,
        is_causal: bool = False,
        force_fp32_for_softmax: bool = False,
        qk_attn_weights_einsum: Any = None,
        attn_weights_value_einsum: Any = None,
        promote_dtype: Any = None,
    ) -> Array:
        if qk_attn_weights_einsum is not None or attn_weights_value_einsum is not None:
            raise UnsupportedError(
                "flax_attention_fn cannot honour qk_attn_weights_einsum / attn_weights_value_einsum: "
                "the attn_jax implementations own their matmuls"
            )
        if promote_dtype is not None:
            query, key, value = promote_dtype((query, key, value), dtype=dtype)
        elif dtype is not None:
            query, key, value = (jnp.asarray(x, dtype) for x in (query, key, value))
        else:
            common = jnp.result_type(query, key, value)
            query, key, value = (jnp.asarray(x, common) for x in (query, key, value))
        rate = 0.0 if deterministic else dropout_rate
        p = normalize(
            query, key, value, bias, _as_bool_mask(mask),
            is_causal=base_causal or bool(is_causal),
            precision=precision,
            dropout_rate=rate,
            dropout_rng=dropout_rng if rate else None,
            dropout_broadcast=bool(broadcast_dropout),
            **options,
        )
        if module is not None:
            _sow_weights(module, p, jnp.float32 if force_fp32_for_softmax else p.query.dtype)
        return run_problem(p, implementation)

    attention_fn.__doc__ = f"attn_jax attention for flax (implementation={implementation!r}, options={options})"
    return attention_fn


def _sow_weights(module, p, dtype) -> None:
    """Sow the dense weights ``[*B, N, T, S]`` as flax's ``sow_weights`` does (nnx or linen), in ``dtype``
    (flax's: the computation dtype, float32 with ``force_fp32_for_softmax``)."""
    probs, _ = _xla.probabilities(p)
    b, k, g, t, s = probs.shape
    weights = probs.reshape(p.batch_shape + (k * g, t, s)).astype(dtype)
    from flax import nnx

    if isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    else:
        module.sow("intermediates", "attention_weights", weights)
