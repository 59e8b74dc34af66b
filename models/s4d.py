"""S4D (Gu, Gupta, Goel and Ré, 2022): a diagonal state-space layer per feature,
applied as a long convolution.

Each of the H features has its own SSM with N/2 complex states (their conjugates
are implied): A = -exp(A_real) + i A_imag, one learned step per feature, ZOH (or
bilinear) discretisation. The convolution kernel K_l = 2 Re(sum_n C_n B-bar_n
A-bar_n^l) is a Vandermonde product, applied by FFT. Bidirectional as S4: a second C
gives a kernel for the other direction, and the two-sided kernel has the causal part
at lags 0..L-1 and the anti-causal part at lags -1..-L (S4 FFTConv's off-by-one:
y_t gets sum_{s>t} K'_{s-t-1} u_s). Facts from state-spaces/s4:
src/models/sequence/kernels/{ssm.py, dplr.py, fftconv.py}, src/models/sequence/modules/s4block.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.errors import LraError
from lra.models.attention import (
    MixerOptions, MixerShape, SsmParam, TokenMixer, check_bool, check_choice, check_int,
)
from lra.models.ssm import (
    DISCRETISATIONS, check_range, complex_param, discretise, hippo_n_eig, log_step_init,
    zero_padding,
)
from lra.registry import MODELS

INITS = ("legs", "inv", "lin")


def s4d_init(init: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(A [N/2], B [N/2]) of S4D-LegS / -Inv / -Lin (dplr.py `dplr`): real part -1/2;
    imaginary part from HiPPO-N's eigenvalues (LegS, with B = V^* B_LegS,
    B_LegS,i = sqrt(2i+1)), N/pi (N/(2i+1) - 1) (Inv) or pi i (Lin), with B = 1."""
    half = np.arange(n // 2)
    b = np.ones(n // 2, complex)
    if init == "legs":
        lam, v = hippo_n_eig(n)
        keep = np.argsort(-lam.imag)[: n // 2]  # one of each conjugate pair: Im > 0
        imag = lam.imag[keep]
        b = v[:, keep].conj().T @ np.sqrt(2 * np.arange(n) + 1.0)
    elif init == "inv":
        imag = n / np.pi * (n / (1 + 2 * half) - 1)
    else:
        imag = np.pi * half
    return -0.5 + 1j * imag, b


@MODELS.register("s4d")
class S4D(TokenMixer):
    """S4D convolution mixer, [B, L, H] -> [B, L, H] (S4's FFTConv with SSMKernelDiag).

    state_size: N (N/2 complex states per feature); init: legs | inv | lin;
    n_ssm: how many distinct (A, B) pairs the H features share (S4's n_ssm; null =
    one per feature); dt_with_ssm: train log-step with A and B at the SSM rate (S4's
    `lr.dt`; false = the global group).
    """

    linear_time = True  # O(L log L) by FFT

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        state_size: int = 64
        init: str = "legs"
        discretization: str = "zoh"
        bidirectional: bool = True
        n_ssm: int | None = None  # None: one (A, B) per feature
        dt_min: float = 0.001
        dt_max: float = 0.1
        dt_with_ssm: bool = True

        def __post_init__(self):
            if check_int("state_size", self.state_size, minimum=2) % 2:
                raise LraError(f"model.state_size={self.state_size} must be even "
                               "(N/2 complex states and their conjugates)")
            check_choice("init", self.init, INITS)
            check_choice("discretization", self.discretization, DISCRETISATIONS)
            check_bool("bidirectional", self.bidirectional)
            if self.n_ssm is not None:
                check_int("n_ssm", self.n_ssm)
            check_range("dt", self.dt_min, self.dt_max)
            check_bool("dt_with_ssm", self.dt_with_ssm)

    @classmethod
    def check(cls, shape: MixerShape, options: MixerOptions) -> None:
        super().check(shape, options)
        if options.n_ssm is not None and shape.dim % options.n_ssm:
            raise LraError(f"model.n_ssm={options.n_ssm} must divide encoder.dim={shape.dim} "
                           "(or be null: one SSM per feature)")

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        o = self.options
        h = shape.dim
        copies = o.n_ssm or h
        a, b = s4d_init(o.init, o.state_size)
        def copied(v):  # the same initial value for each of the n_ssm copies
            return jnp.asarray(np.broadcast_to(v, (copies, *v.shape)), jnp.float32)

        self.A_real = SsmParam(copied(np.log(-a.real)))  # A.real = -exp(A_real)
        self.A_imag = SsmParam(copied(a.imag))
        self.B = SsmParam(copied(np.stack([b.real, b.imag], -1)))
        dt_type = SsmParam if o.dt_with_ssm else nnx.Param
        self.log_dt = dt_type(log_step_init(rngs.params(), (h,), o.dt_min, o.dt_max))
        channels = 2 if o.bidirectional else 1
        # C ~ complex standard normal (torch.randn cfloat: variance 1/2 per part)
        self.C = nnx.Param(jax.random.normal(rngs.params(), (channels, h, o.state_size // 2, 2))
                           * np.sqrt(0.5))
        self.D = nnx.Param(jax.random.normal(rngs.params(), (h,)))

    def discrete(self, dtype=jnp.float32):
        """(A-bar [H, N/2], B-bar [H, N/2]) per feature."""
        h = self.log_dt.shape[0]
        reps = h // self.A_real.shape[0]
        lam = -jnp.exp(self.A_real[...].astype(dtype)) + 1j * self.A_imag[...].astype(dtype)
        lam = jnp.tile(lam, (reps, 1))
        b = jnp.tile(complex_param(self.B[...].astype(dtype)), (reps, 1))
        dt = jnp.exp(self.log_dt[...].astype(dtype))[:, None]
        a_bar, factor = discretise(lam, dt, self.options.discretization)
        return a_bar, factor * b

    def kernel(self, length: int, dtype=jnp.float32) -> jax.Array:
        """K [channels, H, L]: K_l = 2 Re(sum_n C_n B-bar_n A-bar_n^l) (Vandermonde)."""
        a_bar, b_bar = self.discrete(dtype)
        powers = jnp.exp(jnp.log(a_bar)[..., None] * jnp.arange(length))  # [H, N/2, L]
        cb = complex_param(self.C[...].astype(dtype)) * b_bar  # [c, H, N/2]
        return 2.0 * jnp.einsum("chn,hnl->chl", cb, powers).real

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        work = jnp.promote_types(x.dtype, jnp.float32)
        u = zero_padding(x, mask).astype(work)
        length = u.shape[1]
        k = self.kernel(length, work)
        if self.options.bidirectional:
            full = jnp.concatenate([k[0], jnp.flip(k[1], -1)], axis=-1)  # lags 0..L-1, -L..-1
        else:
            full = jnp.pad(k[0], ((0, 0), (0, length)))
        n = 2 * length
        y = jnp.fft.irfft(jnp.fft.rfft(u, n=n, axis=1) * jnp.fft.rfft(full, n=n, axis=-1).T[None],
                          n=n, axis=1)[:, :length]
        return (y + self.D[...].astype(work) * u).astype(x.dtype)
