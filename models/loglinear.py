"""Log-linear sparse attention: hierarchical top-k block selection (after LLSA, 2025).

The keys are summarised in a binary hierarchy of blocks: level 0 holds fine blocks
of `block_size` tokens, each level above merges pairs of blocks (summary = mean key
and mean value of the block's real tokens, with its token count). Each query block
(a fine block of queries, summarised by its real queries' mean) selects `top_k`
blocks coarse to fine: at the top level (the first with at most top_k blocks)
every block; at each level below, the top_k best-scoring among the children of the
previous level's choices. Its queries then attend to the tokens of the top_k fine
blocks it selected, and, so that the rest of the sequence is not lost, to the
summaries of the candidates it did not select at every level, each weighted as
the count of tokens it stands for (score q.k_mean / sqrt(d) + log count). Selected
tokens and unselected summaries partition the sequence, so with top_k covering
every block the result is exact full attention (tested).

Everything is computed from gathered indices ([B, H, query blocks, top_k]), never
from a dense mask: per query block top_k * block_size tokens plus top_k summaries per
level, O(L (top_k block_size + top_k log L)) = O(L log L), no L x L array (tested).
The hierarchy is sized by the mixer's sequence length, and summaries and scores
use real tokens only, so appending padding changes nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lra.registry import MODELS
from lra.models.attention import MixerOptions, SelfAttention, check_int
from lra.models.blocks import (
    NEG,
    acc_dtype,
    blocked,
    joint_softmax,
    scaled_scores,
    weighted_values,
)


def pair_up(x):
    """Sum adjacent blocks along axis 1 (padding an odd count): [B, n, ...] -> [B, ceil(n/2), ...]."""
    if x.shape[1] % 2:
        widths = [(0, 0)] * x.ndim
        widths[1] = (0, 1)
        x = jnp.pad(x, widths)
    return x.reshape(x.shape[0], x.shape[1] // 2, 2, *x.shape[2:]).sum(axis=2)


def hierarchy(k, v, mask, block: int, top_k: int):
    """Per level, fine (0) to top: (key mean, value mean, count), [B, n_l, H, D] and [B, n_l]."""
    acc = acc_dtype(k.dtype)
    m = mask.astype(acc)
    kb = jnp.einsum("bnshd,bns->bnhd", k.astype(acc), m)
    vb = jnp.einsum("bnshd,bns->bnhd", v.astype(acc), m)
    count = m.sum(-1)
    levels = [(kb, vb, count)]
    while levels[-1][2].shape[1] > top_k:
        levels.append(tuple(pair_up(x) for x in levels[-1]))
    return [(ks / jnp.maximum(c, 1)[..., None, None], vs / jnp.maximum(c, 1)[..., None, None], c)
            for ks, vs, c in levels]


def gather_blocks(x, idx, shared: bool = False):
    """x [B, n, H, ...] at idx [B, H, nq, j] -> [B, H, nq, j, ...]; `shared`: x [B, n, ...]
    is the same for every head."""
    rows = jnp.arange(idx.shape[0])[:, None, None, None]
    if shared:
        return x[rows, idx]
    return x[rows, idx, jnp.arange(idx.shape[1])[None, :, None, None]]


def select_blocks(q_mean, levels, top_k: int):
    """Coarse-to-fine selection. Returns the fine blocks (idx, valid) [B, H, nq, top_k] and,
    per level below the top, the unselected candidates (idx, valid) [B, H, nq, top_k]."""
    b, nq, h, d = q_mean.shape
    top = levels[-1][2].shape[1]
    sel = jnp.broadcast_to(jnp.arange(top_k) % top, (b, h, nq, top_k))
    ok = jnp.broadcast_to(jnp.arange(top_k) < top, (b, h, nq, top_k))
    ok = ok & (gather_blocks(levels[-1][2], sel, shared=True) > 0)
    dropped = []
    for k_mean, _, count in reversed(levels[:-1]):
        n = count.shape[1]
        cand = jnp.concatenate([2 * sel, 2 * sel + 1], axis=-1)
        cand_ok = jnp.concatenate([ok, ok], axis=-1) & (cand < n)
        cand = jnp.where(cand_ok, cand, 0)
        cand_ok = cand_ok & (gather_blocks(count, cand, shared=True) > 0)
        scores = jnp.einsum("bqhd,bhqjd->bhqj", q_mean, gather_blocks(k_mean, cand))
        order = jnp.argsort(-jnp.where(cand_ok, scores, NEG), axis=-1, stable=True)
        cand, cand_ok = (jnp.take_along_axis(x, order, axis=-1) for x in (cand, cand_ok))
        sel, ok = cand[..., :top_k], cand_ok[..., :top_k]
        dropped.append((cand[..., top_k:], cand_ok[..., top_k:]))
    return (sel, ok), dropped


@MODELS.register("loglinear")
class LogLinearAttention(SelfAttention):
    """Hierarchical top-k block-sparse attention with coarse summaries of the rest."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        block_size: int = 64
        top_k: int = 8

        def __post_init__(self):
            check_int("block_size", self.block_size)
            check_int("top_k", self.top_k)

    def __init__(self, shape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        self.num_blocks = -(-shape.seq_len // self.options.block_size)

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        b, length, h, d = q.shape
        bs, top_k, nb = self.options.block_size, self.options.top_k, self.num_blocks
        acc = acc_dtype(q.dtype)
        qb, kb, vb = (blocked(x, bs, nb) for x in (q, k, v))  # [B, nb, bs, H, D]
        mb = blocked(mask, bs, nb)  # [B, nb, bs]
        levels = hierarchy(kb, vb, mb, bs, top_k)
        m = mb.astype(acc)
        q_mean = jnp.einsum("bnshd,bns->bnhd", qb.astype(acc), m) / jnp.maximum(
            m.sum(-1), 1)[..., None, None]
        (sel, ok), dropped = select_blocks(jax.lax.stop_gradient(q_mean), levels, top_k)

        # Fine tokens of the selected blocks: [B, H, nq, top_k * bs, D].
        kf = gather_blocks(kb.swapaxes(2, 3), sel).reshape(b, h, nb, top_k * bs, d)
        vf = gather_blocks(vb.swapaxes(2, 3), sel).reshape(b, h, nb, top_k * bs, d)
        mf = (gather_blocks(mb, sel, shared=True) & ok[..., None]).reshape(b, h, nb, top_k * bs)
        scores = [scaled_scores("bnqhd,bhnkd->bhnqk", qb, kf)]
        masks = [mf[:, :, :, None, :]]
        values = [vf]
        # Summaries of the candidates left out at each level, weighted by their counts.
        for (idx, idx_ok), (k_mean, v_mean, count) in zip(dropped, reversed(levels[:-1])):
            c = gather_blocks(count, idx, shared=True)
            s = scaled_scores("bnqhd,bhnkd->bhnqk", qb, gather_blocks(k_mean, idx).astype(q.dtype))
            scores.append(s + jnp.log(jnp.maximum(c, 1))[:, :, :, None, :])
            masks.append((idx_ok & (c > 0))[:, :, :, None, :])
            values.append(gather_blocks(v_mean, idx).astype(v.dtype))
        weights = [self.drop_weights(w, deterministic, rngs) for w in joint_softmax(scores, masks)]
        out = sum(weighted_values("bhnqk,bhnkd->bnqhd", w, x) for w, x in zip(weights, values))
        return out.reshape(b, nb * bs, h, d)[:, :length].astype(q.dtype)
