"""The state-space mixers against their definitions, in float64: each scan or
convolution equals the recurrence run step by step in a Python loop, the
bidirectional forms equal their papers' compositions, every initialisation is
stable after discretisation, padding changes nothing under masked mean pooling,
and the SsmParam marking lists exactly the parameters each recipe names."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.errors import LraError
from lra.models import EncoderConfig, build_model, check_model
from lra.models.attention import MixerShape, SsmParam
from lra.models.lru import LRU
from lra.models.mamba import Mamba
from lra.models.s4d import S4D, s4d_init
from lra.models.s5 import S5
from lra.models.ssm import block_hippo_n, hippo_legs, hippo_n_eig, linear_scan
from lra.registry import MODELS

H, L = 4, 9
SHAPE = MixerShape(dim=H, num_heads=1, qkv_dim=H, seq_len=L)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def inputs(seed=0, b=2, length=L, lengths=(L, 6)):
    u = np.random.default_rng(seed).normal(size=(b, length, H))
    mask = np.arange(length)[None, :] < np.array(lengths)[:, None]
    return jnp.asarray(u), jnp.asarray(mask)


def cplx(param):
    v = np.asarray(param[...], np.float64)
    return v[..., 0] + 1j * v[..., 1]


def recurrence(a_bar, b_bar, u, reverse=False):
    """x_t = a x_{t-1} + b u_t (or from the end), one step at a time."""
    x = np.zeros(a_bar.shape, complex)
    out = np.zeros((u.shape[0], a_bar.shape[0]), complex)
    steps = range(u.shape[0] - 1, -1, -1) if reverse else range(u.shape[0])
    for t in steps:
        x = a_bar * x + b_bar @ u[t]
        out[t] = x
    return out


def s5_discrete(m, method):
    lam = np.asarray(m.Lambda_re[...], np.float64) + 1j * np.asarray(m.Lambda_im[...], np.float64)
    if m.options.clip_eigs:
        lam = np.minimum(lam.real, -1e-4) + 1j * lam.imag
    dt = np.exp(np.asarray(m.log_step[...], np.float64))
    b = cplx(m.B)
    if method == "zoh":
        a_bar = np.exp(lam * dt)
        return a_bar, ((a_bar - 1) / lam)[:, None] * b
    a_bar = (1 + lam * dt / 2) / (1 - lam * dt / 2)
    return a_bar, (dt / (1 - lam * dt / 2))[:, None] * b


def s5_reference(m, u, mask, method):
    a_bar, b_bar = s5_discrete(m, method)
    scale = 2.0 if m.options.conj_sym else 1.0
    out = []
    for ub, mb in zip(np.asarray(u), np.asarray(mask)):
        ub = np.where(mb[:, None], ub, 0.0)
        if m.options.bidirectional:
            y = (recurrence(a_bar, b_bar, ub) @ cplx(m.C1).T
                 + recurrence(a_bar, b_bar, ub, reverse=True) @ cplx(m.C2).T)
        else:
            y = recurrence(a_bar, b_bar, ub) @ cplx(m.C).T
        out.append(scale * y.real + np.asarray(m.D[...], np.float64) * ub)
    return np.stack(out)


def test_linear_scan_equals_the_recurrence(x64):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (2, L, 3)) + 1j * rng.uniform(-0.5, 0.5, (2, L, 3))
    b = rng.normal(size=(2, L, 3)) + 1j * rng.normal(size=(2, L, 3))
    for reverse in (False, True):
        expected = np.zeros_like(b)
        for i in range(2):
            x = np.zeros(3, complex)
            for t in (range(L - 1, -1, -1) if reverse else range(L)):
                x = a[i, t] * x + b[i, t]
                expected[i, t] = x
        got = linear_scan(jnp.asarray(a), jnp.asarray(b), reverse=reverse)
        np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12)


@pytest.mark.parametrize("options", [
    dict(),
    dict(discretization="bilinear", bidirectional=False),
    dict(conj_sym=False, c_init="complex_normal", clip_eigs=True),
    dict(c_init="lecun_normal", blocks=1),
])
def test_s5_scan_equals_the_recurrence(x64, options):
    m = S5(SHAPE, **{**dict(state_size=8, blocks=2), **options}, rngs=nnx.Rngs(0))
    u, mask = inputs()
    got = np.asarray(m(u, mask))
    assert got.dtype == np.float64
    expected = s5_reference(m, u, mask, options.get("discretization", "zoh"))
    real = np.asarray(mask)
    np.testing.assert_allclose(got[real], expected[real], atol=1e-10)


def test_s5_bidirectional_is_forward_plus_reversed(x64):
    """S5: y = Re(C1 x_fwd) + Re(C2 x_bwd) + D u, the backward scan run on the
    reversed real tokens (padding at the end must not leak into it)."""
    bi = S5(SHAPE, state_size=8, blocks=2, rngs=nnx.Rngs(0))
    fwd = S5(SHAPE, state_size=8, blocks=2, bidirectional=False, rngs=nnx.Rngs(0))
    for name in ("Lambda_re", "Lambda_im", "B", "D", "log_step"):
        getattr(fwd, name)[...] = getattr(bi, name)[...]
    u, mask = inputs(1)
    got = np.asarray(bi(u, mask))
    for i, n in enumerate(np.asarray(mask).sum(1)):
        ui, ones = u[i:i + 1, :n], jnp.ones((1, n), bool)
        fwd.C = nnx.Param(bi.C1[...])
        forward = np.asarray(fwd(ui, ones))
        fwd.C = nnx.Param(bi.C2[...])
        backward = np.asarray(fwd(ui[:, ::-1], ones))[:, ::-1]
        du = np.asarray(bi.D[...]) * np.asarray(ui)
        np.testing.assert_allclose(got[i:i + 1, :n], forward + backward - du, atol=1e-10)


def test_hippo_n_is_the_normal_part_of_legs_and_blocks_are_block_diagonal(x64):
    n = 6
    lam, v = hippo_n_eig(n)
    p = np.sqrt(np.arange(n) + 0.5)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T,
                               hippo_legs(n) + np.outer(p, p), atol=1e-10)
    np.testing.assert_allclose(lam.real, -0.5)
    lam2, v2, v2_inv = block_hippo_n(2 * n, 2, conj_sym=False)
    block = hippo_legs(n) + np.outer(p, p)
    expected = np.block([[block, np.zeros((n, n))], [np.zeros((n, n)), block]])
    np.testing.assert_allclose(v2 @ np.diag(lam2) @ v2_inv, expected, atol=1e-10)
    # conjugate symmetry: the kept half and its conjugates are all the eigenvalues
    half, _, _ = block_hippo_n(n, 1, conj_sym=True)
    np.testing.assert_allclose(np.sort_complex(np.concatenate([half, half.conj()])),
                               np.sort_complex(lam), atol=1e-10)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("c_init", ["trunc_standard_normal", "lecun_normal", "complex_normal"])
def test_s5_discretised_eigenvalues_are_stable(discretization, c_init):
    m = S5(SHAPE, state_size=16, blocks=4, c_init=c_init, discretization=discretization,
           dt_min=1e-4, dt_max=1.0, rngs=nnx.Rngs(1))
    a_bar, _ = m.discrete()
    assert np.all(np.abs(np.asarray(a_bar)) < 1.0)


def ssm_param_names(module):
    return sorted(str(path[-1]) for path, _ in nnx.to_flat_state(nnx.state(module, SsmParam)))


@pytest.mark.parametrize("options, expected", [
    (dict(), ["B", "Lambda_im", "Lambda_re", "log_step"]),
    (dict(dt_global=True), ["B", "Lambda_im", "Lambda_re"]),
    (dict(opt_config="BfastandCdecay"), ["Lambda_im", "Lambda_re", "log_step"]),
    (dict(opt_config="noBCdecay"), ["B", "C1", "C2", "D", "Lambda_im", "Lambda_re", "log_step"]),
    (dict(opt_config="noBCdecay", bidirectional=False),
     ["B", "C", "D", "Lambda_im", "Lambda_re", "log_step"]),
])
def test_s5_ssm_params_are_the_recipes(options, expected):
    """S5 s5/train_helpers.py: the 'ssm' group of each opt_config (its 'norm' entry
    never matched a leaf, S5 issue #10: norms get AdamW with weight decay there and here)."""
    assert ssm_param_names(S5(SHAPE, state_size=8, blocks=2, **options, rngs=nnx.Rngs(0))) == expected


def ssm_encoder(**kw):
    base = dict(vocab_size=11, max_len=16, num_layers=2, dim=H, num_heads=1, qkv_dim=H,
                mlp_dim=8, dropout=0.0, attention_dropout=0.0, pooling="mean", block="ssm",
                norm="batch", pos_emb=False, final_norm=False, head="linear",
                activation="half_glu2")
    return EncoderConfig(**{**base, **kw})


MODEL_CASES = [("s5", {"state_size": 4, "blocks": 1}), ("s4d", {"state_size": 4}),
               ("lru", {"state_size": 4, "bidirectional": True}),
               ("mamba", {"state_size": 2, "expand": 1})]


@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_padding_does_not_change_mean_pooled_logits(name, options):
    model = build_model(name, options, ssm_encoder(), 3, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 9), 1, 11).at[1, 6:].set(0)
    padded = jnp.concatenate([tokens, jnp.zeros((3, 7), tokens.dtype)], axis=1)
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(model(padded)), atol=1e-5)


