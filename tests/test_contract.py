"""One contract suite over every implementation of every attention op.

As tokamax's test bases: :class:`AttentionContract` holds the cases of the
contract (docs/design.md) — every mask kind alone and combined, GQA/MQA, Hv != H,
T != S, T = 1 and 37, bias with its gradient, soft-cap, the differentiable
residual, empty rows, bfloat16, determinism — and is subclassed once per
implementation. The oracle is written here, in float64 jnp, from the definitions
(nothing of attn_jax): forward outputs, residuals and gradients are compared with
it. Shapes are small so the Pallas kernels run in interpret mode within budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax import additive_attention, decode_attention, dot_product_attention

B, N, K, H = 2, 4, 2, 16


def _dense_keep(t, s, *, is_causal=False, window=None, q_len=None, kv_len=None, q_seg=None, kv_seg=None, mask=None):
    """The visibility ``[B, N or 1, T, S]`` from the definitions, in numpy."""
    i, j = np.arange(t)[:, None], np.arange(s)[None, :]
    keep = np.ones((B, 1, t, s), bool)
    if is_causal:
        keep &= j <= i
    if window is not None:
        keep &= (j >= i - window[0]) & (j <= i + window[1])
    if q_len is not None:
        keep &= (i < np.asarray(q_len)[:, None, None, None])
    if kv_len is not None:
        keep &= (j < np.asarray(kv_len)[:, None, None, None])
    if q_seg is not None:
        keep &= np.asarray(q_seg)[:, None, :, None] == np.asarray(kv_seg)[:, None, None, :]
    if mask is not None:
        keep = keep & np.asarray(mask)
    return keep


def _oracle(q, k, v, bias, keep, scale, soft_cap):
    """float64 attention from the definitions: ``(out [B,T,N,Hv], lse [B,T,N])``; empty rows 0 / -inf."""
    g = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
    s = jnp.einsum("BTNH,BSNH->BNTS", q, k) * scale
    if bias is not None:
        s = s + bias
    if soft_cap is not None:
        s = soft_cap * jnp.tanh(s / soft_cap)
    keep = jnp.asarray(keep) & (s > -jnp.inf)
    m = jnp.max(jnp.where(keep, s, -1e300), axis=-1, keepdims=True)
    p = jnp.where(keep, jnp.exp(jnp.where(keep, s, 0.0) - m), 0.0)
    l = jnp.sum(p, axis=-1, keepdims=True)
    empty = l == 0
    out = jnp.einsum("BNTS,BSNH->BTNH", p / jnp.where(empty, 1.0, l), v)
    lse = jnp.where(empty[..., 0], -jnp.inf, (m + jnp.log(jnp.where(empty, 1.0, l)))[..., 0])
    return out, jnp.swapaxes(lse, 1, 2)


def _case(name, rng):
    """(arrays, keyword arguments, dense keep) of one contract case."""
    t, s, kh, hv = 37, 29, K, H
    kw, keep_kw = {}, {}
    if name == "t1":
        t = 1
    if name == "mqa":
        kh = 1
    if name == "hv_differs":
        hv = 24
    if name == "causal":
        kw["is_causal"] = keep_kw["is_causal"] = True
    if name == "window":
        kw["local_window_size"] = keep_kw["window"] = (5, 2)
    if name == "causal_window":
        kw.update(is_causal=True, local_window_size=(6, 0))
        keep_kw.update(is_causal=True, window=(6, 0))
    if name == "lengths":
        kw["query_seq_lengths"] = keep_kw["q_len"] = np.array([t, 20])
        kw["key_value_seq_lengths"] = keep_kw["kv_len"] = np.array([s, 11])
    if name in ("segments", "combined"):
        q_seg = np.sort(rng.integers(0, 3, (B, t)), axis=1)
        kv_seg = np.sort(rng.integers(0, 3, (B, s)), axis=1)
        kw.update(q_segment_ids=q_seg, kv_segment_ids=kv_seg)
        keep_kw.update(q_seg=q_seg, kv_seg=kv_seg)
    if name in ("mask", "combined"):
        mask = rng.random((B, N, t, s)) > 0.3
        kw["mask"] = keep_kw["mask"] = mask
    if name == "combined":
        kw.update(is_causal=True, key_value_seq_lengths=np.array([s, 17]))
        keep_kw.update(is_causal=True, kv_len=np.array([s, 17]))
    if name == "empty_rows":  # rows 3.. of batch 1 see nothing; row 0 of batch 0 is masked whole
        kw["query_seq_lengths"] = keep_kw["q_len"] = np.array([t, 3])
        mask = np.ones((B, 1, t, s), bool)
        mask[0, :, 0] = False
        kw["mask"] = keep_kw["mask"] = mask
    q = rng.normal(size=(B, t, N, H))
    k = rng.normal(size=(B, s, kh, H))
    v = rng.normal(size=(B, s, kh, hv))
    bias = rng.normal(size=(1, N, t, s)) if name in ("bias", "combined") else None
    if name == "soft_cap":
        kw["logits_soft_cap"] = 2.0
    return (q, k, v, bias), kw, _dense_keep(t, s, **keep_kw)


CASES = ["plain", "t1", "mqa", "hv_differs", "causal", "window", "causal_window", "lengths", "segments", "mask",
         "bias", "soft_cap", "combined", "empty_rows"]


def _loss(out, lse):
    """Weights every output and the (finite) residual, so the residual's gradient is tested too."""
    w = jnp.cos(jnp.arange(out.size, dtype=out.dtype).reshape(out.shape))
    return jnp.sum(out * w) + 0.3 * jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0))


