"""Flash-attention throughput on a GPU: attn_jax's Pallas kernel vs cuDNN, XLA and jax's bundled Pallas mha.

FlashAttention's benchmark setting: bfloat16, 16k tokens per batch (B = 16384 / T),
hidden size 2048 (N = 2048 / H), head_dim 64 / 128 / 256, causal and not, T from
512 to 16k. FLOPs are counted as FlashAttention does: forward 4·B·N·T·S·H, halved
when causal; backward 2.5x the forward. Every implementation is timed in the same
run, on the same device, and a bf16 matmul is timed too so each number can be read
as a fraction of what this GPU's matmul units deliver.

Implementations: ``pallas_triton`` (ours, via ``attn_jax.dot_product_attention``),
``cudnn`` (``jax.nn.dot_product_attention(implementation="cudnn")``), ``xla``
(attn_jax's dense path), ``jax_pallas_mha`` (``jax.experimental.pallas.ops.gpu.attention.mha``,
jax's bundled Triton-lowered kernel) and ``tokamax`` (``tokamax.dot_product_attention``
with its own choice of kernel; only where tokamax is importable, else left out and
said so in the JSON). A case that fails (out of memory, unsupported shape) is
recorded with its error, not dropped.

Writes ``benchmarks/results/flash_attention_<device>.json`` and ``.png``;
``--update-readme`` rewrites the ``flash_attention`` block of docs/benchmarks.md from the JSON.

    python -m benchmarks.flash_attention                       # full sweep, GPU (~10 minutes on an H100)
    python -m benchmarks.flash_attention --seq-lens 2048 --head-dims 128
    python -m benchmarks.flash_attention --allow-cpu --seq-lens 64 --head-dims 32 --tokens 128 --hidden 64
        # smoke run of the script itself on CPU (kernels interpreted: the numbers mean nothing)
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from tqdm import tqdm

import attn_jax
from benchmarks._common import README, add_output_args, device_name, time_fn, update_readme_block

IMPLS = ("pallas_triton", "cudnn", "xla", "jax_pallas_mha", "tokamax")
MODES = ("fwd", "bwd", "fwd+bwd")


def attention_fn(impl: str, causal: bool, interpret: bool):
    """``f(q, k, v) -> out`` for one implementation (all [B, T, N, H])."""
    if impl == "jax_pallas_mha":
        from jax.experimental.pallas.ops.gpu import attention as jax_mha

        def f(q, k, v):
            return jax_mha.mha(q, k, v, None, sm_scale=1.0 / q.shape[-1] ** 0.5, causal=causal, interpret=interpret)

        return f
    if impl == "cudnn":
        return functools.partial(jax.nn.dot_product_attention, is_causal=causal, implementation="cudnn")
    if impl == "tokamax":
        import tokamax

        return functools.partial(tokamax.dot_product_attention, is_causal=causal)
    return functools.partial(attn_jax.dot_product_attention, is_causal=causal, implementation=impl)


def flops(b, t, n, h, causal, mode) -> float:
    fwd = 4.0 * b * n * t * t * h / (2.0 if causal else 1.0)
    return {"fwd": fwd, "bwd": 2.5 * fwd, "fwd+bwd": 3.5 * fwd}[mode]


def measure(impl, mode, b, t, n, h, causal, dtype, repeats, interpret):
    keys = jax.random.split(jax.random.key(t * 7 + h), 4)
    q, k, v = (jax.random.normal(kk, (b, t, n, h), dtype) for kk in keys[:3])
    f = attention_fn(impl, causal, interpret)
    if mode == "fwd":
        fn, args = jax.jit(f), (q, k, v)
    elif mode == "fwd+bwd":
        fn = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32)), argnums=(0, 1, 2)))
        args = (q, k, v)
    else:  # backward alone: the vjp closure is a pytree, so its residuals are arguments
        out, vjp_fn = jax.vjp(f, q, k, v)
        fn, args = jax.jit(lambda fn_, g: fn_(g)), (vjp_fn, jax.random.normal(keys[3], out.shape, out.dtype))
    seconds, samples = time_fn(fn, *args, repeats=repeats)
    return dict(seconds=seconds, samples=samples, tflops=flops(b, t, n, h, causal, mode) / seconds / 1e12)


def matmul_tflops(dtype, size: int, repeats: int) -> float:
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    seconds, _ = time_fn(jax.jit(lambda x: x @ x), a, repeats=repeats)
    return 2.0 * size**3 / seconds / 1e12


def run(args) -> dict:
    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not args.allow_cpu:
        raise SystemExit("benchmarks.flash_attention needs a GPU (use --allow-cpu only to smoke-test the script)")
    interpret = not on_gpu
    dtype = jnp.dtype(args.dtype)
    impls = [i for i in args.impls if on_gpu or i not in ("cudnn", "tokamax")]
    left_out = {i: "timed on a GPU only" for i in args.impls if i not in impls}
    if "tokamax" in impls and importlib.util.find_spec("tokamax") is None:
        impls.remove("tokamax")
        left_out["tokamax"] = "not installed"
    rows = []
    jobs = [(h, c, t, impl, mode) for h in args.head_dims for c in args.causal for t in args.seq_lens
            for impl in impls for mode in MODES]
    for h, causal, t, impl, mode in tqdm(jobs, desc="flash_attention", unit="case"):
        b, n = max(1, args.tokens // t), max(1, args.hidden // h)
        row = dict(impl=impl, mode=mode, head_dim=h, causal=causal, seq_len=t, batch=b, heads=n)
        try:
            row.update(measure(impl, mode, b, t, n, h, causal, dtype, args.repeats, interpret))
        except Exception as err:  # noqa: BLE001 - recorded, e.g. OOM or an unsupported shape
            row.update(error=f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")
        rows.append(row)
    mm = matmul_tflops(dtype, args.matmul_size, args.repeats)
    dev = jax.devices()[0]
    return dict(
        benchmark="flash_attention", device=device_name(), device_kind=dev.device_kind, platform=dev.platform,
        interpret=interpret, jax_version=jax.__version__, date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        config=dict(dtype=dtype.name, tokens=args.tokens, hidden=args.hidden, head_dims=args.head_dims,
                    seq_lens=args.seq_lens, causal=args.causal, repeats=args.repeats, impls=impls),
        left_out=left_out,
        matmul_tflops=mm, matmul_size=args.matmul_size, rows=rows,
    )


def markdown(result: dict) -> str:
    rows = [r for r in result["rows"] if r["mode"] in ("fwd", "fwd+bwd")]
    impls = result["config"]["impls"]
    lines = [
        f"Device: {result['device_kind']}, jax {result['jax_version']}, {result['date']}"
        f"{' (INTERPRET MODE: not a measurement)' if result['interpret'] else ''}; {result['config']['dtype']}, "
        f"{result['config']['tokens']} tokens per batch, hidden {result['config']['hidden']}. "
        f"bf16 matmul on this device: {result['matmul_tflops']:.0f} TFLOP/s. Cells: TFLOP/s "
        f"(FlashAttention's FLOP count).",
        "",
        "| H | causal | T | mode | " + " | ".join(impls) + " | ours / jax mha | ours / cudnn |"
        + (" ours / tokamax |" if "tokamax" in impls else "") + " ours / matmul |",
        "|---:|---|---:|---|" + "---:|" * (len(impls) + 3 + ("tokamax" in impls)),
    ]
    by = {(r["impl"], r["mode"], r["head_dim"], r["causal"], r["seq_len"]): r for r in rows}
    keys = sorted({(r["head_dim"], r["causal"], r["seq_len"], r["mode"]) for r in rows})
    for h, causal, t, mode in keys:
        cells = []
        for impl in impls:
            r = by.get((impl, mode, h, causal, t))
            cells.append("—" if r is None or "tflops" not in r else f"{r['tflops']:.0f}")

        def ratio(other, h=h, causal=causal, t=t, mode=mode):
            a, b = by.get(("pallas_triton", mode, h, causal, t)), by.get((other, mode, h, causal, t))
            if not a or not b or "tflops" not in a or "tflops" not in b:
                return "—"
            return f"{a['tflops'] / b['tflops']:.2f}"

        ours = by.get(("pallas_triton", mode, h, causal, t))
        frac = "—" if not ours or "tflops" not in ours else f"{ours['tflops'] / result['matmul_tflops']:.2f}"
        lines.append(f"| {h} | {causal} | {t} | {mode} | " + " | ".join(cells)
                     + f" | {ratio('jax_pallas_mha')} | {ratio('cudnn')} |"
                     + (f" {ratio('tokamax')} |" if "tokamax" in impls else "") + f" {frac} |")
    errors = [r for r in result["rows"] if "error" in r]
    if errors:
        lines += ["", f"{len(errors)} cases failed (errors recorded in the JSON), e.g. "
                  f"{errors[0]['impl']} H={errors[0]['head_dim']} T={errors[0]['seq_len']} {errors[0]['mode']}: "
                  f"{errors[0]['error'][:120]}"]
    if result.get("left_out"):
        lines += ["", "Not timed: " + "; ".join(f"{i} ({why})" for i, why in result["left_out"].items()) + "."]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    combos = [(h, c) for h in cfg["head_dims"] for c in cfg["causal"]]
    fig, axes = plt.subplots(len(MODES), len(combos), figsize=(3.6 * len(combos), 3.0 * len(MODES)), squeeze=False)
    for col, (h, causal) in enumerate(combos):
        for row, mode in enumerate(MODES):
            ax = axes[row][col]
            for impl in cfg["impls"]:
                sel = sorted((r for r in result["rows"] if r["impl"] == impl and r["mode"] == mode
                              and r["head_dim"] == h and r["causal"] == causal and "tflops" in r),
                             key=lambda r: r["seq_len"])
                if sel:
                    ax.plot([r["seq_len"] for r in sel], [r["tflops"] for r in sel], marker="o", label=impl)
            ax.axhline(result["matmul_tflops"], color="gray", ls=":", lw=1, label="bf16 matmul")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{mode}, H={h}, causal={causal}", fontsize=9)
            ax.set_xlabel("T")
            ax.set_ylabel("TFLOP/s")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['device_kind']} — jax {result['jax_version']}"
                 f"{' — INTERPRET MODE (not a measurement)' if result['interpret'] else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--causal", type=lambda s: s.lower() in ("1", "true", "yes"), nargs="+", default=[False, True])
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--tokens", type=int, default=16384, help="tokens per batch: B = tokens // T")
    ap.add_argument("--hidden", type=int, default=2048, help="hidden size: N = hidden // H")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--allow-cpu", action="store_true", help="smoke-test the script on CPU (interpret mode)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.readme_from:
        result = json.loads(args.readme_from.read_text())
    else:
        result = run(args)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"flash_attention_{result['device']}"
        (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
        plot(result, args.out_dir / f"{stem}.png")
        print(markdown(result))
        print(f"\nwrote {args.out_dir / (stem + '.json')} and {stem}.png")
    if args.update_readme or args.readme_from:
        png = (args.readme_from or args.out_dir / f"flash_attention_{result['device']}.json").with_suffix(".png")
        figure = f"\n\n![flash attention]({os.path.relpath(png, README.parent)})"
        print(f"updated {update_readme_block('flash_attention', markdown(result) + figure)}")
    return result


if __name__ == "__main__":
    main()
