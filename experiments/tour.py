"""A short tour of attn_jax's primitives: runs each on small inputs, prints a table, saves a plot.

Each row runs one primitive (and implementation) in float32 and compares it with
the same computation in float64 numpy (or attn_jax's dense path under x64 for
attention), so the table shows the error of every path, not just that it runs.

    python -m experiments.tour                 # writes runs/tour/<timestamp>/
    python -m experiments.tour --out /tmp/tour

Writes ``tour.png`` (masks and attention weights of the whole family) and
``summary.json`` (the table, the device and the jax version) to the output folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import attn_jax
from attn_jax import scores
from attn_jax.train.rundir import write_json

B, T, S, N, K, H = 2, 24, 32, 4, 2, 16


def _timed(fn):
    fn = jax.jit(fn)
    out = fn()
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, (time.perf_counter() - t0) * 1e3


def attention_rows(rng) -> tuple[list[dict], dict]:
    q = rng.normal(size=(B, T, N, H)).astype(np.float32)
    k = rng.normal(size=(B, S, K, H)).astype(np.float32)
    v = rng.normal(size=(B, S, K, H)).astype(np.float32)
    seg_q = np.repeat([[0, 1, 2]], [8, 8, 8], axis=1).repeat(B, 0)
    seg_k = np.repeat([[0, 1, 2]], [10, 11, 11], axis=1).repeat(B, 0)
    settings = {
        "plain": {},
        "causal": dict(is_causal=True),
        "window (4, 0)": dict(is_causal=True, local_window_size=(4, 0)),
        "kv lengths [32, 9]": dict(key_value_seq_lengths=np.array([32, 9])),
        "segments (packed)": dict(q_segment_ids=seg_q, kv_segment_ids=seg_k),
        "soft-cap 5": dict(logits_soft_cap=5.0, is_causal=True),
    }
    rows, masks = [], {}
    for name, kw in settings.items():
        with jax.enable_x64(True):
            ref, ref_lse = attn_jax.dot_product_attention(
                *(jnp.asarray(x, jnp.float64) for x in (q, k, v)), implementation="xla",
                return_residual=True, **kw)
            ref, ref_lse = np.asarray(ref), np.asarray(ref_lse)
        impls = ["xla", "chunked"]
        if "logits_soft_cap" not in kw and "q_segment_ids" not in kw:
            impls.append("jax.nn")
        for impl in impls:
            if impl == "jax.nn":
                fn = lambda kw=kw: jax.nn.dot_product_attention(q, k, v, return_residual=True, **kw)  # noqa: E731
            else:
                fn = lambda kw=kw, impl=impl: attn_jax.dot_product_attention(  # noqa: E731
                    q, k, v, implementation=impl, return_residual=True, **kw)
            (out, lse), ms = _timed(fn)
            fin = np.isfinite(ref_lse)
            rows.append(dict(
                primitive="dot_product_attention", implementation=impl, setting=name,
                shape=str(tuple(out.shape)),
                max_abs_err=float(np.abs(np.asarray(out) - ref).max()),
                lse_max_abs_err=float(np.abs(np.asarray(lse)[fin] - ref_lse[fin]).max()),
                ms=ms,
            ))
        spec = attn_jax.MaskSpec.from_arguments(**{a: x for a, x in kw.items() if a != "logits_soft_cap"})
        masks[name] = np.asarray(attn_jax.dense_mask(spec, T, S))[-1]
    return rows, masks


def additive_rows(rng) -> tuple[list[dict], np.ndarray]:
    dq, dk, a = 6, 5, 8
    q, k, val = rng.normal(size=(B, T, dq)), rng.normal(size=(B, S, dk)), rng.normal(size=(B, S, 3))
    w_q, w_k, v = rng.normal(size=(dq, a)), rng.normal(size=(dk, a)), rng.normal(size=(a,))
    e = np.tanh((q @ w_q)[:, :, None] + (k @ w_k)[:, None]) @ v
    w_ref = np.exp(e - e.max(-1, keepdims=True))
    w_ref /= w_ref.sum(-1, keepdims=True)
    ctx_ref = w_ref @ val
    rows, weights = [], None
    args32 = [np.asarray(x, np.float32) for x in (q, k, val, w_q, w_k, v)]
    for impl in ("xla", "chunked"):
        (ctx, wts), ms = _timed(lambda impl=impl: attn_jax.additive_attention(  # noqa: E731
            *args32, implementation=impl, chunk_size=8, return_weights=True))
        rows.append(dict(primitive="additive_attention", implementation=impl, setting="Bahdanau",
                         shape=str(tuple(ctx.shape)), max_abs_err=float(np.abs(np.asarray(ctx) - ctx_ref).max()),
                         lse_max_abs_err=float(np.abs(np.asarray(wts) - w_ref).max()), ms=ms))
        weights = np.asarray(wts)[0]
    return rows, weights


def score_rows(rng) -> list[dict]:
    q, k = rng.normal(size=(B, T, H)), rng.normal(size=(B, S, H))
    w, w_loc = rng.normal(size=(H, H)), rng.normal(size=(H, S))
    w_q, w_k, v = rng.normal(size=(H, 8)), rng.normal(size=(H, 8)), rng.normal(size=(8,))
    beta = rng.uniform(1, 5, size=(B, T))
    dot = np.einsum("btd,bsd->bts", q, k)
    cos = dot / (np.linalg.norm(q, axis=-1)[..., None] * np.linalg.norm(k, axis=-1)[:, None])
    cases = {
        "dot": (lambda a: scores.dot(a[0], a[1]), dot),
        "scaled_dot": (lambda a: scores.scaled_dot(a[0], a[1]), dot / np.sqrt(H)),
        "general": (lambda a: scores.general(a[0], a[1], a[2]), np.einsum("btd,de,bse->bts", q, w, k)),
        "additive": (lambda a: scores.additive(a[0], a[1], a[4], a[5], a[6]),
                     np.tanh((q @ w_q)[:, :, None] + (k @ w_k)[:, None]) @ v),
        "cosine": (lambda a: scores.cosine(a[0], a[1], a[7]), beta[..., None] * cos),
        "location": (lambda a: scores.location(a[0], a[3]), q @ w_loc),
    }
    args = [jnp.asarray(x, jnp.float32) for x in (q, k, w, w_loc, w_q, w_k, v, beta)]
    rows = []
    for name, (fn, ref) in cases.items():
        out, ms = _timed(lambda fn=fn: fn(args))
        rows.append(dict(primitive=f"scores.{name}", implementation="jnp", setting="",
                         shape=str(tuple(out.shape)), max_abs_err=float(np.abs(np.asarray(out) - ref).max()),
                         lse_max_abs_err=None, ms=ms))
    return rows


def local_rows(rng) -> tuple[list[dict], dict]:
    h = rng.normal(size=(1, T, H)).astype(np.float32)
    sc = rng.normal(size=(1, T, S)).astype(np.float32)
    w_p, v_p = rng.normal(size=(H, 8)).astype(np.float32), rng.normal(size=(8,)).astype(np.float32)
    center_p = attn_jax.predictive_center(h, w_p, v_p, jnp.array([S]))
    center_m = jnp.broadcast_to(jnp.arange(T, dtype=jnp.float32), (1, T))
    rows, pics = [], {}
    for name, c in (("local-m", center_m), ("local-p", center_p)):
        wts, ms = _timed(lambda c=c: attn_jax.local_attention_weights(sc, c, 4, True))  # noqa: E731
        wts = np.asarray(wts)
        outside = np.abs(np.arange(S) - np.asarray(c)[..., None]) > 4
        rows.append(dict(primitive="local_attention_weights", implementation="jnp", setting=f"{name}, D=4, gaussian",
                         shape=str(wts.shape), max_abs_err=float(np.abs(wts[outside]).max(initial=0.0)),
                         lse_max_abs_err=None, ms=ms))
        pics[name] = wts[0]
    return rows, pics


def print_table(rows: list[dict]) -> None:
    head = f"{'primitive':<26}{'impl':<9}{'setting':<24}{'shape':<18}{'max|err|':>10}{'lse/w err':>11}{'ms':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        extra = "" if r["lse_max_abs_err"] is None else f"{r['lse_max_abs_err']:.1e}"
        print(f"{r['primitive']:<26}{r['implementation']:<9}{r['setting']:<24}{r['shape']:<18}"
              f"{r['max_abs_err']:>10.1e}{extra:>11}{r['ms']:>8.2f}")
    print("max|err|: float32 output vs float64 reference (for local attention: weight mass outside the window);")
    print("lse/w err: logsumexp (attention) or weights (additive) vs float64.")


def plot(masks, additive_w, local_pics, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"mask: {k}", m) for k, m in masks.items() if k not in ("plain", "soft-cap 5")]
    panels += [("Bahdanau additive weights", additive_w)]
    panels += [(f"Luong {k} weights", w) for k, w in local_pics.items()]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows))
    for ax, (title, img) in zip(axes.flat, panels):
        ax.imshow(img, cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key s")
        ax.set_ylabel("query t")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"attn_jax tour — T={T}, S={S} (jax {jax.__version__}, {jax.devices()[0].platform})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default runs/tour/<timestamp>)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = args.out or Path("runs/tour") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    att, masks = attention_rows(rng)
    add, add_w = additive_rows(rng)
    loc, loc_pics = local_rows(rng)
    rows = att + add + score_rows(rng) + loc
    print_table(rows)
    plot(masks, add_w, loc_pics, out / "tour.png")
    summary = dict(rows=rows, device=f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
    write_json(out / "summary.json", summary)
    print(f"\nwrote {out / 'tour.png'} and {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
