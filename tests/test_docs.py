"""The docs: result blocks in one page each, links that resolve, summaries equal to the published tables, a README
that is a front page, and the Sphinx site built with warnings as errors and looked at in headless Chromium.

The site tests need the ``docs`` extra (Sphinx, myst-parser, furo) and Chromium; without them they skip with a
message. ``.ci/run``'s docs leg builds the site with ``-W``, installs Chromium and sets
``ATTN_JAX_DOCS_HTML`` (the built site) and ``ATTN_JAX_REQUIRE_SITE=1``, under which a missing tool fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from experiments import readme, summary

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
REQUIRE = os.environ.get("ATTN_JAX_REQUIRE_SITE") == "1"
_BEGIN = re.compile(r"<!-- ([\w-]+):begin -->")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _missing(what: str):
    if REQUIRE:
        pytest.fail(f"{what} (ATTN_JAX_REQUIRE_SITE=1: the docs leg must build and render the site)")
    pytest.skip(what)


# --- pages as Markdown ----------------------------------------------------------------------------------------
def test_every_block_lives_in_exactly_one_page_with_its_end_marker():
    seen: dict[str, list[str]] = {}
    for page in PAGES:
        text = page.read_text()
        for name in _BEGIN.findall(text):
            seen.setdefault(name, []).append(str(page.relative_to(ROOT)))
            assert text.index(f"<!-- {name}:end -->") > text.index(f"<!-- {name}:begin -->"), (page, name)
    assert len(seen) >= 25, sorted(seen)  # every experiment's and benchmark's block, and the two summaries
    assert {n: p for n, p in seen.items() if len(p) != 1} == {}
    assert seen["results_summary"] == ["README.md"] and seen["attention_memory"] == ["docs/benchmarks.md"]
    assert seen["seq2seq_num2words_de"] == ["docs/experiments/seq2seq.md"]


def test_every_local_link_and_image_of_the_pages_resolves():
    broken = []
    for page in PAGES:
        for target in _LINK.findall(page.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_a_block_is_written_into_its_page_with_links_relative_to_that_page(tmp_path, monkeypatch):
    (tmp_path / "experiments" / "results" / "x").mkdir(parents=True)
    (tmp_path / "experiments" / "results" / "x" / "fig.png").write_bytes(b"png")
    (tmp_path / "docs" / "experiments").mkdir(parents=True)
    page = tmp_path / "docs" / "experiments" / "x.md"
    page.write_text("# X\n\n<!-- x_table:begin -->\nold\n<!-- x_table:end -->\n\nprose\n")
    (tmp_path / "README.md").write_text("# front\n")
    monkeypatch.setattr(readme, "ROOT", tmp_path)
    monkeypatch.setattr(readme, "README", tmp_path / "README.md")
    monkeypatch.setattr(readme, "DOCS", tmp_path / "docs")
    written = readme.update_readme_block(
        "x_table", "![fig](experiments/results/x/fig.png) [web](https://example.org/a) [gone](no/such/file.json) "
                   "[anchor](#here) [json](experiments/results/x/fig.png#top)")
    assert written == page
    text = page.read_text()
    assert "old" not in text and text.startswith("# X") and text.endswith("prose\n")
    assert "![fig](../../experiments/results/x/fig.png)" in text
    assert "[web](https://example.org/a)" in text and "[gone](no/such/file.json)" in text
    assert "[anchor](#here)" in text and "[json](../../experiments/results/x/fig.png#top)" in text
    # a block in no page, or in two, is refused with the pages named
    with pytest.raises(SystemExit, match="no page"):
        readme.update_readme_block("nowhere", "t")
    (tmp_path / "README.md").write_text("<!-- x_table:begin -->\n<!-- x_table:end -->\n")
    with pytest.raises(SystemExit, match="README.md, docs/experiments/x.md"):
        readme.update_readme_block("x_table", "t")


def test_the_summaries_are_what_the_published_tables_say():
    """The README's and the experiments index's summary blocks equal a fresh render of the committed tables."""
    assert summary.update(check=True) == []


def test_every_published_table_declares_its_headline_and_direction():
    """A table without a declared headline would be summarised by a guess (which metric, which way is better)."""
    published = [name for name, table in summary.tables() if table is not None]
    assert published and [n for n in published if n not in summary.HEADLINES] == []
    with pytest.raises(KeyError, match="HEADLINES"):
        summary.line("ntm/unknown_table", {"seeds": [0], "rows": {"a": {"metrics": {"m": {}}}}}, "docs")


def test_the_summary_reads_best_and_weakest_rows_and_names_older_folders(tmp_path):
    def stat(mean, std):
        return {"mean": mean, "std": std, "per_seed": [mean - std, mean, mean + std]}

    folder = tmp_path / "pointer" / "tsp_n10"
    folder.mkdir(parents=True)
    (folder / "comparison.json").write_text(json.dumps({
        "provenance": {}, "seeds": [0, 1, 2],
        "rows": {"ptrnet": {"metrics": {"gap_n10": stat(0.02, 0.01)}},
                 "seq2seq": {"metrics": {"gap_n10": stat(0.24, 0.21)}},
                 "other": {"metrics": {"gap_n10": stat(0.05, 0.01)}}}}))
    (tmp_path / "ntm" / "old").mkdir(parents=True)
    (tmp_path / "ntm" / "old" / "comparison.json").write_text(json.dumps({"summaries": {}}))
    text = summary.render(results=tmp_path)
    lines = text.splitlines()
    assert len(lines) == 4 and "[ntm/old](docs/experiments/ntm.md)" in lines[2] and "single-seed" in lines[2]
    tsp = lines[3]
    assert "(lower is better)" in tsp  # lower is better: the best row is the smallest gap
    assert "ptrnet: 0.0200 ± 0.0100" in tsp and "seq2seq: 0.240 ± 0.210 (within noise of the best)" in tsp


def test_the_readme_is_a_front_page_that_links_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    assert text.index("pip install -e '.[experiments]'") < text.index("-m pytest")  # the two commands open it
    for page in ("docs/getting_started.md", "docs/flax.md", "docs/experiments/index.md", "docs/benchmarks.md",
                 "docs/guarantees.md", "docs/design.md"):
        assert f"]({page})" in text, page
    assert "<!-- results_summary:begin -->" in text and "## Results\n" not in text  # no result blocks here


# --- the site ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built HTML site: ``ATTN_JAX_DOCS_HTML`` when the docs leg built it, else built here with -W."""
    if os.environ.get("ATTN_JAX_DOCS_HTML"):
        return Path(os.environ["ATTN_JAX_DOCS_HTML"])
    for module in ("sphinx", "myst_parser", "furo"):
        try:
            __import__(module)
        except ImportError:
            _missing(f"{module} is not installed: pip install -e '.[docs]' to build the site")
    out = tmp_path_factory.mktemp("site") / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(ROOT / "docs"), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _chromium() -> str:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                 None)
    if found is None:
        _missing("no chromium on PATH (Debian: apt-get install chromium); the pages were not looked at")
    return found


