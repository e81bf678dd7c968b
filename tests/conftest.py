"""Shared test helpers: an independent float64 numpy reference and input factories.

The reference below is written from the definition (softmax over visible keys,
empty rows -> zeros / -inf) with numpy loops and broadcasting; it shares no code
with attn_jax, so an error in attn_jax's mask or softmax code cannot hide in it.

``smoke_run``: each experiment's smoke run, made once per session and shared by
the experiment's own smoke test and tests/test_run_dirs.py's rerun check.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import typing
from pathlib import Path

import numpy as np
import pytest


def np_visible(
    b, t, s, *, is_causal=False, window=None, q_len=None, kv_len=None, q_seg=None, kv_seg=None
):
    """Boolean ``[B, T, S]`` visibility from the contract's definitions."""
    i = np.arange(t)[:, None]
    j = np.arange(s)[None, :]
    vis = np.ones((b, t, s), bool)
    if is_causal:
        vis &= (j <= i)[None]
    if window is not None:
        left, right = (window, window) if isinstance(window, int) else window
        vis &= ((j >= i - left) & (j <= i + right))[None]
    if q_len is not None:
        vis &= np.arange(t)[None, :, None] < np.asarray(q_len).reshape(b, 1, 1)
    if kv_len is not None:
        vis &= np.arange(s)[None, None, :] < np.asarray(kv_len).reshape(b, 1, 1)
    if q_seg is not None:
        vis &= np.asarray(q_seg)[:, :, None] == np.asarray(kv_seg)[:, None, :]
    return vis


def np_attention(q, k, v, *, bias=None, mask=None, scale=None, softcap=None, **mask_kw):
    """float64 reference. ``q [B,T,N,H]``, ``k [B,S,K,H]``, ``v [B,S,K,Hv]``.

    Returns ``out [B,T,N,Hv]`` and ``lse [B,T,N]`` (zeros / -inf for empty rows).
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    g = n // kh
    scale = 1.0 / np.sqrt(h) if scale is None else scale
    k_rep = np.repeat(k, g, axis=2)  # head n uses kv head n // g
    v_rep = np.repeat(v, g, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k_rep) * scale
    if bias is not None:
        logits = logits + np.broadcast_to(np.asarray(bias, np.float64), logits.shape)
    if softcap is not None:
        logits = softcap * np.tanh(logits / softcap)
    vis = np_visible(b, t, s, **mask_kw)[:, None]
    if mask is not None:
        vis = vis & np.broadcast_to(np.asarray(mask), (b, n, t, s))
    vis = np.broadcast_to(vis, logits.shape)
    out = np.zeros((b, n, t, v.shape[-1]))
    lse = np.full((b, n, t), -np.inf)
    for bi in range(b):
        for ni in range(n):
            for ti in range(t):
                keep = vis[bi, ni, ti]
                if not keep.any():
                    continue
                row = logits[bi, ni, ti][keep]
                m = row.max()
                w = np.exp(row - m)
                lse[bi, ni, ti] = m + np.log(w.sum())
                out[bi, ni, ti] = (w / w.sum()) @ v_rep[bi, keep, ni]
    return out.transpose(0, 2, 1, 3), lse.transpose(0, 2, 1)


def np_additive(q, k, val, w_q, w_k, v, vis):
    """float64: returns context [B,T,Dv], lse [B,T] (-inf for empty), weights [B,T,S]."""
    e = np.tanh((q @ w_q)[:, :, None, :] + (k @ w_k)[:, None, :, :]) @ v
    b, t, s = e.shape
    ctx, lse, wts = np.zeros((b, t, val.shape[-1])), np.full((b, t), -np.inf), np.zeros((b, t, s))
    for bi in range(b):
        for ti in range(t):
            keep = vis[bi, ti]
            if keep.any():
                row = e[bi, ti][keep]
                m = row.max()
                p = np.exp(row - m)
                lse[bi, ti] = m + np.log(p.sum())
                wts[bi, ti, keep] = p / p.sum()
                ctx[bi, ti] = wts[bi, ti] @ val[bi]
    return ctx, lse, wts


def make_qkv(rng, b, t, s, n, kh, h, hv=None, dtype=np.float32):
    hv = h if hv is None else hv
    q = rng.normal(size=(b, t, n, h)).astype(dtype)
    k = rng.normal(size=(b, s, kh, h)).astype(dtype)
    v = rng.normal(size=(b, s, kh, hv)).astype(dtype)
    return q, k, v


def assert_close_with_inf(actual, expected, atol, rtol=0.0):
    """allclose where both may hold -inf at the same places."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    fin = np.isfinite(expected)
    np.testing.assert_allclose(actual[fin], expected[fin], atol=atol, rtol=rtol)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class SmokeRun(typing.NamedTuple):
    """One experiment's smoke run: its ``--out`` folder, what ``main`` returned and what it printed."""

    out: Path
    argv: list
    result: object
    stdout: str


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``smoke_run(name)``: ``experiments.<name>``'s smoke preset, run once per test session and shared.

    The experiment tests check what the run wrote; tests/test_run_dirs.py reruns it into the same folder (which
    must train nothing and change no file). Sharing the first run keeps that rerun check cheap."""
    runs: dict[str, SmokeRun] = {}

    def get(name: str) -> SmokeRun:
        if name not in runs:
            out = tmp_path_factory.mktemp(f"smoke_{name}")
            argv = ["--preset", "smoke", "--out", str(out), "--set", "train.progress=false"]
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                result = importlib.import_module(f"experiments.{name}").main(list(argv))
            runs[name] = SmokeRun(out, argv, result, printed.getvalue())
        return runs[name]

    return get


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """After each test file, drop jax's compiled programs and collect garbage.

    A pytest-xdist worker runs hundreds of files in one process; jit caches keep every executable a
    file compiled alive until the process ends, so a worker's memory only grows. Clearing between
    files bounds it by the largest file instead of the sum of all of them.
    """
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
