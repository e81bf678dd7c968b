"""Sphinx configuration of the attn_jax docs: Markdown pages (myst), the API reference from the docstrings
(autodoc + napoleon for the Google-style ``Args:`` sections), the furo theme.

Build (what ``.ci/run`` does, warnings as errors)::

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # experiments/ and benchmarks/ are not installed; the API pages import attn_jax

project = "attn_jax"
author = "The attn_jax authors"
copyright = "2026, The attn_jax authors"  # noqa: A001 (Sphinx's name)
from attn_jax import __version__ as release  # noqa: E402

version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # links to sections of another page: page.md#a-heading

autodoc_member_order = "bysource"
autodoc_typehints = "signature"  # the jaxtyping shapes stay in the signature: Float[Array, '*B T N H']
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # a dataclass's "Attributes:" as fields of the class, not a second description of each

html_theme = "furo"
html_title = f"attn_jax {release}"
html_static_path: list[str] = []


# --- the shapes in the signatures ----------------------------------------------------------------------------
# The public signatures are annotated with the aliases of attn_jax.shapes (``query: Query``). Evaluated, each
# alias is a union of jaxtyping classes over every ArrayLike member, a line of noise per argument; kept as
# written (the modules use ``from __future__ import annotations``) and replaced by the alias's own text, the
# signature reads ``query: Float[ArrayLike, '*B T N H']``.
import re  # noqa: E402

_SHAPES = dict(re.findall(r'^(\w+) = (\w+\[\w+, "[^"]*"\])', (ROOT / "attn_jax" / "shapes.py").read_text(), re.M))
autodoc_type_aliases = {name: name for name in _SHAPES} | {"ArrayLike": "ArrayLike", "Array": "Array"}


def _shape_signature(app, what, name, obj, options, signature, return_annotation):
    def expand(text):
        if text is None:
            return None
        text = re.sub(r"\b(" + "|".join(map(re.escape, _SHAPES)) + r")\b", lambda m: _SHAPES[m.group(1)], text)
        text = re.sub(r"TypeAliasForwardRef\('(.*?)'\)", r"\1", text)  # the alias as it is written
        return re.sub(r"~(?:typing|collections\.abc)\.(\w+)", r"\1", text)  # ~typing.Any -> Any

    return expand(signature), expand(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _shape_signature)
