"""Linear Transformer: kernelised attention with phi(x) = elu(x) + 1.

Katharopoulos et al., 2020, "Transformers are RNNs". The softmax similarity is
replaced by phi(q)^T phi(k), so attention factorises:

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps)

which costs O(L * D^2) and never forms the L x L matrix. As in LRA
(lra_benchmarks/models/linear_transformer/linear_attention.py) there is no
scaling of q/k, eps = 1e-6 is added to the normaliser and no attention dropout
is applied (there are no attention weights to drop). Unlike LRA, padded keys are
zeroed, so padding never contributes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lra.registry import MODELS
from lra.models.attention import MixerShape, SelfAttention

EPS = 1e-6  # LRA linear_attention(eps=1e-6)


def elu_feature_map(x):
    return jax.nn.elu(x) + 1.0


def linear_attention(q, k, v, mask, *, eps: float = EPS):
    """q, k, v: [B, L, H, D]; mask: [B, L] key mask. Computed in float32."""
    q_f = elu_feature_map(q.astype(jnp.float32))
    k_f = elu_feature_map(k.astype(jnp.float32))
    k_f = jnp.where(mask[:, :, None, None], k_f, 0.0)
    kv = jnp.einsum("blhm,blhd->bhmd", k_f, v.astype(jnp.float32))
    k_sum = k_f.sum(axis=1)  # [B, H, M]
    normaliser = jnp.einsum("blhm,bhm->blh", q_f, k_sum) + eps
    out = jnp.einsum("blhm,bhmd->blhd", q_f, kv) / normaliser[..., None]
    return out.astype(v.dtype)


@MODELS.register("linear_transformer")
class LinearAttention(SelfAttention):
    """Linear-time attention through the elu+1 feature map (no options, as in LRA)."""

    linear_time = True

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        del deterministic, rngs  # LRA applies no attention dropout here
        return linear_attention(q, k, v, mask)
