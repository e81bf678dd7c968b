"""One command for a short GPU window: the GPU tests, then the benchmarks, in order of value.

    python -m benchmarks.gpu_suite [--dry-run] [--out DIR] [--budget-s 480]

On a GPU host (from the repository root; the GPU machine has no registry, so
install without dependencies)::

    python3 -m pip install -q --no-deps --no-build-isolation -e . && python3 -m benchmarks.gpu_suite

Steps, most valuable first; each runs in its own process, under its own time box,
and its results are in ``DIR/gpu_suite.json`` before the next one starts:

1. ``tests``: the kernel test files compiled on the GPU (kernels vs references,
   forward and backward, every mask kind, GQA, the bf16 T=8192 backward).
2. ``flash``: ``benchmarks.flash_attention`` (ours vs cuDNN vs XLA vs jax's Pallas
   mha vs tokamax when importable), one process per head dim.
3. ``decode``: ``benchmarks.decode_attention`` (K/V read bandwidth vs a device copy).
4. ``additive``: ``benchmarks.additive_attention`` (fused vs dense Bahdanau attention).
5. ``transformer_step``: ``benchmarks.transformer_step`` (train-step MFU).

A step's time box is its share of what is left of ``--budget-s`` (time a step
does not use passes on to the next). A step's status is ``ok``, ``failed``,
``timeout`` (its process was killed; the parts that finished keep their results)
or ``skipped`` with a reason. On a GPU, once every step has run, the results go
into ``benchmarks/results/`` and the GPU blocks of docs/benchmarks.md are rewritten from them
(``--no-publish`` leaves both alone).

The exit status is 1 when a step is not ``ok`` (after everything is written).
``--dry-run`` runs every step at tiny sizes on the CPU (kernels in interpret mode:
the numbers mean nothing) and writes only into DIR; CI runs it so the suite
cannot rot. The parent process never initialises a jax backend, so the steps'
processes each get the whole GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks._common import slug

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STEP_NAMES = ("tests", "flash", "decode", "additive", "transformer_step")
STATUSES = ("ok", "failed", "timeout", "skipped")
# Share of the remaining budget each step may take (renormalised over the steps still to run).
SHARES = {"tests": 0.35, "flash": 0.25, "decode": 0.12, "additive": 0.12, "transformer_step": 0.16}
GPU_TEST_FILES = ("tests/test_flash_triton.py", "tests/test_additive_triton.py", "tests/test_decode.py",
                  "tests/test_attention.py")
DRY_TESTS = ("tests/test_decode.py::test_bfloat16", "tests/test_flash_triton.py::test_bias_soft_cap_forward_and_grads",
             "tests/test_additive_triton.py::test_block_sizes_validation")
README_BENCHMARKS = ("flash_attention", "decode_attention", "additive_attention", "transformer_step")


@dataclasses.dataclass
class Part:
    """One process of a step: ``python -m module args``, its results JSON found by glob in ``out``."""

    args: list[str]
    out: Path | None = None  # the folder the part writes its JSON into (benchmarks); None for tests


def _module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", name, *args]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def step_parts(name: str, out: Path, dry_run: bool) -> list[Part]:
    """The processes of one step, at GPU sizes or (``dry_run``) CPU smoke sizes."""
    if name == "tests":
        files = list(DRY_TESTS if dry_run else GPU_TEST_FILES)
        xdist = [] if dry_run or not _has("xdist") else ["-n", "4"]
        return [Part(_module("pytest", "-q", "-p", "no:cacheprovider", "-rfE", *xdist, "--junitxml",
                             str(out / "tests.xml"), *files))]
    folder = out / name
    common = ["--out-dir", str(folder)]
    if name == "flash":
        if dry_run:
            return [Part(_module("benchmarks.flash_attention", "--allow-cpu", "--seq-lens", "32", "--head-dims", "16",
                                 "--tokens", "64", "--hidden", "32", "--repeats", "1", "--matmul-size", "64",
                                 "--causal", "true", "--impls", "pallas_triton", "xla", *common), folder)]
        # one process per head dim, so a time-out keeps the head dims already measured
        return [Part(_module("benchmarks.flash_attention", "--seq-lens", "1024", "4096", "16384", "--head-dims",
                             str(h), "--repeats", "5", "--out-dir", str(folder / f"h{h}")), folder / f"h{h}")
                for h in (128, 64)]
    if name == "decode":
        sizes = (["--allow-cpu", "--seq-lens", "64", "--batches", "2", "--heads", "4", "--kv-heads", "2",
                  "--head-dim", "16", "--repeats", "1", "--copy-mib", "4"] if dry_run
                 else ["--seq-lens", "4096", "32768", "131072", "--batches", "1", "8", "--repeats", "10"])
        return [Part(_module("benchmarks.decode_attention", *sizes, *common), folder)]
    if name == "additive":
        sizes = (["--seq-lens", "64", "--attn-dims", "16", "--repeats", "1", "--max-run-gib", "0.05"] if dry_run
                 else ["--seq-lens", "512", "2048", "--attn-dims", "128", "256", "--repeats", "3"])
        return [Part(_module("benchmarks.additive_attention", *sizes, *common), folder)]
    if name == "transformer_step":
        sizes = (["--allow-cpu", "--layers", "1", "--d-model", "32", "--heads", "4", "--kv-heads", "2", "--seq", "32",
                  "--batch", "2", "--vocab", "64", "--repeats", "1", "--implementations", "xla"] if dry_run
                 else ["--repeats", "3"])
        return [Part(_module("benchmarks.transformer_step", *sizes, *common), folder)]
    raise ValueError(f"unknown step {name!r}; steps: {', '.join(STEP_NAMES)}")


def junit_summary(path: Path) -> dict:
    """Counts and failing test ids from a pytest junit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failing = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
               if c.find("failure") is not None or c.find("error") is not None]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failing": failing[:50]}