@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_ssm_models_are_linear_time(name, options):
    assert MODELS.get(name).linear_time is True


def test_s5_bad_options_are_one_line_errors():
    cfg = ssm_encoder()
    with pytest.raises(LraError, match="model.blocks=3 must divide model.state_size=8"):
        check_model("s5", {"state_size": 8, "blocks": 3}, cfg)
    with pytest.raises(LraError, match="even size"):
        check_model("s5", {"state_size": 6, "blocks": 2}, cfg)
    with pytest.raises(LraError, match="model.c_init='zeros' is not one of"):
        check_model("s5", {"c_init": "zeros"}, cfg)
    with pytest.raises(LraError, match="model.opt_config='BandCdecay' is not one of"):
        check_model("s5", {"opt_config": "BandCdecay"}, cfg)
    with pytest.raises(LraError, match="model.dt_min/dt_max"):
        check_model("s5", {"dt_min": 0.5, "dt_max": 0.1}, cfg)


@pytest.mark.parametrize("name, options, message", [
    ("s5", {"state_size": 0}, "model.state_size=0 must be a positive integer"),
    ("s5", {"conj_sym": "yes"}, "model.conj_sym='yes' must be true or false"),
    ("s5", {"dt_min": "small"}, "model.dt_min='small' must be a number"),
    ("s5", {"blocks_": 2}, "model 's5' has no option 'blocks_'; its options are: state_size"),
    ("s4d", {"state_size": 5}, "model.state_size=5 must be even"),
    ("s4d", {"init": "legt"}, "model.init='legt' is not one of legs, inv, lin"),
    ("s4d", {"n_ssm": 3}, "model.n_ssm=3 must divide encoder.dim=4"),
    ("s4d", {"n_ssm": 0}, "model.n_ssm=0 must be a positive integer"),
    ("lru", {"r_min": 0.9, "r_max": 0.5}, "model.r_min/r_max must satisfy 0 <= r_min < r_max"),
    ("lru", {"max_phase": 0}, "model.max_phase=0 must be a positive number"),
    ("mamba", {"dt_rank": 0}, "model.dt_rank=0 must be a positive integer"),
    ("mamba", {"expand": True}, "model.expand=True must be a positive integer"),
])
def test_bad_ssm_options_are_one_line_errors(name, options, message):
    with pytest.raises(LraError, match=re.escape(message)) as error:
        check_model(name, options, ssm_encoder())
    assert "\n" not in str(error.value)