class AttentionContract:
    """The contract of ``dot_product_attention``; subclasses set ``implementation``."""

    implementation: str
    atol = 2e-5

    @pytest.mark.parametrize("case", CASES)
    def test_forward_and_backward_match_the_float64_oracle(self, case):
        rng = np.random.default_rng(CASES.index(case))
        (q, k, v, bias), kw, keep = _case(case, rng)
        scale = 1.0 / np.sqrt(H)
        soft_cap = kw.get("logits_soft_cap")
        args = [q, k, v] + ([bias] if bias is not None else [])

        def ours(*a):
            a = [jnp.asarray(x, jnp.float32) for x in a]
            out, lse = dot_product_attention(*a[:3], a[3] if len(a) > 3 else None, implementation=self.implementation,
                                             return_residual=True, **kw)
            return out, lse

        def oracle(*a):
            with jax.enable_x64(True):
                a = [jnp.asarray(x, jnp.float64) for x in a]
                return _oracle(*a[:3], a[3] if len(a) > 3 else None, keep, scale, soft_cap)

        out, lse = ours(*args)
        with jax.enable_x64(True):
            want_out, want_lse = oracle(*args)
            want_grads = jax.grad(lambda *a: _loss(*oracle(*a)), argnums=tuple(range(len(args))))(*args)
            want_out, want_lse = np.asarray(want_out), np.asarray(want_lse)
            want_grads = [np.asarray(g) for g in want_grads]
        np.testing.assert_allclose(out, want_out, atol=self.atol, rtol=1e-4)
        np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(want_lse))  # -inf exactly for empty rows
        fin = np.isfinite(want_lse)
        np.testing.assert_allclose(np.asarray(lse)[fin], want_lse[fin], atol=self.atol, rtol=1e-4)
        grads = jax.grad(lambda *a: _loss(*ours(*a)), argnums=tuple(range(len(args))))(
            *[jnp.asarray(x, jnp.float32) for x in args])
        for name, g, want in zip(["q", "k", "v", "bias"], grads, want_grads):
            np.testing.assert_allclose(g, want, atol=20 * self.atol, rtol=1e-3, err_msg=f"d{name}")
        if case == "empty_rows":  # zero output and zero gradient for the rows that see nothing
            assert not np.any(np.asarray(out)[1, 3:]) and not np.any(np.asarray(grads[0])[1, 3:])

    def test_bfloat16_is_close_to_float32(self):
        rng = np.random.default_rng(7)
        (q, k, v, _), kw, _ = _case("causal", rng)
        f32 = dot_product_attention(*(jnp.asarray(x, jnp.float32) for x in (q, k, v)), implementation="xla", **kw)
        bf16 = dot_product_attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)),
                                     implementation=self.implementation, **kw)
        assert bf16.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(bf16, np.float32), f32, atol=3e-2, rtol=3e-2)

    def test_deterministic(self):
        rng = np.random.default_rng(8)
        (q, k, v, bias), kw, _ = _case("combined", rng)
        a = [jnp.asarray(x, jnp.float32) for x in (q, k, v, bias)]
        fn = jax.jit(jax.grad(lambda *x: jnp.sum(dot_product_attention(*x, implementation=self.implementation,
                                                                      **kw) ** 2), argnums=(0, 1, 2, 3)))
        first, second = fn(*a), fn(*a)
        for x, y in zip(first, second):
            np.testing.assert_array_equal(x, y)


class TestXla(AttentionContract):
    implementation = "xla"


class TestChunked(AttentionContract):
    implementation = "chunked"


class TestPallasTriton(AttentionContract):
    implementation = "pallas_triton"


class TestPallasMosaicTpu(AttentionContract):
    implementation = "pallas_mosaic_tpu"


# --- additive_attention over its implementations --------------------------------------------------


