"""Shape-typed annotations of the public primitives (jaxtyping), the docstrings' shapes in the signatures.

Dimension names: ``*B`` zero or more batch dims, ``T`` queries, ``S`` keys (or cache slots), ``N`` query heads,
``K`` key/value heads (``N`` a multiple of ``K``), ``H`` the query/key head size, ``Hv`` the value head size,
``D*`` feature sizes of the additive score, ``A`` its hidden size. Inputs are ``ArrayLike`` (jax or numpy arrays,
anything ``jnp.asarray`` takes); outputs are jax ``Array``.

Runtime checking is off: the annotations cost nothing at call time and serve readers, IDEs and type checkers.
To check the shapes of calls while debugging, wrap a function with :func:`typechecked` (needs ``beartype``,
in the ``dev`` extra): a call whose shapes disagree with each other (a key head size unlike the query's, a batch
that differs between arguments) raises before any computation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from jaxtyping import Array, ArrayLike, Bool, Float, Int, jaxtyped

__all__ = ["Array", "ArrayLike", "typechecked", "Query", "Key", "Value", "Out", "Residual", "Bias", "Mask",
           "Lengths", "QSegments", "KVSegments", "DecodeQuery", "Cache", "DecodeOut", "DecodeLengths", "PageTable",
           "AdditiveQuery", "AdditiveKey", "AdditiveValue", "AdditiveWq", "AdditiveWk", "AdditiveV", "AdditiveOut",
           "ScoreQuery", "ScoreKey", "SameWidthKey", "Logits", "GeneralW", "Strength", "LocationW",
           "NTMMemory", "NTMWeighting", "NTMKey", "NTMScalar", "NTMShift", "NTMRead", "NTMVector",
           "LocalStates", "LocalWp", "LocalVp", "LocalScores", "LocalCenter", "Centers", "LocalWeights",
           "SourceLengths"]

# dot_product_attention / ring_attention
Query = Float[ArrayLike, "*B T N H"]
Key = Float[ArrayLike, "*B S K H"]
Value = Float[ArrayLike, "*B S K Hv"]
Out = Float[Array, "*B T N Hv"]
Residual = Float[Array, "*B T N"]  # the logsumexp of each row's logits
Bias = Float[ArrayLike, "..."]  # broadcastable to [*B, N, T, S]
Mask = Bool[ArrayLike, "..."]  # broadcastable to [*B, N, T, S]; True = attend
Lengths = Int[ArrayLike, "*B"]
QSegments = Int[ArrayLike, "*B T"]
KVSegments = Int[ArrayLike, "*B S"]

# decode_attention: one query token per sequence over a cache (contiguous [B, S, K, H] or paged [P, page, K, H])
DecodeQuery = Float[ArrayLike, "B N H"]
Cache = Float[ArrayLike, "C L K _"]
DecodeOut = Float[Array, "B N Hv"]
DecodeLengths = Int[ArrayLike, "B"]
PageTable = Int[ArrayLike, "B max_pages"]

# additive_attention: [*B, T, Dq] decoder states against [*B, S, Dk] annotations
AdditiveQuery = Float[ArrayLike, "*B T Dq"]
AdditiveKey = Float[ArrayLike, "*B S Dk"]
AdditiveValue = Float[ArrayLike, "*B S Dv"]
AdditiveWq = Float[ArrayLike, "Dq A"]
AdditiveWk = Float[ArrayLike, "Dk A"]
AdditiveV = Float[ArrayLike, "A"]
AdditiveOut = Float[Array, "*B T Dv"]

# attn_jax.scores: queries [..., T, Dq] against keys [..., S, Dk]; the batch dims broadcast against each other (#)
ScoreQuery = Float[ArrayLike, "*#B T Dq"]
ScoreKey = Float[ArrayLike, "*#B S Dk"]
SameWidthKey = Float[ArrayLike, "*#B S Dq"]  # dot, scaled_dot, cosine: keys as wide as the queries
Logits = Float[Array, "*B T S"]
GeneralW = Float[ArrayLike, "Dq Dk"]
Strength = Float[ArrayLike, "*#B T"]  # cosine's key strength beta, broadcast to [..., T]
LocationW = Float[ArrayLike, "Dq S"]

# attn_jax.memory (NTM addressing): memory [B, N, M], weightings [B, N] over the N slots
NTMMemory = Float[Array, "B N M"]
NTMWeighting = Float[Array, "B N"]
NTMKey = Float[Array, "B M"]
NTMScalar = Float[ArrayLike, "B"]  # key strength beta, gate g, sharpening gamma: one per example
NTMShift = Float[Array, "B L"]  # a distribution over the L (odd) offsets -L//2 .. L//2
NTMRead = Float[Array, "B M"]
NTMVector = Float[Array, "B M"]  # erase and add vectors

# attn_jax.local (Luong local-m / local-p)
LocalStates = Float[Array, "B T D"]
LocalWp = Float[Array, "D A"]
LocalVp = Float[Array, "A"]
LocalScores = Float[Array, "B T S"]
LocalCenter = Float[ArrayLike, "B T"]  # int t (local-m) or real p_t (local-p)
Centers = Float[Array, "B T"]  # predictive_center's p_t
LocalWeights = Float[Array, "B T S"]
SourceLengths = Int[ArrayLike, "B"]

F = TypeVar("F", bound=Callable)


def typechecked(fn: F) -> F:
    """``fn`` with its jaxtyping shapes checked on every call (``jaxtyped`` with beartype): for debugging."""
    try:
        from beartype import beartype
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("shape checking needs beartype: pip install beartype (or attn-jax[dev])") from err
    return jaxtyped(typechecker=beartype)(fn)
