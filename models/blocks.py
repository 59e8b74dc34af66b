"""Blockwise helpers shared by the block-sparse attentions (local, sparse_transformer,
longformer, bigbird, sinkhorn): scores in (at least) float32, a numerically stable
softmax normalised jointly over several groups of keys, right-padding to blocks,
and the CLS-token test.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from lra.models.attention import MixerShape

# Large negative score for masked entries. Finite, so that `score - max` never
# produces inf - inf and the exponentials of masked entries are exactly zero.
NEG = -1e30


def acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: float32 for 16-bit compute, float64 stays float64."""
    return jnp.promote_types(dtype, jnp.float32)


def scaled_scores(spec: str, q: jax.Array, k: jax.Array) -> jax.Array:
    """q.k / sqrt(d) through `jnp.einsum(spec)`, accumulated in acc_dtype."""
    acc = acc_dtype(q.dtype)
    s = jnp.einsum(spec, q, k, preferred_element_type=acc)
    return s * jnp.asarray(q.shape[-1] ** -0.5, acc)


def joint_softmax(scores: Sequence[jax.Array], masks: Sequence[jax.Array]) -> list[jax.Array]:
    """Softmax over the concatenation of several score groups along their last axis.

    scores[i]: [..., n_i] (same leading shape); masks[i]: boolean, broadcastable to
    scores[i]. Masked entries get weight exactly 0; a row with no unmasked entry in
    any group gets all-zero weights (no NaN, in the forward or the backward pass).
    """
    masked = [jnp.where(m, s, NEG) for s, m in zip(scores, masks)]
    top = masked[0].max(axis=-1, keepdims=True)
    for s in masked[1:]:
        top = jnp.maximum(top, s.max(axis=-1, keepdims=True))
    top = jax.lax.stop_gradient(top)
    exps = [jnp.where(m, jnp.exp(s - top), 0.0) for s, m in zip(masked, masks)]
    denom = exps[0].sum(axis=-1, keepdims=True)
    for e in exps[1:]:
        denom = denom + e.sum(axis=-1, keepdims=True)
    inv = 1.0 / jnp.where(denom > 0, denom, 1.0)
    return [e * inv for e in exps]


def weighted_values(spec: str, weights: jax.Array, v: jax.Array) -> jax.Array:
    """weights @ v through `jnp.einsum(spec)`; weights cast to v's dtype, sums in acc_dtype."""
    return jnp.einsum(spec, weights.astype(v.dtype), v, preferred_element_type=acc_dtype(v.dtype))


def pad_axis1(x: jax.Array, length: int) -> jax.Array:
    """Right-pad axis 1 with zeros (False for masks) up to `length`."""
    extra = length - x.shape[1]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, extra)
    return jnp.pad(x, widths)


def to_blocks(x: jax.Array, block: int) -> jax.Array:
    """[B, nb * block, ...] -> [B, nb, block, ...] (contiguous blocks)."""
    return x.reshape(x.shape[0], x.shape[1] // block, block, *x.shape[2:])


def blocked(x: jax.Array, block: int, num_blocks: int) -> jax.Array:
    """Right-pad axis 1 to num_blocks * block and cut it into contiguous blocks."""
    return to_blocks(pad_axis1(x, num_blocks * block), block)


def cls_token(shape: MixerShape) -> bool:
    """Whether position 0 is a CLS token (the encoder pools on it)."""
    return shape.cls_token
