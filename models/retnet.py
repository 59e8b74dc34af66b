"""Multi-scale retention (Sun et al., 2023, "Retentive Network: A Successor to
Transformer for Large Language Models", arXiv:2307.08621).

Per head h, with decay gamma_h = 1 - 2^(-5-h) (the paper's multi-scale decays) and
queries and keys rotated by their position (the paper's Theta, as in RoPE):

    Retention(X) = (Q K^T / sqrt(d) * D) V,   D_nm = gamma^(n-m) if n >= m else 0,

and the bidirectional variant for classification, D_nm = gamma^|n-m|. The heads
are normalised by a GroupNorm (one group per head), gated by swish(X W_G), and
projected out: MSR(X) = (swish(X W_G) * GroupNorm(heads)) W_O.

Training uses this parallel form (O(L^2), as in the paper); `recurrent_retention`
is the recurrent form S_n = gamma S_{n-1} + k_n^T v_n, o_n = q_n S_n (run forward,
and backward for the bidirectional variant, minus the doubly counted n = m term),
kept for checking: the two agree (tests/test_models_new.py). Padded keys are
masked out of D, so appending padding changes nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.registry import MODELS
from lra.models.attention import KERNEL_INIT, MixerOptions, SelfAttention, check_bool
from lra.models.blocks import acc_dtype


def decays(num_heads: int) -> np.ndarray:
    """gamma_h = 1 - 2^(-5-h), h = 0..H-1 (RetNet Sec. 2.2)."""
    return 1.0 - 2.0 ** (-5.0 - np.arange(num_heads))


def rotate(x):
    """Rotate feature pairs of x [B, L, H, D] by angle n * theta_i (RoPE's theta_i)."""
    length, d = x.shape[1], x.shape[-1]
    theta = 10000.0 ** (-np.arange(0, d, 2) / d)
    angle = np.arange(length)[:, None] * theta[None, :]  # [L, D/2]
    cos = jnp.asarray(np.cos(angle), x.dtype)[None, :, None, :]
    sin = jnp.asarray(np.sin(angle), x.dtype)[None, :, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    return jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1).reshape(x.shape)


def decay_matrix(length: int, gammas, bidirectional: bool, dtype):
    """D [H, L, L]: gamma^|n-m| (bidirectional) or gamma^(n-m) for n >= m, else 0."""
    n = np.arange(length)
    diff = n[:, None] - n[None, :]
    if bidirectional:
        diff = np.abs(diff)
    g = jnp.asarray(gammas, dtype)[:, None, None]
    return jnp.where(diff >= 0, g ** jnp.asarray(np.maximum(diff, 0), dtype), 0.0)


def parallel_retention(q, k, v, mask, gammas, bidirectional: bool):
    """(Q K^T / sqrt(d) * D) V over unmasked keys; q, k already rotated. [B, L, H, D]."""
    acc = acc_dtype(q.dtype)
    scores = jnp.einsum("bnhd,bmhd->bhnm", q, k, preferred_element_type=acc)
    scores = scores * jnp.asarray(q.shape[-1] ** -0.5, acc)
    weights = scores * decay_matrix(q.shape[1], gammas, bidirectional, acc)[None]
    weights = jnp.where(mask[:, None, None, :], weights, 0.0)
    return jnp.einsum("bhnm,bmhd->bnhd", weights, v.astype(acc))


def recurrent_retention(q, k, v, mask, gammas, bidirectional: bool):
    """The same retention by the recurrence over positions (the form for checking)."""
    acc = acc_dtype(q.dtype)
    k = jnp.where(mask[..., None, None], k, 0).astype(acc) * q.shape[-1] ** -0.5
    q, v = q.astype(acc), v.astype(acc)
    g = jnp.asarray(gammas, acc)[None, :, None, None]

    def scan(q, k, v):
        def step(state, qkv):
            qn, kn, vn = qkv  # [B, H, D]
            state = g * state + jnp.einsum("bhd,bhe->bhde", kn, vn)
            return state, jnp.einsum("bhd,bhde->bhe", qn, state)

        state = jnp.zeros((q.shape[0], q.shape[2], q.shape[3], v.shape[3]), acc)
        _, out = jax.lax.scan(step, state, (q.swapaxes(0, 1), k.swapaxes(0, 1), v.swapaxes(0, 1)))
        return out.swapaxes(0, 1)

    out = scan(q, k, v)
    if bidirectional:
        out = out + scan(q[:, ::-1], k[:, ::-1], v[:, ::-1])[:, ::-1]
        out = out - jnp.einsum("blhd,blhd->blh", q, k)[..., None] * v
    return out


@MODELS.register("retnet")
class MultiScaleRetention(SelfAttention):
    """Multi-scale retention, parallel form, with the gate and the per-head GroupNorm."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        bidirectional: bool = True

        def __post_init__(self):
            check_bool("bidirectional", self.bidirectional)

    def __init__(self, shape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        self.gate = nnx.Linear(shape.dim, shape.qkv_dim, use_bias=False, kernel_init=KERNEL_INIT,
                               dtype=shape.dtype, rngs=rngs)
        self.group_norm = nnx.GroupNorm(shape.qkv_dim, num_groups=shape.num_heads,
                                        dtype=shape.dtype, rngs=rngs)

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        q = rotate(self.split_heads(self.query(x)))
        k = rotate(self.split_heads(self.key(x)))
        v = self.split_heads(self.value(x))
        out = self.attend(q, k, v, mask, deterministic=deterministic, rngs=rngs)
        b, length = x.shape[:2]
        # Normalised per position: [B * L, qkv_dim] keeps GroupNorm from pooling over L.
        heads = self.group_norm(out.reshape(b * length, self.shape.qkv_dim).astype(x.dtype))
        heads = heads.reshape(b, length, self.shape.qkv_dim)
        return self.out(jax.nn.swish(self.gate(x)) * heads)

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        del deterministic, rngs  # RetNet applies no dropout to the retention weights
        gammas = decays(self.shape.num_heads)
        return parallel_retention(q, k, v, mask, gammas, self.options.bidirectional).astype(q.dtype)
