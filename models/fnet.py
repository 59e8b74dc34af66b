"""FNet (Lee-Thorp et al., 2022, "FNet: Mixing Tokens with Fourier Transforms").

The token mixer is the real part of a 2-D discrete Fourier transform, over the
hidden dimension and over the sequence: y = Re(FFT_seq(FFT_hidden(x))). It has no
parameters and no attention; the encoder's residual, norms and MLP are unchanged.

Padding: positions the mask marks as padding are zeroed before the transform, so
their contents never reach a real token. The transform's length is still the
padded length (as in FNet, which pads every input to its fixed length), so
appending padding changes the outputs: FNet is exempt from the padding-invariance
contract for that reason (tests/test_model_contract.py).

Cost O(L log L) per feature through the FFT; no L x L array (tested).
"""

from __future__ import annotations

import jax.numpy as jnp

from lra.registry import MODELS
from lra.models.attention import TokenMixer
from lra.models.blocks import acc_dtype


@MODELS.register("fnet")
class FourierMixer(TokenMixer):
    """Re(DFT over length and width) of the unmasked inputs; no options."""

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        del deterministic, rngs
        # jnp.fft has no 16-bit kernels: transform in float32 (float64 stays float64).
        xf = jnp.where(mask[..., None], x, 0).astype(acc_dtype(x.dtype))
        return jnp.fft.fft2(xf, axes=(1, 2)).real.astype(x.dtype)
