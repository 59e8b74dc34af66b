"""One encoder for every model, and the classifier heads LRA puts on top of it.

By default the encoder follows LRA's Transformer: token embedding, an optional CLS
token, position embedding, pre-norm blocks (token mixer + MLP, each residual) and a
final LayerNorm. The token mixer is the only thing a model changes.

`block="ssm"` gives the S4/S5 layer instead (lindermanlab/S5 s5/layers.py
SequenceLayer; state-spaces/s4 SequenceResidualBlock): norm -> mixer -> GELU or a
GLU variant -> dropout -> residual, no MLP, BatchNorm or LayerNorm, pre- or
post-norm. The S4/S5 recipes also take a linear map of the pixel value as input
encoder, no position embedding and a linear head; all of these are fields of
`EncoderConfig`, validated when it is built.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.errors import LraError
from lra.models.attention import BIAS_INIT, KERNEL_INIT, MixerShape

POOLINGS = ("cls", "mean")
INTERACTIONS = ("concat", "nli")
BLOCKS = ("transformer", "ssm")
NORMS = ("layer", "batch")
INPUT_ENCODERS = ("embedding", "linear")
# S5's activation_fn choices (lindermanlab/S5 run_train.py, s5/layers.py), and none:
# the mixer output as it is (Mamba's residual block: norm -> mixer -> residual).
ACTIVATIONS = ("gelu", "full_glu", "half_glu1", "half_glu2", "none")
HEADS = ("mlp", "linear")


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
    block: str = "transformer"  # transformer: mixer + MLP | ssm: mixer -> activation, no MLP
    norm: str = "layer"  # layer | batch (BatchNorm over batch and real tokens)
    norm_momentum: float = 0.95  # BatchNorm running-average momentum (S5 run_train.py --bn_momentum)
    prenorm: bool = True  # False: normalise after the residual sum (post-norm)
    activation: str = "gelu"  # ssm block: gelu | full_glu | half_glu1 | half_glu2 (S5) | none
    time_shared_dropout: bool = False  # one dropout mask per sequence, shared over time (S5)
    input_encoder: str = "embedding"  # embedding | linear: a linear map of the pixel value
    pos_emb: bool = True  # add a position embedding (SSMs use none)
    final_norm: bool = True  # norm after the last block
    head: str = "mlp"  # single-sequence head: mlp (LRA: dense, ReLU, dense) | linear (S4/S5)

    def __post_init__(self):
        choices = {"pooling": POOLINGS, "block": BLOCKS, "norm": NORMS,
                   "input_encoder": INPUT_ENCODERS, "activation": ACTIVATIONS, "head": HEADS}
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise LraError(f"encoder.{field}={getattr(self, field)!r} is not one of "
                               f"{', '.join(valid)}")
        for field in ("num_layers", "dim", "num_heads", "qkv_dim", "mlp_dim", "max_len"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LraError(f"encoder.{field} must be a positive integer, got {value!r}")
        for field in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise LraError(f"encoder.{field} must be in [0, 1), got {getattr(self, field)}")
        if not 0.0 <= self.norm_momentum < 1.0:
            raise LraError(f"encoder.norm_momentum must be in [0, 1), got {self.norm_momentum}")
        if self.input_encoder == "linear" and self.vocab_size < 3:
            raise LraError("encoder.input_encoder=linear needs pixel tokens (vocab_size >= 3)")
        if self.learned_pos_emb and not self.pos_emb:
            raise LraError("encoder.learned_pos_emb=true needs encoder.pos_emb=true")
        if self.activation != "gelu" and self.block != "ssm":
            raise LraError(f"encoder.activation={self.activation!r} needs encoder.block=ssm; "
                           "the transformer block has its MLP instead")

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


def make_norm(cfg: EncoderConfig, rngs: nnx.Rngs) -> nnx.Module:
    if cfg.norm == "batch":
        return nnx.BatchNorm(cfg.dim, momentum=cfg.norm_momentum, dtype=cfg.dtype, rngs=rngs)
    return nnx.LayerNorm(cfg.dim, dtype=cfg.dtype, rngs=rngs)


def apply_norm(norm: nnx.Module, x, mask, deterministic: bool):
    """LayerNorm, or BatchNorm: in training, statistics over the real tokens of the
    batch (padding excluded, so it cannot shift them) and an update of the running
    averages; in evaluation, the running averages."""
    if isinstance(norm, nnx.BatchNorm):
        return norm(x, use_running_average=deterministic, mask=mask[..., None])
    return norm(x)


class EncoderBlock(nnx.Module):
    """LRA's Transformer block: mixer and MLP, each residual (pre- or post-norm)."""

    def __init__(self, cfg: EncoderConfig, mixer: nnx.Module, *, rngs: nnx.Rngs):
        self.prenorm = cfg.prenorm
        self.norm1 = make_norm(cfg, rngs)
        self.mixer = mixer
        self.norm2 = make_norm(cfg, rngs)
        self.mlp = MlpBlock(cfg.dim, cfg.mlp_dim, cfg.dropout, cfg.dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, x, mask, *, deterministic, rngs):
        def norm(module, v):
            return apply_norm(module, v, mask, deterministic)

        h = norm(self.norm1, x) if self.prenorm else x
        y = self.mixer(h, mask, deterministic=deterministic, rngs=rngs)
        x = x + self.dropout(y, deterministic=deterministic, rngs=rngs)
        if not self.prenorm:
            x = norm(self.norm1, x)
        h = norm(self.norm2, x) if self.prenorm else x
        x = x + self.mlp(h, deterministic=deterministic, rngs=rngs)
        return x if self.prenorm else norm(self.norm2, x)