def _browse(page: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"]
    return subprocess.run([_chromium(), *flags, *args, page.as_uri()], capture_output=True, text=True,
                          timeout=120)


class _Page(HTMLParser):
    """The headings (h1-h3 text) and image sources of a rendered DOM."""

    def __init__(self):
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "h3"):
            self._in = tag
            self.headings.append("")
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.headings[-1] += data


def _rendered(page: Path) -> tuple[_Page, str]:
    proc = _browse(page, "--dump-dom")
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-2000:]
    parsed = _Page()
    parsed.feed(proc.stdout)
    parsed.headings = [" ".join(h.split()).rstrip("#¶ ") for h in parsed.headings]
    return parsed, proc.stdout


def _screenshot(page: Path, png: Path):
    """``page`` rendered to ``png`` (1280 x 1600); returns the pixels, after checking they are not blank."""
    from matplotlib import image

    proc = _browse(page, f"--screenshot={png}")
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    pixels = image.imread(png)
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"
    return pixels


@pytest.mark.parametrize("name", ["index", "api/attention"])
def test_pages_render_in_chromium_with_their_headings_and_images(site, name, tmp_path):
    page = site / f"{name}.html"
    assert page.is_file(), sorted(p.name for p in site.iterdir())
    shots = Path(os.environ.get("ATTN_JAX_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    _screenshot(page, shots / f"{name.replace('/', '_')}.png")
    parsed, dom = _rendered(page)
    for src in parsed.images:  # every image the page shows is in the site
        assert (page.parent / src).is_file(), src
    if name == "index":
        assert parsed.headings[0] == "attn_jax"
        assert any(src.endswith("bleu_by_length.png") for src in parsed.images), parsed.images
        for caption in ("Using it", "API reference", "Results"):
            assert caption.upper() in dom.upper()
        for link in ("getting_started.html", "flax.html", "api/index.html", "experiments/index.html",
                     "benchmarks.html"):
            assert f'href="{link}' in dom, link
    else:
        assert parsed.headings[0] == "Attention"
        assert "Ring attention (context parallelism)" in parsed.headings
        for fn in ("dot_product_attention", "additive_attention", "decode_attention", "ring_attention"):
            assert f'id="attn_jax.{fn}"' in dom, fn
        text = html.unescape(re.sub(r"<[^>]+>", "", dom))  # what a reader sees: the signature shows the shapes
        assert "query: Float[ArrayLike, '*B T N H']" in text.replace('"', "'")


def test_the_site_has_a_page_per_experiment_with_its_figures_and_the_api_of_every_public_name(site):
    for name in ("seq2seq", "ntm", "pointer", "transformer", "lstmn", "snail", "show_attend_tell", "sagan"):
        html = (site / "experiments" / f"{name}.html").read_text()
        images = re.findall(r'<img [^>]*src="([^"]+)"', html)
        assert images, name
        assert all((site / "experiments" / src).is_file() for src in images), name
    assert re.findall(r'<img [^>]*src="([^"]+)"', (site / "benchmarks.html").read_text())
    documented = "\n".join(p.read_text() for p in (site / "api").glob("*.html"))
    import attn_jax
    import attn_jax.nn
    import attn_jax.train

    for module in (attn_jax, attn_jax.nn, attn_jax.train):
        for name in module.__all__:  # documented where it is defined or where it is exported
            assert re.search(rf'id="(module-)?[\w.]*\.{name}"', documented), f"{module.__name__}.{name}"


def test_a_stale_summary_is_reported_and_the_check_writes_nothing(tmp_path, monkeypatch):
    page = tmp_path / "README.md"
    page.write_text("# x\n<!-- results_summary:begin -->\nold numbers\n<!-- results_summary:end -->\n")
    monkeypatch.setattr(summary, "BLOCKS", {"results_summary": page})
    assert summary.update(check=True) == [str(page)]
    assert "old numbers" in page.read_text()  # the check only reads: pytest -n 2 never sees a page half written
    summary.update()
    assert "old numbers" not in page.read_text() and summary.update(check=True) == []
