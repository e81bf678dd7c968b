"""Block-size autotuner for the Triton-style flash kernel, with an on-disk cache.

:func:`autotune` times candidate :class:`~attn_jax.kernels.flash_triton.BlockSizes`
(forward + backward) on the current device and stores the winner in a JSON file
keyed by device kind, dtype, head dims, GQA group size, causality and
power-of-two buckets of T and S. :func:`cached_block_sizes` (used by
``dot_product_attention(implementation="pallas_triton")``) returns a cached
winner for a problem's shape class, or None, in which case the kernel uses
``BlockSizes.get_default``.

Cache location: ``$ATTN_JAX_AUTOTUNE_CACHE``, else
``~/.cache/attn_jax/flash_triton_autotune.json``.

Candidates that the offline compile check (``python -m benchmarks.gpu_compile``)
recorded as failing for this GPU's arch (spills, or shared memory over the
per-block limit) are left out before anything is timed. The check's table is
``$ATTN_JAX_GPU_COMPILE``, else ``benchmarks/results/gpu_compile.json`` of the
checkout the kernels come from; without one, nothing is left out.

    from attn_jax.kernels import autotune
    best = autotune.autotune(q, k, v, is_causal=True)   # on a GPU; seconds to minutes
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from attn_jax.kernels.flash_triton import BlockSizes, flash_attention

_MEMO: dict[str, tuple[float, dict]] = {}


def cache_path() -> Path:
    env = os.environ.get("ATTN_JAX_AUTOTUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "attn_jax" / "flash_triton_autotune.json"


def shape_key(q, k, v, is_causal: bool, device_kind: str | None = None) -> str:
    """Cache key of a problem's shape class."""
    kind = device_kind or jax.devices()[0].device_kind
    t, n, h = q.shape[-3:]
    s, kh, hv = k.shape[-3], k.shape[-2], v.shape[-1]

    def bucket(x):
        return min(pl.next_power_of_2(max(x, 1)), 1 << 16)

    return (f"{kind}|{jnp.dtype(q.dtype).name}|H{pl.next_power_of_2(h)}|Hv{pl.next_power_of_2(hv)}"
            f"|G{n // kh}|causal{int(bool(is_causal))}|T{bucket(t)}|S{bucket(s)}")


def _load(path: Path) -> dict:
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return {}
    memo = _MEMO.get(str(path))
    if memo and memo[0] == mtime:
        return memo[1]
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return {}
    _MEMO[str(path)] = (mtime, data)
    return data


def cached_block_sizes(q, k, v, is_causal: bool, path: Path | None = None) -> BlockSizes | None:
    """The cached winner for this shape class on this device, or None."""
    entry = _load(path or cache_path()).get(shape_key(q, k, v, is_causal))
    if entry is None:
        return None
    try:
        return BlockSizes(**entry["block_sizes"])
    except (TypeError, ValueError, KeyError):
        return None  # a stale or hand-edited entry: fall back to defaults


def compile_table_path() -> Path:
    env = os.environ.get("ATTN_JAX_GPU_COMPILE")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu_compile.json"


def device_arch(device=None) -> str | None:
    """``"sm_90"`` for a GPU of compute capability 9.0; None off NVIDIA GPUs."""
    device = device or jax.devices()[0]
    cc = getattr(device, "compute_capability", None)
    return f"sm_{str(cc).replace('.', '')}" if device.platform == "gpu" and cc else None


def compile_failures(arch: str | None, head_dim: int, dtype, path: Path | None = None) -> list[dict]:
    """Block sizes (as dicts) the compile table marks not ok for ``arch``, the head dim's class and dtype."""
    if arch is None:
        return []
    try:
        rows = json.loads((path or compile_table_path()).read_text())["rows"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return []
    hp = pl.next_power_of_2(head_dim)
    name = jnp.dtype(dtype).name
    return [r["blocks"] for r in rows if r.get("family") == "flash" and not r.get("ok", True)
            and r.get("arch") == arch and r.get("head_dim") == hp and r.get("dtype") == name]


def default_candidates(head_dim: int, dtype, device_kind: str | None = None, arch: str | None = "auto",
                       compile_table: Path | None = None) -> list[BlockSizes]:
    """A small grid around the defaults: forward tiles x backward tiles x warps.

    ``arch="auto"`` takes this GPU's arch; the candidates the compile table marks
    failing for it are left out (``arch=None`` keeps them all).
    """
    device_kind = device_kind or jax.devices()[0].device_kind
    base = BlockSizes.get_default(head_dim, dtype, device_kind)
    fwd = [(64, 64), (128, 64), (128, 32), (64, 32)] if head_dim <= 128 else [(64, 32), (32, 32)]
    bwd = [(32, 64), (64, 64), (32, 32)]
    out = []
    for (bq, bk), (small, big), warps in itertools.product(fwd, bwd, (4, 8)):
        out.append(dataclasses.replace(base, block_q=bq, block_k=bk, block_q_dkv=small, block_kv_dkv=big,
                                       block_q_dq=big, block_kv_dq=small, num_warps=warps))
    failing = compile_failures(device_arch() if arch == "auto" else arch, head_dim, dtype, compile_table)
    return [bs for bs in out if dataclasses.asdict(bs) not in failing]


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def autotune(q, k, v, *, is_causal: bool = False, candidates: list[BlockSizes] | None = None,
             backward: bool = True, repeats: int = 3, path: Path | None = None,
             interpret: bool = False, progress: bool = True) -> BlockSizes:
    """Time each candidate on this device (forward, + backward if asked); cache and return the fastest.

    Candidates that fail to compile (e.g. out of shared memory) are skipped.
    """
    candidates = candidates or default_candidates(q.shape[-1], q.dtype)
    results = []
    iterator = candidates
    if progress:
        from tqdm import tqdm

        iterator = tqdm(candidates, desc="autotune flash_triton", unit="cfg")
    for bs in iterator:
        def fwd(q_, k_, v_, bs=bs):
            return flash_attention(q_, k_, v_, is_causal=is_causal, block_sizes=bs, interpret=interpret)[0]

        fn = jax.jit(fwd)
        if backward:
            fn = jax.jit(jax.grad(lambda *a, f=fwd: jnp.sum(f(*a).astype(jnp.float32)), argnums=(0, 1, 2)))
        try:
            results.append((_time(fn, q, k, v, repeats=repeats), bs))
        except Exception as err:  # noqa: BLE001 - a candidate that cannot compile is skipped
            results.append((float("inf"), bs))
            if progress:
                print(f"autotune: skipped {bs}: {type(err).__name__}: {str(err)[:120]}")
    seconds, best = min(results, key=lambda r: r[0])
    if seconds == float("inf"):
        raise RuntimeError("autotune: no candidate block sizes compiled")
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(_load(path))
    data[shape_key(q, k, v, is_causal)] = dict(
        block_sizes=dataclasses.asdict(best), seconds=seconds, backward=backward,
        jax_version=jax.__version__, candidates=len(candidates),
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
    return best
