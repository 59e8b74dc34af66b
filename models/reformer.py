"""Reformer: LSH attention with shared queries/keys (Kitaev et al., 2020).

Per head, each token's query q_i is hashed `num_hashes` times into
`num_buckets` buckets by random rotations (bucket = argmax([qR, -qR]), R a
Gaussian [D, num_buckets/2] per round). Within a round tokens are sorted by
(bucket, position), cut into chunks of `chunk_len = ceil(seq_len / num_buckets)`
and every chunk attends to itself and the previous chunk. Keys are the
unit-normalised queries (shared QK), scores q_i . k_j, a token does not attend
to itself unless it has no other key (its score is replaced by -1e5, as trax's
mask_self_attention), padded keys are masked. Rounds are combined with weights
softmax over rounds of each round's log-sum-exp. Memory is O(L * chunk_len).

Choices, against the LRA code (lra_benchmarks/models/reformer/
reformer_attention.py) and trax/flax efficient_attention (LSHSelfAttention):
* Defaults num_hashes=1, num_buckets=10 are LRA's (n_hashes=1, n_buckets=10).
  LRA reshapes each round into n_buckets chunks, i.e. chunk length
  L / n_buckets; we take the same relation but from the configured seq_len,
  so the chunk length does not move when padding is appended.
* Rotations are fixed, as in LRA (which draws them from PRNGKey(0) on every
  call, identical in all layers and heads); here each layer draws its own at
  construction from the `params` stream and keeps them as a non-trainable
  nnx.Variable, shared by the heads (as LRA/trax). trax redraws per call.
* Keys are normalised and self-attention excluded as in trax and the paper;
  LRA's version skips both, scales by sqrt(d) instead of 1/sqrt(d) and never
  masks padding.
* Padding: padded tokens get a bucket past the last one, so they sort to the
  end and the real tokens' chunks are exactly those of the unpadded sequence.
  For the same reason the first chunk has no previous chunk (trax/LRA wrap
  around to the last chunk, which would then be padding-dependent). Each round
  is chunked on its own (LRA/trax chunk all rounds as one sequence).
* num_buckets = 1 is allowed (everything in one bucket, a single chunk when
  chunk_len >= L): then this is exactly full shared-QK attention without self.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.attention import MixerOptions, MixerShape, SelfAttention, check_int

SELF_SCORE = -1e5  # trax mask_self_attention: dots - 1e5 on the diagonal
MASKED_SCORE = -1e9  # trax: padded keys get -1e9


def length_normalise(x, eps: float = 1e-6):
    """x / |x| (trax: length_normalized(x) / sqrt(d)), in float32."""
    d = x.shape[-1]
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) / math.sqrt(d)


def hash_buckets(q, rotations, num_buckets: int):
    """q [B, L, H, D] -> buckets [B, H, R, L] (int32) from rotations [D, R, nb/2]."""
    num_hashes = rotations.shape[1]
    b, length, h, _ = q.shape
    if num_buckets == 1:
        return jnp.zeros((b, h, num_hashes, length), jnp.int32)
    rotated = jnp.einsum("blhd,drn->bhrln", q.astype(jnp.float32), rotations)
    rotated = jnp.concatenate([rotated, -rotated], axis=-1)
    return jnp.argmax(rotated, axis=-1).astype(jnp.int32)


def lsh_attention(q, v, mask, buckets, *, chunk_len: int, weights_hook=None):
    """Chunked attention in bucket order.

    q, v: [B, L, H, D]; mask [B, L] (True = real); buckets [B, H, R, L] in
    [0, num_buckets). Returns [B, L, H, D].
    """
    b, length, h, d = q.shape
    num_hashes = buckets.shape[2]
    padded = -(-length // chunk_len) * chunk_len
    extra = padded - length
    if extra:
        q = jnp.pad(q, ((0, 0), (0, extra), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, extra), (0, 0), (0, 0)))
        mask = jnp.pad(mask, ((0, 0), (0, extra)))
        buckets = jnp.pad(buckets, ((0, 0), (0, 0), (0, 0), (0, extra)))
    n_chunks = padded // chunk_len

    # Padded tokens go after every real bucket; ties break by position.
    big_bucket = jnp.max(buckets) + 1
    buckets = jnp.where(mask[:, None, None, :], buckets, big_bucket)
    positions = jnp.arange(padded, dtype=jnp.int32)
    sort_keys = jax.lax.stop_gradient(buckets * padded + positions)
    order = jnp.argsort(sort_keys, axis=-1)  # [B, H, R, Lp]
    undo = jnp.argsort(order, axis=-1)

    qh = jnp.transpose(q, (0, 2, 1, 3))  # [B, H, Lp, D]
    vh = jnp.transpose(v, (0, 2, 1, 3))

    def gather(x):  # [B, H, Lp, D] -> [B, H, R, Lp, D] in sorted order
        return jnp.take_along_axis(x[:, :, None], order[..., None], axis=3)

    sq = gather(qh).astype(jnp.float32)
    sv = gather(vh)
    spos = order  # original position of each sorted slot
    smask = jnp.take_along_axis(
        jnp.broadcast_to(mask[:, None, None, :], order.shape), order, axis=-1
    )

    chunk = lambda x: x.reshape(x.shape[:3] + (n_chunks, chunk_len) + x.shape[4:])  # noqa: E731
    cq = chunk(sq)  # [B, H, R, C, c, D]
    ck = chunk(length_normalise(sq))
    cv = chunk(sv)
    cpos = chunk(spos)
    cmask = chunk(smask)

    def with_previous(x, fill):
        prev = jnp.concatenate([jnp.full_like(x[:, :, :, :1], fill), x[:, :, :, :-1]], axis=3)
        return jnp.concatenate([x, prev], axis=4)

    if n_chunks > 1:
        ck = with_previous(ck, 0)
        cv = with_previous(cv, 0)
        cpos_k = with_previous(cpos, -1)
        cmask_k = with_previous(cmask, False)  # the first chunk has no previous one
    else:
        cpos_k, cmask_k = cpos, cmask

    scores = jnp.einsum("bhrcid,bhrcjd->bhrcij", cq, ck)
    is_self = cpos[..., :, None] == cpos_k[..., None, :]
    scores = jnp.where(is_self, SELF_SCORE, scores)
    scores = jnp.where(cmask_k[..., None, :], scores, MASKED_SCORE)
    lse = jax.nn.logsumexp(scores, axis=-1, keepdims=True)
    weights = jnp.exp(scores - lse)
    if weights_hook is not None:
        weights = weights_hook(weights)
    out = jnp.einsum("bhrcij,bhrcjd->bhrcid", weights.astype(cv.dtype), cv,
                     preferred_element_type=jnp.float32)

    out = out.reshape(b, h, num_hashes, padded, d)
    lse = lse.reshape(b, h, num_hashes, padded)
    out = jnp.take_along_axis(out, undo[..., None], axis=3)  # back to positions
    lse = jnp.take_along_axis(lse, undo, axis=3)
    round_weights = jax.nn.softmax(lse, axis=2)  # combine hash rounds
    out = jnp.sum(out * round_weights[..., None], axis=2)  # [B, H, Lp, D]
    out = jnp.transpose(out, (0, 2, 1, 3))[:, :length]
    return out.astype(v.dtype)


@MODELS.register("reformer")
class ReformerAttention(SelfAttention):
    """LSH self-attention with shared query/key projections."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        num_hashes: int = 1
        num_buckets: int = 10

        def __post_init__(self):
            check_int("num_hashes", self.num_hashes)
            buckets = check_int("num_buckets", self.num_buckets)
            if buckets > 1 and buckets % 2:
                raise LraError(
                    f"model.num_buckets={buckets} must be 1 or even "
                    "(buckets are argmax over [xR, -xR])"
                )

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        del self.key  # shared QK: keys come from the query projection
        num_hashes = self.num_hashes = self.options.num_hashes
        num_buckets = self.num_buckets = self.options.num_buckets
        self.chunk_len = -(-shape.seq_len // num_buckets)
        rot = max(num_buckets // 2, 1)
        self.rotations = nnx.Variable(
            jax.random.normal(rngs.params(), (shape.head_dim, num_hashes, rot), jnp.float32)
        )

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        q = self.split_heads(self.query(x))
        v = self.split_heads(self.value(x))
        out = self.attend(q, q, v, mask, deterministic=deterministic, rngs=rngs)
        b, length = x.shape[:2]
        return self.out(out.reshape(b, length, self.shape.qkv_dim))

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        """Shared QK: `k` is ignored, keys are the normalised queries."""
        del k
        buckets = jax.lax.stop_gradient(
            hash_buckets(q, self.rotations[...], self.num_buckets)
        )
        hook = lambda w: self.drop_weights(w, deterministic, rngs)  # noqa: E731
        return lsh_attention(q, v, mask, buckets, chunk_len=self.chunk_len, weights_hook=hook)
