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
from typing import Any

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

    @property
    def head_dim(self) -> int:
        return self.qkv_dim // self.num_heads


class SelfAttention(nnx.Module):
    """Multi-head self-attention; subclasses implement `attend`."""

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs):
        self.shape = shape
        dense = dict(
            use_bias=False, kernel_init=KERNEL_INIT, dtype=shape.dtype, rngs=rngs
        )
        self.query = nnx.Linear(shape.dim, shape.qkv_dim, **dense)
        self.key = nnx.Linear(shape.dim, shape.qkv_dim, **dense)
        self.value = nnx.Linear(shape.dim, shape.qkv_dim, **dense)
        self.out = nnx.Linear(shape.qkv_dim, shape.dim, **dense)
        self.attention_dropout = nnx.Dropout(shape.attention_dropout)

    @classmethod
    def check(cls, shape: MixerShape, options: dict[str, Any]) -> None:
        """Reject, at config time, a configuration that cannot work."""
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
