"""The shared encoder and the softmax Transformer: mathematics and padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.errors import LraError
from lra.models import EncoderConfig, build_model, check_model
from lra.models.attention import MixerShape, masked_softmax_attention
from lra.models.transformer import SoftmaxAttention, even_length_attention


def reference_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(d)) v over unmasked keys, in float64 numpy."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(np.asarray(mask)[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


def qkv(seed, b=2, length=19, h=2, d=8):
    keys = jax.random.split(jax.random.key(seed), 3)
    return [jax.random.normal(key, (b, length, h, d)) for key in keys]


def test_explicit_and_fused_xla_attention_equal_the_definition():
    q, k, v = qkv(0)
    mask = jnp.arange(19)[None, :] < jnp.array([[19], [11]])
    expected = reference_attention(q, k, v, mask)
    shape = MixerShape(dim=16, num_heads=2, qkv_dim=16, seq_len=19)
    for implementation in ("explicit", "xla"):
        layer = SoftmaxAttention(shape, implementation=implementation, rngs=nnx.Rngs(0))
        got = layer.attend(q, k, v, mask, deterministic=True, rngs=None)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(masked_softmax_attention(q, k, v, mask)), expected, atol=1e-5)


@pytest.mark.parametrize("length", [19, 20])
def test_the_even_length_form_given_to_cudnn_equals_the_definition(length):
    """cuDNN trains only even lengths; an odd one gets a hidden extra position. The
    same code runs here through XLA, which takes the same length arguments."""
    q, k, v = qkv(3, length=length)
    lengths = jnp.array([length, 11])
    mask = jnp.arange(length)[None, :] < lengths[:, None]
    got = np.asarray(even_length_attention(q, k, v, lengths, "xla"))
    assert got.shape == q.shape
    real = np.asarray(mask)  # padded query rows are ignored downstream
    np.testing.assert_allclose(got[real], reference_attention(q, k, v, mask)[real], atol=1e-5)
    grad = jax.grad(lambda q: even_length_attention(q, k, v, lengths, "xla")[mask].sum())(q)
    expected = jax.grad(lambda q: masked_softmax_attention(q, k, v, mask)[mask].sum())(q)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), atol=1e-5)


def tiny_config(pooling, **kw):
    return EncoderConfig(vocab_size=11, max_len=24, num_layers=2, dim=16, num_heads=2,
                         qkv_dim=16, mlp_dim=32, dropout=0.1, attention_dropout=0.1,
                         pooling=pooling, **kw)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_appending_padding_does_not_change_the_logits(pooling):
    model = build_model("transformer", {}, tiny_config(pooling), 3, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 1, 11)
    padded = jnp.concatenate([tokens, jnp.zeros((3, 14), tokens.dtype)], axis=1)
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(model(padded)), atol=1e-5)


def test_padding_invariance_holds_for_the_two_tower_model():
    model = build_model("transformer", {}, tiny_config("cls"), 2, pair=True, interaction="nli",
                        rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(2), (2, 2, 9), 1, 11)
    padded = jnp.concatenate([tokens, jnp.zeros((2, 2, 5), tokens.dtype)], axis=2)
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(model(padded)), atol=1e-5)


def test_two_tower_logits_depend_on_the_second_document():
    model = build_model("transformer", {}, tiny_config("mean"), 2, pair=True, interaction="concat",
                        rngs=nnx.Rngs(0))
    a = jax.random.randint(jax.random.key(3), (1, 2, 12), 1, 11)
    b = a.at[0, 1].set(jax.random.randint(jax.random.key(4), (12,), 1, 11))
    assert not np.allclose(np.asarray(model(a)), np.asarray(model(b)))


def test_dropout_is_active_only_in_training():
    model = build_model("transformer", {}, tiny_config("cls"), 3, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(5), (2, 10), 1, 11)
    eval_a, eval_b = model(tokens), model(tokens)
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    train_a = model(tokens, deterministic=False, rngs=nnx.Rngs(1))
    train_b = model(tokens, deterministic=False, rngs=nnx.Rngs(2))
    assert not np.allclose(np.asarray(train_a), np.asarray(train_b))


def test_bf16_compute_is_close_to_fp32():
    cfg32 = tiny_config("cls")
    cfg16 = tiny_config("cls", dtype=jnp.bfloat16)
    m32 = build_model("transformer", {}, cfg32, 3, rngs=nnx.Rngs(0))
    m16 = build_model("transformer", {}, cfg16, 3, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(6), (2, 10), 1, 11)
    out32, out16 = np.asarray(m32(tokens)), np.asarray(m16(tokens))
    assert out16.dtype == np.float32  # the head runs in float32
    assert np.abs(out32 - out16).max() < 0.1 * (np.abs(out32).max() + 1)


def test_invalid_shapes_are_rejected_at_config_time():
    with pytest.raises(LraError, match="does not divide"):
        check_model("transformer", {}, EncoderConfig(vocab_size=5, max_len=8, num_heads=3, qkv_dim=16))
    with pytest.raises(LraError, match="no option 'window'"):
        check_model("transformer", {"window": 3}, tiny_config("cls"))
    with pytest.raises(LraError, match="pooling"):
        check_model("transformer", {}, tiny_config("max"))
    with pytest.raises(LraError, match="unknown model 'nope'"):
        check_model("nope", {}, tiny_config("cls"))
