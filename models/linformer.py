"""Linformer: softmax attention over keys/values projected to k along the length.

Wang et al., 2020. Keys and values [B, L, H, D] are projected along the sequence
with learned E, F of shape [k, seq_len]: K' = E[:, :L] K, V' = F[:, :L] V, and the
queries attend to the k rows of K', V' with ordinary softmax attention, so the
score matrix is L x k, never L x L.

Following LRA (lra_benchmarks/models/linformer/linformer_attention.py): one
projection kernel is shared by keys and values and across heads (`share_kv`,
default true, LRA's single `lr_kernel`), initialised Xavier-uniform, and an input
shorter than seq_len uses the first L columns. LRA's default k is its
`low_rank_features=16` (LinformerBlock never overrides it).

Padding (LRA ignores the mask): padded keys and values are zeroed before the
projection, so the columns of E, F at padded positions multiply zeros and
padding cannot contribute. What holds exactly: appending padding on the right
leaves the outputs at real tokens unchanged, and whatever sits at padded
positions never matters. What does not hold (by construction of Linformer): the
output is not a softmax over the real keys only -- each projected key mixes
real positions with position-specific weights, and the k projected rows are all
attended to. With E = F = I (k = L) and no padding it is exact softmax attention.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.attention import (
    KERNEL_INIT,
    MixerOptions,
    MixerShape,
    SelfAttention,
    check_bool,
    check_int,
    masked_softmax_attention,
)


def low_rank_project(x, proj, mask):
    """x [B, L, H, D], proj [k, >= L], mask [B, L] -> [B, k, H, D] (float32 sums)."""
    length = x.shape[1]
    x = jnp.where(mask[:, :, None, None], x, jnp.zeros((), x.dtype))
    out = jnp.einsum(
        "kl,blhd->bkhd",
        proj[:, :length].astype(x.dtype),
        x,
        preferred_element_type=jnp.float32,
    )
    return out.astype(x.dtype)


@MODELS.register("linformer")
class LinformerAttention(SelfAttention):
    """Low-rank (length-projected) softmax attention."""

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        k: int = 16
        share_kv: bool = True

        def __post_init__(self):
            check_int("k", self.k)
            check_bool("share_kv", self.share_kv)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        k = self.k = self.options.k
        self.share_kv = share_kv = self.options.share_kv
        self.proj_k = nnx.Param(KERNEL_INIT(rngs.params(), (k, shape.seq_len)))
        if not share_kv:
            self.proj_v = nnx.Param(KERNEL_INIT(rngs.params(), (k, shape.seq_len)))

    @classmethod
    def check(cls, shape, options):
        super().check(shape, options)
        k = options.k
        if k > shape.seq_len:
            raise LraError(
                f"model.k={k} exceeds the sequence length {shape.seq_len} "
                "(CLS included); Linformer needs k <= seq_len"
            )

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        e = self.proj_k[...]
        f = e if self.share_kv else self.proj_v[...]
        k_low = low_rank_project(k, e, mask)
        v_low = low_rank_project(v, f, mask)
        low_mask = jnp.ones(k_low.shape[:2], dtype=bool)
        hook = lambda w: self.drop_weights(w, deterministic, rngs)  # noqa: E731
        return masked_softmax_attention(q, k_low, v_low, low_mask, weights_hook=hook)