class SsmBlock(nnx.Module):
    """The S4/S5 layer: norm -> mixer -> activation -> dropout -> residual, no MLP.

    Activations as S5's `activation_fn` (lindermanlab/S5 s5/layers.py), with
    h = dropout(GELU(y)) for the mixer output y:
      gelu: h;  full_glu: W1 h * sigmoid(W2 h);  half_glu1: h * sigmoid(W2 h);
      half_glu2: y * sigmoid(W2 h); each GLU output gets dropout again;
      none: dropout(y) (Mamba).
    S4's output GLU (Linear to 2H, then GLU) is full_glu.
    """

    def __init__(self, cfg: EncoderConfig, mixer: nnx.Module, *, rngs: nnx.Rngs):
        self.prenorm = cfg.prenorm
        self.activation = cfg.activation
        self.norm = make_norm(cfg, rngs)
        self.mixer = mixer
        dense = dict(dtype=cfg.dtype, rngs=rngs)
        if cfg.activation == "full_glu":
            self.out1 = nnx.Linear(cfg.dim, cfg.dim, **dense)
        if cfg.activation not in ("gelu", "none"):
            self.out2 = nnx.Linear(cfg.dim, cfg.dim, **dense)
        # S5's dropout acts on one [L, H] sequence with broadcast_dims=[0]: one mask per
        # sequence and feature, shared over time. Here axis 1 is time.
        self.dropout = nnx.Dropout(cfg.dropout, broadcast_dims=(1,) if cfg.time_shared_dropout else ())

    def __call__(self, x, mask, *, deterministic, rngs):
        def drop(v):
            return self.dropout(v, deterministic=deterministic, rngs=rngs)

        skip = x
        if self.prenorm:
            x = apply_norm(self.norm, x, mask, deterministic)
        y = self.mixer(x, mask, deterministic=deterministic, rngs=rngs)
        h = drop(y if self.activation == "none" else jax.nn.gelu(y))
        if self.activation == "full_glu":
            h = drop(self.out1(h) * jax.nn.sigmoid(self.out2(h)))
        elif self.activation == "half_glu1":
            h = drop(h * jax.nn.sigmoid(self.out2(h)))
        elif self.activation == "half_glu2":
            h = drop(y * jax.nn.sigmoid(self.out2(h)))
        x = skip + h
        return x if self.prenorm else apply_norm(self.norm, x, mask, deterministic)


BLOCK_CLASSES = {"transformer": EncoderBlock, "ssm": SsmBlock}


