"""Block-local attention: the sequence is cut into contiguous blocks of
`block_size` tokens and every query attends to the keys of its own block only.

LRA: lra_benchmarks/models/local/local_attention.py (LocalAttention), with
`block_size=50` as the default of local.py's encoder/block; no look-back to the
previous block. LRA's code reshapes [B, L, ...] into [B, block_size, nb, ...]
and attends over the block_size axis, which actually groups the strided tokens
{t, t + nb, t + 2nb, ...} (and its padding mask is blocked contiguously, so
the two disagree); we implement the documented intent, contiguous blocks.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from lra.registry import MODELS
from lra.models.attention import MixerOptions, MixerShape, SelfAttention, check_int
from lra.models.blocks import blocked, joint_softmax, scaled_scores, weighted_values


@MODELS.register("local")
class LocalAttention(SelfAttention):
    """Every query attends to the keys of its own contiguous block of `block_size`.

    Lengths that are not a multiple of the block are right-padded internally with
    masked positions; a block larger than the sequence is one block (full attention).
    """

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        block_size: int = 50

        def __post_init__(self):
            check_int("block_size", self.block_size)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        self.block_size = self.options.block_size

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        b, length, h, d = q.shape
        block = min(self.block_size, length)
        nb = -(-length // block)
        qb, kb, vb = (blocked(x, block, nb) for x in (q, k, v))  # [B, nb, bs, H, D]
        mb = blocked(mask, block, nb)  # [B, nb, bs]
        scores = scaled_scores("bnqhd,bnkhd->bhnqk", qb, kb)
        (w,) = joint_softmax([scores], [mb[:, None, :, None, :]])
        w = self.drop_weights(w, deterministic, rngs)
        out = weighted_values("bhnqk,bnkhd->bnqhd", w, vb)
        return out.reshape(b, nb * block, h, d)[:, :length].astype(q.dtype)