def _part_results(part: Part, out: Path) -> list[dict]:
    if part.out is None:
        xml = out / "tests.xml"
        return [junit_summary(xml)] if xml.exists() else []
    return [json.loads(p.read_text()) for p in sorted(part.out.glob("*.json"))] if part.out.exists() else []


def _tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run_step(name: str, out: Path, dry_run: bool, box_s: float, env: dict) -> dict:
    """Run a step's parts in turn inside ``box_s`` seconds; return its ``gpu_suite.json`` entry."""
    start = time.monotonic()
    status, reason, results = "ok", None, []
    log = out / f"{name}.log"
    for part in step_parts(name, out, dry_run):
        left = box_s - (time.monotonic() - start)
        if left <= 1:
            status, reason = "timeout", f"no time left in its {box_s:.0f} s box for {' '.join(part.args[2:4])}"
            break
        with log.open("a") as f:
            f.write(f"$ {' '.join(part.args)}\n")
            f.flush()
            try:
                rc = subprocess.run(part.args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=left).returncode
            except subprocess.TimeoutExpired:
                rc = None
        results += _part_results(part, out)
        if rc is None:
            status, reason = "timeout", f"killed after its {box_s:.0f} s box"
            break
        if rc != 0:
            status, reason = "failed", f"exit {rc}: {_tail(log)}"
            if name != "tests":  # a failed benchmark part: the later parts may still run
                continue
    return {"name": name, "status": status, "seconds": round(time.monotonic() - start, 1), "reason": reason,
            "results": results}


