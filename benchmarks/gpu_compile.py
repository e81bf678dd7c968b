"""Offline compile check of every Triton-style Pallas kernel for sm_80 and sm_90, no GPU needed.

    python -m benchmarks.gpu_compile [--out benchmarks/results/gpu_compile.json] [--quick] [--candidates]
        [--update-readme]

Route: each kernel is lowered with ``jax.export`` for CUDA on an abstract device
(:func:`attn_jax.kernels.lowering.export_for`); the ``__gpu$xla.gpu.triton`` custom
call carries the Triton IR as MLIR bytecode (``mhlo.backend_config["ir"]``), which
jaxlib's MLIR with the Triton dialect prints as ``.ttir`` text; the ``triton``
package compiles that text for the target arch, and its bundled ``ptxas -v`` reports
registers and spills. Shared memory comes from the compiled metadata and is
compared with the arch's opt-in per-block limit.

These are the registry's Triton and ptxas, not the ones bundled into jaxlib /
XLA, so the numbers are a proxy for what the GPU machine compiles. Needs the
``triton`` package (install it in its own venv: it is large).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks._common import update_readme_block

ARCHS = {80: ("NVIDIA A100-SXM4-80GB", 166_912), 90: ("NVIDIA H200", 232_448)}  # device kind, smem opt-in limit
OUT = Path(__file__).resolve().parent / "results" / "gpu_compile.json"


def _flash(head_dim: int, dtype, blocks):
    """The flash forward + backward (dK/dV, dQ, dS) of one block-size choice, as ``(fn, abstract args)``."""
    from attn_jax.kernels import flash_triton

    spec = jax.ShapeDtypeStruct
    b, t, s, n, kh = 2, 1024, 1024, 8, 2
    q, kv = spec((b, t, n, head_dim), dtype), spec((b, s, kh, head_dim), dtype)
    bias = spec((1, n, t, s), jnp.float32)

    def flash_loss(q, k, v, bias):
        out, lse = flash_triton.flash_attention(q, k, v, bias, is_causal=True, block_sizes=blocks)
        return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

    return jax.grad(flash_loss, argnums=(0, 1, 2, 3)), (q, kv, kv, bias)


def _kernels(head_dim: int, dtype, device_kind: str, candidates: bool = False):
    """``(family, fn, args, blocks dict, default?)`` to lower: flash (+ autotune candidates), additive, decode."""
    from attn_jax.kernels import additive_triton, autotune, decode_triton, flash_triton

    spec = jax.ShapeDtypeStruct
    default = flash_triton.BlockSizes.get_default(head_dim, dtype, device_kind)
    yield ("flash", *_flash(head_dim, dtype, default), dataclasses.asdict(default), True)
    if candidates and jnp.dtype(dtype) == jnp.bfloat16:  # the dtype the autotuner is run for
        for bs in autotune.default_candidates(head_dim, dtype, device_kind, arch=None):
            if bs != default:
                yield ("flash", *_flash(head_dim, dtype, bs), dataclasses.asdict(bs), False)
    if head_dim == 64:  # the additive and decode kernels have no head-dim table of their own
        a = spec((2, 256, 128), dtype), spec((2, 256, 128), dtype), spec((2, 256, 64), dtype), spec((128,), dtype)
        add_blocks = additive_triton.BlockSizes.get_default()

        def additive_loss(qp, kp, v, w):
            out, lse = additive_triton.additive_attention(qp, kp, v, w, is_causal=True, block_sizes=add_blocks)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

        yield "additive", jax.grad(additive_loss, argnums=(0, 1, 2, 3)), a, dataclasses.asdict(add_blocks), True
        d = (spec((4, 8, 128), dtype), spec((4, 4096, 2, 128), dtype), spec((4, 4096, 2, 128), dtype),
             spec((4,), jnp.int32))
        yield "decode", lambda q, k, v, lens: decode_triton.decode_attention(q, k, v, lens), d, {}, True


def _triton_calls(exported):
    """``[(name, ttir text, num_warps, num_stages)]`` of every Triton custom call in an export."""
    from jax._src.interpreters import mlir as jmlir
    from jax._src.lib.mlir import ir
    from jaxlib.triton import dialect

    calls = []
    with jmlir.make_ir_context():
        module = ir.Module.parse(exported.mlir_module())

        def walk(op):
            for region in op.regions:
                for block in region.blocks:
                    for child in block.operations:
                        attrs = child.operation.attributes
                        if child.operation.name == "stablehlo.custom_call" and "mhlo.backend_config" in attrs:
                            cfg = attrs["mhlo.backend_config"]
                            if "ir" in cfg:
                                calls.append((str(cfg["name"]).strip('"'), cfg["ir"].value_bytes,
                                              cfg["num_warps"].value, cfg["num_stages"].value))
                        walk(child.operation)

        walk(module.operation)
    out = []
    for name, blob, warps, stages in calls:
        ctx = ir.Context()
        dialect.register_dialect(ctx)
        with ctx:
            out.append((name, str(ir.Module.parse(blob)), warps, stages))
    return out


def compile_ttir(ttir: str, arch: int, num_warps: int, num_stages: int) -> dict:
    """Compile Triton IR text for ``sm_<arch>``: registers and spill-store bytes from the ``ptxas -v`` that
    triton itself runs (its log captured), shared memory bytes from the compiled metadata."""
    import contextlib
    import io

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget

    with tempfile.NamedTemporaryFile("w", suffix=".ttir", delete=False) as f:
        f.write(ttir)
    log = io.StringIO()
    try:
        with knobs.nvidia.scope(), knobs.compilation.scope(), contextlib.redirect_stdout(log):
            knobs.nvidia.dump_ptxas_log = True
            knobs.compilation.always_compile = True  # a cached kernel runs no ptxas, so logs nothing
            k = triton.compile(f.name, target=GPUTarget("cuda", arch, 32),
                               options={"num_warps": num_warps, "num_stages": num_stages})
    finally:
        os.unlink(f.name)
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores", text)
    return dict(registers=int(regs.group(1)) if regs else None, spill_bytes=int(spill.group(1)) if spill else None,
                smem_bytes=int(k.metadata.shared))


def compile_rows(quick: bool = False, families: tuple[str, ...] = ("flash", "additive", "decode"),
                 candidates: bool = False) -> list[dict]:
    """One row per (arch, head dim, dtype, kernel, block sizes); ``quick``: head dim 64, bf16 only."""
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    from attn_jax.kernels.lowering import export_for

    rows = []
    head_dims = (64,) if quick else (64, 128)
    dtypes = (jnp.bfloat16,) if quick else (jnp.bfloat16, jnp.float32)
    for arch, (kind, limit) in ARCHS.items():
        for head_dim in head_dims:
            for dtype in dtypes:
                for family, fn, args, blocks, default in _kernels(head_dim, dtype, kind, candidates):
                    if family not in families:
                        continue
                    for name, ttir, warps, stages in _triton_calls(export_for("cuda", fn, *args, device_kind=kind)):
                        row = dict(kernel=name, family=family, arch=f"sm_{arch}", head_dim=head_dim,
                                   jax=jax.__version__, dtype=jnp.dtype(dtype).name, blocks=blocks,
                                   default_blocks=default, num_warps=warps, num_stages=stages, smem_limit_bytes=limit)
                        try:
                            row.update(compile_ttir(ttir, arch, warps, stages))
                            row["ok"] = bool(row["spill_bytes"] == 0 and row["smem_bytes"] <= limit
                                             and row["registers"] is not None)
                        except Exception as e:  # a compile failure is a row, not a crash
                            row.update(registers=None, spill_bytes=None, smem_bytes=None, ok=False,
                                       error=f"{type(e).__name__}: {str(e)[:300]}")
                        rows.append(row)
                        print(f"{row['kernel']:>24} {row['arch']} H={head_dim} {row['dtype']:>8}"
                              f" regs={row['registers']}"
                              f" spill={row['spill_bytes']} smem={row['smem_bytes']} ok={row['ok']}", flush=True)
    return rows


def _provenance() -> dict:
    import triton

    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root).stdout.strip()
    code = ["kernels", "attn_jax", "benchmarks/gpu_compile.py"]
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", *code], capture_output=True, text=True,
                                cwd=root).stdout.strip())
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    version = subprocess.run([str(ptxas), "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return {"commit": commit, "dirty": dirty, "jax": jax.__version__, "triton": triton.__version__,
            "ptxas": version[-1] if version else None, "python": sys.version.split()[0],
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def _cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if r.get("registers") is None:
        return "compile failed"
    flag = "" if r["ok"] else " **not ok**"
    return f"{r['registers']} / {r['spill_bytes']:,} / {r['smem_bytes']:,}{flag}"


def markdown(result: dict) -> str:
    """The README table: default block sizes per kernel, registers / spill bytes / shared memory per arch."""
    prov = result["provenance"]
    versions = sorted({r.get("jax", "") for r in result["rows"]}, key=_version, reverse=True)
    rows = [r for r in result["rows"] if r.get("jax", "") == versions[0]]  # the newest jax's lowering
    lines = [
        f"jax {versions[0]} (lowering), triton {prov['triton']}, {prov['ptxas']}; {prov['date'][:10]}, "
        f"commit {prov['commit'][:7]}. Cells: registers / spill-store bytes / shared memory bytes "
        f"(limits: {ARCHS[80][1]:,} B on sm_80, {ARCHS[90][1]:,} B on sm_90). Default block sizes.",
        "",
        "| kernel | H | dtype | sm_80 | sm_90 |",
        "|---|---:|---|---|---|",
    ]
    by = {(r["kernel"], r["head_dim"], r["dtype"], r["arch"]): r for r in rows if r["default_blocks"]}
    for kernel, h, dtype in sorted({k[:3] for k in by}):
        lines.append(f"| {kernel.removeprefix('attn_jax_')} | {h if kernel.startswith('attn_jax_flash') else '—'} "
                     f"| {dtype} | {_cell(by.get((kernel, h, dtype, 'sm_80')))} "
                     f"| {_cell(by.get((kernel, h, dtype, 'sm_90')))} |")
    defaults = [r for r in rows if r["default_blocks"]]
    lines += ["", f"Default blocks: {sum(r['ok'] for r in defaults)} of {len(defaults)} kernel compiles clean "
              f"(no spill, shared memory within the limit); most registers "
              f"{max((r['registers'] or 0) for r in defaults)}."]
    cands = [r for r in rows if not r["default_blocks"]]
    if cands:
        bad = [r for r in cands if not r["ok"]]
        configs = {(r["arch"], r["head_dim"], r["dtype"], json.dumps(r["blocks"], sort_keys=True)) for r in bad}
        lines.append(f"Autotune candidates: {len(cands)} kernel compiles, {len(bad)} not ok "
                     f"({len(configs)} candidate configurations, which the autotuner leaves out on that arch).")
    for other in versions[1:]:
        theirs = {(r["kernel"], r["head_dim"], r["dtype"], r["arch"], json.dumps(r["blocks"], sort_keys=True)): r
                  for r in result["rows"] if r.get("jax") == other}
        ours = {(r["kernel"], r["head_dim"], r["dtype"], r["arch"], json.dumps(r["blocks"], sort_keys=True)): r
                for r in rows}
        same = [k for k in theirs if k in ours and theirs[k]["registers"] == ours[k]["registers"]
                and theirs[k]["spill_bytes"] == ours[k]["spill_bytes"]]
        lines.append(f"Lowered with jax {other} instead: {sum(r['ok'] for r in theirs.values())} of {len(theirs)} "
                     f"compiles clean; {len(same)} of them with the same registers and spills as with {versions[0]}.")
    return "\n".join(lines)


def _version(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in v.split("."))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="H=64 bf16 only")
    parser.add_argument("--candidates", action="store_true", help="also every flash autotune candidate (bf16)")
    parser.add_argument("--append", action="store_true",
                        help="add this jax version's rows to --out (its rows of other jax versions are kept)")
    parser.add_argument("--update-readme", action="store_true", help="rewrite its block in docs/benchmarks.md")
    parser.add_argument("--readme-from", type=Path, help="only rewrite the docs block from this JSON")
    args = parser.parse_args(argv)
    if args.readme_from:
        result = json.loads(args.readme_from.read_text())
        update_readme_block("gpu_compile", markdown(result))
        return result
    result = {"provenance": _provenance(), "rows": compile_rows(args.quick, candidates=args.candidates)}
    if args.append and args.out.exists():
        old = json.loads(args.out.read_text())
        kept = [r for r in old["rows"] if r.get("jax") != jax.__version__]
        versions = sorted({r["jax"] for r in kept} | {jax.__version__}, key=_version, reverse=True)
        prov = result["provenance"]
        if old["provenance"].get("commit") != prov["commit"] or old["provenance"].get("dirty") or prov["dirty"]:
            raise SystemExit(f"--append: {args.out} was made at another commit or from uncommitted kernels; "
                             "rerun both jax versions at one clean commit")
        python = (f"{old['provenance']['python']} (jax {old['provenance']['jax']}), "
                  f"{prov['python']} (jax {jax.__version__})")
        result = {"provenance": {**prov, "jax": ", ".join(versions), "python": python}, "rows": kept + result["rows"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    if args.update_readme:
        update_readme_block("gpu_compile", markdown(result))
    bad = [r for r in result["rows"] if not r["ok"]]
    print(f"{len(result['rows'])} rows, {len(bad)} not ok -> {args.out}")
    return result


if __name__ == "__main__":
    main()
