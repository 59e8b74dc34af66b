"""Performer: FAVOR+ softmax attention with positive orthogonal random features.

Choromanski et al., 2021, "Rethinking Attention with Performers". With queries
and keys scaled by d^-1/4, exp(q^T k / sqrt(d)) = E_w[phi(q) phi(k)] for

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),   W: [m, d], rows w ~ N(0, I_d).

The rows of W come in orthogonal blocks (QR of a Gaussian d x d matrix) and are
rescaled by the norms of independent Gaussian vectors (chi-distributed with d
degrees of freedom), as in the paper and LRA's GaussianOrthogonalRandomMatrix
with `scaling=0`. Attention is then phi(Q) (phi(K)^T V) normalised by
phi(Q) (phi(K)^T 1): linear in the length, never L x L.

Numerical details follow LRA (lra_benchmarks/models/performer/
performer_attention.py, nonnegative_softmax_kernel_feature_creator and
FastAttentionviaLowRankDecomposition): before the exponential, query features
subtract their own max over features and key features subtract the max over
features and (real) positions; both constants cancel in the normalisation.
A stabiliser eps = 1e-6 is added to every feature and the normaliser R is
replaced by R + 2 eps where |R| <= eps. Everything runs in float32.

Departures from LRA: each block's QR factor is sign-corrected (columns times
sign(diag(R))) so it is Haar-distributed; LRA's plain QR leaves every block's
first row pointing against e_1, which biased the kernel estimate by ~10% in
our tests, whatever the number of features. Padded keys are zeroed (LRA
passes the padding mask to FAVOR, which ignores it), and the key max is taken
over real positions only, so appending padding changes nothing. LRA shares one
feature matrix drawn from PRNGKey(0) across all layers and (with redraw_features=True) redraws it every
call from a seed computed from sum(query); here each layer draws its own
matrix at construction from the `params` stream, keeps it (and its key) as
non-trainable `nnx.Variable`s, and with `redraw=True` draws fresh features
each training call from the `features` rng stream (falling back to `dropout`);
deterministic evaluation always uses the stored features.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.attention import MixerOptions, MixerShape, SelfAttention, check_bool, check_int

EPS = 1e-6  # LRA make_fast_softmax_attention(numerical_stabilizer=0.000001)


def draw_projection(key, num_features: int, dim: int) -> jax.Array:
    """W [num_features, dim]: orthogonal Gaussian blocks, rows with chi norms."""
    block_key, norm_key = jax.random.split(key)
    num_blocks = -(-num_features // dim)
    gaussian = jax.random.normal(block_key, (num_blocks, dim, dim), jnp.float32)
    q, r = jnp.linalg.qr(gaussian)  # columns of each q are orthonormal
    # Householder QR fixes the signs of diag(r), which biases the directions of
    # q (its first column always points against e_1); flipping the columns to a
    # positive diag(r) makes q Haar-distributed, so every row is uniform on the
    # sphere and the estimator unbiased. (LRA's plain QR omits this.)
    flip = jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
    q = q * flip[..., None, :]
    rows = jnp.swapaxes(q, -1, -2).reshape(num_blocks * dim, dim)[:num_features]
    norms = jnp.linalg.norm(
        jax.random.normal(norm_key, (num_features, dim), jnp.float32), axis=-1
    )
    return rows * norms[:, None]


def softmax_kernel_features(x, projection, mask=None, *, is_query: bool):
    """Positive random features phi(x) [B, L, H, m] (float32) for x [B, L, H, D].

    `mask` ([B, L], keys only) zeroes the features of padded positions and keeps
    them out of the stabilising max.
    """
    x = x.astype(jnp.float32)
    d = x.shape[-1]
    x = x * d**-0.25
    proj = jnp.einsum("blhd,md->blhm", x, projection.astype(jnp.float32))
    sq_norm = 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    if is_query:
        stab = jnp.max(proj, axis=-1, keepdims=True)
    else:
        real = mask[:, :, None, None] if mask is not None else True
        stab = jnp.max(jnp.where(real, proj, -jnp.inf), axis=(1, 3), keepdims=True)
        stab = jnp.where(jnp.isfinite(stab), stab, 0.0)  # rows with no real key
    logits = proj - sq_norm - jax.lax.stop_gradient(stab)
    if mask is not None and not is_query:
        # Masking before exp keeps garbage at padded positions from overflowing
        # (an inf there would turn into a NaN gradient through the where).
        logits = jnp.where(mask[:, :, None, None], logits, -jnp.inf)
    feats = (jnp.exp(logits) + EPS) / np.sqrt(projection.shape[0])
    if mask is not None and not is_query:
        feats = jnp.where(mask[:, :, None, None], feats, 0.0)
    return feats


def favor_attention(q, k, v, mask, projection):
    """Bidirectional FAVOR+ attention; q, k, v [B, L, H, D], mask [B, L]."""
    q_f = softmax_kernel_features(q, projection, is_query=True)
    k_f = softmax_kernel_features(k, projection, mask, is_query=False)
    kv = jnp.einsum("blhm,blhd->bhmd", k_f, v.astype(jnp.float32))
    numerator = jnp.einsum("blhm,bhmd->blhd", q_f, kv)
    normaliser = jnp.einsum("blhm,bhm->blh", q_f, k_f.sum(axis=1))
    normaliser = normaliser + 2 * EPS * (jnp.abs(normaliser) <= EPS)
    return (numerator / normaliser[..., None]).astype(v.dtype)


def _features_key(rngs):
    if isinstance(rngs, nnx.Rngs):
        return rngs["features"]() if "features" in rngs else rngs.dropout()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise LraError(
        "model.redraw=true needs an rng in training: pass rngs=nnx.Rngs(...) "
        "(a 'features' or 'dropout' stream) to the model call"
    )


@MODELS.register("performer")
class PerformerAttention(SelfAttention):
    """FAVOR+ attention with `num_features` positive orthogonal random features."""

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        num_features: int = 256
        redraw: bool = False

        def __post_init__(self):
            check_int("num_features", self.num_features)
            check_bool("redraw", self.redraw)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        num_features = self.num_features = self.options.num_features
        self.redraw = self.options.redraw
        key = rngs.params()
        # Non-trainable: the optimiser (which updates nnx.Param) never touches them.
        self.feature_key = nnx.Variable(jax.random.key_data(key))
        self.projection = nnx.Variable(draw_projection(key, num_features, shape.head_dim))

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        projection = self.projection[...]
        if self.redraw and not deterministic:
            projection = draw_projection(
                _features_key(rngs), self.num_features, self.shape.head_dim
            )
        return favor_attention(q, k, v, mask, projection)