PRESETS = [(f"{model}_{task}", task) for model in ("s5", "s4d") for task in
           ("listops", "text", "retrieval", "image", "pathfinder", "pathx")]


@pytest.mark.parametrize("preset, task", PRESETS)
def test_presets_compose_and_build(preset, task):
    """Each preset composes with its task and builds (shapes only, no arrays)."""
    from conftest import compose_config
    from lra.tasks.base import get_task

    model_name = preset.split("_")[0]
    cfg = compose_config(f"task={task}", f"model={model_name}", f"experiment={preset}")
    t = cfg.trainer
    # S5 decays to 0 at the last step; S4's schedule may run past the epochs it trains
    decay_ends = int(t.warmup_steps) + int(t.cycle_steps)
    assert decay_ends == int(t.max_steps) if model_name == "s5" else decay_ends >= int(t.max_steps)
    assert float(t.ssm_weight_decay) == 0.0 and float(t.ssm_lr) > 0
    spec = get_task(task).spec(cfg.task)
    enc = EncoderConfig(vocab_size=spec.vocab_size, max_len=spec.seq_len, **cfg.encoder)
    assert enc.block == "ssm" and enc.pooling == "mean"
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    check_model(model_name, options, enc)
    model = nnx.eval_shape(lambda: build_model(
        model_name, options, enc, spec.num_classes, pair=spec.pair,
        interaction=cfg.task.get("interaction", "concat"), rngs=nnx.Rngs(0)))
    assert nnx.state(model, SsmParam)


