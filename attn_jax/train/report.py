"""Writing results into the README: script-owned blocks between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def update_readme_block(name: str, text: str, readme: Path | None = None) -> None:
    """Replace the README's ``<!-- name:begin -->`` ... ``<!-- name:end -->`` block with ``text``."""
    readme = README if readme is None else Path(readme)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = readme.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{readme} has no {begin} ... {end} block to update")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
