"""The one attention interface that every attention variant implements.

`SelfAttention` owns the query/key/value and output projections and the head
split; a variant overrides `attend`, which maps per-head queries, keys and
values of shape [batch, length, heads, head_dim] and a key padding mask of shape
[batch, length] (True = real token) to outputs of the same shape as the queries.
Variants that need their own parameters (Linformer's projections, Sinkhorn's
sorting network) create them in `__init__` after calling `super().__init__`.
Variants whose mixing is not query-key attention (Synthesizer) override
`__call__` instead and stay interchangeable, because the encoder only relies on
the token-mixer call `mixer(x, mask, deterministic=..., rngs=...)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from lra.errors import LraError

# LRA initialises attention and MLP kernels with Xavier-uniform and biases near zero.
KERNEL_INIT = nnx.initializers.xavier_uniform()
BIAS_INIT = nnx.initializers.normal(stddev=1e-6)


class SsmParam(nnx.Param):
    """A state-space parameter (A's eigenvalues, B, the log step size).

    The S4/S5/LRU recipes train these at their own learning rate (`trainer.ssm_lr`)
    with no weight decay. Marking them by type, not by leaf name, keeps a norm's
    `scale` or a projection's `B` elsewhere from being caught by accident
    (S5's own code matches leaf names: lindermanlab/S5 issue #10).
    """


@dataclasses.dataclass(frozen=True)
class MixerShape:
    """What a token mixer needs to know about the encoder it sits in."""

    dim: int  # model width
    num_heads: int
    qkv_dim: int  # total width of queries/keys/values across heads
    seq_len: int  # longest sequence the mixer sees (CLS token included)
    attention_dropout: float = 0.0
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32
    cls_token: bool = False  # position 0 is a CLS token (sparse patterns make it global)
    layer: int = 0  # which encoder layer the mixer sits in (DiNAT alternates dilations)

    @property
    def head_dim(self) -> int:
        return self.qkv_dim // self.num_heads


@dataclasses.dataclass(frozen=True)
class MixerOptions:
    """A mixer's options, one frozen dataclass per mixer (its class attribute `Options`).

    The fields are the options a model config may set and their defaults are the
    ones `configs/model/<name>.yaml` states (a test keeps the two equal).
    `__post_init__` rejects values that are wrong whatever the encoder; the mixer's
    `check(shape, options)` rejects those that do not fit the encoder's shape.
    """

    @classmethod
    def names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def parse(cls, options: Mapping[str, Any], model: str):
        """Options from a config mapping; an unknown name lists the valid ones."""
        for key in options:
            if key not in cls.names():
                raise LraError(
                    f"model '{model}' has no option '{key}'; its options are: "
                    f"{', '.join(cls.names()) or 'none'}"
                )
        return cls(**options)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """An option that must be an integer >= minimum (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise LraError(f"model.{name}={value!r} must be {rule}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise LraError(f"model.{name}={value!r} must be true or false")
    return value


def check_positive(name: str, value: Any) -> float:
    """An option that must be a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise LraError(f"model.{name}={value!r} must be a positive number")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise LraError(f"model.{name}={value!r} is not one of {', '.join(choices)}")
    return value


class TokenMixer(nnx.Module):
    """What the encoder calls: `mixer(x [B, L, dim], mask [B, L], deterministic=, rngs=)`.

    A mixer with options declares them as a nested `Options(MixerOptions)`
    dataclass; the constructor takes them as keywords and keeps them, validated,
    as `self.options`.
    """

    Options = MixerOptions
    # Whether cost and memory grow linearly with length (`lra bench` fits their memory;
    # the contract suite proves no L x L intermediate).
    linear_time = False

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options: Any):
        del rngs  # subclasses draw their parameters from it
        self.shape = shape
        self.options = self.Options.parse(options, type(self).__name__)

    @classmethod
    def check(cls, shape: MixerShape, options: MixerOptions) -> None:
        """Reject, at config time, options that cannot work with this encoder shape."""

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        raise NotImplementedError


class SelfAttention(TokenMixer):
    """Multi-head self-attention; subclasses implement `attend`."""

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options: Any):
        super().__init__(shape, rngs=rngs, **options)
        dense = dict(
            use_bias=False, kernel_init=KERNEL_INIT, dtype=shape.dtype, rngs=rngs
        )
        self.query = nnx.Linear(shape.dim, shape.qkv_dim, **dense)
        self.key = nnx.Linear(shape.dim, shape.qkv_dim, **dense)
        self.value = nnx.Linear(shape.dim, shape.qkv_dim, **dense)
        self.out = nnx.Linear(shape.qkv_dim, shape.dim, **dense)
        self.attention_dropout = nnx.Dropout(shape.attention_dropout)

    @classmethod
    def check(cls, shape: MixerShape, options: MixerOptions) -> None:
        super().check(shape, options)
        if shape.qkv_dim % shape.num_heads:
            raise LraError(
                f"encoder.num_heads={shape.num_heads} does not divide "
                f"encoder.qkv_dim={shape.qkv_dim}; pick a divisor"
            )

    def split_heads(self, x: jax.Array) -> jax.Array:
        b, length, _ = x.shape
        return x.reshape(b, length, self.shape.num_heads, self.shape.head_dim)

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        q = self.split_heads(self.query(x))
        k = self.split_heads(self.key(x))
        v = self.split_heads(self.value(x))
        out = self.attend(q, k, v, mask, deterministic=deterministic, rngs=rngs)
        b, length = x.shape[:2]
        return self.out(out.reshape(b, length, self.shape.qkv_dim))

    def attend(self, q, k, v, mask, *, deterministic: bool, rngs):
        raise NotImplementedError

    def drop_weights(self, weights, deterministic: bool, rngs):
        """Dropout on attention weights, as LRA applies it."""
        return self.attention_dropout(weights, deterministic=deterministic, rngs=rngs)


def masked_softmax_attention(q, k, v, mask, *, bias=None, weights_hook=None):
    """Exact softmax attention with an explicit score matrix (the reference form).

    q: [B, Lq, H, D]; k, v: [B, Lk, H, D]; mask: [B, Lk] key mask or a boolean array
    broadcastable to [B, H, Lq, Lk]. Rows whose keys are all masked give zeros.
    """
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if bias is not None:
        scores = scores + bias
    if mask.ndim == 2:
        mask = mask[:, None, None, :]
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    weights = jnp.where(mask, weights, 0.0).astype(v.dtype)
    if weights_hook is not None:
        weights = weights_hook(weights)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
