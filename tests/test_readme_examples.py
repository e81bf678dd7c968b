"""The README's self-contained examples run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# Sections whose first python block needs nothing but the package (the others use placeholders such as `tokens`).
SECTIONS = ("## The API at a glance", "### Inside your Flax model")


def _first_python_block(section: str) -> str:
    text = README.read_text()
    start = text.index(section)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, section
    return match.group(1)


@pytest.mark.parametrize("section", SECTIONS)
def test_readme_example_runs(section):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_first_python_block(section), f"README:{section}", "exec"), {})
    assert printed.getvalue().strip(), "each example prints what it shows"
