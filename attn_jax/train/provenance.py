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


def git_state(root: Path | str) -> tuple[str, tuple[str, ...]]:
    """``(commit, changed)`` of the git checkout at ``root``: HEAD's sha and the tracked paths that differ from it
    (untracked files do not count). Raises ``OSError`` / ``subprocess.SubprocessError`` outside a checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout

    sha = git("rev-parse", "HEAD").strip()
    changed = tuple(line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line)
    return sha, changed


@functools.lru_cache(maxsize=1)
def _package_state() -> tuple[str, tuple[str, ...]]:
    try:
        return git_state(_PACKAGE)
    except (OSError, subprocess.SubprocessError):
        try:
            from importlib.metadata import version

            return f"attn_jax {version('attn_jax')}", ()
        except Exception:  # noqa: BLE001 (no metadata: not installed either)
            return "unknown", ()


def code_commit() -> str:
    """The git commit of the checkout ``attn_jax`` is imported from, with ``+dirty`` when tracked files differ
    from it (untracked files do not count); ``"attn_jax <version>"`` when it is not a git checkout (an installed
    wheel), ``"unknown"`` when neither can be read. Read once per process and kept: the experiments' command line
    reads it as it starts (:func:`attn_jax.train.cli.parse`), so edits made to the tree while a long run goes on
    do not mark the code that was imported before them."""
    sha, changed = _package_state()
    return f"{sha}+dirty" if changed else sha


def dirty_files() -> list[str]:
    """The tracked paths that differed from :func:`code_commit`'s commit when it was read (empty when clean)."""
    return list(_package_state()[1])


def today() -> str:
    """``YYYY-MM-DD`` (UTC): the date field of a published table's provenance."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
