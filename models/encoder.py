"""One encoder for every model, and the classifier heads LRA puts on top of it.

The encoder follows LRA's Transformer: token embedding, an optional CLS token,
position embedding, pre-norm blocks (token mixer + MLP, each residual) and a
final LayerNorm. The token mixer is the only thing a model changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.models.attention import BIAS_INIT, KERNEL_INIT, MixerShape

POOLINGS = ("cls", "mean")
INTERACTIONS = ("concat", "nli")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int
    max_len: int  # tokens per sequence, CLS not counted
    num_layers: int = 6
    dim: int = 512
    num_heads: int = 8
    qkv_dim: int = 512
    mlp_dim: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pooling: str = "cls"
    learned_pos_emb: bool = False
    dtype: Any = jnp.float32

    @property
    def seq_len(self) -> int:
        """Length the mixers see: the tokens plus the CLS token when pooling on it."""
        return self.max_len + (1 if self.pooling == "cls" else 0)

    def mixer_shape(self) -> MixerShape:
        return MixerShape(
            dim=self.dim,
            num_heads=self.num_heads,
            qkv_dim=self.qkv_dim,
            seq_len=self.seq_len,
            attention_dropout=self.attention_dropout,
            dtype=self.dtype,
            cls_token=self.pooling == "cls",
        )


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """The fixed sine/cosine position table LRA uses when positions are not learned."""
    position = np.arange(length)[:, None]
    div = np.exp(np.arange(0, dim, 2) * -(np.log(10000.0) / dim))
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div)
    return table


class MlpBlock(nnx.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, dtype, *, rngs: nnx.Rngs):
        dense = dict(kernel_init=KERNEL_INIT, bias_init=BIAS_INIT, dtype=dtype, rngs=rngs)
        self.up = nnx.Linear(dim, hidden, **dense)
        self.down = nnx.Linear(hidden, dim, **dense)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, *, deterministic, rngs):
        x = self.dropout(jax.nn.gelu(self.up(x)), deterministic=deterministic, rngs=rngs)
        return self.dropout(self.down(x), deterministic=deterministic, rngs=rngs)


class EncoderBlock(nnx.Module):
    def __init__(self, cfg: EncoderConfig, mixer: nnx.Module, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(cfg.dim, dtype=cfg.dtype, rngs=rngs)
        self.mixer = mixer
        self.norm2 = nnx.LayerNorm(cfg.dim, dtype=cfg.dtype, rngs=rngs)
        self.mlp = MlpBlock(cfg.dim, cfg.mlp_dim, cfg.dropout, cfg.dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, x, mask, *, deterministic, rngs):
        y = self.mixer(self.norm1(x), mask, deterministic=deterministic, rngs=rngs)
        x = x + self.dropout(y, deterministic=deterministic, rngs=rngs)
        return x + self.mlp(self.norm2(x), deterministic=deterministic, rngs=rngs)


class Encoder(nnx.Module):
    """tokens [B, L] (0 = padding) -> features [B, L', dim] and mask [B, L']."""

    def __init__(self, cfg: EncoderConfig, mixer_factory, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(
            cfg.vocab_size, cfg.dim, embedding_init=nnx.initializers.normal(1.0), rngs=rngs
        )
        if cfg.pooling == "cls":
            self.cls = nnx.Param(jnp.zeros((1, 1, cfg.dim)))
        if cfg.learned_pos_emb:
            self.pos = nnx.Param(
                nnx.initializers.normal(0.02)(rngs.params(), (cfg.seq_len, cfg.dim))
            )
        else:
            self.pos = nnx.Variable(jnp.asarray(sinusoidal_table(cfg.seq_len, cfg.dim)))
        self.dropout = nnx.Dropout(cfg.dropout)
        self.blocks = nnx.List(
            [EncoderBlock(cfg, mixer_factory(rngs), rngs=rngs) for _ in range(cfg.num_layers)]
        )
        self.norm = nnx.LayerNorm(cfg.dim, dtype=cfg.dtype, rngs=rngs)

    def __call__(self, tokens, *, deterministic=True, rngs=None):
        mask = tokens > 0
        x = self.embed(tokens)
        if self.cfg.pooling == "cls":
            cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, self.cfg.dim))
            x = jnp.concatenate([cls, x], axis=1)
            mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
        x = x + self.pos[...][: x.shape[1]]
        x = self.dropout(x, deterministic=deterministic, rngs=rngs).astype(self.cfg.dtype)
        for block in self.blocks:
            x = block(x, mask, deterministic=deterministic, rngs=rngs)
        return self.norm(x), mask


def pool(x, mask, pooling: str):
    """CLS token, or the mean over real tokens (LRA's mean also counted padding)."""
    if pooling == "cls":
        return x[:, 0]
    weights = mask[..., None].astype(x.dtype)
    return (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


class Classifier(nnx.Module):
    """One sequence -> class logits (ListOps, Text, Image, Pathfinder)."""

    def __init__(self, cfg: EncoderConfig, mixer_factory, num_classes: int, *, rngs: nnx.Rngs):
        self.pooling = cfg.pooling
        self.encoder = Encoder(cfg, mixer_factory, rngs=rngs)
        self.hidden = nnx.Linear(cfg.dim, cfg.mlp_dim, rngs=rngs)
        self.logits = nnx.Linear(cfg.mlp_dim, num_classes, rngs=rngs)

    def __call__(self, tokens, *, deterministic=True, rngs=None):
        x, mask = self.encoder(tokens, deterministic=deterministic, rngs=rngs)
        h = pool(x, mask, self.pooling).astype(jnp.float32)
        return self.logits(jax.nn.relu(self.hidden(h)))


class DualClassifier(nnx.Module):
    """Two sequences [B, 2, L] -> class logits through one shared encoder (Retrieval)."""

    def __init__(
        self, cfg: EncoderConfig, mixer_factory, num_classes: int, interaction: str, *, rngs
    ):
        self.pooling = cfg.pooling
        self.interaction = interaction
        self.encoder = Encoder(cfg, mixer_factory, rngs=rngs)
        width = cfg.dim * (4 if interaction == "nli" else 2)
        self.hidden = nnx.Linear(width, cfg.mlp_dim, rngs=rngs)
        self.hidden2 = nnx.Linear(cfg.mlp_dim, cfg.mlp_dim // 2, rngs=rngs)
        self.logits = nnx.Linear(cfg.mlp_dim // 2, num_classes, rngs=rngs)

    def __call__(self, tokens, *, deterministic=True, rngs=None):
        b = tokens.shape[0]
        # Both documents go through the encoder as one batch of 2B sequences.
        x, mask = self.encoder(
            tokens.reshape(2 * b, -1), deterministic=deterministic, rngs=rngs
        )
        pooled = pool(x, mask, self.pooling).astype(jnp.float32).reshape(b, 2, -1)
        u, v = pooled[:, 0], pooled[:, 1]
        feats = [u, v, u * v, u - v] if self.interaction == "nli" else [u, v]
        h = jax.nn.relu(self.hidden(jnp.concatenate(feats, axis=-1)))
        return self.logits(jax.nn.relu(self.hidden2(h)))
