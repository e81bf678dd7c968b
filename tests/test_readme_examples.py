"""The self-contained examples of the README and the docs run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (page, section): pages whose first python block after the section heading needs nothing but the package (the
# other blocks use placeholders such as `tokens`). The getting-started page includes the README's example.
EXAMPLES = (("README.md", "## One example"), ("docs/flax.md", "# Inside your Flax model"))


def _first_python_block(page: str, section: str) -> str:
    text = (ROOT / page).read_text()
    start = text.index(section)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, section
    return match.group(1)


@pytest.mark.parametrize(("page", "section"), EXAMPLES)
def test_example_runs(page, section):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_first_python_block(page, section), f"{page}:{section}", "exec"), {})
    assert printed.getvalue().strip(), "each example prints what it shows"
