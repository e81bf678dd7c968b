"""Published tables: ``experiments/results/<experiment>/<table>/comparison.json`` and their Markdown text (docs pages).

A published table (docs/results.md) holds its provenance (the commit of the code that ran, the command, the
device, the date), the seeds, and per row the metrics over seeds ``{"mean", "std", "per_seed"}`` with the row's
``parameters`` and mean ``wall_s``. :func:`from_summaries` builds it from a comparison's rows (each a summary
aggregated over seeds by :func:`attn_jax.train.report.aggregate`), so every number comes from the runs'
``summary.json``, which the training loop wrote; :func:`markdown` renders it as mean ± std with the best row in
bold and the rows within noise of it marked.

"Within noise": two rows whose means differ by no more than the sum of their standard deviations over seeds
(:func:`within_noise`). That is a rough test, not a significance test: with 3 seeds it only says a gap is not
larger than the seed-to-seed spread, so such a gap is never called an effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from attn_jax.train.provenance import today
from attn_jax.train.report import one_or_sorted
from attn_jax.train.rundir import write_json


def from_summaries(rows: Mapping[str, Mapping], command: str | Sequence[str], metrics: Sequence[str] | None = None,
                   date: str | None = None) -> dict:
    """The published table of a comparison: ``rows`` maps a row name (as the docs show it) to its summary
    aggregated over seeds (``eval``, ``eval_std``, ``per_seed``, ``seeds``, ``parameters``, ``wall_s``, ``commit``,
    ``device``). ``metrics``: which eval metrics to keep (default: every one any row reports); a row holds those
    it reports (the alignment error of a model without attention has no value). Every row must have run the
    same seeds."""
    if not rows:
        raise ValueError("a table needs at least one row")
    seeds = {tuple(s.get("seeds", ())) for s in rows.values()}
    if len(seeds) != 1:
        raise ValueError(f"the rows ran different seeds ({sorted(seeds)}); a table compares rows over the same seeds")
    (seed_list,) = seeds
    names = list(metrics) if metrics is not None else list(dict.fromkeys(m for s in rows.values()
                                                                          for m in s["per_seed"]))
    if unknown := [m for m in names if not any(m in s["per_seed"] for s in rows.values())]:
        raise ValueError(f"no row reports {unknown}")
    table_rows = {}
    for row, s in rows.items():
        table_rows[row] = {
            "metrics": {m: {"mean": s["eval"][m], "std": s["eval_std"][m], "per_seed": list(s["per_seed"][m])}
                        for m in names if m in s["per_seed"]},
            "parameters": s.get("parameters"), "wall_s": s.get("wall_s")}
    provenance = {"commit": one_or_sorted(s.get("commit", "unknown") for s in rows.values()),
                  "command": command, "device": one_or_sorted(s.get("device", "unknown") for s in rows.values()),
                  "date": date or today()}
    return {"provenance": provenance, "seeds": list(seed_list), "rows": table_rows}


def is_published(comparison: Mapping) -> bool:
    """Whether a loaded ``comparison.json`` is a published table (``rows`` and ``provenance``), not a run folder's
    comparison (``summaries``)."""
    return "rows" in comparison and "provenance" in comparison


def keep_rows(kept: Mapping, table: Mapping) -> dict:
    """``table`` with the rows of the published table ``kept`` added verbatim (numbers, parameters, wall time and
    any other field), for a table whose rows came from sittings whose run folders are no longer at hand.

    Both must cover the same seeds and no row name may be in both (a row is replaced by republishing it, not by
    merging). The provenance joins both: every commit (sorted, as :func:`from_summaries` does), ``kept``'s
    commands then ``table``'s, every device; the date is ``table``'s."""
    if list(kept["seeds"]) != list(table["seeds"]):
        raise ValueError(f"the kept table ran seeds {kept['seeds']}, the new rows {table['seeds']}: one table "
                         "compares rows over the same seeds")
    if both := sorted(set(kept["rows"]) & set(table["rows"])):
        raise ValueError(f"rows {both} are in the kept table and in the new runs: publish a row from one source")

    def commands(p: Mapping) -> list[str]:
        return [p["command"]] if isinstance(p["command"], str) else list(p["command"])

    old, new = kept["provenance"], table["provenance"]
    provenance = {"commit": one_or_sorted([old["commit"], new["commit"]]),
                  "command": commands(old) + commands(new),
                  "device": one_or_sorted([old["device"], new["device"]]), "date": new["date"]}
    return {**table, "provenance": provenance, "rows": {**kept["rows"], **table["rows"]}}


def short_commit(commit: str | Sequence[str]) -> str:
    """A provenance commit for prose: 12 hex digits, keeping a ``+dirty`` mark; a list joined by commas."""
    if not isinstance(commit, str):
        return ", ".join(short_commit(c) for c in commit)
    sha, plus, rest = commit.partition("+")
    return sha[:12] + plus + rest if len(sha) == 40 else commit


def write(folder: Path, table: Mapping) -> Path:
    """Write ``folder/comparison.json`` (atomically; the folder is created) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "comparison.json", table)
    return folder / "comparison.json"


def within_noise(a: Mapping, b: Mapping) -> bool:
    """Whether two rows' ``{"mean", "std"}`` of one metric differ by no more than their summed std."""
    return abs(a["mean"] - b["mean"]) <= a["std"] + b["std"]


def _best(table: Mapping, metric: str, higher: bool) -> str | None:
    finite = {r: v["metrics"][metric] for r, v in table["rows"].items()
              if metric in v["metrics"] and math.isfinite(v["metrics"][metric]["mean"])}
    if not finite:
        return None
    return (max if higher else min)(finite, key=lambda r: finite[r]["mean"])


def markdown(table: Mapping, columns: Sequence[tuple[str, str, str]], higher: Mapping[str, bool] | None = None,
             extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """A Markdown table: one line per row, a ``mean ± std`` cell per ``(metric, header, format)`` column.

    ``higher[metric]`` (default True) says which way is better: the best row's cell is bold and every other
    row within noise of it (:func:`within_noise`) gets "≈". ``extra[header][row]`` adds text columns (e.g. the
    paper's number). A row without the metric shows "–". Below the table: what the marks mean and the seeds."""
    higher = dict(higher or {})
    extra = dict(extra or {})
    head = ["row", *[h for _, h, _ in columns], *extra]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(columns)) + "---|" * len(extra)]
    best = {m: _best(table, m, higher.get(m, True)) for m, _, _ in columns}
    for row, v in table["rows"].items():
        cells = []
        for m, _, fmt in columns:
            if m not in v["metrics"]:
                cells.append("–")
                continue
            stat = v["metrics"][m]
            text = f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}"
            if best[m] == row:
                text = f"**{text}**"
            elif best[m] is not None and within_noise(stat, table["rows"][best[m]]["metrics"][m]):
                text += " ≈"
            cells.append(text)
        cells += [extra[h].get(row, "") for h in extra]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    seeds = table["seeds"]
    lines += ["", f"Mean ± sample std over {len(seeds)} seeds ({', '.join(map(str, seeds))}); bold: the best row; "
              "≈: within noise of it (the gap is no larger than the two rows' std summed), not an effect."]
    return "\n".join(lines)