# S4D ---------------------------------------------------------------------------


def s4d_recurrences(m, u, method):
    """Per feature: y_t = 2 Re(C0 x_t) (+ 2 Re(C1 w_{t+1}) bidirectional) + D u_t, with
    x_t = A-bar x_{t-1} + B-bar u_t and w_t = A-bar w_{t+1} + B-bar u_t (w_L = 0)."""
    a = -np.exp(np.asarray(m.A_real[...], np.float64)) + 1j * np.asarray(m.A_imag[...], np.float64)
    reps = H // a.shape[0]
    a = np.tile(a, (reps, 1))
    b = np.tile(cplx(m.B), (reps, 1))
    dt = np.exp(np.asarray(m.log_dt[...], np.float64))[:, None]
    if method == "zoh":
        a_bar = np.exp(a * dt)
        b_bar = (a_bar - 1) / a * b
    else:
        a_bar = (1 + a * dt / 2) / (1 - a * dt / 2)
        b_bar = dt / (1 - a * dt / 2) * b
    c = cplx(m.C)
    u = np.asarray(u)
    y = np.zeros(u.shape)
    for i in range(u.shape[0]):
        for h in range(H):
            x = np.zeros(a.shape[1], complex)
            for t in range(u.shape[1]):
                x = a_bar[h] * x + b_bar[h] * u[i, t, h]
                y[i, t, h] += 2 * (c[0, h] @ x).real
            if m.options.bidirectional:
                w = np.zeros(a.shape[1], complex)
                for t in range(u.shape[1] - 1, -1, -1):
                    y[i, t, h] += 2 * (c[1, h] @ w).real  # w_{t+1}
                    w = a_bar[h] * w + b_bar[h] * u[i, t, h]
    return y + np.asarray(m.D[...], np.float64) * u


@pytest.mark.parametrize("options", [
    dict(),
    dict(init="inv", bidirectional=False, discretization="bilinear"),
    dict(init="lin", n_ssm=2),
])
def test_s4d_fft_convolution_equals_the_recurrence(x64, options):
    m = S4D(SHAPE, state_size=6, **options, rngs=nnx.Rngs(0))
    u, mask = inputs(2)
    got = np.asarray(m(u, mask))
    assert got.dtype == np.float64
    expected = s4d_recurrences(m, np.where(np.asarray(mask)[..., None], u, 0.0),
                               options.get("discretization", "zoh"))
    real = np.asarray(mask)
    np.testing.assert_allclose(got[real], expected[real], atol=1e-10)


def test_s4d_legs_init_is_hippo_n():
    a, b = s4d_init("legs", 8)
    lam, _ = hippo_n_eig(8)
    np.testing.assert_allclose(np.sort(a.imag), np.sort(lam.imag[lam.imag > 0]), atol=1e-10)
    np.testing.assert_allclose(a.real, -0.5)
    a_inv, b_inv = s4d_init("inv", 8)
    np.testing.assert_allclose(a_inv.imag, 8 / np.pi * (8 / (1 + 2 * np.arange(4)) - 1))
    np.testing.assert_allclose(s4d_init("lin", 8)[0].imag, np.pi * np.arange(4))
    np.testing.assert_array_equal(b_inv, 1.0)


@pytest.mark.parametrize("init", ["legs", "inv", "lin"])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_s4d_discretised_eigenvalues_are_stable(init, discretization):
    m = S4D(SHAPE, state_size=16, init=init, discretization=discretization, dt_min=1e-4,
            dt_max=1.0, rngs=nnx.Rngs(0))
    assert np.all(np.abs(np.asarray(m.discrete()[0])) < 1.0)


