"""Memory and time of dense ("xla") vs memory-efficient ("chunked") attention.

For T = S from 1k to 16k, measures the compiled peak temporary memory
(``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``) and
the wall time of the forward and of forward+backward, for both implementations
in one run, through the public ``attn_jax.dot_product_attention``. The setting
follows Rabe & Staats (2021): one head, batch 1, head_dim 64, float32.

Writes ``benchmarks/results/attention_memory_<device>.json`` and a log-log PNG
beside it, prints a table, and with ``--update-readme`` rewrites the README's
block between ``<!-- attention_memory:begin -->`` and ``<!-- attention_memory:end -->``.

    python -m benchmarks.attention_memory                  # full run (a few minutes on 2 CPU cores)
    python -m benchmarks.attention_memory --seq-lens 256 512 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import attn_jax
from benchmarks._common import README, add_output_args, device_name, time_fn, update_readme_block

IMPLS = ("xla", "chunked")
MODES = ("fwd", "fwd+bwd")


def make_fn(impl: str, mode: str, causal: bool):
    def fwd(q, k, v):
        return attn_jax.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)

    if mode == "fwd":
        return fwd

    def fwd_bwd(q, k, v):
        return jax.grad(lambda *a: jnp.sum(fwd(*a)), argnums=(0, 1, 2))(q, k, v)

    return fwd_bwd


def measure(impl, mode, t, args, repeats) -> dict:
    b, n, h, dtype, causal = args.batch, args.heads, args.head_dim, args.dtype, args.causal
    key = jax.random.key(t)
    q, k, v = (jax.random.normal(kk, (b, t, n, h), dtype) for kk in jax.random.split(key, 3))
    compiled = jax.jit(make_fn(impl, mode, causal)).lower(q, k, v).compile()
    mem = compiled.memory_analysis()
    median, times = time_fn(compiled, q, k, v, repeats=repeats)
    return dict(
        impl=impl,
        mode=mode,
        seq_len=t,
        temp_bytes=int(mem.temp_size_in_bytes),
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        time_s=median,
        times_s=times,
    )


def ratios(rows: list[dict]) -> dict:
    """Headline ratios: memory (xla / chunked) per mode at the longest T, time per T."""
    by = {(r["impl"], r["mode"], r["seq_len"]): r for r in rows}
    lens = sorted({r["seq_len"] for r in rows})
    out = {"memory_ratio": {}, "time_ratio": {}}
    for mode in MODES:
        out["memory_ratio"][mode] = {
            t: by["xla", mode, t]["temp_bytes"] / max(by["chunked", mode, t]["temp_bytes"], 1) for t in lens
        }
        out["time_ratio"][mode] = {t: by["chunked", mode, t]["time_s"] / by["xla", mode, t]["time_s"] for t in lens}
    return out


def markdown(result: dict) -> str:
    rows, r = result["rows"], result["ratios"]
    by = {(x["impl"], x["mode"], x["seq_len"]): x for x in rows}
    lens = sorted({x["seq_len"] for x in rows})
    cfg = result["config"]
    lines = [
        f"Device: {result['device']} ({result['device_kind']}), jax {result['jax_version']}, "
        f"{result['date']}; B={cfg['batch']}, N={cfg['heads']}, H={cfg['head_dim']}, {cfg['dtype']}, "
        f"causal={cfg['causal']}. Temporary memory from XLA's compiled memory analysis; time is the median "
        f"of {cfg['repeats']} runs.",
        "",
        "| T = S | mode | xla temp | chunked temp | memory ratio | xla time | chunked time | time chunked/xla |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in lens:
        for mode in MODES:
            x, c = by["xla", mode, t], by["chunked", mode, t]
            lines.append(
                f"| {t} | {mode} | {x['temp_bytes'] / 2**20:.1f} MiB | {c['temp_bytes'] / 2**20:.1f} MiB | "
                f"{r['memory_ratio'][mode][t]:.1f}x | {x['time_s'] * 1e3:.0f} ms | {c['time_s'] * 1e3:.0f} ms | "
                f"{r['time_ratio'][mode][t]:.2f} |"
            )
    tmax = lens[-1]
    lines += [
        "",
        f"At T = {tmax}, chunked forward+backward needs {r['memory_ratio']['fwd+bwd'][tmax]:.0f}x less temporary "
        f"memory than xla (forward: {r['memory_ratio']['fwd'][tmax]:.0f}x).",
    ]
    if 4096 in lens:
        lines[-1] += f" Forward time at T = 4096: chunked / xla = {r['time_ratio']['fwd'][4096]:.2f}."
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl, color in zip(IMPLS, ("tab:red", "tab:blue")):
        for mode, style in zip(MODES, ("--", "-")):
            sel = sorted((r for r in rows if r["impl"] == impl and r["mode"] == mode), key=lambda r: r["seq_len"])
            lens = [r["seq_len"] for r in sel]
            axes[0].loglog(lens, [r["temp_bytes"] / 2**20 for r in sel], style, color=color, marker="o",
                           label=f"{impl} {mode}", base=2)
            axes[1].loglog(lens, [r["time_s"] * 1e3 for r in sel], style, color=color, marker="o",
                           label=f"{impl} {mode}", base=2)
    axes[0].set(xlabel="sequence length T = S", ylabel="compiled temporary memory (MiB)", title="Memory")
    axes[1].set(xlabel="sequence length T = S", ylabel="wall time (ms)", title="Time")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"attn_jax dot_product_attention on {result['device_kind']} (jax {result['jax_version']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def update_readme(text: str, readme: Path = README) -> None:
    update_readme_block("attention_memory", text, readme)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.readme_from:
        result = json.loads(args.readme_from.read_text())
        result["ratios"] = ratios(result["rows"])
        _write_readme(result, args.readme_from.with_suffix(".png"))
        return result
    args.dtype = jnp.dtype(args.dtype)

    rows = []
    jobs = [(impl, mode, t) for t in args.seq_lens for impl in IMPLS for mode in MODES]
    for impl, mode, t in tqdm(jobs, desc="attention_memory", unit="case"):
        rows.append(measure(impl, mode, t, args, args.repeats))
    dev = jax.devices()[0]
    result = dict(
        benchmark="attention_memory",
        device=device_name(),
        device_kind=dev.device_kind,
        platform=dev.platform,
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        jax_version=jax.__version__,
        jaxlib_version=jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        config=dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, dtype=str(args.dtype),
                    causal=args.causal, repeats=args.repeats, seq_lens=args.seq_lens),
        rows=rows,
    )
    result["ratios"] = ratios(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"attention_memory_{result['device']}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1, default=_jsonable))
    plot(result, args.out_dir / f"{stem}.png")
    table = markdown(result)
    print(table)
    print(f"\nwrote {args.out_dir / (stem + '.json')} and {stem}.png")
    if args.update_readme:
        _write_readme(result, args.out_dir / f"{stem}.png")
    return result


def _write_readme(result: dict, png: Path) -> None:
    update_readme(markdown(result) + f"\n\n![attention memory]({os.path.relpath(png, README.parent)})")
    print(f"updated {README}")


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    main()
