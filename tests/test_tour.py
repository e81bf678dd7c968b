"""The README's demo (experiments.tour) runs, and every path it reports is accurate."""

from __future__ import annotations

import json

from experiments import tour


def test_tour_runs_and_is_accurate(tmp_path, capsys):
    summary = tour.main(["--out", str(tmp_path)])
    assert (tmp_path / "tour.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["rows"] == summary["rows"]
    prims = {r["primitive"] for r in summary["rows"]}
    assert {"dot_product_attention", "additive_attention", "local_attention_weights", "scores.cosine"} <= prims
    for r in summary["rows"]:
        assert r["max_abs_err"] < 1e-4, r
    assert "max|err|" in capsys.readouterr().out