@pytest.mark.parametrize("options, expected", [
    (dict(), ["A_imag", "A_real", "B", "log_dt"]),
    (dict(dt_with_ssm=False), ["A_imag", "A_real", "B"]),
])
def test_s4d_ssm_params_are_the_recipes(options, expected):
    """state-spaces/s4 kernels/ssm.py registers dt, A and B with the layer's lr (C, D: the
    optimiser's); `lr.dt: null` in the LRA text configs leaves dt in the global group."""
    assert ssm_param_names(S4D(SHAPE, state_size=4, **options, rngs=nnx.Rngs(0))) == expected


# LRU ---------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lru_scan_equals_the_recurrence(x64, bidirectional):
    m = LRU(SHAPE, state_size=5, r_min=0.5, r_max=0.95, bidirectional=bidirectional,
            rngs=nnx.Rngs(0))
    u, mask = inputs(3)
    got = np.asarray(m(u, mask))
    nu = np.exp(np.asarray(m.nu_log[...], np.float64))
    theta = np.exp(np.asarray(m.theta_log[...], np.float64))
    lam = np.exp(-nu + 1j * theta)
    gamma_b = np.exp(np.asarray(m.gamma_log[...], np.float64))[:, None] * cplx(m.B)
    d = np.asarray(m.D[...], np.float64)
    for i, n in enumerate(np.asarray(mask).sum(1)):
        ui = np.asarray(u)[i, :n]
        if bidirectional:  # forward plus the reverse scan of the real tokens
            y = (recurrence(lam, gamma_b, ui) @ cplx(m.C1).T
                 + recurrence(lam, gamma_b, ui, reverse=True) @ cplx(m.C2).T)
        else:
            y = recurrence(lam, gamma_b, ui) @ cplx(m.C).T
        np.testing.assert_allclose(got[i, :n], y.real + d * ui, atol=1e-10)


def test_lru_init_is_on_the_ring_with_gamma_normalisation(x64):
    m = LRU(SHAPE, state_size=512, r_min=0.4, r_max=0.9, max_phase=0.5, rngs=nnx.Rngs(0))
    lam = np.asarray(m.diagonal(jnp.float64))
    modulus = np.abs(lam)
    assert modulus.min() >= 0.4 - 1e-6 and modulus.max() <= 0.9 + 1e-6
    assert np.all(modulus < 1.0)
    phase = np.exp(np.asarray(m.theta_log[...], np.float64))
    assert phase.min() >= 0 and phase.max() <= 0.5 + 1e-6
    # uniform on the ring's area: |Lambda|^2 ~ U[r_min^2, r_max^2] (mean halfway)
    assert abs(np.mean(modulus**2) - (0.4**2 + 0.9**2) / 2) < 0.03
    np.testing.assert_allclose(np.exp(np.asarray(m.gamma_log[...], np.float64)),
                               np.sqrt(1 - modulus**2), rtol=1e-5)


def test_lru_ssm_params_are_the_recipe():
    """minimal-LRU train_helpers.py: nu, theta, gamma and B at the SSM rate, no decay."""
    assert ssm_param_names(LRU(SHAPE, state_size=4, rngs=nnx.Rngs(0))) == [
        "B", "gamma_log", "nu_log", "theta_log"]


# Mamba -------------------------------------------------------------------------


def selective_reference(ssm, x, n):
    """One direction over the n real tokens of x [L, E], one step at a time."""
    x = np.asarray(x, np.float64)[:n]
    k = np.asarray(ssm.conv_kernel[...], np.float64)
    conv = np.array([sum(k[i] * x[t - (k.shape[0] - 1) + i] for i in range(k.shape[0])
                         if t - (k.shape[0] - 1) + i >= 0) for t in range(n)])
    v = conv + np.asarray(ssm.conv_bias[...], np.float64)
    v = v / (1 + np.exp(-v))  # SiLU
    dt, b, c = (np.asarray(a, np.float64)[0] for a in ssm.coefficients(jnp.asarray(v)[None]))
    a = -np.exp(np.asarray(ssm.A_log[...], np.float64))
    h = np.zeros(a.shape)
    out = np.zeros_like(v)
    for t in range(n):
        h = np.exp(dt[t][:, None] * a) * h + (dt[t] * v[t])[:, None] * b[t][None, :]
        out[t] = h @ c[t] + np.asarray(ssm.D[...], np.float64) * v[t]
    return out