def pixel_values(tokens, vocab_size: int, dtype):
    """Tokens 1..vocab_size-1 (a pixel value + 1; 0 = padding) -> [-1, 1], padding -> 0.
    For 8-bit pixels this is (p/255 - 0.5)/0.5, S4/S5's Pathfinder normalisation
    (lindermanlab/S5 s5/dataloaders/lra.py, Normalize(mean=0.5, std=0.5))."""
    value = (tokens.astype(jnp.float32) - 1.0) / (vocab_size - 2) * 2.0 - 1.0
    return jnp.where(tokens > 0, value, 0.0)[..., None].astype(dtype)


class Encoder(nnx.Module):
    """tokens [B, L] (0 = padding) -> features [B, L', dim] and mask [B, L']."""

    def __init__(self, cfg: EncoderConfig, mixer_factory, *, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.input_encoder == "linear":
            self.embed = nnx.Linear(1, cfg.dim, dtype=cfg.dtype, rngs=rngs)
        else:
            self.embed = nnx.Embed(
                cfg.vocab_size, cfg.dim, embedding_init=nnx.initializers.normal(1.0), rngs=rngs
            )
        if cfg.pooling == "cls":
            self.cls = nnx.Param(jnp.zeros((1, 1, cfg.dim)))
        if cfg.pos_emb and cfg.learned_pos_emb:
            self.pos = nnx.Param(
                nnx.initializers.normal(0.02)(rngs.params(), (cfg.seq_len, cfg.dim))
            )
        elif cfg.pos_emb:
            self.pos = nnx.Variable(jnp.asarray(sinusoidal_table(cfg.seq_len, cfg.dim)))
        self.dropout = nnx.Dropout(cfg.dropout)
        block = BLOCK_CLASSES[cfg.block]
        self.blocks = nnx.List(
            [block(cfg, mixer_factory(rngs), rngs=rngs) for _ in range(cfg.num_layers)]
        )
        if cfg.final_norm:
            self.norm = make_norm(cfg, rngs)

    def __call__(self, tokens, *, deterministic=True, rngs=None):
        cfg = self.cfg
        mask = tokens > 0
        if cfg.input_encoder == "linear":
            x = self.embed(pixel_values(tokens, cfg.vocab_size, cfg.dtype))
        else:
            x = self.embed(tokens)
        if cfg.pooling == "cls":
            cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, cfg.dim)).astype(x.dtype)
            x = jnp.concatenate([cls, x], axis=1)
            mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
        if cfg.pos_emb:
            x = x + self.pos[...][: x.shape[1]]
        if cfg.block == "transformer":  # the S4/S5 stacks have no input dropout
            x = self.dropout(x, deterministic=deterministic, rngs=rngs)
        x = x.astype(cfg.dtype)
        for block in self.blocks:
            x = block(x, mask, deterministic=deterministic, rngs=rngs)
        if cfg.final_norm:
            x = apply_norm(self.norm, x, mask, deterministic)
        return x, mask


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
        if cfg.head == "mlp":
            self.hidden = nnx.Linear(cfg.dim, cfg.mlp_dim, rngs=rngs)
        self.logits = nnx.Linear(cfg.mlp_dim if cfg.head == "mlp" else cfg.dim, num_classes,
                                 rngs=rngs)

    def __call__(self, tokens, *, deterministic=True, rngs=None):
        x, mask = self.encoder(tokens, deterministic=deterministic, rngs=rngs)
        h = pool(x, mask, self.pooling).astype(jnp.float32)
        if hasattr(self, "hidden"):
            h = jax.nn.relu(self.hidden(h))
        return self.logits(h)


class DualClassifier(nnx.Module):
    """Two sequences [B, 2, L] -> class logits through one shared encoder (Retrieval)."""

    def __init__(
        self, cfg: EncoderConfig, mixer_factory, num_classes: int, interaction: str, *, rngs
    ):
        if cfg.head != "mlp":
            raise LraError(f"encoder.head={cfg.head!r} is for single-sequence tasks; the "
                           "two-document head is LRA's MLP: set encoder.head=mlp")
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
