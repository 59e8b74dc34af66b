"""The contract every registered model keeps, parametrised over `MODELS.names()` so
that a new model is covered the moment it is registered:

* its config (`configs/model/<name>.yaml`) states exactly its `Options` defaults;
* padding invariance: appending padding changes no logit (CLS and mean pooling);
* determinism: the same seed gives the same parameters and the same outputs;
* finite loss and gradients in training mode, and a finite bf16 forward pass;
* no L x L intermediate, forward or backward, for a model that declares `linear_time`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from lra.models import EncoderConfig, check_model
from lra.models.attention import MixerShape
from lra.registry import MODELS
from conftest import jax_settings

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"
NAMES = MODELS.names()


def encoder(**overrides) -> EncoderConfig:
    base = dict(vocab_size=11, max_len=24, num_layers=1, dim=16, num_heads=2, qkv_dim=16,
                mlp_dim=32, dropout=0.1, attention_dropout=0.1, pooling="cls")
    return EncoderConfig(**{**base, **overrides})


@pytest.mark.parametrize("name", NAMES)
def test_config_yaml_states_the_options_defaults(name):
    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert cfg.pop("name") == name
    defaults = {
        field.name: list(field.default) if isinstance(field.default, tuple) else field.default
        for field in dataclasses.fields(MODELS.get(name).Options)
    }
    assert cfg == defaults
    check_model(name, cfg, encoder(max_len=1000))


# Options that make each pattern only partly cover the tiny sequences below (the LRA
# defaults would cover them whole, which hides a pattern that leaks padding).
SMALL = {
    "local": dict(block_size=8),
    "sparse_transformer": dict(block_size=8, summary_size=2),
    "longformer": dict(sliding_window_size=7, global_positions=[5]),
    "bigbird": dict(block_size=4, num_rand_blocks=2),
    "sinkhorn": dict(block_size=8, sinkhorn_iters=3),
    "reformer": dict(num_buckets=4, num_hashes=2),
    "performer": dict(num_features=16),
    "linformer": dict(k=8),
    "nystromformer": dict(num_landmarks=4, conv_kernel_size=3),
    "dilated_na": dict(kernel_size=3),
    "loglinear": dict(block_size=2, top_k=2),
}
# Models whose output depends, by definition, on the padded length, so that appending
# padding changes it however the mask is honoured. Each says why; the mask is still
# tested (padded positions' contents never reach real ones) in the model's own tests.
PADDING_EXEMPT = {
    "fnet": "its DFT runs over the padded length: appending padding changes every frequency",
}

DIM, HEADS, SHORT, LONG = 16, 2, 13, 24
REAL = np.array([13, 9])  # real tokens per example; position 0 is real (the CLS slot)


@pytest.fixture(autouse=True, scope="module")
def _fast_exact():
    """Tiny programs compile far faster without XLA's optimisations; float32 matmuls in
    full precision (GPUs default to TF32) so that the tolerances hold everywhere."""
    with jax_settings(jax_disable_most_optimizations=True, jax_default_matmul_precision="highest"):
        yield


def mixer(name, *, length=LONG, cls=False, dtype=jnp.float32, dropout=0.1):
    shape = MixerShape(dim=DIM, num_heads=HEADS, qkv_dim=DIM, seq_len=length,
                       attention_dropout=dropout, dtype=dtype, cls_token=cls)
    mixer_cls = MODELS.get(name)
    options = SMALL.get(name, {})
    mixer_cls.check(shape, mixer_cls.Options.parse(options, name))
    return mixer_cls(shape, **options, rngs=nnx.Rngs(0))


def mixers(name):
    """The mixers one probe runs: f32 without and with a CLS token, and bf16."""
    return mixer(name), mixer(name, cls=True), mixer(name, dtype=jnp.bfloat16)


X = jax.random.normal(jax.random.key(1), (2, LONG, DIM))
MASK = jnp.arange(LONG)[None, :] < jnp.asarray(REAL)[:, None]


@nnx.jit
def probe(mixers, key):
    """Everything the contract checks of one mixer, in one compiled call.

    The pooled output (CLS or mean over real tokens) is a function of the outputs
    at real positions only, and every other part of a block acts per position, so
    padding invariance of the mixer's outputs at real positions is that of the
    model's logits, for both poolings, through any number of layers.
    """
    plain, with_cls, half = mixers
    short = lambda m: m(X[:, :SHORT], MASK[:, :SHORT])  # noqa: E731
    long = lambda m: m(X, MASK)[:, :SHORT]  # noqa: E731
    padding = [(short(m), long(m)) for m in (plain, with_cls)]

    def loss(m, x):
        y = m(x, MASK, deterministic=False, rngs=nnx.Rngs(key))
        return jnp.sum(jnp.where(MASK[..., None], jnp.tanh(y), 0.0))

    value, grads = nnx.value_and_grad(loss, argnums=(0, 1))(plain, X)
    return padding, value, grads, half(X.astype(jnp.bfloat16), MASK)


def real_rows(y):
    return np.where(np.asarray(MASK[:, :SHORT, None]), np.asarray(y, np.float32), 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance_determinism_finite_gradients_and_bf16(name):
    flat = jax.tree_util.tree_leaves
    first = mixers(name)
    fresh = flat(nnx.state(first))
    padding, value, grads, out16 = probe(first, jax.random.key(5))

    for short, long in padding:
        assert np.isfinite(np.asarray(short)).all()
        if name not in PADDING_EXEMPT:
            np.testing.assert_allclose(real_rows(long), real_rows(short), rtol=1e-5, atol=1e-5)

    assert np.isfinite(float(value))
    grad_leaves = [np.asarray(g, np.float32) for g in flat(grads)]
    assert grad_leaves and all(np.isfinite(g).all() for g in grad_leaves)
    assert np.abs(np.asarray(grads[1])).max() > 0  # the input reaches the output
    assert out16.dtype == jnp.bfloat16 and np.isfinite(np.asarray(out16, np.float32)).all()
    # bf16 computes the same function, to bf16 accuracy.
    np.testing.assert_allclose(real_rows(out16[:, :SHORT]), real_rows(padding[0][1]),
                               atol=0.1, rtol=0.1)

    # Same seed, same parameters and state; same key, same outputs and gradients.
    again = mixers(name)
    for a, b in zip(fresh, flat(nnx.state(again))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rerun = probe(again, jax.random.key(5))
    for a, b in zip(flat((padding, value, grads, out16)), flat(rerun)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=1e-6, atol=1e-7)


def quadratic_intermediates(jaxpr, length):
    """(primitive, shape) of every value in a nested jaxpr with two axes >= length / 2."""
    found = []
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            if sum(dim >= length // 2 for dim in shape) >= 2:
                found.append((eqn.primitive.name, shape))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    found += quadratic_intermediates(inner, length)
    return found


def mixer_jaxprs(m, length):
    """Jaxprs of the mixer's training forward pass and of its gradient (traced only)."""
    graph, params, rest = nnx.split(m, nnx.Param, ...)
    x = jax.ShapeDtypeStruct((1, length, DIM), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)

    def forward(params, x, mask):
        y = nnx.merge(graph, params, rest, copy=True)(x, mask, deterministic=False,
                                                     rngs=nnx.Rngs(0))
        return y.sum()

    return [jax.make_jaxpr(fn)(params, x, mask).jaxpr
            for fn in (forward, jax.grad(forward, argnums=(0, 1)))]


LINEAR = [name for name in NAMES if MODELS.get(name).linear_time]


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("cls", [False, True], ids=["nocls", "cls"])
def test_linear_time_models_have_no_length_squared_intermediate(name, cls):
    length = 4096
    mixer_cls = MODELS.get(name)  # with its LRA defaults
    shape = MixerShape(dim=DIM, num_heads=HEADS, qkv_dim=DIM, seq_len=length, cls_token=cls)
    for jaxpr in mixer_jaxprs(mixer_cls(shape, rngs=nnx.Rngs(0)), length):
        assert quadratic_intermediates(jaxpr, length) == []


def test_the_structural_check_sees_an_explicit_score_matrix():
    """Positive control: the exact Transformer does have an L x L intermediate."""
    length = 256
    shape = MixerShape(dim=DIM, num_heads=HEADS, qkv_dim=DIM, seq_len=length)
    m = MODELS.get("transformer")(shape, implementation="explicit", rngs=nnx.Rngs(0))
    assert all(quadratic_intermediates(jaxpr, length) for jaxpr in mixer_jaxprs(m, length))
