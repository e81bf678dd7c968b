"""KV-cache decode throughput: achieved read bandwidth of the split-KV Pallas kernel vs the xla path.

For each cache length S (1k-128k) and batch size, one new token per sequence
(bf16, 32 query heads sharing 8 kv heads, head_dim 128 by default) attends to a
full cache; bandwidth = bytes of K and V read / time. A large device-to-device
copy is timed in the same run (bytes read / time) as the reference for what the
memory system delivers. Writes ``benchmarks/results/decode_attention_<device>.json``
and ``.png``; ``--update-readme`` rewrites the ``decode_attention`` block of docs/benchmarks.md.

    python -m benchmarks.decode_attention                    # GPU
    python -m benchmarks.decode_attention --allow-cpu --seq-lens 256 --batches 2 --copy-mib 8
        # smoke run of the script on CPU (kernel interpreted: the numbers mean nothing)
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

IMPLS = ("pallas", "xla")


def measure(impl, b, s, args) -> dict:
    keys = jax.random.split(jax.random.key(s + b), 3)
    dtype = jnp.dtype(args.dtype)
    q = jax.random.normal(keys[0], (b, args.heads, args.head_dim), dtype)
    k = jax.random.normal(keys[1], (b, s, args.kv_heads, args.head_dim), dtype)
    v = jax.random.normal(keys[2], (b, s, args.kv_heads, args.head_dim), dtype)
    lens = jnp.full((b,), s, jnp.int32)
    fn = jax.jit(lambda q_, k_, v_, l_: attn_jax.decode_attention(q_, k_, v_, l_, implementation=impl))
    seconds, samples = time_fn(fn, q, k, v, lens, repeats=args.repeats)
    bytes_read = 2 * b * s * args.kv_heads * args.head_dim * dtype.itemsize
    return dict(impl=impl, batch=b, seq_len=s, seconds=seconds, samples=samples, bytes_read=bytes_read,
                gb_per_s=bytes_read / seconds / 1e9)


def copy_bandwidth(mib: int, repeats: int) -> float:
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    seconds, _ = time_fn(jax.jit(lambda a: a * 1.0 + 0.0), x, repeats=repeats)  # reads x once, writes once
    return x.nbytes / seconds / 1e9


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"Device: {result['device_kind']}, jax {result['jax_version']}, {result['date']}"
        f"{' (INTERPRET MODE: not a measurement)' if result['interpret'] else ''}; {cfg['dtype']}, "
        f"N={cfg['heads']}, K={cfg['kv_heads']}, H={cfg['head_dim']}. Device-to-device copy: "
        f"{result['copy_gb_per_s']:.0f} GB/s read. Cells: GB/s of K/V read.",
        "",
        "| batch | S | pallas | xla | pallas / copy |",
        "|---:|---:|---:|---:|---:|",
    ]
    by = {(r["impl"], r["batch"], r["seq_len"]): r for r in result["rows"]}
    for b in cfg["batches"]:
        for s in cfg["seq_lens"]:
            p, x = by.get(("pallas", b, s)), by.get(("xla", b, s))
            cell = lambda r: "—" if not r or "gb_per_s" not in r else f"{r['gb_per_s']:.0f}"  # noqa: E731
            frac = "—" if not p or "gb_per_s" not in p else f"{p['gb_per_s'] / result['copy_gb_per_s']:.2f}"
            lines.append(f"| {b} | {s} | {cell(p)} | {cell(x)} | {frac} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for impl, style in zip(IMPLS, ("-", "--")):
        for b in result["config"]["batches"]:
            sel = sorted((r for r in result["rows"] if r["impl"] == impl and r["batch"] == b and "gb_per_s" in r),
                         key=lambda r: r["seq_len"])
            ax.plot([r["seq_len"] for r in sel], [r["gb_per_s"] for r in sel], style, marker="o",
                    label=f"{impl} B={b}")
    ax.axhline(result["copy_gb_per_s"], color="gray", ls=":", label="device copy")
    ax.set(xscale="log", xlabel="cache length S", ylabel="GB/s of K/V read", title=result["device_kind"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> dict:
    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not args.allow_cpu:
        raise SystemExit("benchmarks.decode_attention needs a GPU (use --allow-cpu only to smoke-test the script)")
    rows = []
    for impl, b, s in tqdm([(i, b, s) for b in args.batches for s in args.seq_lens for i in IMPLS],
                           desc="decode_attention"):
        try:
            rows.append(measure(impl, b, s, args))
        except Exception as err:  # noqa: BLE001 - e.g. out of memory at the largest caches
            rows.append(dict(impl=impl, batch=b, seq_len=s, error=f"{type(err).__name__}: {str(err)[:200]}"))
    dev = jax.devices()[0]
    return dict(
        benchmark="decode_attention", device=device_name(), device_kind=dev.device_kind, interpret=not on_gpu,
        jax_version=jax.__version__, date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        config=dict(seq_lens=args.seq_lens, batches=args.batches, heads=args.heads, kv_heads=args.kv_heads,
                    head_dim=args.head_dim, dtype=args.dtype, repeats=args.repeats),
        copy_gb_per_s=copy_bandwidth(args.copy_mib, args.repeats), rows=rows,
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 4096, 16384, 65536, 131072])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--copy-mib", type=int, default=2048)
    ap.add_argument("--allow-cpu", action="store_true")
    add_output_args(ap)
    args = ap.parse_args(argv)
    return publish_result(args, "decode_attention", run, plot, markdown, "decode attention")


if __name__ == "__main__":
    main()
