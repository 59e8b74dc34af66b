"""The vanilla Transformer: exact softmax attention (Vaswani et al., 2017)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lra.registry import MODELS
from lra.models.attention import (
    MixerOptions,
    MixerShape,
    SelfAttention,
    check_choice,
    masked_softmax_attention,
)

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "explicit")


@MODELS.register("transformer")
class SoftmaxAttention(SelfAttention):
    """Exact attention through `jax.nn.dot_product_attention`.

    implementation: `auto` takes the fused cuDNN flash kernel on a GPU with a
    16-bit compute dtype and XLA otherwise; `xla`/`cudnn` force one;
    `explicit` materialises the score matrix (the reference form). Attention
    dropout needs the weights, so while it is active in training the explicit
    form is used whatever is asked.
    """

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        implementation: str = "auto"

        def __post_init__(self):
            check_choice("implementation", self.implementation, IMPLEMENTATIONS)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        self.implementation = self.options.implementation

    def _fused_backend(self) -> str | None:
        if self.implementation in ("xla", "cudnn"):
            return self.implementation
        if self.implementation == "explicit":
            return None
        on_gpu = jax.default_backend() == "gpu"
        half = jnp.dtype(self.shape.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        return "cudnn" if on_gpu and half else "xla"

    def attend(self, q, k, v, mask, *, deterministic, rngs):
        dropout_active = not deterministic and self.shape.attention_dropout > 0
        backend = None if dropout_active else self._fused_backend()
        if backend is None:
            hook = lambda w: self.drop_weights(w, deterministic, rngs)  # noqa: E731
            return masked_softmax_attention(q, k, v, mask, weights_hook=hook)
        if backend == "cudnn":
            # Padding is always on the right, so per-example lengths describe the mask.
            return even_length_attention(q, k, v, mask.sum(axis=-1, dtype=jnp.int32), "cudnn")
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask[:, None, None, :], implementation="xla"
        )


def even_length_attention(q, k, v, lengths, implementation: str):
    """Attention over right-padded [batch, length, heads, dim] inputs, described by
    per-example `lengths`. cuDNN's fused kernel has no backward pass for an odd
    sequence length (a CLS token makes 1024 tokens 1025), so an odd length gets one
    extra zero position: masked as a key, ignored as a query and sliced off."""
    length = q.shape[1]
    if length % 2:
        pad = [(0, 0), (0, 1), (0, 0), (0, 0)]
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    out = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths,
                                       key_value_seq_lengths=lengths,
                                       implementation=implementation)
    return out[:, :length]
