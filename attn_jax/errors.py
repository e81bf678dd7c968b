"""Exceptions raised by attn_jax."""


class UnsupportedError(ValueError, NotImplementedError):
    """A known implementation cannot serve these arguments or this platform.

    Subclasses both ValueError and NotImplementedError, so fallback code written
    for either convention (jax.nn raises ValueError, tokamax NotImplementedError)
    catches it.
    """
