"""SAGAN modules: spectral norm against the SVD, the self-attention block (identity at init, the paper's maps),
generator/discriminator shapes and conditioning, hinge losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_jax.nn.sagan import Discriminator, Generator, SelfAttention2D, SNLinear, hinge_losses, spectral_normalize


def test_spectral_normalisation_divides_by_the_largest_singular_value():
    w = jax.random.normal(jax.random.key(0), (3, 3, 8, 16))
    top = np.linalg.svd(np.asarray(w).reshape(-1, 16), compute_uv=False)[0]
    normed, sigma = spectral_normalize(w, jax.random.normal(jax.random.key(1), (16,)), 200)
    assert float(sigma) == pytest.approx(top, rel=1e-4)
    assert float(spectral_normalize(w, jax.random.normal(jax.random.key(1), (16,)), 3)[1]) == pytest.approx(
        top, rel=0.1)  # the default 3 iterations: a slight underestimate
    assert np.linalg.svd(np.asarray(normed).reshape(-1, 16), compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
    lin = SNLinear(6, 4, rngs=nnx.Rngs(0), power_iterations=200)
    x = jax.random.normal(jax.random.key(2), (5, 6))
    w_hat = np.asarray(lin.kernel[...]) / np.linalg.svd(np.asarray(lin.kernel[...]), compute_uv=False)[0]
    np.testing.assert_allclose(lin(x), np.asarray(x) @ w_hat, atol=1e-4)


def test_self_attention_block_is_the_identity_at_init_and_the_papers_attention_after():
    block = SelfAttention2D(16, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 16))
    np.testing.assert_array_equal(block(x), x)  # gamma = 0
    block.gamma[...] = jnp.asarray(0.7)
    beta = block.attention(x)
    assert beta.shape == (2, 16, 16)
    np.testing.assert_allclose(beta.sum(-1), 1.0, atol=1e-5)
    h = np.asarray(block.h(x)).reshape(2, 16, 8)
    read = np.einsum("bji,bic->bjc", np.asarray(beta), h).reshape(2, 4, 4, 8)
    np.testing.assert_allclose(block(x), np.asarray(x) + 0.7 * np.asarray(block.v(jnp.asarray(read))), atol=1e-4)
    with pytest.raises(ValueError, match="multiple of 8"):
        SelfAttention2D(12, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("attention_at", [0, 8, 16])
def test_generator_and_discriminator_shapes_and_conditioning(attention_at):
    g = Generator(10, rngs=nnx.Rngs(0), z_features=8, channels=16, blocks=2, attention_at=attention_at)
    d = Discriminator(10, rngs=nnx.Rngs(1), channels=16, blocks=2, size=16,
                      attention_at=attention_at if attention_at != 16 else 16)
    z = jax.random.normal(jax.random.key(2), (3, 8))
    labels = jnp.array([0, 1, 2])
    images = g(z, labels)
    assert images.shape == (3, 16, 16, 1) and float(jnp.max(jnp.abs(images))) <= 1.0
    np.testing.assert_allclose(g(z, jnp.array([3, 4, 5])), images, atol=1e-6)  # at init every class is alike
    shift = g.blocks[0].shift.embedding
    shift[...] = jax.random.normal(jax.random.key(3), shift.shape)  # as training would make them differ
    assert not np.allclose(g(z, jnp.array([3, 4, 5])), g(z, labels))  # then the class changes the image
    scores = d(images, labels)
    assert scores.shape == (3,) and np.all(np.isfinite(np.asarray(scores)))
    assert not np.allclose(d(images, jnp.array([3, 4, 5])), scores)  # projection term
    with pytest.raises(ValueError, match="attention_at"):
        Generator(10, rngs=nnx.Rngs(0), attention_at=12)


def test_hinge_losses_by_hand():
    d, g = hinge_losses(jnp.array([2.0, 0.5]), jnp.array([-3.0, 0.0]))
    assert float(d) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert float(g) == pytest.approx(1.5)
