"""The attention ops and their backends, behind one dispatch.

* :mod:`~attn_jax.attention.dispatch`: ``dot_product_attention`` (xla, chunked,
  the Pallas kernels, cudnn) and ``implementation_for``;
* :mod:`~attn_jax.attention.additive`: ``additive_attention`` (Bahdanau);
* :mod:`~attn_jax.attention.decode`: ``decode_attention`` (one token against a
  contiguous or paged KV cache);
* :mod:`~attn_jax.attention.ring`: ring attention (context parallelism);
* :mod:`~attn_jax.attention.registry`: the implementation vocabulary and the
  resolver every op shares; :mod:`~attn_jax.attention.inputs`: the argument
  checks and the normalised ``Problem``;
* :mod:`~attn_jax.attention.xla` and :mod:`~attn_jax.attention.chunked`: the
  dense and the memory-efficient backends.

The kernels live in ``attn_jax.kernels`` and are imported lazily.
"""

from attn_jax.attention.additive import additive_attention
from attn_jax.attention.chunked import ChunkSizes
from attn_jax.attention.decode import decode_attention
from attn_jax.attention.dispatch import DENSE_LOGITS_LIMIT_BYTES, dot_product_attention, implementation_for
from attn_jax.attention.ring import ring_attention, ring_attention_sharded

__all__ = [
    "DENSE_LOGITS_LIMIT_BYTES",
    "ChunkSizes",
    "additive_attention",
    "decode_attention",
    "dot_product_attention",
    "implementation_for",
    "ring_attention",
    "ring_attention_sharded",
]
