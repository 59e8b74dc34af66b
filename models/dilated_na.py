"""Dilated neighbourhood attention over the 1-D sequence (Hassani et al., 2022,
"Dilated Neighborhood Attention Transformer" (DiNAT), arXiv:2209.15001; NA from
Hassani et al., 2023, "Neighborhood Attention Transformer", arXiv:2204.07143).

Query i attends to `kernel_size` keys of its dilation group {j : j = i mod d}: the
window of consecutive group members centred on i, shifted inwards at the ends of
the sequence so that every query keeps kernel_size neighbours (NA's rule; a group
with fewer members gives all of them). With d = 1 and a window covering the
sequence this is full attention (tested). As in DiNAT, layers alternate: even
layers (0, 2, ...) use dilation 1 (local NA), odd layers use `dilation`; 0 means
DiNAT's choice, floor(seq_len / kernel_size), whose windows span the sequence.

Padding: the window and the groups are those of each example's n real tokens, so
the neighbourhoods, and the outputs, do not depend on appended padding. The keys
are gathered per query ([B, L, kernel_size, H, D]): cost O(L kernel_size). The 2-D
(image-grid) neighbourhoods of the NAT/DiNAT papers are not implemented.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.attention import MixerOptions, SelfAttention, check_int
from lra.models.blocks import joint_softmax, scaled_scores, weighted_values


def neighbours(mask, kernel_size: int, dilation: int):
    """Key positions [B, L, k] of every query's neighbourhood and their validity [B, L, k]."""
    length = mask.shape[1]
    n = mask.sum(axis=-1, dtype=jnp.int32)[:, None, None]  # [B, 1, 1] real tokens
    i = jnp.arange(length)[None, :, None]
    group, rank = i % dilation, i // dilation
    members = jnp.maximum((n - group + dilation - 1) // dilation, 0)  # real tokens in the group
    size = jnp.minimum(kernel_size, members)
    start = jnp.clip(rank - kernel_size // 2, 0, jnp.maximum(members - size, 0))
    j = jnp.arange(kernel_size)[None, None, :]
    pos = group + (start + j) * dilation
    valid = (j < size) & (pos < length)
    return jnp.where(valid, pos, 0), valid


@MODELS.register("dilated_na")
class DilatedNeighbourhoodAttention(SelfAttention):
    """Each query attends to its kernel_size nearest keys in its dilation group."""

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        kernel_size: int = 7
        dilation: int = 0  # odd layers; 0: floor(seq_len / kernel_size) as in DiNAT

        def __post_init__(self):
            if check_int("kernel_size", self.kernel_size) % 2 == 0:
                raise LraError(
                    f"model.kernel_size={self.kernel_size} must be odd (a window centred on "
                    "its query, as neighbourhood attention defines it)"
                )
            check_int("dilation", self.dilation, minimum=0)

    def __init__(self, shape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        k, d = self.options.kernel_size, self.options.dilation
        d = d or max(shape.seq_len // k, 1)
        self.dilation = d if shape.layer % 2 else 1

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        pos, valid = neighbours(mask, self.options.kernel_size, self.dilation)
        rows = jnp.arange(q.shape[0])[:, None, None]
        kn, vn = k[rows, pos], v[rows, pos]  # [B, L, k, H, D]
        ok = valid & mask[rows, pos]
        scores = scaled_scores("blhd,blkhd->bhlk", q, kn)
        (w,) = joint_softmax([scores], [ok[:, None]])
        w = self.drop_weights(w, deterministic, rngs)
        return weighted_values("bhlk,blkhd->blhd", w, vn).astype(q.dtype)
