"""Time and memory of attention on this machine: ours beside jax.nn and tokamax, in one run.

For T = S (default 256 to 16k), full and causal masks, N = K and GQA 4:1, the
forward and forward+backward of every path are compiled and timed in one
process:

* ``jax_nn``: ``jax.nn.dot_product_attention(implementation="xla")``;
* ``tokamax_xla`` / ``tokamax_xla_chunked``: tokamax's XLA paths, when tokamax
  is importable (rows marked ``absent`` otherwise; it needs Python 3.12);
* ``xla`` / ``chunked``: ours by name; ``auto``: ours with ``implementation=None``.

Dense paths stop at 8k (their logits are T² per head), GQA rows too (the
time budget). ``auto`` reuses the row of the path it resolves to (the same
call; timing it twice would only add noise). Each row has the
compiled temporary memory (``memory_analysis().temp_size_in_bytes``), the
median wall time, and the achieved GFLOP/s, beside this machine's float32
matmul rate measured in the same run (a 2048³ matmul, before and after).
FLOPs are the model's: ``4·B·N·T·S·H`` forward (half of it when causal),
three times that for forward+backward. bfloat16 rows at T = 4096 only.

A chunk-size sweep of ``chunked`` at T = 4096 checks
:meth:`attn_jax.ChunkSizes.for_problem`'s CPU choice, and the float32
forward+backward rows of ``xla`` and ``chunked`` become the table
``implementation=None`` reads on CPU (``attn_jax/attention/cpu_dispatch.json``,
written with ``--write-dispatch-table``; the ``auto`` rows then run last, after
the table is written, so they show the dispatch that table gives).

Writes ``benchmarks/results/attention_memory_<device>.json`` and a PNG beside
it, prints a table, and with ``--update-readme`` rewrites its block in docs/benchmarks.md
between ``<!-- attention_memory:begin -->`` and ``<!-- attention_memory:end -->``.

    python -m benchmarks.attention_memory --update-readme --write-dispatch-table   # the published run
    python -m benchmarks.attention_memory --seq-lens 128 256 --repeats 1 --no-sweep    # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import attn_jax
from attn_jax.attention import chunked as _chunked
from attn_jax.attention import dispatch as _dispatch
from attn_jax.attention.inputs import normalize
from benchmarks._common import README, add_output_args, device_name, time_fn, update_readme_block

PATHS = ("jax_nn", "tokamax_xla", "tokamax_xla_chunked", "xla", "chunked", "auto")
DENSE = ("jax_nn", "tokamax_xla", "xla")
MODES = ("fwd", "fwd+bwd")
MASKS = ("full", "causal")
HEADS = {"N=K": (4, 4), "GQA 4:1": (4, 1)}
SWEEP = ((128, 256), (256, 256), (256, 512), (512, 512), (512, 1024))


def tokamax_version() -> str | None:
    try:
        import tokamax
    except ImportError:
        return None
    return getattr(tokamax, "__version__", "unknown")


def attention_fn(path: str, causal: bool, chunk_sizes=None):
    """``f(q, k, v) -> out`` for one path."""
    if path == "jax_nn":
        return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")
    if path.startswith("tokamax_"):
        import tokamax

        impl = path.removeprefix("tokamax_")
        return lambda q, k, v: tokamax.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)
    if chunk_sizes is not None:
        return lambda q, k, v: _chunked.attention(normalize(q, k, v, is_causal=causal), chunk_sizes)[0]
    impl = None if path == "auto" else path
    return lambda q, k, v: attn_jax.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)


def with_mode(fwd, mode: str):
    if mode == "fwd":
        return fwd
    return jax.grad(lambda *a: jnp.sum(fwd(*a).astype(jnp.float32)), argnums=(0, 1, 2))


def model_flops(b, n, t, s, h, causal: bool, mode: str) -> float:
    fwd = 4.0 * b * n * t * s * h * (0.5 if causal else 1.0)
    return fwd if mode == "fwd" else 3.0 * fwd


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    best, _ = time_fn(f, a, repeats=repeats)
    return 2.0 * size**3 / best / 1e9


def skip_reason(path: str, t: int, tokamax_ok: bool, dense_max: int) -> str | None:
    if path.startswith("tokamax_") and not tokamax_ok:
        return "absent: tokamax is not importable in this Python"
    if path in DENSE and t > dense_max:
        return f"skipped: dense path above T = {dense_max}"
    return None


def measure(fn, q, k, v, repeats: int, max_cell_s: float) -> dict:
    """Compile, read the memory analysis, warm up once, and time up to ``repeats`` calls in ``max_cell_s``."""
    compiled = jax.jit(fn).lower(q, k, v).compile()
    mem = compiled.memory_analysis()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(q, k, v))
    first = time.perf_counter() - t0
    reps = int(max(1, min(repeats, max_cell_s // max(first, 1e-6))))
    median, times = time_fn(compiled, q, k, v, repeats=reps, warmup=0)
    return dict(temp_bytes=int(mem.temp_size_in_bytes), time_s=median, times_s=times)


def inputs(t: int, n: int, kh: int, h: int, dtype, batch: int):
    keys = jax.random.split(jax.random.key(t), 3)
    q = jax.random.normal(keys[0], (batch, t, n, h), dtype)
    k = jax.random.normal(keys[1], (batch, t, kh, h), dtype)
    v = jax.random.normal(keys[2], (batch, t, kh, h), dtype)
    return q, k, v


def cells(args) -> list[dict]:
    out = [dict(seq_len=t, mask=m, heads=hd, mode=md, dtype="float32")
           for t in args.seq_lens for hd in HEADS for m in MASKS for md in MODES
           if hd == "N=K" or t <= args.gqa_max]
    if 4096 in args.seq_lens or args.bf16_len in args.seq_lens:
        out += [dict(seq_len=args.bf16_len, mask=m, heads="N=K", mode=md, dtype="bfloat16")
                for m in MASKS for md in MODES]
    return out


def run(args) -> dict:
    if args.write_dispatch_table and jax.devices()[0].platform != "cpu":
        raise SystemExit("--write-dispatch-table: the table is for CPU runs")
    tokamax_ok = tokamax_version() is not None
    rates = [matmul_gflops()]
    # "auto" last: with --write-dispatch-table it reads the table this run's own rows just wrote.
    rows, jobs = [], [(c, p) for c in cells(args) for p in PATHS]
    jobs.sort(key=lambda job: job[1] == "auto")
    table_source = f"{_dispatch.CPU_TABLE_PATH.name} as committed"
    for cell, path in tqdm(jobs, desc="attention_memory", unit="case"):
        if path == "auto" and args.write_dispatch_table and not table_source.startswith("written"):
            write_dispatch_table(rows, args)
            table_source = f"{_dispatch.CPU_TABLE_PATH.name} written by this run before its auto rows"
        t, (n, kh) = cell["seq_len"], HEADS[cell["heads"]]
        dense_max = args.dense_max if cell["mode"] == "fwd" else args.dense_bwd_max
        row = dict(cell, path=path)
        why = skip_reason(path, t, tokamax_ok, dense_max)
        if why is not None:
            rows.append(dict(row, note=why))
            continue
        causal = cell["mask"] == "causal"
        q, k, v = inputs(t, n, kh, args.head_dim, jnp.dtype(cell["dtype"]), args.batch)
        if path == "auto":
            row["resolved"] = _dispatch.implementation_for(None, q, k, v, is_causal=causal)
            same = [r for r in rows if r["path"] == row["resolved"] and all(r[x] == cell[x] for x in cell)]
            if same and "time_s" in same[0]:  # the very same call through the dispatch: not timed twice
                rows.append(dict(row, **{x: same[0][x] for x in ("temp_bytes", "time_s", "times_s", "gflops")},
                                 reused=row["resolved"]))
                continue
        row.update(measure(with_mode(attention_fn(path, causal), cell["mode"]), q, k, v, args.repeats,
                           args.max_cell_s))
        row["gflops"] = model_flops(args.batch, n, t, t, args.head_dim, causal, cell["mode"]) / row["time_s"] / 1e9
        rows.append(row)
    sweep = []
    if args.sweep:
        t = 4096
        for (cq, ck) in tqdm(SWEEP, desc="chunk sweep", unit="size"):
            for mask in MASKS:
                for mode in MODES:
                    q, k, v = inputs(t, 4, 4, args.head_dim, jnp.float32, args.batch)
                    fn = with_mode(attention_fn("chunked", mask == "causal", _chunked.ChunkSizes(cq, ck)), mode)
                    sweep.append(dict(seq_len=t, mask=mask, mode=mode, chunk_q=cq, chunk_k=ck,
                                      **measure(fn, q, k, v, args.repeats, args.max_cell_s)))
    rates.append(matmul_gflops())
    dev = jax.devices()[0]
    if table_source.endswith("committed") and (table := _dispatch.cpu_table()) is not None:
        table_source += f" (measured {table['date']})"
    return dict(
        benchmark="attention_memory",
        device=device_name(),
        device_kind=dev.device_kind,
        platform=dev.platform,
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        jax_version=jax.__version__,
        tokamax_version=tokamax_version(),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        matmul_gflops=rates,
        config=dict(batch=args.batch, head_dim=args.head_dim, heads=HEADS, repeats=args.repeats,
                    max_cell_s=args.max_cell_s, seq_lens=args.seq_lens, dense_max=args.dense_max,
                    dense_bwd_max=args.dense_bwd_max, bf16_len=args.bf16_len, gqa_max=args.gqa_max,
                    cpu_chunk=_chunked.CPU_CHUNK),
        dispatch_table=table_source,
        rows=rows,
        sweep=sweep,
    )


def write_dispatch_table(rows: list[dict], args) -> None:
    """Write :func:`dispatch_table` of ``rows`` for ``implementation=None`` and make the dispatch reread it."""
    table = dispatch_table(dict(rows=rows, device_kind=jax.devices()[0].device_kind, cpu_count=os.cpu_count(),
                                jax_version=jax.__version__, date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
                                config=dict(batch=args.batch, head_dim=args.head_dim)))
    _dispatch.CPU_TABLE_PATH.write_text(json.dumps(table, indent=1) + "\n")
    _dispatch.cpu_table.cache_clear()
    print(f"wrote {_dispatch.CPU_TABLE_PATH}")


def dispatch_table(result: dict) -> dict:
    """The float32 forward+backward rows of ``xla`` and ``chunked``: what ``implementation=None`` reads on CPU."""
    by = {(r["path"], r["seq_len"], r["mask"], r["heads"]): r for r in result["rows"]
          if r["dtype"] == "float32" and r["mode"] == "fwd+bwd" and "time_s" in r}
    entries = []
    for (path, t, mask, heads), r in sorted(by.items()):
        if path != "xla" or ("chunked", t, mask, heads) not in by:
            continue
        c = by["chunked", t, mask, heads]
        entries.append(dict(seq_len=t, causal=mask == "causal", gqa=heads != "N=K",
                            xla_s=r["time_s"], chunked_s=c["time_s"]))
    return dict(source="python -m benchmarks.attention_memory --write-dispatch-table",
                device_kind=result["device_kind"], cpu_count=result["cpu_count"], jax_version=result["jax_version"],
                date=result["date"], batch=result["config"]["batch"], head_dim=result["config"]["head_dim"],
                mode="fwd+bwd", entries=entries)


def _fmt_row(r: dict | None, rate: float) -> str:
    if r is None:
        return "–"
    if "time_s" not in r:
        return "absent" if r["note"].startswith("absent") else "–"
    return f"{r['time_s'] * 1e3:.0f} ms · {r['temp_bytes'] / 2**20:.0f} MiB · {100 * r['gflops'] / rate:.0f}%"


def markdown(result: dict) -> str:
    cfg, rows = result["config"], result["rows"]
    rate = float(np.mean(result["matmul_gflops"]))
    by = {(r["path"], r["seq_len"], r["mask"], r["heads"], r["mode"], r["dtype"]): r for r in rows}
    keys = sorted({(r["dtype"] != "float32", r["heads"] != "N=K", r["seq_len"], r["mask"], r["mode"], r["dtype"],
                    r["heads"]) for r in rows})
    lines = [
        f"Device: {result['device']} ({result['device_kind']}, {result['cpu_count']} cores), Python "
        f"{result['python']}, jax {result['jax_version']}, tokamax {result['tokamax_version'] or 'absent'}, "
        f"{result['date']}. B={cfg['batch']}, H={cfg['head_dim']}, N=4 query heads (K=4, or K=1 for GQA 4:1). "
        f"Each cell: median time · compiled temporary memory · achieved share of this machine's float32 matmul "
        f"rate ({' and '.join(f'{x:.0f}' for x in result['matmul_gflops'])} GFLOP/s before and after, measured in "
        f"the same run; model FLOPs). `auto` is `implementation=None`; its choice in brackets (it read "
        f"{result.get('dispatch_table', 'the committed table')}). – : not run "
        f"(dense paths stop at T = {cfg['dense_max']} forward, {cfg['dense_bwd_max']} forward+backward).",
        "",
        "| T | mask | heads | pass | dtype | jax.nn xla | tokamax xla | tokamax xla_chunked | ours xla | "
        "ours chunked | ours auto |",
        "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, _, t, mask, mode, dtype, heads in keys:
        cellrows = [by.get((p, t, mask, heads, mode, dtype)) for p in PATHS]
        auto = cellrows[-1]
        auto_s = _fmt_row(auto, rate) + (f" ({auto['resolved']})" if auto and "resolved" in auto else "")
        lines.append(f"| {t} | {mask} | {heads} | {mode} | {dtype} | "
                     + " | ".join(_fmt_row(r, rate) for r in cellrows[:-1]) + f" | {auto_s} |")
    lines += ["", ratio_summary(result)]
    if result.get("sweep"):
        lines += ["", "Chunk sizes of `chunked` at T = 4096, N = K, float32 (median ms; query x key chunk):", "",
                  "| chunks | " + " | ".join(f"{m} {md}" for m in MASKS for md in MODES) + " |",
                  "|---|" + "---:|" * (len(MASKS) * len(MODES))]
        sw = {(r["chunk_q"], r["chunk_k"], r["mask"], r["mode"]): r for r in result["sweep"]}
        for cq, ck in sorted({(r["chunk_q"], r["chunk_k"]) for r in result["sweep"]}):
            lines.append(f"| {cq} x {ck} | " + " | ".join(f"{sw[cq, ck, m, md]['time_s'] * 1e3:.0f}"
                                                         for m in MASKS for md in MODES) + " |")
    return "\n".join(lines)


def ratio_summary(result: dict) -> str:
    """The goals as measured: ours/jax.nn for xla, ours/tokamax for chunked, auto vs the best row, per cell."""
    by = {(r["path"], r["seq_len"], r["mask"], r["heads"], r["mode"], r["dtype"]): r for r in result["rows"]
          if "time_s" in r}
    cellkeys = {k[1:] for k in by}

    def worst(num, den):
        ratios = [(by[(num,) + c]["time_s"] / by[(den,) + c]["time_s"], c) for c in cellkeys
                  if (num,) + c in by and (den,) + c in by]
        return max(ratios) if ratios else None

    def best_of_all(c):
        return min(by[(p,) + c]["time_s"] for p in PATHS if p != "auto" and (p,) + c in by)

    parts = []
    for num, den, label in (("xla", "jax_nn", "ours xla / jax.nn"),
                            ("chunked", "tokamax_xla_chunked", "ours chunked / tokamax xla_chunked")):
        w = worst(num, den)
        if w:
            parts.append(f"{label}: at most {w[0]:.2f} (T={w[1][0]} {w[1][1]} {w[1][2]} {w[1][3]} {w[1][4]})")
    autos = [(by[("auto",) + c]["time_s"] / best_of_all(c), c) for c in cellkeys if ("auto",) + c in by]
    if autos:
        w = max(autos)
        parts.append(f"auto / best of all rows: at most {w[0]:.2f} (T={w[1][0]} {w[1][1]} {w[1][2]} {w[1][3]})")
    return "Worst cell of each ratio (time; <= 1 means ours is as fast or faster): " + "; ".join(parts) + "."


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "time_s" in r and r["dtype"] == "float32" and r["heads"] == "N=K"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    colors = dict(zip(PATHS, ("tab:gray", "tab:olive", "tab:green", "tab:red", "tab:blue", "tab:purple")))
    for col, mode in enumerate(MODES):
        for mask, style in zip(MASKS, ("-", "--")):
            for p in PATHS:
                sel = sorted((r for r in rows if r["path"] == p and r["mode"] == mode and r["mask"] == mask),
                             key=lambda r: r["seq_len"])
                if not sel:
                    continue
                lens = [r["seq_len"] for r in sel]
                label = f"{p} {mask}"
                axes[0, col].loglog(lens, [r["time_s"] * 1e3 for r in sel], style, color=colors[p], marker="o",
                                    label=label, base=2)
                axes[1, col].loglog(lens, [r["temp_bytes"] / 2**20 for r in sel], style, color=colors[p],
                                    marker="o", label=label, base=2)
        axes[0, col].set(title=f"{mode}: time", ylabel="median wall time (ms)")
        axes[1, col].set(title=f"{mode}: memory", ylabel="compiled temporary memory (MiB)",
                         xlabel="sequence length T = S")
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"dot-product attention, N = K = 4, float32, on {result['device_kind']} "
                 f"({result['cpu_count']} cores), jax {result['jax_version']}, tokamax "
                 f"{result['tokamax_version'] or 'absent'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(text: str, readme: Path | None = None) -> Path:
    """Rewrite the ``attention_memory`` block (default: in the page that holds it, docs/benchmarks.md)."""
    return update_readme_block("attention_memory", text, readme)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-cell-s", type=float, default=12.0, help="fewer repeats where one call is slow")
    ap.add_argument("--dense-max", type=int, default=8192)
    ap.add_argument("--dense-bwd-max", type=int, default=8192)
    ap.add_argument("--bf16-len", type=int, default=4096)
    ap.add_argument("--gqa-max", type=int, default=8192, help="GQA 4:1 rows up to this T (time budget)")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the chunk-size sweep")
    ap.add_argument("--write-dispatch-table", action="store_true",
                    help=f"write {_dispatch.CPU_TABLE_PATH.name} for implementation=None (CPU runs only)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.readme_from:
        result = json.loads(args.readme_from.read_text())
        _write_readme(result, args.readme_from.with_suffix(".png"))
        return result
    result = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"attention_memory_{result['device']}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1, default=_jsonable))
    plot(result, args.out_dir / f"{stem}.png")
    print(markdown(result))
    print(f"\nwrote {args.out_dir / (stem + '.json')} and {stem}.png")
    if args.update_readme:
        _write_readme(result, args.out_dir / f"{stem}.png")
    return result


def _write_readme(result: dict, png: Path) -> None:
    page = update_readme(markdown(result) + f"\n\n![attention time and memory]({os.path.relpath(png, README.parent)})")
    print(f"updated {page}")


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    main()
