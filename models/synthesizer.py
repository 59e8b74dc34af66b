"""Synthesizer: attention weights synthesised without (only) query-key products.

Tay et al., 2021. Logits over the keys come from
* `dense`: a 2-layer MLP per token, relu(x_i W1_h) W2 -> one row of seq_len
  logits, W1: [dim, heads * head_dim], W2: [head_dim, seq_len] shared by heads;
* `random`: a learned matrix R_h [seq_len, seq_len] per head;
* `factorized_random`: R_h = R1_h R2_h, R1_h [seq_len, k], R2_h [k, seq_len];
and `dense+random` / `dense+factorized_random` add the two. Unless
`ignore_dot_product` is set, the usual q.k/sqrt(d) logits are added as well.
Keys beyond the input length use the first L rows/columns; padded keys are
masked; softmax in float32, then LRA's attention dropout. Quadratic by nature.

Source: google-research/long-range-arena lra_benchmarks/models/synthesizer/
synthesizer_attention.py (SynthesizerAttention) and synthesizer.py. The LRA
encoder's defaults are what LRA ran: synthesizer_mode='random',
ignore_dot_product=False (synthetic logits *mixed* with dot-product attention),
k=32 (the attention default; the encoder's `k` is never passed down). Departures:
* LRA's dense mode reshapes [B, L, H, max_len] to [B, H, L, max_len] (a
  reshape, not a transpose, flagged with a TODO there); we transpose.
* LRA only masks padding when the dot product is used; we always mask.
* With ignore_dot_product the query/key projections are unused (LRA does not
  create them); we drop them too.
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
    check_bool,
    check_choice,
    check_int,
)

MODES = ("dense", "random", "factorized_random", "dense+random", "dense+factorized_random")


@MODELS.register("synthesizer")
class SynthesizerAttention(SelfAttention):
    """Dense / random / factorised-random synthetic attention."""

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        mode: str = "random"
        k: int = 32
        ignore_dot_product: bool = False

        def __post_init__(self):
            check_choice("mode", self.mode, MODES)
            check_int("k", self.k)
            check_bool("ignore_dot_product", self.ignore_dot_product)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        mode = self.mode = self.options.mode
        k = self.k = self.options.k
        ignore_dot_product = self.ignore_dot_product = self.options.ignore_dot_product
        if ignore_dot_product:
            del self.query, self.key
        h, n = shape.num_heads, shape.seq_len
        parts = mode.split("+")
        if "factorized_random" in parts:
            self.random1 = nnx.Param(KERNEL_INIT(rngs.params(), (h, n, k)))
            self.random2 = nnx.Param(KERNEL_INIT(rngs.params(), (h, k, n)))
        elif "random" in parts:
            self.random = nnx.Param(KERNEL_INIT(rngs.params(), (h, n, n)))
        if "dense" in parts:
            dense = dict(use_bias=False, kernel_init=KERNEL_INIT, dtype=shape.dtype, rngs=rngs)
            self.dense1 = nnx.Linear(shape.dim, shape.qkv_dim, **dense)
            self.dense2 = nnx.Linear(shape.head_dim, n, **dense)

    def synthetic_logits(self, x):
        """x [B, L, dim] -> logits [B or 1, H, L, L] in float32."""
        length = x.shape[1]
        parts = self.mode.split("+")
        logits = jnp.zeros((1, 1, length, length), jnp.float32)
        if "factorized_random" in parts:
            r1 = self.random1[...][:, :length]
            r2 = self.random2[...][:, :, :length]
            logits = logits + jnp.einsum("hlk,hkn->hln", r1, r2)[None]
        elif "random" in parts:
            logits = logits + self.random[...][None, :, :length, :length]
        if "dense" in parts:
            hidden = jax.nn.relu(self.split_heads(self.dense1(x)))  # [B, L, H, Dh]
            rows = self.dense2(hidden)[..., :length]  # [B, L, H, L]
            logits = logits + jnp.transpose(rows, (0, 2, 1, 3)).astype(jnp.float32)
        return logits

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        v = self.split_heads(self.value(x))
        logits = self.synthetic_logits(x)
        if not self.ignore_dot_product:
            q = self.split_heads(self.query(x))
            k = self.split_heads(self.key(x))
            scale = q.shape[-1] ** -0.5
            logits = logits + jnp.einsum(
                "bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32
            ) * scale
        out = self.attend_logits(logits, v, mask, deterministic=deterministic, rngs=rngs)
        b, length = x.shape[:2]
        return self.out(out.reshape(b, length, self.shape.qkv_dim))

    def attend_logits(self, logits, v, mask, *, deterministic, rngs):
        """Masked softmax over keys of logits [B|1, H, L, L] applied to v [B, L, H, D]."""
        key_mask = mask[:, None, None, :]
        logits = jnp.where(key_mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = jnp.where(key_mask, weights, 0.0).astype(v.dtype)
        weights = self.drop_weights(weights, deterministic, rngs)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, v)

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        raise NotImplementedError("Synthesizer mixes tokens through __call__")
