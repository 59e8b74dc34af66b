"""GPU-only checks: the fused cuDNN attention path agrees with the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.models import EncoderConfig, build_model
from lra.models.attention import MixerShape
from lra.models.transformer import SoftmaxAttention

pytestmark = pytest.mark.gpu


def test_cudnn_attention_matches_xla_in_bf16_with_padding():
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (2, 256, 4, 64), jnp.bfloat16) for key in keys)
    mask = jnp.arange(256)[None, :] < jnp.array([[256], [130]])
    shape = MixerShape(dim=256, num_heads=4, qkv_dim=256, seq_len=256, dtype=jnp.bfloat16)
    out = {}
    for impl in ("xla", "cudnn"):
        layer = SoftmaxAttention(shape, implementation=impl, rngs=nnx.Rngs(0))
        out[impl] = np.asarray(layer.attend(q, k, v, mask, deterministic=True, rngs=None), np.float32)
    # Rows of real queries must agree to bf16 precision.
    np.testing.assert_allclose(out["cudnn"][0], out["xla"][0], atol=2e-2, rtol=2e-2)
    np.testing.assert_allclose(out["cudnn"][1, :130], out["xla"][1, :130], atol=2e-2, rtol=2e-2)


def test_auto_picks_cudnn_for_bf16_and_trains():
    cfg = EncoderConfig(vocab_size=20, max_len=128, num_layers=2, dim=128, num_heads=2, qkv_dim=128,
                        mlp_dim=256, dropout=0.0, attention_dropout=0.0, dtype=jnp.bfloat16)
    model = build_model("transformer", {}, cfg, 3, rngs=nnx.Rngs(0))
    assert model.encoder.blocks[0].mixer._fused_backend() == "cudnn"
    tokens = jax.random.randint(jax.random.key(1), (4, 128), 1, 20)
    logits = model(tokens)
    assert logits.shape == (4, 3) and bool(jnp.isfinite(logits).all())


def test_cudnn_trains_at_an_odd_length_like_xla():
    """A CLS token makes lengths odd; cuDNN's backward needs even ones (padded inside)."""
    keys = jax.random.split(jax.random.key(1), 3)
    q, k, v = (jax.random.normal(key, (2, 257, 4, 64), jnp.bfloat16) for key in keys)
    mask = jnp.arange(257)[None, :] < jnp.array([[257], [130]])
    shape = MixerShape(dim=256, num_heads=4, qkv_dim=256, seq_len=257, dtype=jnp.bfloat16)
    grads = {}
    for impl in ("xla", "cudnn"):
        layer = SoftmaxAttention(shape, implementation=impl, rngs=nnx.Rngs(0))

        def loss(q, k, v):
            out = layer.attend(q, k, v, mask, deterministic=True, rngs=None)
            return jnp.where(mask[:, :, None, None], out, 0).astype(jnp.float32).sum()

        grads[impl] = [np.asarray(g, np.float32) for g in jax.grad(loss, argnums=(0, 1, 2))(q, k, v)]
    for a, b in zip(grads["cudnn"], grads["xla"]):
        np.testing.assert_allclose(a, b, atol=5e-2, rtol=5e-2)
