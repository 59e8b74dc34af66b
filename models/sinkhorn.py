"""Sparse Sinkhorn attention (Tay et al., 2020).

LRA: lra_benchmarks/models/sinkhorn_transformer/sinkhorn_attention.py
(block_size=50; `sinkhorn_operator(n_iters=1, temp=1.0)`).

Keys and values are cut into nb blocks of `block_size`. Per head, a sorting
network maps every block summary (the sum of the block's real keys, as LRA) to
logits over the nb blocks, R [nb, nb] (a bias-free Dense, as LRA's SortNet).
Sinkhorn balancing in log space (`sinkhorn_iters` alternations of row and
column normalisation at `temperature`, no Gumbel noise) turns R into a soft
permutation P (doubly stochastic over the blocks that hold a real token; see
`sinkhorn_permutation`). Sorted block i is the P[i]-weighted mixture of the key
(value) blocks, and query block i attends jointly (one softmax) to its own block
and to sorted block i.

The block grid comes from the configured length (`MixerShape.seq_len`), which
fixes the size of the sorting network's output; shorter inputs are right-padded
internally. Padded positions are zeroed before summaries and mixtures, padded
blocks are left out of the balancing, and a sorted key slot is the P-weighted
mean over the blocks whose slot is real (masked when none is), so outputs at
real tokens do not depend on padding.

Deviations from LRA's code, which (1) reshapes [B, L] into [B, block_size, nb]
(strided, not contiguous, blocks), (2) sorts with a plain softmax by default
(sort_activation='softmax'), (3) mixes with an einsum that sums over both block
axes (every sorted block is the sum of all blocks), (4) clips the balanced
log-matrix to [-1, 1] and (5) adds two separately normalised outputs (own block
+ sorted block): we follow the paper: contiguous blocks, Sinkhorn balancing,
P-weighted mixtures, one softmax over own + sorted keys. LRA sizes the
sorting output by max_num_blocks=25 and slices it; we size it by nb.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lra.registry import MODELS
from lra.models.attention import (
    KERNEL_INIT,
    MixerOptions,
    MixerShape,
    SelfAttention,
    check_int,
    check_positive,
)
from lra.models.blocks import (
    NEG,
    acc_dtype,
    blocked,
    joint_softmax,
    scaled_scores,
    weighted_values,
)


def sinkhorn_permutation(log_alpha, valid=None, *, iters: int, temperature: float = 1.0):
    """Sinkhorn balancing in log space: logits [..., n, n] -> soft permutation [..., n, n].

    Each iteration normalises the rows, then the columns (LRA's order). `valid`
    ([..., n] booleans) restricts the matrix to the valid rows x valid columns;
    other entries are 0. After enough iterations the valid block is doubly
    stochastic (rows and columns sum to 1); after one iteration its columns are.
    """
    x = log_alpha.astype(acc_dtype(log_alpha.dtype)) / temperature
    if valid is None:
        keep = jnp.ones(x.shape, bool)
    else:
        keep = valid[..., :, None] & valid[..., None, :]
    x = jnp.where(keep, x, NEG)
    for _ in range(iters):
        x = jnp.where(keep, x - jax.nn.logsumexp(x, axis=-1, keepdims=True), NEG)
        x = jnp.where(keep, x - jax.nn.logsumexp(x, axis=-2, keepdims=True), NEG)
    return jnp.where(keep, jnp.exp(x), 0.0)


@MODELS.register("sinkhorn")
class SinkhornAttention(SelfAttention):
    """Own block + Sinkhorn-sorted block attention with a learned block sorter."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        block_size: int = 50
        sinkhorn_iters: int = 1
        temperature: float = 1.0

        def __post_init__(self):
            check_int("block_size", self.block_size)
            check_int("sinkhorn_iters", self.sinkhorn_iters)
            object.__setattr__(self, "temperature", check_positive("temperature", self.temperature))

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        block_size = self.block_size = self.options.block_size
        self.sinkhorn_iters = self.options.sinkhorn_iters
        self.temperature = self.options.temperature
        self.num_blocks = -(-shape.seq_len // block_size)
        # SortNet: block summary (one head's key sum) -> logits over the blocks; shared by heads.
        self.sort_net = nnx.Linear(
            shape.head_dim, self.num_blocks, use_bias=False, kernel_init=KERNEL_INIT, rngs=rngs
        )

    def permutation(self, k, mask):
        """The soft block permutation P [B, H, nb, nb] for keys k [B, L, H, D]."""
        bs, nb = self.block_size, self.num_blocks
        kb = blocked(k, bs, nb).astype(acc_dtype(k.dtype))  # [B, nb, bs, H, D]
        mb = blocked(mask, bs, nb)  # [B, nb, bs]
        summary = jnp.einsum("bnshd,bns->bnhd", kb, mb.astype(kb.dtype))
        logits = self.sort_net(summary).transpose(0, 2, 1, 3)  # [B, H, nb (block), nb (target)]
        return sinkhorn_permutation(
            logits, mb.any(axis=-1)[:, None, :], iters=self.sinkhorn_iters,
            temperature=self.temperature,
        )

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        b, length, h, d = q.shape
        bs, nb = self.block_size, self.num_blocks
        if length > nb * bs:
            raise ValueError(
                f"sinkhorn attention was built for {self.shape.seq_len} positions, got {length}"
            )
        acc = acc_dtype(q.dtype)
        perm = self.permutation(k, mask)  # [B, H, nb, nb]
        qb, kb, vb = (blocked(x, bs, nb) for x in (q, k, v))  # [B, nb, bs, H, D]
        mb = blocked(mask, bs, nb)  # [B, nb, bs]
        real = mb.astype(acc)

        # Sorted block i, slot s: P[i]-weighted mean of slot s over the blocks where it is real.
        weight = jnp.einsum("bhij,bjs->bhis", perm, real)  # [B, H, nb, bs]
        sorted_ok = weight > 1e-6
        norm = 1.0 / jnp.where(sorted_ok, weight, 1.0)

        def sort(x):
            xr = x.astype(acc) * real[..., None, None]
            mixed = jnp.einsum("bhij,bjshd->bhisd", perm, xr)
            return (mixed * norm[..., None]).astype(x.dtype)  # [B, H, nb, bs, D]

        ks, vs = sort(kb), sort(vb)
        scores = [
            scaled_scores("bnqhd,bnkhd->bhnqk", qb, kb),
            scaled_scores("bnqhd,bhnkd->bhnqk", qb, ks),
        ]
        masks = [mb[:, None, :, None, :], sorted_ok[:, :, :, None, :]]
        w_own, w_sorted = (
            self.drop_weights(w, deterministic, rngs) for w in joint_softmax(scores, masks)
        )
        out = weighted_values("bhnqk,bnkhd->bnqhd", w_own, vb)
        out = out + weighted_values("bhnqk,bhnkd->bnqhd", w_sorted, vs)
        return out.reshape(b, nb * bs, h, d)[:, :length].astype(q.dtype)
