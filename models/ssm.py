"""Helpers shared by the state-space mixers (S4D, S5, LRU, Mamba): HiPPO
initialisations, discretisation, the diagonal linear scan, and padding.

Every mixer here maps u [B, L, H] to y [B, L, H] through a diagonal linear
recurrence x_t = a_t * x_{t-1} + b_t. Padded positions (mask False, always on the
right) get zero input, so a forward scan never sees them and a reverse scan starts
from a zero state at the last real token: outputs at real positions do not depend
on how much padding follows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lra.errors import LraError

DISCRETISATIONS = ("zoh", "bilinear")


def hippo_legs(n: int) -> np.ndarray:
    """The HiPPO-LegS state matrix A (Gu et al. 2020): -sqrt(2i+1)sqrt(2j+1) below
    the diagonal, -(i+1) on it, 0 above."""
    p = np.sqrt(1 + 2 * np.arange(n))
    a = np.tril(p[:, None] * p[None, :]) - np.diag(np.arange(n))
    return -a


def hippo_n_eig(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of HiPPO-N, the normal part of HiPPO-LegS
    (A + P P^T with P_i = sqrt(i + 1/2)): real parts all -1/2, imaginary parts from
    the Hermitian matrix -i S (S5 section 4.1, S4D's 'legs' init). Sorted as eigh
    returns them, so conjugate pairs sit at mirrored positions."""
    p = np.sqrt(np.arange(n) + 0.5)
    s = hippo_legs(n) + p[:, None] * p[None, :]
    imag, v = np.linalg.eigh(s * -1j)
    real = np.full(n, np.mean(np.diagonal(s)))
    return real + 1j * imag, v


def block_hippo_n(state_size: int, blocks: int, conj_sym: bool):
    """S5's block-diagonal initialisation: HiPPO-N of size state_size/blocks on
    each of `blocks` diagonal blocks (lindermanlab/S5 s5/train.py). With conjugate
    symmetry only half of each block's eigenvalues are kept (the other half are
    their conjugates, added back as 2 Re(.) in the output).

    Returns Lambda [P], V [N, P] and V^-1 [P, N], where N = state_size and P =
    N/2 under conj_sym, else N; V's columns are orthonormal, so V^-1 = V^H."""
    block = state_size // blocks
    lam, v = hippo_n_eig(block)
    if conj_sym:
        lam, v = lam[: block // 2], v[:, : block // 2]
    lam_all = np.tile(lam, blocks)
    v_all = np.zeros((state_size, len(lam_all)), np.complex128)
    for j in range(blocks):
        v_all[j * block:(j + 1) * block, j * v.shape[1]:(j + 1) * v.shape[1]] = v
    return lam_all, v_all, v_all.conj().T


def discretise(lam: jax.Array, step: jax.Array, method: str) -> tuple[jax.Array, jax.Array]:
    """Diagonal continuous-time A = diag(lam) with step sizes `step` -> (A-bar, the
    per-state factor that multiplies B). ZOH: exp(lam dt) and (exp(lam dt) - 1)/lam;
    bilinear: (1 + lam dt/2)/(1 - lam dt/2) and dt/(1 - lam dt/2)."""
    if method == "zoh":
        a_bar = jnp.exp(lam * step)
        return a_bar, (a_bar - 1.0) / lam
    if method == "bilinear":
        inv = 1.0 / (1.0 - lam * step / 2.0)
        return (1.0 + lam * step / 2.0) * inv, step * inv
    raise LraError(f"model.discretization={method!r} is not one of {', '.join(DISCRETISATIONS)}")


def log_step_init(key, shape, dt_min: float, dt_max: float) -> jax.Array:
    """log(dt) uniform in [log dt_min, log dt_max] (S4, S5)."""
    u = jax.random.uniform(key, shape)
    return u * (np.log(dt_max) - np.log(dt_min)) + np.log(dt_min)


def _combine(left, right):
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def linear_scan(a: jax.Array, b: jax.Array, *, reverse: bool = False) -> jax.Array:
    """x_t = a_t x_{t-1} + b_t over axis 1 from x = 0 (reverse: x_t = a_t x_{t+1} + b_t),
    by `jax.lax.associative_scan`. a broadcasts against b [B, L, ...]."""
    a = jnp.broadcast_to(a, b.shape)
    _, x = jax.lax.associative_scan(_combine, (a, b), axis=1, reverse=reverse)
    return x


def zero_padding(u: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero the inputs at padded positions (mask [B, L], True = real token)."""
    return jnp.where(mask[..., None], u, jnp.zeros((), u.dtype))


def complex_param(x: jax.Array) -> jax.Array:
    """A complex array stored as a real parameter with a trailing (re, im) axis."""
    return x[..., 0] + 1j * x[..., 1]


def as_real_pair(z) -> jax.Array:
    """The inverse of complex_param."""
    return jnp.stack([z.real, z.imag], axis=-1)


def check_range(name: str, low: float, high: float, *, positive: bool = True) -> None:
    """Config-time check of an initialisation interval [low, high] (options `name`_min
    and `name`_max)."""
    for end, value in (("min", low), ("max", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LraError(f"model.{name}_{end}={value!r} must be a number")
    if (positive and low <= 0) or not low <= high:
        bound = "0 < " if positive else ""
        raise LraError(f"model.{name}_min/{name}_max must satisfy {bound}min <= max, "
                       f"got {low} and {high}")
