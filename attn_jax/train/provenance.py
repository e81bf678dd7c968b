"""Where a result came from: the commit of the code that ran, the device, the date.

The training loop records :func:`code_commit` in every ``summary.json`` (with ``wall_s`` and ``parameters``);
published tables read their provenance from those summaries, never from the machine that publishes them.
"""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """The git commit of the checkout ``attn_jax`` is imported from, with ``+dirty`` when tracked files differ
    from it (untracked files do not count); ``"attn_jax <version>"`` when it is not a git checkout (an installed
    wheel), ``"unknown"`` when neither can be read."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_PACKAGE), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return f"{sha}+dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        try:
            from importlib.metadata import version

            return f"attn_jax {version('attn_jax')}"
        except Exception:  # noqa: BLE001 (no metadata: not installed either)
            return "unknown"


def today() -> str:
    """``YYYY-MM-DD`` (UTC): the date field of a published table's provenance."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
