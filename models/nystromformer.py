"""Nystromformer (Xiong et al., 2021, "Nystromformer: A Nystrom-Based Algorithm for
Approximating Self-Attention", arXiv:2102.03902).

softmax(Q K^T / sqrt(d)) V is approximated through m landmarks Q~, K~ (segment
means of the queries and keys):

    F = softmax(Q K~^T),  A = softmax(Q~ K~^T),  B = softmax(Q~ K^T),
    out = F A^+ (B V) + conv(V),

with A^+ the Moore-Penrose pseudo-inverse by the paper's iteration
Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4 from Z0 = A^T / (||A||_1 ||A||_inf),
and conv a depthwise convolution over the sequence on the values, one kernel per
head (the paper's skip connection).

Padding: the landmarks are segment means of each example's real tokens (landmark j
averages tokens floor(j n / m) .. ceil((j + 1) n / m) - 1 of the n real ones, never
empty, one token each when n = m); padded keys are masked in B and padded values
are zero before the convolution. Appending padding therefore changes nothing, and
with m = n (and no convolution) the formula is exact softmax attention (tested).
With fewer real tokens than landmarks the segments repeat tokens and A is
singular: the paper's iteration then amplifies rounding in A's null space by about
13/4 per step, harmless at its six steps, not at many more. Cost O(L m).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lra.registry import MODELS
from lra.models.attention import MixerOptions, SelfAttention, check_int
from lra.models.blocks import acc_dtype, joint_softmax, scaled_scores


def segment_means(x, mask, m: int):
    """Landmarks [B, m, H, D]: means of each example's real tokens in m segments."""
    n = mask.sum(axis=-1, dtype=jnp.int32)[:, None, None]  # [B, 1, 1]
    j = jnp.arange(m)[None, :, None]
    pos = jnp.arange(x.shape[1])[None, None, :]
    lo = (j * n) // m
    hi = -((-(j + 1) * n) // m)
    member = ((pos >= lo) & (pos < hi) & mask[:, None, :]).astype(acc_dtype(x.dtype))
    total = jnp.einsum("bml,blhd->bmhd", member, x, preferred_element_type=member.dtype)
    return total / jnp.maximum(member.sum(-1), 1.0)[..., None, None]


def iterative_pinv(a, iterations: int):
    """Moore-Penrose pseudo-inverse of a [..., m, m] by the paper's third-order iteration."""
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    norm1 = jnp.abs(a).sum(-2).max(-1)  # largest column sum
    norm_inf = jnp.abs(a).sum(-1).max(-1)  # largest row sum
    z = jnp.swapaxes(a, -1, -2) / (norm1 * norm_inf)[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@MODELS.register("nystromformer")
class NystromAttention(SelfAttention):
    """Nystrom approximation of softmax attention with segment-mean landmarks."""

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        num_landmarks: int = 64
        pinv_iterations: int = 6
        conv_kernel_size: int = 33  # 0: no convolution skip

        def __post_init__(self):
            check_int("num_landmarks", self.num_landmarks)
            check_int("pinv_iterations", self.pinv_iterations)
            check_int("conv_kernel_size", self.conv_kernel_size, minimum=0)

    def __init__(self, shape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        size = self.options.conv_kernel_size
        if size:
            init = nnx.initializers.normal(size ** -0.5)
            self.conv = nnx.Param(init(rngs.params(), (shape.num_heads, size)))

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        m = self.options.num_landmarks
        acc = acc_dtype(q.dtype)
        q_land, k_land = segment_means(q, mask, m), segment_means(k, mask, m)
        ones = jnp.ones((1, 1, 1, m), bool)
        (f,) = joint_softmax([scaled_scores("bqhd,bmhd->bhqm", q, k_land)], [ones])
        (a,) = joint_softmax([scaled_scores("bmhd,bnhd->bhmn", q_land, k_land)], [ones])
        (b,) = joint_softmax([scaled_scores("bmhd,bkhd->bhmk", q_land, k)],
                             [mask[:, None, None, :]])
        b = self.drop_weights(b, deterministic, rngs)
        v = jnp.where(mask[..., None, None], v, 0)
        bv = jnp.einsum("bhmk,bkhd->bhmd", b, v.astype(acc))
        out = jnp.einsum("bhqm,bhmn,bhnd->bqhd", f, iterative_pinv(a, self.options.pinv_iterations), bv)
        if self.options.conv_kernel_size:
            out = out + self.value_conv(v.astype(acc))
        return out.astype(q.dtype)

    def value_conv(self, v):
        """Depthwise convolution over the sequence, one kernel per head shared by its dims."""
        b, length, h, d = v.shape
        size = self.options.conv_kernel_size
        kernel = jnp.repeat(self.conv[...].astype(v.dtype), d, axis=0)  # [H * D, size]
        out = jax.lax.conv_general_dilated(
            v.reshape(b, length, h * d), kernel.T[:, None, :], window_strides=(1,),
            padding=[(size // 2, size - 1 - size // 2)], feature_group_count=h * d,
            dimension_numbers=("NWC", "WIO", "NWC"))
        return out.reshape(b, length, h, d)
