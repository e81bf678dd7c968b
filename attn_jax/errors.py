"""Exceptions raised by attn_jax."""


class UnsupportedError(ValueError, NotImplementedError):
    """A known implementation cannot serve these arguments or this platform.

    Subclasses both ValueError and NotImplementedError, so fallback code written
    for either convention (jax.nn raises ValueError, tokamax NotImplementedError)
    catches it.
    """


def require(module: str, extra: str):
    """Import ``module`` (a package of an optional extra), or raise an ImportError naming the extra to install.

    The core install carries only what the library itself imports; the text metrics (sacrebleu) and the figures
    (matplotlib) of :mod:`attn_jax.train` come with the ``experiments`` extra, TensorBoard files with
    ``tensorboard``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed here but is not installed; it comes with attn_jax's {extra!r} extra: "
                          f"pip install 'attn-jax[{extra}]' (or, in a checkout, pip install -e '.[{extra}]')") from e
