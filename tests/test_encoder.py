"""The encoder's S4/S5 options: the SSM block's activations, time-shared dropout,
BatchNorm (masked statistics in training, running averages in evaluation), the
linear pixel input encoder and the config validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.errors import LraError
from lra.models import EncoderConfig, build_model
from lra.models.encoder import Classifier, Encoder, SsmBlock, pixel_values


class Doubler(nnx.Module):
    """A stand-in token mixer: y = 2x."""

    def __call__(self, x, mask, *, deterministic=True, rngs=None):
        return 2.0 * x


class Zero(nnx.Module):
    def __call__(self, x, mask, *, deterministic=True, rngs=None):
        return jnp.zeros_like(x)


def ssm_config(**kw):
    base = dict(vocab_size=11, max_len=12, num_layers=1, dim=8, num_heads=1, qkv_dim=8,
                mlp_dim=16, dropout=0.0, attention_dropout=0.0, pooling="mean", block="ssm",
                pos_emb=False, final_norm=False, head="linear")
    return EncoderConfig(**{**base, **kw})


def gelu(v):
    return np.asarray(jax.nn.gelu(v))


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def dense(layer, v):
    return v @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])


def layer_norm(v):
    mu = v.mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(v.var(-1, keepdims=True) + 1e-6)


@pytest.mark.parametrize("activation", ["gelu", "full_glu", "half_glu1", "half_glu2", "none"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_ssm_block_activations_follow_s5(activation, prenorm):
    block = SsmBlock(ssm_config(activation=activation, prenorm=prenorm), Doubler(),
                     rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, 8)))
    mask = jnp.ones((2, 5), bool)
    y = 2.0 * (layer_norm(x) if prenorm else x)
    h = y if activation == "none" else gelu(y)
    if activation == "full_glu":
        h = dense(block.out1, h) * sigmoid(dense(block.out2, h))
    elif activation == "half_glu1":
        h = h * sigmoid(dense(block.out2, h))
    elif activation == "half_glu2":
        h = y * sigmoid(dense(block.out2, h))
    expected = x + h if prenorm else layer_norm(x + h)
    np.testing.assert_allclose(np.asarray(block(jnp.asarray(x), mask, deterministic=True,
                                                rngs=None)), expected, atol=2e-5)


def test_time_shared_dropout_uses_one_mask_per_sequence_and_feature():
    cfg = ssm_config(dropout=0.5, time_shared_dropout=True, prenorm=False, norm="layer")
    block = SsmBlock(cfg, Doubler(), rngs=nnx.Rngs(0))
    x = jnp.ones((4, 6, 8))
    # post-norm of x + h: h is gelu(2) or 0, so kept features differ from dropped ones.
    out = np.asarray(block(x, jnp.ones((4, 6), bool), deterministic=False, rngs=nnx.Rngs(3)))
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape), atol=1e-6)
    assert not np.allclose(out[:, 0], out[:1, 0])  # masks differ between sequences
    plain = SsmBlock(ssm_config(dropout=0.5, prenorm=False), Doubler(), rngs=nnx.Rngs(0))
    out = np.asarray(plain(x, jnp.ones((4, 6), bool), deterministic=False, rngs=nnx.Rngs(3)))
    assert not np.allclose(out, np.broadcast_to(out[:, :1], out.shape))


def test_linear_input_encoder_maps_the_pixel_value():
    tokens = jnp.array([[1, 129, 256, 0]])
    np.testing.assert_allclose(np.asarray(pixel_values(tokens, 257, jnp.float32))[0, :, 0],
                               [-1.0, 128 / 255 * 2 - 1, 1.0, 0.0], atol=1e-6)
    cfg = ssm_config(vocab_size=257, input_encoder="linear")
    encoder = Encoder(cfg, lambda rngs: Zero(), rngs=nnx.Rngs(0))
    x, mask = encoder(tokens)
    value = np.array([-1.0, 128 / 255 * 2 - 1, 1.0])[:, None]
    np.testing.assert_allclose(np.asarray(x)[0, :3], dense(encoder.embed, value), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(mask), [[True, True, True, False]])


def test_batchnorm_trains_on_masked_batch_statistics_and_evaluates_on_running_averages():
    cfg = ssm_config(norm="batch", norm_momentum=0.9)
    model = Classifier(cfg, lambda rngs: Doubler(), 3, rngs=nnx.Rngs(0))
    norm = model.encoder.blocks[0].norm
    tokens = jax.random.randint(jax.random.key(1), (4, 7), 1, 11)
    tokens = tokens.at[1, 4:].set(0)
    emb = np.asarray(model.encoder.embed(tokens))
    real = np.asarray(tokens > 0)
    model(tokens, deterministic=False, rngs=nnx.Rngs(0))
    # one training call: running mean = 0.9 * 0 + 0.1 * (mean over real tokens)
    np.testing.assert_allclose(np.asarray(norm.mean[...]), 0.1 * emb[real].mean(0), atol=1e-6)
    for _ in range(3):
        model(tokens, deterministic=False, rngs=nnx.Rngs(0))
    moved = np.asarray(norm.mean[...]).copy()
    # Evaluation: each example alone (running statistics), and the stats stay put.
    other = jax.random.randint(jax.random.key(2), (4, 7), 1, 11)
    pair_a = jnp.concatenate([tokens[:2], other[:2]])
    pair_b = jnp.concatenate([tokens[:2], other[2:]])
    np.testing.assert_allclose(np.asarray(model(pair_a))[:2], np.asarray(model(pair_b))[:2],
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(norm.mean[...]), moved)
    train_a = model(pair_a, deterministic=False, rngs=nnx.Rngs(0))
    train_b = model(pair_b, deterministic=False, rngs=nnx.Rngs(0))
    assert not np.allclose(np.asarray(train_a)[:2], np.asarray(train_b)[:2])


def test_batchnorm_statistics_ignore_padding():
    """Appending padding changes neither the training-mode logits nor the running stats."""
    cfg = ssm_config(norm="batch", num_layers=2, final_norm=True)
    tokens = jax.random.randint(jax.random.key(4), (3, 7), 1, 11).at[2, 5:].set(0)
    padded = jnp.concatenate([tokens, jnp.zeros((3, 5), tokens.dtype)], axis=1)
    results = []
    for t in (tokens, padded):
        model = build_model("s5", {"state_size": 4, "blocks": 1}, cfg, 3, rngs=nnx.Rngs(0))
        logits = model(t, deterministic=False, rngs=nnx.Rngs(0))
        results.append((np.asarray(logits), np.asarray(model.encoder.norm.var[...])))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-5)


def test_defaults_are_the_transformer_encoder():
    cfg = EncoderConfig(vocab_size=5, max_len=8)
    assert (cfg.block, cfg.norm, cfg.prenorm, cfg.input_encoder, cfg.pos_emb, cfg.head) == (
        "transformer", "layer", True, "embedding", True, "mlp")


@pytest.mark.parametrize("field, value, message", [
    ("block", "rnn", "encoder.block='rnn' is not one of transformer, ssm"),
    ("norm", "group", "encoder.norm='group' is not one of layer, batch"),
    ("activation", "relu", "encoder.activation='relu' is not one of gelu, full_glu"),
    ("input_encoder", "conv", "encoder.input_encoder='conv' is not one of embedding, linear"),
    ("head", "deep", "encoder.head='deep' is not one of mlp, linear"),
    ("dim", 0, "encoder.dim must be a positive integer"),
    ("norm_momentum", 1.0, "encoder.norm_momentum must be in"),
])
def test_bad_encoder_fields_are_one_line_errors(field, value, message):
    with pytest.raises(LraError, match=message.replace("(", r"\(")):
        ssm_config(**{field: value})


def test_glu_needs_the_ssm_block():
    with pytest.raises(LraError, match="needs encoder.block=ssm"):
        EncoderConfig(vocab_size=5, max_len=8, activation="full_glu")
