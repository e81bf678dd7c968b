"""SNAIL blocks: causal convolution and attention against numpy, causality by Jacobian, the classifier's variants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn.snail import AttentionBlock, CausalConv1D, DenseBlock, SNAILClassifier, TCBlock, tc_dilations


def test_causal_conv_is_the_dilated_kernel_2_convolution():
    conv = CausalConv1D(3, 4, 2, rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 7, 3)), np.float64)
    w, b = np.asarray(conv.kernel[...], np.float64), np.asarray(conv.bias[...], np.float64)
    ref = np.stack([(x[:, t - 2] @ w[0] if t >= 2 else 0.0) + x[:, t] @ w[1] + b for t in range(7)], axis=1)
    np.testing.assert_allclose(conv(jnp.asarray(x, jnp.float32)), ref, atol=1e-5)
    with pytest.raises(ValueError, match="dilation"):
        CausalConv1D(3, 4, 0, rngs=nnx.Rngs(0))


def test_tc_block_dilations_and_widths():
    assert tc_dilations(6) == [1, 2, 4] and tc_dilations(2) == [1] and tc_dilations(101) == [1, 2, 4, 8, 16, 32, 64]
    tc = TCBlock(5, 6, 7, rngs=nnx.Rngs(0))
    assert [b.f.dilation for b in tc.blocks] == [1, 2, 4] and tc.out_features == 5 + 3 * 7
    x = jnp.ones((2, 6, 5))
    y = tc(x)
    assert y.shape == (2, 6, 26)
    np.testing.assert_array_equal(y[..., :5], x)  # dense: the input passes through
    d = DenseBlock(5, 3, 1, rngs=nnx.Rngs(1))
    assert np.all(np.abs(np.asarray(d(x)[..., 5:])) < 1)  # tanh * sigmoid


def test_attention_block_is_causal_softmax_attention():
    att = AttentionBlock(6, 4, 3, rngs=nnx.Rngs(2))
    x = jax.random.normal(jax.random.key(3), (2, 5, 6))
    q, k, v = (np.asarray(f(x), np.float64) for f in (att.query, att.key, att.value))
    logits = np.einsum("btk,bsk->bts", q, k) / 2.0
    logits = np.where(np.tril(np.ones((5, 5), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = att(x)
    np.testing.assert_allclose(out[..., 6:], np.einsum("bts,bsv->btv", p, v), atol=1e-5)
    np.testing.assert_allclose(att.weights(x), p, atol=1e-5)
    np.testing.assert_array_equal(out[..., :6], x)


@pytest.mark.parametrize("model", ["snail", "tc-only", "attn-only"])
def test_classifier_is_causal_over_the_episode(model):
    clf = SNAILClassifier(3, 2, model=model, filters=8, tc_filters=8, attention=((8, 4), (8, 4), (8, 4)),
                          rngs=nnx.Rngs(0))
    kinds = {type(layer).__name__ for layer in clf.layers}
    assert kinds == {"snail": {"AttentionBlock", "TCBlock"}, "tc-only": {"TCBlock"},
                     "attn-only": {"AttentionBlock"}}[model]
    t = clf.length
    images = jax.random.uniform(jax.random.key(4), (3, t, 28, 28))
    labels = jnp.array([[0, 1, 2, 0, 1, 2, 1], [2, 1, 0, 0, 1, 2, 0], [1, 1, 0, 2, 0, 2, 2]])
    logits = clf(images, labels)
    assert logits.shape == (3, t, 3)
    # the query's label is hidden from the model
    np.testing.assert_allclose(clf(images, labels.at[:, -1].set(0)), logits, atol=1e-6)
    jac = jax.jacobian(lambda im: clf(im, labels)[0].sum(-1))(images)[:, 0]  # [T_out, T_in, H, W] of episode 0
    norms = np.asarray(jnp.abs(jac).sum((-1, -2)))
    assert np.all(norms[np.triu(np.ones((t, t), bool), k=1)] == 0.0)
    assert np.all(np.diag(norms) > 0.0) and norms[-1, 0] > 0.0  # the query sees the first support image


def test_classifier_errors_and_episodes_independent_of_their_batch():
    with pytest.raises(ValueError, match="unknown model"):
        SNAILClassifier(5, 1, model="lstm", rngs=nnx.Rngs(0))
    kw = dict(filters=8, tc_filters=8, attention=((8, 4), (8, 4), (8, 4)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown norm"):
        SNAILClassifier(2, 1, norm="batch", **kw)
    clf = SNAILClassifier(2, 1, **kw)
    clf.norm_mean[...], clf.norm_var[...] = jnp.full((8,), 0.3), jnp.full((8,), 2.0)
    images = jax.random.uniform(jax.random.key(7), (4, 3, 28, 28))
    labels = jnp.array([[0, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0]])
    together = clf(images, labels)
    for b in range(4):  # an episode's logits do not depend on the others in its batch (a batch of one works)
        np.testing.assert_allclose(clf(images[b:b + 1], labels[b:b + 1])[0], together[b], atol=1e-5)
    # the stored statistics standardise every embedding, and receive no gradient through the logits
    logits, e = clf(images, labels, return_embedding=True)
    x = clf.features(images, labels)
    np.testing.assert_allclose(x[..., :8], (e - 0.3) / np.sqrt(2.0 + 1e-5), atol=1e-5)
    grads = nnx.grad(lambda m: jnp.sum(m(images, labels) ** 2))(clf)
    assert float(jnp.abs(grads["norm_mean"][...]).sum()) == 0.0 and float(jnp.abs(grads["norm_var"][...]).sum()) == 0
    plain = SNAILClassifier(2, 1, norm="none", **kw)
    assert plain(images[:1], labels[:1]).shape == (1, 3, 2) and not hasattr(plain, "norm_mean")
