"""Memory and time of additive (Bahdanau) attention: dense "xla" vs "chunked" vs fused "pallas".

For T = S in {128 ... 4096} and A in {128, 256, 512}, forward and forward+backward
(gradients for q, k, values, W_q, W_k and v), one run: compiled peak temporary
memory (XLA's memory analysis) and median wall time. Dense cases whose temporary
memory exceeds ``--max-run-gib`` are compiled for their memory figure but not run.
The fused "pallas" kernel is timed only on a GPU: on CPU it would run interpreted,
which measures nothing, and the JSON says so.

Writes ``benchmarks/results/additive_attention_<device>.json`` and ``.png``;
``--update-readme`` rewrites the ``additive_attention`` block of docs/benchmarks.md.

    python -m benchmarks.additive_attention                   # full sweep (~10 minutes on 2 CPU cores)
    python -m benchmarks.additive_attention --seq-lens 128 256 --attn-dims 64 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import jax
import jax.numpy as jnp
from tqdm import tqdm

import attn_jax
from benchmarks._common import add_output_args, device_name, publish_result, time_fn

MODES = ("fwd", "fwd+bwd")


def make_fn(impl: str, mode: str):
    def fwd(q, k, val, w_q, w_k, v):
        return attn_jax.additive_attention(q, k, val, w_q, w_k, v, implementation=impl)

    if mode == "fwd":
        return fwd
    return jax.grad(lambda *a: jnp.sum(fwd(*a)), argnums=tuple(range(6)))


def measure(impl, mode, t, a, args) -> dict:
    keys = jax.random.split(jax.random.key(t + a), 6)
    d, dv, b = args.model_dim, args.value_dim, args.batch
    shapes = [(b, t, d), (b, t, d), (b, t, dv), (d, a), (d, a), (a,)]
    xs = [jax.random.normal(kk, sh, jnp.float32) / (sh[0] ** 0.5 if len(sh) == 2 else 1)
          for kk, sh in zip(keys, shapes)]
    compiled = jax.jit(make_fn(impl, mode)).lower(*xs).compile()
    temp = int(compiled.memory_analysis().temp_size_in_bytes)
    row = dict(impl=impl, mode=mode, seq_len=t, attn_dim=a, temp_bytes=temp)
    if temp > args.max_run_gib * 2**30:
        row["skipped"] = f"temporary memory {temp / 2**30:.1f} GiB > --max-run-gib {args.max_run_gib}"
        return row
    row["time_s"], row["times_s"] = time_fn(compiled, *xs, repeats=args.repeats)
    return row


def ratios(rows: list[dict]) -> dict:
    by = {(r["impl"], r["mode"], r["seq_len"], r["attn_dim"]): r for r in rows}
    out = {}
    for (impl, mode, t, a), r in by.items():
        dense = by.get(("xla", mode, t, a))
        if impl == "xla" or dense is None:
            continue
        entry = {"memory_ratio": dense["temp_bytes"] / max(r["temp_bytes"], 1)}
        if "time_s" in r and "time_s" in dense:
            entry["time_ratio"] = r["time_s"] / dense["time_s"]
        out[f"{impl}|{mode}|{t}|{a}"] = entry
    return out


def markdown(result: dict) -> str:
    rows, cfg = result["rows"], result["config"]
    by = {(r["impl"], r["mode"], r["seq_len"], r["attn_dim"]): r for r in rows}
    impls = cfg["impls"]
    lines = [
        f"Device: {result['device']} ({result['device_kind']}), jax {result['jax_version']}, {result['date']}; "
        f"B={cfg['batch']}, D={cfg['model_dim']}, Dv={cfg['value_dim']}, float32. Cells: compiled temporary "
        f"memory / median time; \"not run\" = compiled for its memory only (over {cfg['max_run_gib']} GiB)."
        + ("" if "pallas" in impls else " The fused pallas kernel is timed on GPUs only (pending)."),
        "",
        "| T = S | A | mode | " + " | ".join(impls) + " | chunked: memory saved | chunked: time vs xla |",
        "|---:|---:|---|" + "---|" * len(impls) + "---:|---:|",
    ]

    def cell(r):
        if r is None:
            return "—"
        mem = f"{r['temp_bytes'] / 2**20:.0f} MiB"
        return f"{mem} / {r['time_s'] * 1e3:.0f} ms" if "time_s" in r else f"{mem} / not run"

    for t in cfg["seq_lens"]:
        for a in cfg["attn_dims"]:
            for mode in MODES:
                rat = result["ratios"].get(f"chunked|{mode}|{t}|{a}", {})
                mem = f"{rat['memory_ratio']:.1f}x" if "memory_ratio" in rat else "—"
                tim = f"{rat['time_ratio']:.2f}" if "time_ratio" in rat else "—"
                lines.append(f"| {t} | {a} | {mode} | " + " | ".join(cell(by.get((i, mode, t, a))) for i in impls)
                             + f" | {mem} | {tim} |")
    key = "chunked|fwd+bwd|1024|256"
    if key in result["ratios"]:
        r = result["ratios"][key]
        lines += ["", f"At T = S = 1024, A = 256 (forward+backward), chunked needs {r['memory_ratio']:.0f}x less "
                  f"temporary memory than dense" + (f" and takes {r['time_ratio']:.2f}x its time." if "time_ratio" in r
                                                    else ".")]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    fig, axes = plt.subplots(2, len(cfg["attn_dims"]), figsize=(4.2 * len(cfg["attn_dims"]), 7), squeeze=False)
    for col, a in enumerate(cfg["attn_dims"]):
        for impl in cfg["impls"]:
            for mode, style in zip(MODES, ("--", "-")):
                sel = sorted((r for r in result["rows"] if r["impl"] == impl and r["mode"] == mode
                              and r["attn_dim"] == a), key=lambda r: r["seq_len"])
                axes[0][col].loglog([r["seq_len"] for r in sel], [r["temp_bytes"] / 2**20 for r in sel], style,
                                    marker="o", label=f"{impl} {mode}", base=2)
                timed = [r for r in sel if "time_s" in r]
                axes[1][col].loglog([r["seq_len"] for r in timed], [r["time_s"] * 1e3 for r in timed], style,
                                    marker="o", label=f"{impl} {mode}", base=2)
        axes[0][col].set(title=f"A = {a}: temporary memory", xlabel="T = S", ylabel="MiB")
        axes[1][col].set(title=f"A = {a}: wall time", xlabel="T = S", ylabel="ms")
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"additive attention on {result['device_kind']} (jax {result['jax_version']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> dict:
    """Time every (implementation, mode, T, A) cell; the result the JSON holds."""
    impls = ["xla", "chunked"] + (["pallas"] if jax.default_backend() == "gpu" else [])
    jobs = [(impl, mode, t, a) for t in args.seq_lens for a in args.attn_dims for impl in impls for mode in MODES]
    rows = [measure(impl, mode, t, a, args) for impl, mode, t, a in tqdm(jobs, desc="additive_attention")]
    dev = jax.devices()[0]
    result = dict(
        benchmark="additive_attention", device=device_name(), device_kind=dev.device_kind,
        platform=dev.platform, jax_version=jax.__version__, date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        config=dict(seq_lens=args.seq_lens, attn_dims=args.attn_dims, batch=args.batch,
                    model_dim=args.model_dim, value_dim=args.value_dim, repeats=args.repeats,
                    max_run_gib=args.max_run_gib, impls=impls),
        pallas_note=None if "pallas" in impls else "not timed: no GPU (interpret mode measures nothing)",
        rows=rows, ratios=ratios(rows),
    )
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    ap.add_argument("--attn-dims", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--model-dim", type=int, default=128)
    ap.add_argument("--value-dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-run-gib", type=float, default=6.0)
    add_output_args(ap)
    args = ap.parse_args(argv)
    return publish_result(args, "additive_attention", run, plot, markdown, "additive attention")


if __name__ == "__main__":
    main()