def _additive_oracle(q, k, v, w_q, w_k, w, keep):
    e = jnp.tanh((q @ w_q)[:, :, None, :] + (k @ w_k)[:, None, :, :]) @ w
    m = jnp.max(jnp.where(keep, e, -1e300), axis=-1, keepdims=True)
    p = jnp.where(keep, jnp.exp(jnp.where(keep, e, 0.0) - m), 0.0)
    l = jnp.sum(p, axis=-1, keepdims=True)
    empty = l == 0
    out = (p / jnp.where(empty, 1.0, l)) @ v
    return out, jnp.where(empty[..., 0], -jnp.inf, (m + jnp.log(jnp.where(empty, 1.0, l)))[..., 0])


@pytest.mark.parametrize("impl", ["xla", "chunked", "pallas_triton"])
@pytest.mark.parametrize("case", ["plain", "t1", "causal", "lengths", "mask", "empty_rows"])
def test_additive_contract(impl, case):
    rng = np.random.default_rng(["plain", "t1", "causal", "lengths", "mask", "empty_rows"].index(case))
    t, s = (1 if case == "t1" else 37), 29
    q, k, v = rng.normal(size=(B, t, 6)), rng.normal(size=(B, s, 5)), rng.normal(size=(B, s, 3))
    w_q, w_k, w = rng.normal(size=(6, 8)), rng.normal(size=(5, 8)), rng.normal(size=(8,))
    kw, keep = {}, np.ones((B, t, s), bool)
    if case == "causal":
        kw["is_causal"] = True
        keep &= np.tril(np.ones((t, s), bool))
    if case == "lengths":
        kw["key_value_seq_lengths"] = np.array([s, 9])
        keep[1, :, 9:] = False
    if case in ("mask", "empty_rows"):
        mask = rng.random((B, t, s)) > 0.3
        if case == "empty_rows":
            mask[1, 4] = False
        kw["mask"] = mask
        keep &= mask
    args = (q, k, v, w_q, w_k, w)

    def ours(*a):
        return additive_attention(*(jnp.asarray(x, jnp.float32) for x in a), implementation=impl,
                                  return_residual=True, **kw)

    with jax.enable_x64(True):
        def oracle(*a):
            return _additive_oracle(*(jnp.asarray(x, jnp.float64) for x in a), keep)

        want_out, want_lse = (np.asarray(x) for x in oracle(*args))
        want_grads = [np.asarray(g) for g in jax.grad(lambda *a: _loss(*oracle(*a)), argnums=(0, 1, 2, 3, 4, 5))(*args)]
    out, lse = ours(*args)
    np.testing.assert_allclose(out, want_out, atol=2e-5, rtol=1e-4)
    np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(want_lse))
    grads = jax.grad(lambda *a: _loss(*ours(*a)), argnums=(0, 1, 2, 3, 4, 5))(*args)
    for g, want in zip(grads, want_grads):
        np.testing.assert_allclose(g, want, atol=5e-4, rtol=1e-3)


# --- decode_attention over its implementations ----------------------------------------------------


@pytest.mark.parametrize("impl", ["xla", "chunked", "pallas_triton"])
@pytest.mark.parametrize("layout", ["contiguous", "paged"])
@pytest.mark.parametrize("soft_cap", [None, 3.0])
def test_decode_contract(impl, layout, soft_cap):
    rng = np.random.default_rng(3)
    page, pages = 16, 3
    q = rng.normal(size=(B, N, H))
    lengths = np.array([37, 0])  # a zero length gives zeros
    if layout == "contiguous":
        kc, vc = rng.normal(size=(B, page * pages, K, H)), rng.normal(size=(B, page * pages, K, 24))
        table, dense_k, dense_v = None, kc, vc
    else:
        kc, vc = rng.normal(size=(7, page, K, H)), rng.normal(size=(7, page, K, 24))
        table = np.array([[4, 0, 6], [2, 5, 1]])
        dense_k, dense_v = kc[table].reshape(B, -1, K, H), vc[table].reshape(B, -1, K, 24)
    out = decode_attention(*(jnp.asarray(x, jnp.float32) for x in (q, kc, vc)), jnp.asarray(lengths),
                           page_table=None if table is None else jnp.asarray(table), logits_soft_cap=soft_cap,
                           implementation=impl)
    keep = (np.arange(dense_k.shape[1])[None, None, None, :] < lengths[:, None, None, None])
    with jax.enable_x64(True):
        want, _ = _oracle(*(jnp.asarray(x, jnp.float64) for x in (q[:, None], dense_k, dense_v)), None, keep,
                          1.0 / np.sqrt(H), soft_cap)
        want = np.asarray(want)[:, 0]
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=1e-4)
    assert not np.any(np.asarray(out)[1])
