"""Routing Transformer (Roy et al., 2021, "Efficient Content-Based Sparse Attention
with Routing Transformers", TACL 9, arXiv:2003.05997).

Queries and keys, normalised to the unit sphere, are routed to `num_clusters`
centroids shared by queries and keys (one set per head). The centroids are learnt
by online k-means: in training, each centroid moves to an exponential moving
average of the vectors assigned to it (decay 0.999, the paper's), never by gradient
(they are a `Centroids` variable, not a parameter, and evaluation leaves them
alone). Clusters have equal size, as in the paper's balanced routing: every
centroid takes its `window` most similar queries and its `window` most similar
keys, and those queries attend to those keys. A query picked by several centroids
averages their outputs; one picked by none gets nothing from these heads. The
other heads (`local_heads`, half of them by default, as the paper mixes local and
routing heads) attend within contiguous blocks of `window` tokens.

Padding: padded tokens are never picked as keys, never move a centroid, and the
cluster sizes are options, not a fraction of the padded length, so appending
padding changes nothing. With one cluster and a window covering the sequence,
every head is full attention (tested).

Cost: num_clusters * window^2 + L * window; with the paper's num_clusters ~ window
~ sqrt(L) (our defaults, 0 = sqrt of the sequence length) that is O(L^1.5), so the
model does not declare linear_time; it holds no L x L array (tested).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.attention import MixerOptions, SelfAttention, check_int
from lra.models.blocks import acc_dtype, blocked, joint_softmax, scaled_scores, weighted_values

EMA_DECAY = 0.999  # Roy et al. Sec. 4.1: centroid decay 0.999


class Centroids(nnx.Variable):
    """k-means centroids [H, C, D]: updated by moving average in training, not trained."""


def unit(x):
    x = x.astype(acc_dtype(x.dtype))
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


@MODELS.register("routing")
class RoutingAttention(SelfAttention):
    """Balanced k-means routing heads plus local-block heads."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        num_clusters: int = 0  # 0: round(sqrt(seq_len)), the paper's sqrt(n)
        window: int = 0  # tokens per cluster and per local block; 0: ceil(seq_len / clusters)
        local_heads: int | None = None  # None: half of the heads (rounded down)

        def __post_init__(self):
            check_int("num_clusters", self.num_clusters, minimum=0)
            check_int("window", self.window, minimum=0)
            if self.local_heads is not None:
                check_int("local_heads", self.local_heads, minimum=0)

    @classmethod
    def check(cls, shape, options):
        super().check(shape, options)
        local = options.local_heads
        if local is not None and local > shape.num_heads:
            raise LraError(f"model.local_heads={local} exceeds encoder.num_heads={shape.num_heads}")

    def __init__(self, shape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        o = self.options
        self.num_clusters = o.num_clusters or max(round(math.sqrt(shape.seq_len)), 1)
        self.window = o.window or -(-shape.seq_len // self.num_clusters)
        self.local_heads = shape.num_heads // 2 if o.local_heads is None else o.local_heads
        routed = shape.num_heads - self.local_heads
        init = jax.random.normal(rngs.params(), (routed, self.num_clusters, shape.head_dim))
        self.centroids = Centroids(unit(init))

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        h = self.local_heads
        parts = []
        if h:
            parts.append(self.local(q[:, :, :h], k[:, :, :h], v[:, :, :h], mask,
                                    deterministic, rngs))
        if h < q.shape[2]:
            parts.append(self.routed(q[:, :, h:], k[:, :, h:], v[:, :, h:], mask,
                                     deterministic, rngs))
        return jnp.concatenate(parts, axis=2)

    def local(self, q, k, v, mask, deterministic, rngs):
        b, length, h, d = q.shape
        block = min(self.window, length)
        nb = -(-length // block)
        qb, kb, vb = (blocked(x, block, nb) for x in (q, k, v))
        scores = scaled_scores("bnqhd,bnkhd->bhnqk", qb, kb)
        (w,) = joint_softmax([scores], [blocked(mask, block, nb)[:, None, :, None, :]])
        w = self.drop_weights(w, deterministic, rngs)
        out = weighted_values("bhnqk,bnkhd->bnqhd", w, vb)
        return out.reshape(b, nb * block, h, d)[:, :length].astype(q.dtype)

    def routed(self, q, k, v, mask, deterministic, rngs):
        b, length, h, d = q.shape
        mu = self.centroids[...]  # [H, C, D]
        qn, kn = unit(q), unit(k)
        if not deterministic:
            self.update_centroids(qn, kn, mask)
        window = min(self.window, length)
        neg = jnp.finfo(qn.dtype).min

        def pick(x):  # the `window` real tokens most similar to each centroid: [B, H, C, w]
            sim = jnp.einsum("blhd,hcd->bhcl", x, jax.lax.stop_gradient(mu))
            sim = jnp.where(mask[:, None, None, :], sim, neg)
            return jax.lax.top_k(sim, window)[1]

        qi, ki = pick(qn), pick(kn)
        heads = jnp.arange(h)[None, :, None, None]
        rows = jnp.arange(b)[:, None, None, None]
        qs, ks, vs = q[rows, qi, heads], k[rows, ki, heads], v[rows, ki, heads]  # [B, H, C, w, D]
        key_ok = mask[rows, ki]  # [B, H, C, w]
        scores = scaled_scores("bhcqd,bhckd->bhcqk", qs, ks)
        (w,) = joint_softmax([scores], [key_ok[..., None, :]])
        w = self.drop_weights(w, deterministic, rngs)
        out = weighted_values("bhcqk,bhckd->bhcqd", w, vs)
        # Scatter back to the query positions, averaging over the clusters that picked them.
        total = jnp.zeros((b, h, length, d), out.dtype).at[rows, heads, qi].add(out)
        count = jnp.zeros((b, h, length), out.dtype).at[rows, heads, qi].add(1.0)
        total = total / jnp.maximum(count, 1.0)[..., None]
        return total.transpose(0, 2, 1, 3).astype(q.dtype)

    def update_centroids(self, qn, kn, mask):
        """mu_c <- decay mu_c + (1 - decay) mean of the real queries and keys nearest to c."""
        mu = self.centroids[...]
        x = jax.lax.stop_gradient(jnp.concatenate([qn, kn], axis=1))  # [B, 2L, H, D]
        real = jnp.concatenate([mask, mask], axis=1)
        nearest = jnp.argmax(jnp.einsum("blhd,hcd->bhlc", x, mu), axis=-1)  # [B, H, 2L]
        member = jax.nn.one_hot(nearest, mu.shape[1], dtype=x.dtype) * real[:, None, :, None]
        sums = jnp.einsum("bhlc,blhd->hcd", member, x)
        counts = member.sum(axis=(0, 2))[..., None]  # [H, C, 1]
        mean = sums / jnp.maximum(counts, 1.0)
        moved = EMA_DECAY * mu + (1 - EMA_DECAY) * mean
        self.centroids[...] = jnp.where(counts > 0, unit(moved), mu).astype(mu.dtype)
