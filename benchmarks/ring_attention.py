"""Ring attention vs all-gather attention: per-device memory and step time against the sequence length.

Context parallelism over P devices (a mesh axis ``seq``), global ``[B, T, N, H]`` sharded on T. Two ways to
attend, forward + backward (the gradient of a sum of the output):

* ``ring``: :func:`attn_jax.ring_attention_sharded` (K/V blocks travel the ring, partial results merged by
  logsumexp; zigzag layout when causal): each device holds O(T/P);
* ``allgather``: every device all-gathers the whole K and V (``jax.lax.all_gather`` inside ``shard_map``) and
  runs the chunked implementation for its own query rows (the same causal offsets): K/V memory O(T) per device.

Memory is the compiled executable's temporary bytes per device (``memory_analysis``), read from compilation
alone, so it is the same on any machine with the same XLA; time is the median wall time of a jitted step
(``--time-max`` caps the lengths that are timed). Run on 8 fake CPU devices (the default here):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.ring_attention --update-readme

On CPU the 8 "devices" share the machine's cores, so the times show the shape of the curve, not a speed-up.
Writes ``benchmarks/results/ring_attention_<device>.json`` and ``.png``; ``--update-readme`` rewrites the
``ring_attention`` block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from attn_jax.attention import chunked as _chunked
from attn_jax.attention.ring import ring_attention_sharded
from attn_jax.masks import MaskSpec
from attn_jax.sharding import make_mesh
from attn_jax.train.provenance import git_state, today
from benchmarks._common import add_output_args, device_name, publish_result, time_fn
from experiments.tables import short_commit

IMPLS = ("ring", "allgather")
ROOT = Path(__file__).resolve().parents[1]


def allgather_attention(q, k, v, mesh, *, is_causal: bool, axis: str = "seq"):
    """Each device: its query rows against the all-gathered K/V, by the chunked core (global causal offsets)."""

    def local(q, k, v):
        k = jax.lax.all_gather(k, axis, axis=1, tiled=True)
        v = jax.lax.all_gather(v, axis, axis=1, tiled=True)
        b, t, n, h = q.shape
        s, kh = k.shape[1], k.shape[2]
        g = n // kh
        me = jax.lax.axis_index(axis)
        spec = MaskSpec(is_causal=is_causal, offset=jnp.asarray(me * t, jnp.int32) if is_causal else None)
        q5 = jnp.transpose(q.reshape(b, t, kh, g, h), (0, 2, 1, 3, 4))
        st = _chunked._Static(h ** -0.5, None, min(256, t), min(256, s), t, s)
        out, _ = _chunked._chunked_core(q5, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), None, None, None, spec, st)
        return jnp.transpose(out, (0, 2, 1, 3, 4)).reshape(b, t, n, v.shape[-1])

    spec = P(None, axis, None, None)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)


def _step(impl: str, mesh, causal: bool, block: int):
    if impl == "ring":
        attend = functools.partial(ring_attention_sharded, mesh=mesh, is_causal=causal, block_size=block)
    else:
        attend = functools.partial(allgather_attention, mesh=mesh, is_causal=causal)

    def loss(q, k, v):
        return jnp.sum(attend(q, k, v))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def measure(impl: str, t: int, causal: bool, mesh, args) -> dict:
    shape = (args.batch, t, args.heads, args.head_dim)
    sharding = NamedSharding(mesh, P(None, "seq", None, None))
    step = _step(impl, mesh, causal, args.block)
    abstract = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
    compiled = step.lower(abstract, abstract, abstract).compile()
    row = dict(impl=impl, seq_len=t, causal=causal, temp_bytes=int(compiled.memory_analysis().temp_size_in_bytes),
               argument_bytes=int(compiled.memory_analysis().argument_size_in_bytes))
    if t <= args.time_max:
        keys = jax.random.split(jax.random.key(t), 3)
        q, k, v = (jax.device_put(jax.random.normal(kk, shape), sharding) for kk in keys)
        row["seconds"], row["samples"] = time_fn(compiled, q, k, v, repeats=args.repeats)
    return row


def run(args) -> dict:
    parts = jax.device_count()
    mesh = make_mesh(f"seq={parts}")
    rows = []
    cells = [(i, t, c) for c in (True, False) for t in args.seq_lens for i in IMPLS]
    for impl, t, causal in tqdm(cells, desc="ring_attention"):
        try:
            rows.append(measure(impl, t, causal, mesh, args))
        except Exception as err:  # noqa: BLE001 - e.g. out of memory at the largest lengths
            rows.append(dict(impl=impl, seq_len=t, causal=causal, error=f"{type(err).__name__}: {str(err)[:200]}"))
    commit, changed = git_state(ROOT)
    dev = jax.devices()[0]
    return dict(
        benchmark="ring_attention", device=device_name(), device_kind=dev.device_kind, devices=parts,
        cpu_count=os.cpu_count(), jax_version=jax.__version__,
        provenance=dict(commit=commit + ("+dirty" if changed else ""), command="python -m benchmarks.ring_attention "
                        + " ".join(sys.argv[1:]), device=f"{dev.platform} x{parts}, jax {jax.__version__}",
                        date=today()),
        config=dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, block=args.block,
                    repeats=args.repeats, time_max=args.time_max), rows=rows)


def _mib(x: float) -> str:
    return f"{x / 2**20:,.1f}"


def markdown(result: dict) -> str:
    cfg, prov = result["config"], result["provenance"]
    lines = [
        f"Device: {result['device_kind']} x {result['devices']} ({result['cpu_count']} cores shared), jax "
        f"{result['jax_version']}, {prov['date']}, commit {short_commit(prov['commit'])}; float32, B={cfg['batch']}, "
        f"N=K={cfg['heads']}, H={cfg['head_dim']}, forward + backward. Memory: compiled temporaries per device "
        "(MiB); time: median seconds of a step"
        + (f" (lengths above {cfg['time_max']:,} compiled only)" if cfg["time_max"] > 0 else
           ": not timed in this run") + f". Written by `{prov['command']}`.",
        "",
        "| T | mask | ring MiB | all-gather MiB | ring s | all-gather s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    by = {(r["impl"], r["seq_len"], r["causal"]): r for r in result["rows"]}
    for causal in (True, False):
        for t in sorted({r["seq_len"] for r in result["rows"]}):
            cells = []
            for key in ("temp_bytes", "seconds"):
                for impl in IMPLS:
                    r = by.get((impl, t, causal), {})
                    cells.append("error" if "error" in r else _mib(r[key]) if key == "temp_bytes" and key in r
                                 else f"{r[key]:.2f}" if key in r else "–")
            lines.append(f"| {t:,} | {'causal' if causal else 'full'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    from attn_jax.train.report import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for impl, color in zip(IMPLS, ("tab:blue", "tab:orange"), strict=True):
        for causal, style in ((True, "-"), (False, "--")):
            rows = sorted((r for r in result["rows"] if r["impl"] == impl and r["causal"] == causal
                           and "error" not in r), key=lambda r: r["seq_len"])
            label = f"{'all-gather' if impl == 'allgather' else impl}, {'causal' if causal else 'full'}"
            axes[0].plot([r["seq_len"] for r in rows], [r["temp_bytes"] / 2**20 for r in rows], style, color=color,
                         marker="o", label=label)
            timed = [r for r in rows if "seconds" in r]
            axes[1].plot([r["seq_len"] for r in timed], [r["seconds"] for r in timed], style, color=color,
                         marker="o", label=label)
    timed = any("seconds" in r for r in result["rows"])
    if not timed:
        axes[1].text(0.5, 0.5, "not timed in this run (--time-max)", ha="center", va="center",
                     transform=axes[1].transAxes)
    for ax, ylabel in zip(axes, ("temporaries per device (MiB)", "step time (s)"), strict=True):
        ax.set_xscale("log", base=2)
        if ax is axes[0] or timed:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(f"ring vs all-gather attention over {result['devices']} {result['device_kind']} devices, "
                 f"forward + backward, jax {result['jax_version']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--block", type=int, default=512, help="ring attention's block_size (keys per tile)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-max", type=int, default=16384, help="time only lengths up to this (compile all)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    return publish_result(args, "ring_attention", run, plot, markdown, "ring attention")


if __name__ == "__main__":
    main()
