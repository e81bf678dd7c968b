"""One ``implementation=`` vocabulary for every attention op, and one resolver.

Each op (``dot_product_attention``, ``additive_attention``,
``decode_attention``) owns an :class:`OpRegistry`: its implementations as
``name -> (reason, run)``, where ``reason(problem, automatic)`` says why the
implementation cannot serve this problem on this backend (or None), and
``run(problem)`` computes it. :meth:`OpRegistry.resolve` is the whole dispatch
chain, the same for every op:

* ``implementation`` is None, a name, or a list/tuple of names (anything else:
  TypeError). Names are canonicalised through tokamax's aliases
  (:data:`ALIASES`); an unknown name is a ValueError listing the known ones.
* A name or a sequence: the first implementation whose ``reason`` is None is
  used; if none serves, :class:`~attn_jax.errors.UnsupportedError` gives every
  declined implementation's reason.
* None: the op's automatic chain (its ``automatic`` list, in order, asked with
  ``automatic=True``), ending in an implementation that always serves.

Every decline is logged at DEBUG level on the ``attn_jax`` logger. Adding an
implementation (a Mosaic GPU kernel, a TPU decode kernel) is one
:meth:`OpRegistry.register` call per op.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax

from attn_jax.errors import UnsupportedError

log = logging.getLogger("attn_jax")

#: tokamax's names -> ours ("mosaic" depends on the backend).
ALIASES: dict[str, str | Callable[[], str]] = {
    "xla_chunked": "chunked",
    "triton": "pallas_triton",
    "mosaic": lambda: "pallas_mosaic_tpu" if jax.default_backend() == "tpu" else "pallas_mosaic_gpu",
}

Reason = Callable[[Any, bool], "str | None"]


def implementation_names(implementation) -> tuple[str, ...] | None:
    """``None``, a name, or a list/tuple of names -> a tuple of names (or None); else TypeError."""
    if implementation is None:
        return None
    if isinstance(implementation, str):
        return (implementation,)
    if not isinstance(implementation, (list, tuple)) or not all(isinstance(n, str) for n in implementation):
        raise TypeError(f"implementation must be None, a name or a list/tuple of names, got {implementation!r}")
    if not implementation:
        raise ValueError("implementation must not be an empty sequence")
    return tuple(implementation)


@dataclasses.dataclass(frozen=True)
class Implementation:
    reason: Reason
    run: Callable[..., Any]


@dataclasses.dataclass
class OpRegistry:
    """The implementations of one op, and the order ``implementation=None`` tries them in."""

    op: str
    automatic: Sequence[str] = ()
    aliases: dict[str, str | Callable[[], str]] = dataclasses.field(default_factory=lambda: dict(ALIASES))
    implementations: dict[str, Implementation] = dataclasses.field(default_factory=dict)

    def register(self, name: str, reason: Reason, run: Callable[..., Any]) -> None:
        self.implementations[name] = Implementation(reason, run)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.implementations)

    def canonical(self, name: str) -> str:
        target = self.aliases.get(name, name)
        target = target() if callable(target) else target
        if target not in self.implementations:
            raise ValueError(
                f"unknown implementation {name!r} for {self.op}; known: {', '.join(self.names)} "
                f"(aliases: {', '.join(self.aliases)})"
            )
        return target

    def reason(self, name: str, problem, automatic: bool = False) -> str | None:
        return self.implementations[name].reason(problem, automatic)

    def resolve(self, implementation, problem) -> str:
        """The implementation name that serves ``problem`` (module docstring)."""
        names = implementation_names(implementation)
        automatic = names is None
        if automatic:
            names = tuple(self.automatic)
        else:
            names = tuple(self.canonical(n) for n in names)
        reasons = []
        for name in names:
            why = self.reason(name, problem, automatic)
            if why is None:
                if automatic:
                    log.debug("%s: implementation=None chose %s", self.op, name)
                return name
            if automatic:
                log.debug("%s: implementation=None: not %s (%s)", self.op, name, why)
            else:
                log.debug("%s: implementation %r declined: %s", self.op, name, why)
            reasons.append(f"{name}: {why}")
        raise UnsupportedError(f"{self.op}: no requested implementation supports these arguments: "
                               + "; ".join(reasons))

    def run(self, name: str, problem, **options):
        return self.implementations[name].run(problem, **options)
