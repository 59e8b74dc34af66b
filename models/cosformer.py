"""cosFormer (Qin et al., 2022, "cosFormer: Rethinking Softmax in Attention",
arXiv:2202.08791), the bidirectional (non-causal) form.

Attention weights s_ij = relu(q_i) . relu(k_j) cos(pi/2 (i - j) / M), normalised
over j, which is linear in length because cos(a - b) = cos a cos b + sin a sin b:

    out_i = [c_i q'_i (sum_j c_j k'_j v_j^T) + s_i q'_i (sum_j s_j k'_j v_j^T)]
            / [c_i q'_i . sum_j c_j k'_j + s_i q'_i . sum_j s_j k'_j],

with c_i = cos(pi i / 2M), s_i = sin(pi i / 2M) and q' = relu(q), k' = relu(k).
The paper takes M as the sequence length; we take each example's number of real
tokens n (positions 0..n-1, so |i - j| < M and every weight is >= 0), which makes
the output independent of appended padding. Padded keys are zeroed.
"""

from __future__ import annotations

import jax.numpy as jnp

from lra.registry import MODELS
from lra.models.attention import SelfAttention
from lra.models.blocks import acc_dtype

EPS = 1e-6  # keeps the denominator positive when relu zeroes every product


def reweighting(mask, dtype):
    """cos and sin of pi i / 2M per position, M = the example's real length: [B, L, 1, 1]."""
    n = mask.sum(axis=-1, keepdims=True).astype(dtype)
    angle = (jnp.pi / 2) * jnp.arange(mask.shape[1], dtype=dtype)[None, :] / jnp.maximum(n, 1)
    return jnp.cos(angle)[..., None, None], jnp.sin(angle)[..., None, None]


@MODELS.register("cosformer")
class CosformerAttention(SelfAttention):
    """ReLU features with cos-based re-weighting, computed in linear time."""

    linear_time = True

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        del deterministic, rngs  # no attention matrix to drop out
        acc = acc_dtype(q.dtype)
        cos, sin = reweighting(mask, acc)
        qf = jnp.maximum(q.astype(acc), 0)
        kf = jnp.where(mask[..., None, None], jnp.maximum(k.astype(acc), 0), 0)
        v = v.astype(acc)
        num = jnp.zeros(q.shape, acc)
        den = jnp.zeros(q.shape[:3], acc)
        for w in (cos, sin):
            kv = jnp.einsum("blhd,blhe->bhde", w * kf, v)
            num = num + jnp.einsum("blhd,bhde->blhe", w * qf, kv)
            den = den + jnp.einsum("blhd,bhd->blh", w * qf, (w * kf).sum(axis=1))
        return (num / (den + EPS)[..., None]).astype(q.dtype)
