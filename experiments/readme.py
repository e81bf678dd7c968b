"""Writing results into the repository's pages: script-owned blocks between ``<!-- name:begin -->`` and
``<!-- name:end -->``, links that resolve from the page that holds them, and staging a run's comparison for
publishing.

The result blocks live in the docs (``docs/experiments/<name>.md``, ``docs/benchmarks.md``), a summary in the
README. A script names only the block: :func:`block_page` finds the one page under ``docs/`` (or the README)
holding its markers, and :func:`update_readme_block` rewrites it there. Scripts write their links relative to
the repository root (:func:`repo_relative`); the block is relinked to the page's own folder as it is written, so
the same text serves the README, a docs page and the Sphinx site.

The experiments' ``publish`` steps and the benchmarks use it; the installable library (``attn_jax``) knows
nothing of the repository's pages.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from attn_jax.train.cli import row_folder
from attn_jax.train.rundir import write_json

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
_LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # a Markdown link or image target: [text](target)


def block_page(name: str) -> Path:
    """The one page (a Markdown file under ``docs/``, or the README) that holds ``<!-- name:begin -->``."""
    begin = f"<!-- {name}:begin -->"
    pages = [p for p in [README, *sorted(DOCS.rglob("*.md"))]
             if "_build" not in p.parts and begin in p.read_text()]
    if len(pages) != 1:
        where = ", ".join(repo_relative(p) for p in pages) or "no page"
        raise SystemExit(f"the block {begin} must be in exactly one page of README.md and docs/; found in {where}")
    return pages[0]


def relink(text: str, page: Path) -> str:
    """``text`` with each Markdown link to a repository file (written relative to the root) made relative to
    ``page``'s folder. Links that are absolute, external, anchors, or name no file of the repository stay."""
    folder = Path(page).resolve().parent

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^[#/]|^\.\.?/", target):
            return m.group(0)
        path, anchor = (target.split("#", 1) + [""])[:2]
        if not (ROOT / path).exists():
            return m.group(0)
        new = os.path.relpath(ROOT / path, folder).replace(os.sep, "/")
        return f"{m.group(1)}{new}{'#' + anchor if anchor else ''}{m.group(3)}"

    return _LINK.sub(fix, text)


def with_block(content: str, name: str, text: str, page: Path) -> str:
    """``content`` (the text of ``page``) with its ``name`` block replaced by ``text``, relinked for ``page`` when
    the page lies in the repository (pure: :func:`update_readme_block` writes it, checks compare it)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in content or end not in content:
        raise SystemExit(f"{page} has no {begin} ... {end} block to update")
    if Path(page).resolve().is_relative_to(ROOT):
        text = relink(text, page)
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{text}\n{end}{tail}"


def update_readme_block(name: str, text: str, readme: Path | None = None) -> Path:
    """Replace the ``<!-- name:begin -->`` ... ``<!-- name:end -->`` block of ``readme`` (default: the page that
    holds it, :func:`block_page`) with ``text``, its root-relative links made relative to that page when the
    page lies in the repository. Returns the page written."""
    page = block_page(name) if readme is None else Path(readme)
    page.write_text(with_block(page.read_text(), name, text, page))
    return page


update_block = update_readme_block  # the name that says what it does now that blocks live in the docs


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root (how scripts write links), or as given when outside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def stage_comparison(run_dir: Path, results: Path) -> dict:
    """Read a comparison run's ``comparison.json`` and copy it into the ``results`` folder (created)."""
    comparison = json.loads((Path(run_dir) / "comparison.json").read_text())
    Path(results).mkdir(parents=True, exist_ok=True)
    write_json(Path(results) / "comparison.json", comparison)
    return comparison


def row_run(run_dir: Path, row: str) -> Path:
    """The run folder a comparison's per-row pictures come from: ``run_dir/<row>`` when it is a run, else the
    row's first seed, ``run_dir/<row>/seed<k>`` with the smallest k (``run_dir/<row>`` when it has none)."""
    folder = Path(run_dir) / row_folder(row)
    seeds = sorted((p for p in folder.glob("seed*") if p.name[4:].isdigit() and (p / "config.json").is_file()),
                   key=lambda p: int(p.name[4:]))
    return seeds[0] if seeds and not (folder / "config.json").is_file() else folder


def row_config(run_dir: Path, row: str) -> dict:
    """The config.json of a comparison row's run (:func:`row_run`)."""
    return json.loads((row_run(run_dir, row) / "config.json").read_text())