@pytest.mark.parametrize("bidirectional", [False, True])
def test_mamba_selective_scan_equals_the_recurrence(x64, bidirectional):
    m = Mamba(SHAPE, state_size=3, expand=2, conv_size=3, bidirectional=bidirectional,
              rngs=nnx.Rngs(0))
    u, mask = inputs(4)
    got = np.asarray(m(u, mask))
    w_in = np.asarray(m.in_proj.kernel[...], np.float64)
    w_out = np.asarray(m.out_proj.kernel[...], np.float64)
    for i, n in enumerate(np.asarray(mask).sum(1)):
        xz = np.asarray(u, np.float64)[i, :n] @ w_in
        x, z = np.split(xz, 2, axis=-1)
        y = selective_reference(m.forward, x, n)
        if bidirectional:  # Vim: the backward SSM reads the real tokens in reverse
            y = y + selective_reference(m.backward, x[::-1], n)[::-1]
        expected = (y * z / (1 + np.exp(-z))) @ w_out
        np.testing.assert_allclose(got[i, :n], expected, atol=1e-10)


def test_mamba_init_is_stable_and_ssm_params_are_marked():
    m = Mamba(SHAPE, state_size=4, rngs=nnx.Rngs(0))
    dt = np.asarray(jax.nn.softplus(m.forward.dt_proj.bias[...]))
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    a = -np.exp(np.asarray(m.forward.A_log[...]))
    np.testing.assert_allclose(a[0], -np.arange(1, 5), rtol=1e-6)  # S4D-Real
    assert np.all(np.abs(np.exp(dt[:, None] * a)) < 1.0)
    # mamba_simple.py: A_log and D are the parameters with _no_weight_decay
    assert ssm_param_names(m) == ["A_log", "A_log", "D", "D"]



# End to end through the trainer --------------------------------------------------


def test_s5_trains_with_batchnorm_state_and_its_own_optimiser_group(toy_overrides):
    """The composed config -> model -> trainer: the BatchNorm running statistics move
    in training and are what evaluation reads; SsmParams get trainer.ssm_lr."""
    from conftest import compose_config
    from lra import data as lra_data
    from lra.loader import BatchLoader
    from lra.run import build, validate
    from lra.trainer import Trainer, param_groups

    cfg = compose_config(*toy_overrides, "model=s5", "model.state_size=4", "model.blocks=1",
                         "+encoder.block=ssm", "+encoder.norm=batch", "encoder.pooling=mean",
                         "+encoder.pos_emb=false", "+encoder.head=linear",
                         "trainer.ssm_lr=0.002", "trainer.max_steps=20", "trainer.eval_every=20")
    spec, enc = validate(cfg)
    trainer = Trainer(build(cfg, spec, enc), cfg.trainer, seed=0)
    groups = nnx.to_flat_state(param_groups(trainer.state.params))
    ssm = sorted(str(path[-1]) for path, label in groups if label == "ssm")
    assert ssm == ["B", "Lambda_im", "Lambda_re", "log_step"]  # the one S5 layer's
    splits, _ = lra_data.load(cfg.task, cfg.data_dir)
    train, val = (BatchLoader(splits[s], 32, train=s == "train", seed=0) for s in ("train", "val"))
    fit = trainer.fit(train, val, progress=False)
    stats = nnx.to_flat_state(fit["best_model_state"])
    means = [np.asarray(v[...]) for path, v in stats if str(path[-1]) == "mean"]
    assert means and all(np.abs(m).max() > 0 for m in means)  # moved from their zero init
    fresh = jax.tree.map(jnp.zeros_like, fit["best_model_state"])
    with_stats = trainer.evaluate(fit["best_params"], fit["best_model_state"], val)
    assert with_stats["accuracy"] == fit["best_val"]["accuracy"]
    assert trainer.evaluate(fit["best_params"], fresh, val)["loss"] != with_stats["loss"]
