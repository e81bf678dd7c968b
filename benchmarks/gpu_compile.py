"""Offline compile check of every Triton-style Pallas kernel for sm_80 and sm_90, no GPU needed.

    python -m benchmarks.gpu_compile [--out benchmarks/results/gpu_compile.json] [--quick]

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

ARCHS = {80: ("NVIDIA A100-SXM4-80GB", 166_912), 90: ("NVIDIA H200", 232_448)}  # device kind, smem opt-in limit
OUT = Path(__file__).resolve().parent / "results" / "gpu_compile.json"


def _kernels(head_dim: int, dtype, device_kind: str):
    """``(kernel family, fn, args, blocks)`` to lower: flash (fwd, dK/dV, dQ, dS via grad), additive, decode."""
    from attn_jax.kernels import additive_triton, decode_triton, flash_triton

    spec = jax.ShapeDtypeStruct
    b, t, s, n, kh = 2, 1024, 1024, 8, 2
    blocks = flash_triton.BlockSizes.get_default(head_dim, dtype, device_kind)
    q, kv = spec((b, t, n, head_dim), dtype), spec((b, s, kh, head_dim), dtype)
    bias = spec((1, n, t, s), jnp.float32)

    def flash_loss(q, k, v, bias):
        out, lse = flash_triton.flash_attention(q, k, v, bias, is_causal=True, block_sizes=blocks)
        return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

    yield "flash", jax.grad(flash_loss, argnums=(0, 1, 2, 3)), (q, kv, kv, bias), dataclasses.asdict(blocks)
    if head_dim == 64:  # the additive and decode kernels have no head-dim table of their own
        a = spec((b, 256, 128), dtype), spec((b, 256, 128), dtype), spec((b, 256, 64), dtype), spec((128,), dtype)

        def additive_loss(qp, kp, v, w):
            out, lse = additive_triton.additive_attention(qp, kp, v, w, is_causal=True)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

        yield "additive", jax.grad(additive_loss, argnums=(0, 1, 2, 3)), a, {}
        d = (spec((4, 8, 128), dtype), spec((4, 4096, 2, 128), dtype), spec((4, 4096, 2, 128), dtype),
             spec((4,), jnp.int32))
        yield "decode", lambda q, k, v, lens: decode_triton.decode_attention(q, k, v, lens), d, {}


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


def _ptxas_report(ptx: str, arch: int) -> tuple[int | None, int | None]:
    """Registers and spill-store bytes from the triton package's ``ptxas -v``."""
    import triton

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    log = ""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        # triton ships two ptxas; the PTX it writes for sm_90 needs the newer one (ptxas-blackwell)
        for name in ("ptxas", "ptxas-blackwell"):
            res = subprocess.run([str(bin_dir / name), "-v", f"--gpu-name={gpu}", str(src), "-o",
                                  str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
            log = res.stdout + res.stderr
            if res.returncode == 0:
                break
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores", log)
    return (int(regs.group(1)) if regs else None, int(spill.group(1)) if spill else None)


def compile_rows(quick: bool = False, families: tuple[str, ...] = ("flash", "additive", "decode")) -> list[dict]:
    import triton
    from triton.backends.compiler import GPUTarget

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    from attn_jax.kernels.lowering import export_for

    rows = []
    head_dims = (64,) if quick else (64, 128)
    dtypes = (jnp.bfloat16,) if quick else (jnp.bfloat16, jnp.float32)
    for arch, (kind, limit) in ARCHS.items():
        for head_dim in head_dims:
            for dtype in dtypes:
                for family, fn, args, blocks in _kernels(head_dim, dtype, kind):
                    if family not in families:
                        continue
                    for name, ttir, warps, stages in _triton_calls(export_for("cuda", fn, *args, device_kind=kind)):
                        row = dict(kernel=name, family=family, arch=f"sm_{arch}", head_dim=head_dim,
                                   dtype=jnp.dtype(dtype).name, blocks=blocks, default_blocks=True,
                                   num_warps=warps, num_stages=stages, smem_limit_bytes=limit)
                        with tempfile.NamedTemporaryFile("w", suffix=".ttir", delete=False) as f:
                            f.write(ttir)
                        try:
                            k = triton.compile(f.name, target=GPUTarget("cuda", arch, 32),
                                               options={"num_warps": warps, "num_stages": stages})
                            regs, spill = _ptxas_report(k.asm["ptx"], arch)
                            smem = int(k.metadata.shared)
                            row.update(registers=regs, spill_bytes=spill, smem_bytes=smem,
                                       ok=bool(spill == 0 and smem <= limit and regs is not None))
                        except Exception as e:  # a compile failure is a row, not a crash
                            row.update(registers=None, spill_bytes=None, smem_bytes=None, ok=False,
                                       error=f"{type(e).__name__}: {str(e)[:300]}")
                        finally:
                            os.unlink(f.name)
                        rows.append(row)
                        print(f"{row['kernel']:>24} {row['arch']} H={head_dim} {row['dtype']:>8}"
                              f" regs={row['registers']}"
                              f" spill={row['spill_bytes']} smem={row['smem_bytes']} ok={row['ok']}", flush=True)
    return rows


def _provenance() -> dict:
    import triton

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    version = subprocess.run([str(ptxas), "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return {"commit": commit, "jax": jax.__version__, "triton": triton.__version__,
            "ptxas": version[-1] if version else None, "python": sys.version.split()[0],
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="H=64 bf16 only")
    args = parser.parse_args(argv)
    result = {"provenance": _provenance(), "rows": compile_rows(args.quick)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    bad = [r for r in result["rows"] if not r["ok"]]
    print(f"{len(result['rows'])} rows, {len(bad)} not ok -> {args.out}")
    return result


if __name__ == "__main__":
    main()
