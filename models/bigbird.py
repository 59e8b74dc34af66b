"""BigBird block-sparse attention (Zaheer et al., 2020), the ITC construction.

LRA: lra_benchmarks/models/bigbird/bigbird_attention.py (block_size=64,
num_rand_blocks=3; bigbird.py passes connectivity_seed=layer index). With nb
blocks of `block_size` tokens:

* global blocks: the first and the last block attend to every key, and every
  query attends to them;
* window: every other query block i attends to blocks i-1, i, i+1;
* random: and to `num_rand_blocks` further blocks per (head, query block), drawn
  once from `seed` among the blocks 1..nb-2 outside its window (fewer when not
  enough exist), so the pattern is fixed and deterministic.

The block grid is taken from the configured sequence length
(`MixerShape.seq_len`, as LRA always runs at its maximum length): an input
shorter than that is right-padded internally with masked positions, so the
random pattern and the global last block do not move when padding is appended.

Computed blockwise, no L x L array: per query block, the scores against the
two global blocks [B, H, nb, bs, 2 bs], the window [.., 3 bs] and the gathered
random blocks [.., r bs] share one softmax (a block that is both global and in
the window counts once); the two global query blocks are full rows [B, H, 2 bs, L].

Deviations from LRA's code: LRA draws random blocks only among the first
1024 / block_size blocks (`last_idx`) and needs at least ~7 blocks; here they
come from all eligible blocks and any number of blocks works. LRA applies no
attention dropout in BigBird; here `attention_dropout` applies as in the other
models. LRA's seed is the layer index; here every layer uses `seed` (heads differ).
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.registry import MODELS
from lra.models.attention import MixerOptions, MixerShape, SelfAttention, check_int
from lra.models.blocks import blocked, joint_softmax, scaled_scores, weighted_values


@functools.lru_cache(maxsize=64)
def random_blocks(num_blocks: int, num_heads: int, num_rand: int, seed: int):
    """The random key blocks of every (head, query block): (indices, valid), each [H, nb, r].

    Global query blocks (first, last) get none; block i draws from 1..nb-2 minus
    {i-1, i, i+1}, without replacement; slots left empty are marked invalid.
    """
    rng = np.random.default_rng(seed)
    idx = np.zeros((num_heads, num_blocks, num_rand), np.int32)
    valid = np.zeros((num_heads, num_blocks, num_rand), bool)
    for h in range(num_heads):
        for i in range(1, num_blocks - 1):
            cands = [j for j in range(1, num_blocks - 1) if abs(j - i) > 1]
            pick = rng.permutation(cands)[:num_rand]
            idx[h, i, : len(pick)] = pick
            valid[h, i, : len(pick)] = True
    idx.setflags(write=False)
    valid.setflags(write=False)
    return idx, valid


def global_blocks(num_blocks: int) -> list[int]:
    return sorted({0, num_blocks - 1})


@MODELS.register("bigbird")
class BigBirdAttention(SelfAttention):
    """Global + sliding-window + random block-sparse attention."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        block_size: int = 64
        num_rand_blocks: int = 3
        seed: int = 0

        def __post_init__(self):
            check_int("block_size", self.block_size)
            check_int("num_rand_blocks", self.num_rand_blocks, minimum=0)
            check_int("seed", self.seed, minimum=0)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        self.block_size = self.options.block_size
        self.num_rand_blocks = self.options.num_rand_blocks
        self.seed = self.options.seed

    def num_blocks(self, length: int) -> int:
        return -(-max(length, self.shape.seq_len) // self.block_size)

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        b, length, h, d = q.shape
        bs, nb, r = self.block_size, self.num_blocks(length), self.num_rand_blocks
        qb, kb, vb = (blocked(x, bs, nb) for x in (q, k, v))  # [B, nb, bs, H, D]
        mb = blocked(mask, bs, nb)  # [B, nb, bs]
        glob = global_blocks(nb)

        # Global key blocks, seen by every query block: [B, G * bs, ...].
        kg = kb[:, glob].reshape(b, len(glob) * bs, h, d)
        vg = vb[:, glob].reshape(b, len(glob) * bs, h, d)
        mg = mb[:, glob].reshape(b, len(glob) * bs)
        scores = [scaled_scores("bnqhd,bkhd->bhnqk", qb, kg)]
        masks = [mg[:, None, None, None, :]]

        # Window blocks i-1, i, i+1 (a global one is already in the global group).
        def window(x):
            widths = [(0, 0)] * x.ndim
            widths[1] = (1, 1)
            xp = jnp.pad(x, widths)
            return jnp.concatenate([xp[:, j:j + nb] for j in range(3)], axis=2)

        kw, vw, mw = window(kb), window(vb), window(mb)  # [B, nb, 3 bs, ...]
        wblock = np.arange(nb)[:, None] + np.arange(-1, 2)[None, :]  # [nb, 3]
        wok = (wblock >= 0) & (wblock < nb) & ~np.isin(wblock, glob)
        wok = np.repeat(wok, bs, axis=1)  # [nb, 3 bs]
        scores.append(scaled_scores("bnqhd,bnkhd->bhnqk", qb, kw))
        masks.append(mw[:, None, :, None, :] & wok[None, None, :, None, :])

        if r:
            idx, valid = random_blocks(nb, h, r, self.seed)
            heads = np.arange(h)[:, None, None]
            kh, vh = kb.transpose(0, 3, 1, 2, 4), vb.transpose(0, 3, 1, 2, 4)  # [B, H, nb, bs, D]
            kr = kh[:, heads, idx].reshape(b, h, nb, r * bs, d)
            vr = vh[:, heads, idx].reshape(b, h, nb, r * bs, d)
            mr = mb[:, idx].reshape(b, h, nb, r * bs)  # [B, H, nb, r bs]
            rok = np.repeat(valid, bs, axis=2)  # [H, nb, r bs]
            scores.append(scaled_scores("bnqhd,bhnkd->bhnqk", qb, kr))
            masks.append((mr & rok[None])[:, :, :, None, :])

        weights = [self.drop_weights(w, deterministic, rngs) for w in joint_softmax(scores, masks)]
        out = weighted_values("bhnqk,bkhd->bnqhd", weights[0], vg)
        out = out + weighted_values("bhnqk,bnkhd->bnqhd", weights[1], vw)
        if r:
            out = out + weighted_values("bhnqk,bhnkd->bnqhd", weights[2], vr)
        out = out.astype(q.dtype)

        # Global query blocks attend to every key: [B, H, G * bs, nb * bs].
        kall, vall, mall = (x.reshape(b, nb * bs, *x.shape[3:]) for x in (kb, vb, mb))
        qg = qb[:, glob].reshape(b, len(glob) * bs, h, d)
        s = scaled_scores("bqhd,bkhd->bhqk", qg, kall)
        (w,) = joint_softmax([s], [mall[:, None, None, :]])
        w = self.drop_weights(w, deterministic, rngs)
        og = weighted_values("bhqk,bkhd->bqhd", w, vall).astype(q.dtype)
        out = out.at[:, glob].set(og.reshape(b, len(glob), bs, h, d))
        return out.reshape(b, nb * bs, h, d)[:, :length]
