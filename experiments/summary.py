"""The results at a glance: one line per published table, read from its ``comparison.json``.

    python -m experiments.summary           # rewrite the README's and docs/experiments/index.md's summary blocks
    python -m experiments.summary --check   # exit 1 when a block differs from what the tables say

Each published table (``experiments/results/<experiment>/<table>/comparison.json`` in the schema of
docs/results.md) gets one line: its headline metric (:data:`HEADLINES`, chosen per table, else the first metric
the table reports), the best row and the weakest row by that metric (mean ± sample std over the seeds), and
whether the two are within noise of each other. Folders written before the schema (one seed, an older layout)
are listed as such with no number. ``python -m experiments.publish`` calls :func:`update` after each table, and
a test holds the committed blocks equal to :func:`render`, so the summary cannot go stale.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from experiments.readme import DOCS, README, update_readme_block, with_block
from experiments.tables import is_published, within_noise

RESULTS = Path(__file__).resolve().parent / "results"

# table folder -> (metric, what it measures, higher is better)
HEADLINES: dict[str, tuple[str, str, bool]] = {
    "seq2seq/num2words_de": ("bleu_len_17+", "BLEU on sources of 17+ tokens (longer than any training source)", True),
    "seq2seq/num2words_fr": ("bleu_len_17+", "BLEU on sources of 17+ tokens (longer than any training source)", True),
    "seq2seq/dates": ("alignment_accuracy", "alignment accuracy", True),
    "seq2seq/reorder": ("alignment_accuracy", "alignment accuracy", True),
    "pointer/convex_hull_n10": ("accuracy_n10", "hull accuracy at n = 10", True),
    "pointer/convex_hull_n20": ("accuracy_n20", "hull accuracy at n = 20", True),
    "pointer/sort_n10": ("accuracy_n10", "sorting accuracy at n = 10", True),
    "pointer/tsp_n10": ("gap_n10", "tour length above optimal, as a fraction, at n = 10 (lower is better)", False),
    "ntm/copy": ("bit_errors_len_60", "wrong bits per sequence at length 60 (lower is better)",
                 False),
    "ntm/repeat_copy": ("bit_errors", "wrong bits per sequence on the training ranges, 1-10 x 1-10 (lower is better)",
                        False),
    "ntm/associative_recall": ("bit_errors_items_12", "wrong bits per query at 12 items, trained on 2-6 (lower is "
                               "better)", False),
    "show_attend_tell/captions": ("bleu_4", "BLEU-4 on test canvases of held-out digit images", True),
    "lstmn/lm": ("bits_per_char", "held-out bits per character (lower is better)", False),
    "sagan/pairs": ("agreement", "share of generated pair canvases whose halves show one digit", True),
    "sagan/pairs_long": ("agreement", "share of generated pair canvases whose halves show one digit", True),
    "snail/settings": ("accuracy", "query accuracy on test-class episodes", True),
    "snail/ablation": ("accuracy", "5-way 1-shot query accuracy on test-class episodes", True),
    "transformer/translate": ("bleu", "BLEU, English -> German number words", True),
    "transformer/ablation": ("bleu", "BLEU, English -> German number words", True),
    "transformer/lm": ("bits_per_char", "held-out bits per character (lower is better)", False),
}
PAGES = {"seq2seq": "seq2seq", "ntm": "ntm", "pointer": "pointer", "transformer": "transformer", "lstmn": "lstmn",
         "snail": "snail", "show_attend_tell": "show_attend_tell", "sagan": "sagan"}


def tables(results: Path = RESULTS) -> list[tuple[str, dict | None]]:
    """Every table folder under ``results`` (``experiment/table``) with its table, or None for an older layout."""
    found = []
    order = list(PAGES)  # the docs' order of experiments, then the table folders by name
    paths = sorted(Path(results).glob("*/*/comparison.json"), key=lambda p: (
        order.index(p.parent.parent.name) if p.parent.parent.name in order else len(order), p.parent.name))
    for path in paths:
        data = json.loads(path.read_text())
        found.append((f"{path.parent.parent.name}/{path.parent.name}", data if is_published(data) else None))
    return found


def _cell(row: str, stat: dict) -> str:
    """``row: mean ± std`` with 3 significant figures of the larger of the two."""
    top = max(abs(stat["mean"]), abs(stat["std"])) or 1.0
    fmt = f".{max(0, 2 - math.floor(math.log10(top)))}f"
    return f"{row}: {stat['mean']:{fmt}} ± {stat['std']:{fmt}}"


def line(name: str, table: dict | None, page: str) -> str:
    """The summary line of one table (Markdown, links relative to the repository root)."""
    experiment = name.split("/")[0]
    link = f"[{name}]({page}/experiments/{PAGES.get(experiment, experiment)}.md)"
    if table is None:
        return f"| {link} | – | an older single-seed run, not yet republished over seeds | – | – |"
    if name not in HEADLINES:
        raise KeyError(f"{name}: a published table needs its headline (metric, label, higher is better) in "
                       "experiments.summary.HEADLINES")
    metric, label, higher = HEADLINES[name]
    rows = {r: v["metrics"][metric] for r, v in table["rows"].items()
            if metric in v["metrics"] and math.isfinite(v["metrics"][metric]["mean"])}
    if not rows:
        return f"| {link} | {label} | no row reports `{metric}` | – | {len(table['seeds'])} |"
    order = sorted(rows, key=lambda r: rows[r]["mean"], reverse=higher)
    best, worst = order[0], order[-1]
    if best == worst:
        return f"| {link} | {label} | {_cell(best, rows[best])} | (one row) | {len(table['seeds'])} |"
    weakest = _cell(worst, rows[worst]) + (" (within noise of the best)" if within_noise(
        rows[best], rows[worst]) else "")
    return f"| {link} | {label} | {_cell(best, rows[best])} | {weakest} | {len(table['seeds'])} |"


def render(page: str = "docs", results: Path = RESULTS) -> str:
    """The summary table; ``page``: the docs folder as a link from the repository root."""
    head = ["| table | headline metric | best row (mean ± std) | weakest row | seeds |", "|---|---|---|---|---:|"]
    return "\n".join(head + [line(name, table, page) for name, table in tables(results)])


BLOCKS = {"results_summary": README, "results_index": DOCS / "experiments" / "index.md"}


def update(check: bool = False) -> list[str]:
    """Rewrite both summary blocks; with ``check``, write nothing and list the pages whose block differs."""
    stale = []
    for block, page in BLOCKS.items():
        if check:
            content = page.read_text()
            if with_block(content, block, render(), page) != content:
                stale.append(str(page))
        else:
            update_readme_block(block, render(), page)
    return stale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.summary", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a block is stale")
    args = ap.parse_args(argv)
    stale = update(check=args.check)
    if stale:
        print("stale summary blocks (run python -m experiments.summary):", ", ".join(stale))
        return 1
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