def probe_device(env: dict) -> dict:
    """``{"platform", "device_kind", "jax"}`` from a child process (the parent keeps off the GPU)."""
    code = ("import json, jax; d = jax.devices()[0]; "
            "print(json.dumps({'platform': d.platform, 'device_kind': d.device_kind, 'jax': jax.__version__}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise SystemExit(f"gpu_suite: jax could not start: {res.stderr[-800:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def merge_flash_parts(results: list[dict]) -> dict:
    """One flash_attention result from the per-head-dim parts (same device and config but the head dims)."""
    merged = json.loads(json.dumps(results[0]))
    for extra in results[1:]:
        merged["rows"] += extra["rows"]
        merged["config"]["head_dims"] += [h for h in extra["config"]["head_dims"]
                                          if h not in merged["config"]["head_dims"]]
    merged["config"]["head_dims"].sort()
    return merged


def publish(suite: dict, out: Path) -> list[str]:
    """Copy the benchmark JSON/PNG files into ``benchmarks/results`` and rewrite the GPU blocks of the docs."""
    done = []
    for step in suite["steps"]:
        if step["name"] == "tests" or not step["results"]:
            continue
        if step["name"] == "flash":  # one process per head dim: one file, one docs block
            from benchmarks import flash_attention

            merged = merge_flash_parts(step["results"])
            paths = [out / "flash" / f"flash_attention_{merged['device']}.json"]
            paths[0].write_text(json.dumps(merged, indent=1))
            flash_attention.plot(merged, paths[0].with_suffix(".png"))
        else:
            paths = sorted((out / step["name"]).glob("*.json"))
        for path in paths:
            target = RESULTS / path.name
            shutil.copy2(path, target)
            if path.with_suffix(".png").exists():
                shutil.copy2(path.with_suffix(".png"), target.with_suffix(".png"))
            module = next((m for m in README_BENCHMARKS if path.name.startswith(m)), None)
            if module:
                subprocess.run(_module(f"benchmarks.{module}", "--readme-from", str(target)), cwd=ROOT, check=False)
            done.append(str(target))
    target = RESULTS / f"gpu_suite_{suite['device_name']}.json"
    shutil.copy2(out / "gpu_suite.json", target)
    return [*done, str(target)]


def main(argv: list[str] | None = None, exit_on_failure: bool = True) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU; writes only into --out")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_suite")
    ap.add_argument("--budget-s", type=float, default=480.0, help="seconds for all steps together")
    ap.add_argument("--steps", nargs="+", default=list(STEP_NAMES), choices=STEP_NAMES)
    ap.add_argument("--no-publish", action="store_true", help="on a GPU, leave the docs and benchmarks/results alone")
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error("--budget-s must be positive")
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)  # a fresh run: stale logs or JSON of an earlier run must not be read as this one's
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if args.dry_run:
        env["JAX_PLATFORMS"] = "cpu"
    t0 = time.monotonic()
    device = probe_device(env)
    start = time.monotonic()  # the budget is the steps' (the probe is not counted)
    on_gpu = device["platform"] == "gpu"
    suite = {"device": device["device_kind"] if on_gpu else device["platform"],
             "device_name": slug(device["device_kind"] if on_gpu else "cpu"),
             "jax": device["jax"], "dry_run": args.dry_run, "budget_s": args.budget_s,
             "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "steps": []}
    path = out / "gpu_suite.json"
    steps = [s for s in STEP_NAMES if s in args.steps]
    for i, name in enumerate(steps):
        left = args.budget_s - (time.monotonic() - start)
        if not on_gpu and not args.dry_run:
            entry = {"name": name, "status": "skipped", "seconds": 0.0, "results": [],
                     "reason": f"no GPU (jax sees {device['platform']}); use --dry-run for a CPU smoke run"}
        elif left <= 1:
            entry = {"name": name, "status": "skipped", "seconds": 0.0, "results": [], "reason": "budget spent"}
        else:
            box = left * SHARES[name] / sum(SHARES[s] for s in steps[i:])
            print(f"gpu_suite: {name} (box {box:.0f} s)", flush=True)
            entry = run_step(name, out, args.dry_run, box, env)
        suite["steps"].append(entry)
        path.write_text(json.dumps(suite, indent=1) + "\n")  # written before the next step starts
        print(f"gpu_suite: {name}: {entry['status']} in {entry['seconds']} s", flush=True)
    suite["seconds"] = round(time.monotonic() - t0, 1)
    path.write_text(json.dumps(suite, indent=1) + "\n")
    if on_gpu and not args.dry_run and not args.no_publish:
        for p in publish(suite, out):
            print(f"gpu_suite: published {p}")
        print("gpu_suite: commit benchmarks/results/ and docs/benchmarks.md (the device name is in each file)")
    print(f"gpu_suite: wrote {path} ({suite['seconds']} s)")
    if not on_gpu and not args.dry_run:
        raise SystemExit("gpu_suite: no GPU here, every step skipped (use --dry-run for a CPU smoke run)")
    bad = [f"{s['name']} {s['status']}" for s in suite["steps"] if s["status"] != "ok"]
    if bad and exit_on_failure:
        raise SystemExit(f"gpu_suite: not every step ran clean: {', '.join(bad)} (details in {path})")
    return suite


if __name__ == "__main__":
    main()
