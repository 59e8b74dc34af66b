"""S5 (Smith, Warrington and Linderman, 2023): a MIMO diagonal state-space layer
computed by a parallel scan.

x_t = Lambda-bar x_{t-1} + B-bar u_t,  y_t = Re(C-tilde x_t) + D u_t, with
Lambda = diag of the block-diagonalised HiPPO-N matrix, one learned step size per
state, ZOH (or bilinear) discretisation. Facts (initialisations, the optimiser
groups) from lindermanlab/S5: s5/ssm.py, s5/ssm_init.py, s5/train.py and
s5/train_helpers.py.
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
    DISCRETISATIONS, as_real_pair, block_hippo_n, check_range, complex_param, discretise,
    linear_scan, log_step_init, zero_padding,
)
from lra.registry import MODELS

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
# S5's opt_config (s5/train_helpers.py create_train_state), as the set of parameters
# trained at the SSM learning rate without weight decay (`SsmParam`); the rest get
# AdamW at the global rate. BandCdecay (B at the SSM rate *with* weight decay) needs a
# third group and is not offered.
OPT_CONFIGS = {
    "standard": ("Lambda_re", "Lambda_im", "B", "log_step"),
    "BfastandCdecay": ("Lambda_re", "Lambda_im", "log_step"),
    "noBCdecay": ("Lambda_re", "Lambda_im", "B", "log_step", "C", "C1", "C2", "D"),
}


@MODELS.register("s5")
class S5(TokenMixer):
    """S5 SSM mixer, [B, L, H] -> [B, L, H].

    state_size: P before conjugate symmetry (S5's ssm_size_base); blocks: J, the
    number of HiPPO-N blocks on A's diagonal; conj_sym keeps P/2 complex states and
    returns 2 Re(C x); bidirectional adds a reverse scan with the same Lambda and B
    and its own output matrix C2 (y = Re(C1 x_fwd + C2 x_bwd) + D u); dt_global
    moves log_step into the global optimiser group (S5's --dt_global).
    """

    linear_time = True

    @dataclasses.dataclass(frozen=True)
    class Options(MixerOptions):
        state_size: int = 256
        blocks: int = 8
        c_init: str = "trunc_standard_normal"
        discretization: str = "zoh"
        conj_sym: bool = True
        clip_eigs: bool = False
        bidirectional: bool = True
        dt_min: float = 0.001
        dt_max: float = 0.1
        dt_global: bool = False
        opt_config: str = "standard"

        def __post_init__(self):
            state_size = check_int("state_size", self.state_size)
            blocks = check_int("blocks", self.blocks)
            for name in ("conj_sym", "clip_eigs", "bidirectional", "dt_global"):
                check_bool(name, getattr(self, name))
            if state_size % blocks or (self.conj_sym and state_size // blocks % 2):
                raise LraError(
                    f"model.blocks={blocks} must divide model.state_size={state_size} into "
                    "blocks" + (" of even size (conj_sym)" if self.conj_sym else ""))
            check_choice("c_init", self.c_init, C_INITS)
            check_choice("discretization", self.discretization, DISCRETISATIONS)
            check_choice("opt_config", self.opt_config, tuple(OPT_CONFIGS))
            check_range("dt", self.dt_min, self.dt_max)

    def __init__(self, shape: MixerShape, *, rngs: nnx.Rngs, **options):
        super().__init__(shape, rngs=rngs, **options)
        o = self.options
        h = shape.dim
        lam, v, v_inv = block_hippo_n(o.state_size, o.blocks, o.conj_sym)
        p = len(lam)
        ssm_names = set(OPT_CONFIGS[o.opt_config]) - ({"log_step"} if o.dt_global else set())

        def param(name, value):
            return (SsmParam if name in ssm_names else nnx.Param)(jnp.asarray(value, jnp.float32))

        self.Lambda_re = param("Lambda_re", lam.real)
        self.Lambda_im = param("Lambda_im", lam.imag)
        # B: lecun_normal over the full N x H, then projected by V^-1 (init_VinvB).
        b = jax.nn.initializers.lecun_normal()(rngs.params(), (o.state_size, h))
        self.B = param("B", as_real_pair(jnp.asarray(v_inv) @ b))
        for name in self.c_names():
            setattr(self, name, param(name, self._init_c(o.c_init, rngs.params(), h, p, v)))
        self.D = param("D", jax.random.normal(rngs.params(), (h,)))
        self.log_step = param("log_step", log_step_init(rngs.params(), (p,), o.dt_min, o.dt_max))

    def c_names(self) -> tuple[str, ...]:
        """The output matrices: C1 (forward) and C2 (reverse) when bidirectional, else C."""
        return ("C1", "C2") if self.options.bidirectional else ("C",)

    @staticmethod
    def _init_c(c_init: str, key, h: int, p: int, v: np.ndarray) -> jax.Array:
        """C-tilde [H, P, 2] as S5's C_init (s5/ssm.py, s5/ssm_init.py)."""
        if c_init == "complex_normal":  # sampled directly as C-tilde, not multiplied by V
            return jax.random.normal(key, (h, p, 2)) * np.sqrt(0.5)
        n = v.shape[0]
        if c_init == "lecun_normal":
            c = jax.nn.initializers.lecun_normal()(key, (h, n, 2))
        else:  # trunc_standard_normal: lecun_normal of shape (1, N, 2) for each row
            row = jax.nn.initializers.lecun_normal()
            c = jax.vmap(lambda k: row(k, (1, n, 2))[0])(jax.random.split(key, h))
        return as_real_pair(complex_param(c) @ jnp.asarray(v))

    def discrete(self, dtype=jnp.float32):
        """(Lambda-bar [P], B-bar [P, H]) from the continuous parameters, in `dtype`
        (float32, or float64 when the input is)."""
        re = self.Lambda_re[...].astype(dtype)
        if self.options.clip_eigs:  # keep Re(Lambda) < 0 (S5 --clip_eigs)
            re = jnp.minimum(re, -1e-4)
        lam = re + 1j * self.Lambda_im[...].astype(dtype)
        step = jnp.exp(self.log_step[...].astype(dtype))
        a_bar, factor = discretise(lam, step, self.options.discretization)
        return a_bar, factor[:, None] * complex_param(self.B[...].astype(dtype))

    def __call__(self, x, mask, *, deterministic: bool = True, rngs=None):
        work = jnp.promote_types(x.dtype, jnp.float32)
        u = zero_padding(x, mask).astype(work)
        a_bar, b_bar = self.discrete(work)
        bu = jnp.einsum("blh,ph->blp", u, b_bar)
        c = [complex_param(getattr(self, n)[...].astype(work)) for n in self.c_names()]
        y = jnp.einsum("blp,hp->blh", linear_scan(a_bar, bu), c[0])
        if self.options.bidirectional:
            y = y + jnp.einsum("blp,hp->blh", linear_scan(a_bar, bu, reverse=True), c[1])
        y = (2.0 if self.options.conj_sym else 1.0) * y.real
        return (y + self.D[...].astype(work) * u).astype(x.dtype)
