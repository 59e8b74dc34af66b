"""Longformer attention (Beltagy et al., 2020): a sliding window plus global tokens.

LRA: lra_benchmarks/models/longformer/longformer_attention.py.

* Sliding window of `sliding_window_size` keys (LRA default 512): query q sees
  keys q - (w - w // 2 - 1) .. q + w // 2, i.e. the left side (self included)
  gets one key more when w is even, as in LRA's `_build_sliding_window_mask`.
* Global positions attend to every key, and every query attends to them. The
  CLS token (position 0 when the encoder pools on it, `MixerShape.cls_token`)
  is global, as the Longformer paper does for classification; further global
  positions can be listed in `global_positions`. LRA itself passed
  `global_mask=None` (no global token) to its encoder.

Sub-quadratic: the sequence is cut into chunks of c ~ w / 2 queries; chunk i
attends to the key chunks i - nl .. i + nr that its window can reach (a band of
(nl + 1 + nr) * c keys, about 1.5 w), masked exactly to the window. Global keys
are a separate [B, H, L, G] group normalised jointly with the band (a global
key inside the window is only counted once); global queries are G rows of full
attention, [B, H, G, L].

Deviation: LRA's global queries use a second set of query/key/value
projections (the paper's Qg, Kg, Vg); here one set serves both paths, so that
the model stays a plain `attend(q, k, v, mask)`. With LRA's default (no global
token) the two are the same.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.attention import MixerOptions, MixerShape, SelfAttention, check_int
from lra.models.blocks import (
    blocked,
    cls_token,
    joint_softmax,
    scaled_scores,
    weighted_values,
)


def window_bounds(window: int) -> tuple[int, int]:
    """(keys before the query, keys after it) of a sliding window of `window` keys."""
    right = window // 2
    return window - right - 1, right


@MODELS.register("longformer")
class LongformerAttention(SelfAttention):
    """Sliding-window attention with global tokens, computed on a band of key chunks."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        sliding_window_size: int = 512
        global_positions: tuple[int, ...] = ()  # a config's list becomes a tuple

        def __post_init__(self):
            check_int("sliding_window_size", self.sliding_window_size)
            positions = self.global_positions
            if not isinstance(positions, (list, tuple)):
                raise LraError(
                    f"model.global_positions={positions!r} must be a list of positions"
                )
            object.__setattr__(self, "global_positions", tuple(positions))

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        self.window = self.options.sliding_window_size
        positions = set(int(p) for p in self.options.global_positions)
        if cls_token(shape):
            positions.add(0)
        self.global_positions = tuple(sorted(positions))

    @classmethod
    def check(cls, shape, options):
        super().check(shape, options)
        for p in options.global_positions:
            if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < shape.seq_len:
                raise LraError(
                    f"model.global_positions has {p!r}; positions must be integers in "
                    f"[0, {shape.seq_len}) (the sequence length, CLS included)"
                )

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        b, length, h, d = q.shape
        before, after = window_bounds(self.window)
        glob = np.array([p for p in self.global_positions if p < length], dtype=np.int32)

        chunk = min(max(before, after, 1), length)
        nb = -(-length // chunk)
        nl = min(-(-before // chunk), nb - 1)
        nr = min(-(-after // chunk), nb - 1)
        span = nl + 1 + nr

        qb, kb, vb = (blocked(x, chunk, nb) for x in (q, k, v))  # [B, nb, c, H, D]
        mb = blocked(mask, chunk, nb)  # [B, nb, c]

        def band(x):  # [B, nb, c, ...] -> [B, nb, span * c, ...]: the key chunks i-nl..i+nr
            widths = [(0, 0)] * x.ndim
            widths[1] = (nl, nr)
            xp = jnp.pad(x, widths)
            xs = jnp.stack([xp[:, j:j + nb] for j in range(span)], axis=2)
            return xs.reshape(b, nb, span * chunk, *x.shape[3:])

        kw, vw, mw = band(kb), band(vb), band(mb)
        # Static band mask: the exact window, real positions, globals left to their group.
        qpos = (np.arange(nb) * chunk)[:, None, None] + np.arange(chunk)[None, :, None]
        kpos = ((np.arange(nb) - nl) * chunk)[:, None, None] + np.arange(span * chunk)
        offset = kpos - qpos
        band_ok = (offset >= -before) & (offset <= after) & (kpos >= 0) & (kpos < length)
        band_ok &= ~np.isin(kpos, glob)  # [nb, c, span * c]

        scores = [scaled_scores("bnqhd,bnkhd->bhnqk", qb, kw)]
        masks = [mw[:, None, :, None, :] & band_ok[None, None]]
        if glob.size:
            kg, vg, mg = k[:, glob], v[:, glob], mask[:, glob]
            scores.append(scaled_scores("bnqhd,bkhd->bhnqk", qb, kg))
            masks.append(mg[:, None, None, None, :])
        weights = [self.drop_weights(w, deterministic, rngs) for w in joint_softmax(scores, masks)]
        out = weighted_values("bhnqk,bnkhd->bnqhd", weights[0], vw)
        if glob.size:
            out = out + weighted_values("bhnqk,bkhd->bnqhd", weights[1], vg)
        out = out.reshape(b, nb * chunk, h, d)[:, :length].astype(q.dtype)

        if glob.size:  # global queries: full attention, G rows
            s = scaled_scores("bqhd,bkhd->bhqk", q[:, glob], k)
            (w,) = joint_softmax([s], [mask[:, None, None, :]])
            w = self.drop_weights(w, deterministic, rngs)
            out = out.at[:, glob].set(weighted_values("bhqk,bkhd->bqhd", w, v).astype(q.dtype))
        return out

