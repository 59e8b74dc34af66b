"""LRU, the Linear Recurrent Unit (Orvieto et al., 2023), computed by a parallel scan.

x_t = Lambda x_{t-1} + gamma * (B u_t),  y_t = Re(C x_t) + D u_t, with the diagonal
Lambda_j = exp(-exp(nu_log_j) + i exp(theta_log_j)) (the exponential
parameterisation: |Lambda| < 1 for any parameter value), its modulus initialised
uniformly on the ring [r_min, r_max] and its phase uniformly in [0, max_phase], and
the normalisation gamma_j = sqrt(1 - |Lambda_j|^2), stored as a trained log.
Paper section 3 and appendix A; initial values and the optimiser group as in the
authors' minimal-LRU (NicolasZucchet/minimal-LRU, lru/model.py and train_helpers.py):
B ~ N(0, 1/(2H)) per part, C ~ N(0, 1/N) per part, D ~ N(0, 1); nu, theta, gamma and B
at the SSM rate without weight decay.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.errors import LraError
from lra.models.attention import (
    MixerOptions, MixerShape, SsmParam, TokenMixer, check_bool, check_int, check_positive,
)
from lra.models.ssm import linear_scan, zero_padding
from lra.registry import MODELS


@MODELS.register("lru")
class LRU(TokenMixer):
    """LRU mixer, [B, L, H] -> [B, L, H].

    state_size: N complex states; bidirectional adds a reverse scan with the same
    Lambda and B and its own C2, as S5 composes its bidirectional layer (the LRU paper
    has no reverse form of its own).
    """

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        state_size: int = 256
        r_min: float = 0.0
        r_max: float = 1.0
        max_phase: float = 6.283
        bidirectional: bool = False

        def __post_init__(self):
            check_int("state_size", self.state_size)
            r_min, r_max = self.r_min, self.r_max
            numbers = all(isinstance(r, (int, float)) and not isinstance(r, bool)
                          for r in (r_min, r_max))
            if not (numbers and 0.0 <= r_min < r_max <= 1.0):
                raise LraError(f"model.r_min/r_max must satisfy 0 <= r_min < r_max <= 1, "
                               f"got {r_min!r} and {r_max!r}")
            check_positive("max_phase", self.max_phase)
            check_bool("bidirectional", self.bidirectional)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        o = self.options
        h, n, r_min, r_max = shape.dim, o.state_size, o.r_min, o.r_max
        u1 = jax.random.uniform(rngs.params(), (n,))
        u2 = jax.random.uniform(rngs.params(), (n,))
        # |Lambda| = exp(-nu) = r with r^2 ~ U[r_min^2, r_max^2]: uniform on the ring's area
        nu = -0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        self.nu_log = SsmParam(jnp.log(nu))
        self.theta_log = SsmParam(jnp.log(o.max_phase * u2))
        modulus = jnp.exp(-nu)
        self.gamma_log = SsmParam(jnp.log(jnp.sqrt(1 - modulus**2)))
        self.B = SsmParam(jax.random.normal(rngs.params(), (n, h, 2)) / np.sqrt(2 * h))
        for name in ("C1", "C2") if o.bidirectional else ("C",):
            setattr(self, name, nnx.Param(jax.random.normal(rngs.params(), (h, n, 2)) / np.sqrt(n)))
        self.D = nnx.Param(jax.random.normal(rngs.params(), (h,)))

    def diagonal(self, dtype=jnp.float32) -> jax.Array:
        """Lambda [N] = exp(-exp(nu_log) + i exp(theta_log))."""
        nu = jnp.exp(self.nu_log[...].astype(dtype))
        theta = jnp.exp(self.theta_log[...].astype(dtype))
        return jnp.exp(-nu + 1j * theta)

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        work = jnp.promote_types(x.dtype, jnp.float32)
        u = zero_padding(x, mask).astype(work)
        lam = self.diagonal(work)
        b = self.B[...].astype(work)
        gamma_b = jnp.exp(self.gamma_log[...].astype(work))[:, None] * (b[..., 0] + 1j * b[..., 1])
        bu = jnp.einsum("blh,nh->bln", u, gamma_b)

        def readout(states, name):
            c = getattr(self, name)[...].astype(work)
            return jnp.einsum("bln,hn->blh", states, c[..., 0] + 1j * c[..., 1]).real

        if self.options.bidirectional:
            y = (readout(linear_scan(lam, bu), "C1")
                 + readout(linear_scan(lam, bu, reverse=True), "C2"))
        else:
            y = readout(linear_scan(lam, bu), "C")
        return (y + self.D[...].astype(work) * u).astype(x.dtype)
