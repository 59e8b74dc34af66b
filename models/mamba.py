"""Mamba (Gu and Dao, 2023): a selective state-space mixer whose step, B and C
depend on the input, computed by a parallel scan.

The Mamba block (state-spaces/mamba mamba_ssm/modules/mamba_simple.py): project
to 2E channels (x, z); x -> causal depthwise convolution -> SiLU -> selective SSM
h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t, with
dt_t = softplus(W_dt (W_x x_t) + b_dt), (B_t, C_t) = W_x x_t; then y * SiLU(z) and a
projection back to H. A = -exp(A_log), initialised to -(1..N) per channel (S4D-Real),
D = 1, b_dt such that softplus(b_dt) is log-uniform in [dt_min, dt_max].

Bidirectional (for classification, as Vision Mamba, Zhu et al. 2024, Algorithm 1):
a second convolution and SSM with their own parameters read the sequence
backwards; the two outputs are summed before the gate. Use it with
`encoder.block=ssm encoder.activation=none`, Mamba's own residual block
(norm -> mixer -> residual). Padding: inputs are zeroed at padded positions and the
convolution outputs are zeroed there again, so the state stays 0 across padding in
either direction.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra.models.attention import (
    MixerOptions, MixerShape, SsmParam, TokenMixer, check_bool, check_int,
)
from lra.models.ssm import check_range, linear_scan, log_step_init, zero_padding
from lra.registry import MODELS


class SelectiveSsm(nnx.Module):
    """One direction: causal depthwise convolution, SiLU, selective scan."""

    def __init__(self, channels: int, state_size: int, conv_size: int, dt_rank: int,
                 dt_min: float, dt_max: float, *, rngs: nnx.Rngs):
        self.state_size, self.dt_rank = state_size, dt_rank
        bound = 1.0 / math.sqrt(conv_size)  # torch Conv1d default init, fan_in = conv_size

        def uniform(shape):
            return jax.random.uniform(rngs.params(), shape, minval=-bound, maxval=bound)

        self.conv_kernel = nnx.Param(uniform((conv_size, channels)))
        self.conv_bias = nnx.Param(uniform((channels,)))
        self.x_proj = nnx.Linear(channels, dt_rank + 2 * state_size, use_bias=False, rngs=rngs)
        std = dt_rank ** -0.5  # dt_init "random", dt_scale 1
        dt = jnp.maximum(jnp.exp(log_step_init(rngs.params(), (channels,), dt_min, dt_max)), 1e-4)
        self.dt_proj = nnx.Linear(
            dt_rank, channels, rngs=rngs,
            kernel_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(
                key, shape, dtype, -std, std),
            # the inverse of softplus at dt
            bias_init=lambda key, shape, dtype=jnp.float32: (
                dt + jnp.log(-jnp.expm1(-dt))).astype(dtype),
        )
        self.A_log = SsmParam(jnp.log(jnp.tile(jnp.arange(1, state_size + 1, dtype=jnp.float32),
                                               (channels, 1))))
        self.D = SsmParam(jnp.ones((channels,)))

    def coefficients(self, x):
        """Input-dependent (dt [B, L, E], B [B, L, N], C [B, L, N])."""
        proj = self.x_proj(x)
        dt_in, b, c = jnp.split(proj, [self.dt_rank, self.dt_rank + self.state_size], axis=-1)
        return jax.nn.softplus(self.dt_proj(dt_in)), b, c

    def __call__(self, x, mask):
        """x [B, L, E] (zero at padding) -> y [B, L, E]."""
        k = self.conv_kernel.shape[0]
        padded = jnp.pad(x, ((0, 0), (k - 1, 0), (0, 0)))
        length = x.shape[1]
        conv = sum(padded[:, i:i + length] * self.conv_kernel[...][i] for i in range(k))
        x = zero_padding(jax.nn.silu(conv + self.conv_bias[...]), mask)
        dt, b, c = self.coefficients(x)
        a = -jnp.exp(self.A_log[...].astype(x.dtype))
        states = linear_scan(jnp.exp(dt[..., None] * a),
                             (dt * x)[..., None] * b[:, :, None, :])  # [B, L, E, N]
        return jnp.einsum("blen,bln->ble", states, c) + self.D[...] * x


@MODELS.register("mamba")
class Mamba(TokenMixer):
    """Mamba block as a token mixer, [B, L, H] -> [B, L, H]."""

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        state_size: int = 16
        expand: int = 2
        conv_size: int = 4
        dt_rank: int | None = None  # None: "auto", ceil(dim / 16)
        dt_min: float = 0.001
        dt_max: float = 0.1
        bidirectional: bool = True

        def __post_init__(self):
            for name in ("state_size", "expand", "conv_size"):
                check_int(name, getattr(self, name))
            if self.dt_rank is not None:
                check_int("dt_rank", self.dt_rank)
            check_range("dt", self.dt_min, self.dt_max)
            check_bool("bidirectional", self.bidirectional)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        o = self.options
        h = shape.dim
        inner = o.expand * h
        rank = o.dt_rank or math.ceil(h / 16)  # dt_rank "auto"
        self.in_proj = nnx.Linear(h, 2 * inner, use_bias=False, rngs=rngs)
        args = (inner, o.state_size, o.conv_size, rank, o.dt_min, o.dt_max)
        self.forward = SelectiveSsm(*args, rngs=rngs)
        self.backward = SelectiveSsm(*args, rngs=rngs) if o.bidirectional else None
        self.out_proj = nnx.Linear(inner, h, use_bias=False, rngs=rngs)

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        dtype = x.dtype
        work = jnp.promote_types(dtype, jnp.float32)
        xz = self.in_proj(zero_padding(x, mask).astype(work))
        u, z = jnp.split(xz, 2, axis=-1)
        y = self.forward(u, mask)
        if self.backward is not None:  # padding, flipped to the left, meets a zero state
            flip = lambda v: jnp.flip(v, axis=1)  # noqa: E731
            y = y + flip(self.backward(flip(u), flip(mask)))
        return self.out_proj(y * jax.nn.silu(z)).astype(dtype)
