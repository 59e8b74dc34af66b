"""Sparse Transformer, fixed factorized pattern (Child et al., 2019).

LRA: lra_benchmarks/models/sparse_transformer/sparse_attention.py with the
patterns set in lra_benchmarks/utils/train_utils.py: the UNION (logical or,
the same for every head) of Fixed1Pattern(block_size=50) and
Fixed2Pattern(block_size=50, c=10), each intersected with a causal mask:

* local (Fixed1): key k is visible to query q when both lie in the same block
  of `block_size` (and k <= q when causal);
* summary (Fixed2): key k is visible when k % block_size == 0 or
  k % block_size >= block_size - c (and k <= q when causal).

When the encoder pools on a CLS token, LRA applies the pattern to positions
1..L-1 only and makes position 0 global: it attends to every key and every
query attends to it. We do the same when `MixerShape.cls_token` is set.

Computed without any L x L array: block-local scores [B, H, nb, bs, bs], scores
against the gathered summary keys [B, H, nb, bs, nb * (c + 1)] (own-block
summaries are left to the local part, so no key is counted twice), and one
softmax normalised jointly over both (and the CLS key).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.attention import MixerOptions, MixerShape, SelfAttention, check_bool, check_int
from lra.models.blocks import (
    blocked,
    cls_token,
    joint_softmax,
    scaled_scores,
    weighted_values,
)


def summary_offsets(block_size: int, c: int) -> np.ndarray:
    """Offsets within a block that Fixed2Pattern makes summary columns."""
    r = np.arange(block_size)
    return r[(r == 0) | (r >= block_size - c)]


@MODELS.register("sparse_transformer")
class SparseTransformerAttention(SelfAttention):
    """Union of the block-local and the summary-column patterns (all heads alike)."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        block_size: int = 50
        summary_size: int = 10
        causal: bool = True

        def __post_init__(self):
            block = check_int("block_size", self.block_size)
            c = check_int("summary_size", self.summary_size, minimum=0)
            if c > block:
                raise LraError(
                    f"model.summary_size={c} exceeds model.block_size={block}; "
                    "the summary columns are the last summary_size positions of a block"
                )
            check_bool("causal", self.causal)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        self.block_size = self.options.block_size
        self.summary_size = self.options.summary_size
        self.causal = self.options.causal
        self.cls = cls_token(shape)

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        if not self.cls:
            return self._pattern(q, k, v, mask, None, deterministic, rngs)
        # Position 0 (CLS) attends to every key ...
        s0 = scaled_scores("bqhd,bkhd->bhqk", q[:, :1], k)
        (w0,) = joint_softmax([s0], [mask[:, None, None, :]])
        w0 = self.drop_weights(w0, deterministic, rngs)
        out0 = weighted_values("bhqk,bkhd->bqhd", w0, v).astype(q.dtype)
        # ... and the pattern covers positions 1.., every one of which also sees CLS.
        rest = self._pattern(q[:, 1:], k[:, 1:], v[:, 1:], mask[:, 1:],
                             (k[:, :1], v[:, :1], mask[:, :1]), deterministic, rngs)
        return jnp.concatenate([out0, rest], axis=1)

    def _pattern(self, q, k, v, mask, extra, deterministic, rngs):
        b, length, h, d = q.shape
        if length == 0:
            return q
        bs, causal = self.block_size, self.causal
        nb = -(-length // bs)
        qb, kb, vb = (blocked(x, bs, nb) for x in (q, k, v))  # [B, nb, bs, H, D]
        mb = blocked(mask, bs, nb)  # [B, nb, bs]

        # Local block: [B, H, nb, bs, bs].
        local_s = scaled_scores("bnqhd,bnkhd->bhnqk", qb, kb)
        local_m = mb[:, None, :, None, :]
        if causal:
            local_m = local_m & np.tri(bs, dtype=bool)

        # Summary columns of the other blocks: [B, H, nb, bs, nb * ns].
        offsets = summary_offsets(bs, self.summary_size)
        ns = len(offsets)
        ks = kb[:, :, offsets].reshape(b, nb * ns, h, d)
        vs = vb[:, :, offsets].reshape(b, nb * ns, h, d)
        ms = mb[:, :, offsets].reshape(b, nb * ns)
        key_block = np.repeat(np.arange(nb), ns)[None, :]
        query_block = np.arange(nb)[:, None]
        # Own-block summaries are already in the local part; causal keeps earlier blocks.
        blocks_ok = key_block < query_block if causal else key_block != query_block
        summ_s = scaled_scores("bnqhd,bkhd->bhnqk", qb, ks)
        summ_m = ms[:, None, None, None, :] & blocks_ok[None, None, :, None, :]

        scores, masks = [local_s, summ_s], [local_m, summ_m]
        if extra is not None:  # the CLS key, visible to every query
            k0, v0, m0 = extra
            scores.append(scaled_scores("bnqhd,bkhd->bhnqk", qb, k0))
            masks.append(m0[:, None, None, None, :])
        weights = [self.drop_weights(w, deterministic, rngs) for w in joint_softmax(scores, masks)]

        out = weighted_values("bhnqk,bnkhd->bnqhd", weights[0], vb)
        out = out + weighted_values("bhnqk,bkhd->bnqhd", weights[1], vs)
        if extra is not None:
            out = out + weighted_values("bhnqk,bkhd->bnqhd", weights[2], extra[1])
        return out.reshape(b, nb * bs, h, d)[:, :length].astype(q.dtype)

