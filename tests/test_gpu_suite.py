"""benchmarks.gpu_suite: the one-command GPU window, exercised by its CPU dry run."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_suite


def test_the_whole_dry_run_writes_the_schema_and_only_into_its_folder(tmp_path, monkeypatch):
    """CI's run of ``python -m benchmarks.gpu_suite --dry-run``: every step, tiny sizes, CPU."""
    before = {p: p.stat().st_mtime for p in gpu_suite.RESULTS.iterdir()}
    pages = {p: (gpu_suite.ROOT / p).read_text() for p in ("README.md", "docs/benchmarks.md")}
    suite = gpu_suite.main(["--dry-run", "--out", str(tmp_path / "s")])
    on_disk = json.loads((tmp_path / "s" / "gpu_suite.json").read_text())
    assert on_disk["steps"] == suite["steps"]
    assert {"device", "jax", "steps"} <= set(on_disk) and on_disk["dry_run"] is True
    assert [s["name"] for s in on_disk["steps"]] == list(gpu_suite.STEP_NAMES)
    for step in on_disk["steps"]:
        assert step["status"] == "ok", step
        assert step["seconds"] > 0 and len(step["results"]) == 1
    tests, flash, decode, additive, train = (s["results"][0] for s in on_disk["steps"])
    assert tests["passed"] == tests["tests"] > 0 and not tests["failing"]
    assert flash["benchmark"] == "flash_attention" and flash["interpret"] is True
    assert decode["benchmark"] == "decode_attention" and additive["benchmark"] == "additive_attention"
    assert train["rows"][0]["implementation"] == "xla"
    assert {p: p.stat().st_mtime for p in gpu_suite.RESULTS.iterdir()} == before
    assert {p: (gpu_suite.ROOT / p).read_text() for p in pages} == pages
    # what a GPU run does next, pointed at a scratch results folder (the docs rewrite only recorded)
    calls = []
    monkeypatch.setattr(gpu_suite, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(gpu_suite.subprocess, "run", lambda args, **kw: calls.append(args))
    (tmp_path / "results").mkdir()
    published = gpu_suite.publish(suite, tmp_path / "s")
    names = {p.split("/")[-1] for p in published}
    assert {"flash_attention_cpu.json", "decode_attention_cpu.json", "additive_attention_cpu.json",
            "transformer_step_cpu.json", "gpu_suite_cpu.json"} <= names
    assert (tmp_path / "results" / "flash_attention_cpu.png").exists()
    assert sorted(c[2] for c in calls) == sorted(f"benchmarks.{m}" for m in gpu_suite.README_BENCHMARKS)


def test_a_step_past_its_box_is_a_timeout_and_the_json_still_lands(tmp_path):
    with pytest.raises(SystemExit, match="tests timeout"):
        gpu_suite.main(["--dry-run", "--out", str(tmp_path), "--steps", "tests", "--budget-s", "3"])
    step = json.loads((tmp_path / "gpu_suite.json").read_text())["steps"][0]
    assert step["name"] == "tests" and step["status"] == "timeout" and step["seconds"] < 30


def test_every_step_has_gpu_and_dry_parts(tmp_path):
    for name in gpu_suite.STEP_NAMES:
        for dry in (True, False):
            parts = gpu_suite.step_parts(name, tmp_path, dry)
            assert parts and all(p.args[1] == "-m" for p in parts)
            assert ("--allow-cpu" in parts[0].args) == (dry and name in ("flash", "decode", "transformer_step"))
    assert len(gpu_suite.step_parts("flash", tmp_path, False)) == 2  # one process per head dim
    with pytest.raises(ValueError, match="unknown step"):
        gpu_suite.step_parts("nope", tmp_path, True)


def test_junit_summary_counts_and_names_failures(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite tests="4" failures="1" errors="1" skipped="1">'
                   '<testcase classname="tests.a" name="ok"/>'
                   '<testcase classname="tests.a" name="bad"><failure/></testcase>'
                   '<testcase classname="tests.b" name="err"><error/></testcase>'
                   '<testcase classname="tests.b" name="skip"><skipped/></testcase></testsuite></testsuites>')
    s = gpu_suite.junit_summary(xml)
    assert (s["passed"], s["failures"], s["errors"], s["skipped"]) == (1, 1, 1, 1)
    assert s["failing"] == ["tests.a::bad", "tests.b::err"]


def test_without_a_gpu_and_without_dry_run_every_step_is_skipped_and_it_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no GPU here"):
        gpu_suite.main(["--out", str(tmp_path), "--steps", "decode"])
    step = json.loads((tmp_path / "gpu_suite.json").read_text())["steps"][0]
    assert step["status"] == "skipped" and "no GPU" in step["reason"]


def test_the_flash_parts_merge_into_one_result():
    part = {"device": "gpu-x", "config": {"head_dims": [128], "seq_lens": [1024]}, "rows": [{"head_dim": 128}]}
    other = {"device": "gpu-x", "config": {"head_dims": [64], "seq_lens": [1024]}, "rows": [{"head_dim": 64}]}
    merged = gpu_suite.merge_flash_parts([part, other])
    assert merged["config"]["head_dims"] == [64, 128]
    assert [r["head_dim"] for r in merged["rows"]] == [128, 64]
    assert part["config"]["head_dims"] == [128]  # the parts are left as they were
