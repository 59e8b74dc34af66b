"""Linformer, Reformer, Synthesizer, Linear Transformer and Performer.

Each mixer is checked against an explicit float64 reference of its own
definition, for padding invariance through the full model, for finite forward
and gradient in float32 and bfloat16, for determinism, for the absence of any
L x L intermediate in the sub-quadratic ones, and for config-time rejection.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.errors import LraError
from lra.models import EncoderConfig, build_model, check_model
from lra.models.attention import MixerShape, masked_softmax_attention
from lra.models.linear_transformer import LinearAttention
from lra.models.linformer import LinformerAttention
from lra.models.performer import (
    PerformerAttention,
    draw_projection,
    favor_attention,
    softmax_kernel_features,
)
from lra.models.reformer import ReformerAttention
from lra.models.synthesizer import SynthesizerAttention
from lra.registry import MODELS
from conftest import jax_settings


B, H, D = 2, 2, 8
LEN = 48  # one length for the attend-level tests, so compiled kernels are reused


@pytest.fixture(autouse=True, scope="module")
def _test_settings():
    """Tiny programs compile far faster, and run no slower, without XLA's optimisations;
    float32 matmuls in full precision (GPUs default to TF32) so the float64 references hold."""
    with jax_settings(jax_disable_most_optimizations=True, jax_default_matmul_precision="highest"):
        yield


def qkv(seed, length, b=B, h=H, d=D, scale=1.0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return [scale * jax.random.normal(key, (b, length, h, d)) for key in keys]


def lengths_mask(length, lengths):
    return jnp.arange(length)[None, :] < jnp.asarray(lengths)[:, None]


def f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def softmax_reference(q, k, v, mask):
    """softmax(q k^T / sqrt(d)) v over unmasked keys, float64."""
    q, k, v = f64(q, k, v)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(np.asarray(mask)[:, None, None, :], scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


def shape_for(seq_len, dtype=jnp.float32):
    return MixerShape(dim=H * D, num_heads=H, qkv_dim=H * D, seq_len=seq_len, dtype=dtype)


def real_rows(x, mask):
    """Rows of [B, L, ...] at real positions, concatenated (for comparisons)."""
    mask = np.asarray(mask)
    return np.concatenate([np.asarray(x)[i][mask[i]] for i in range(mask.shape[0])])


# ---------------------------------------------------------------- linear transformer


def test_linear_transformer_equals_the_explicit_quadratic_form():
    length = LEN
    q, k, v = qkv(0, length)
    mask = lengths_mask(length, [LEN, 23])
    layer = LinearAttention(shape_for(length), rngs=nnx.Rngs(0))
    got = layer.attend(q, k, v, mask, deterministic=True, rngs=None)

    qn, kn, vn = f64(q, k, v)
    phi = lambda x: np.where(x > 0, x + 1.0, np.exp(x))  # noqa: E731  elu(x) + 1
    a = np.einsum("bqhd,bkhd->bhqk", phi(qn), phi(kn))
    a = a * np.asarray(mask)[:, None, None, :]
    expected = np.einsum("bhqk,bkhd->bqhd", a, vn) / (a.sum(-1)[..., None] + 1e-6).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- performer


def test_performer_features_are_positive_and_blocks_orthogonal():
    key = jax.random.key(3)
    w = np.asarray(draw_projection(key, 20, D), np.float64)  # 2 full blocks + 4 rows
    assert w.shape == (20, D)
    for block in (w[:8], w[8:16], w[16:]):
        gram = block @ block.T
        off = gram - np.diag(np.diag(gram))
        assert np.abs(off).max() < 1e-4 * np.diag(gram).max()
    # Each row is marginally N(0, I): E[exp(w.z - |z|^2/2)] = 1 for every z. A plain
    # Householder QR (no sign fix) points every block's first row against e_1 and
    # gives ~0.89 for z = 1.5 e_1.
    w_many = np.asarray(draw_projection(key, 65536, D), np.float64)
    for z in (1.5 * np.eye(D)[0], -1.5 * np.eye(D)[0], np.full(D, 0.5)):
        assert abs(np.exp(w_many @ z - z @ z / 2).mean() - 1.0) < 0.04, z
    q, k, _ = qkv(4, LEN, scale=2.0)
    mask = lengths_mask(LEN, [LEN, 30])
    assert (np.asarray(softmax_kernel_features(q, w, is_query=True)) > 0).all()
    kf = np.asarray(softmax_kernel_features(k, w, mask, is_query=False))
    assert (kf[0] > 0).all() and (kf[1, :30] > 0).all()
    assert (kf[1, 30:] == 0).all()  # padded keys contribute nothing


def test_performer_equals_the_quadratic_form_of_its_own_random_features():
    """Exact formula, not statistics: with the model's projection W, FAVOR+ must equal
    out_i = sum_j a_ij v_j / sum_j a_ij, a_ij = phi(q_i) . phi(k_j) over real keys,
    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x d^-1/4, computed directly in
    float64 as an L x L matrix (no stabilising max, no eps). The model computes in
    float32 and adds eps = 1e-6 to each feature, hence the tolerance."""
    mask = lengths_mask(LEN, [LEN, 29])
    q, k, v = qkv(21, LEN, scale=0.6)
    w = draw_projection(jax.random.key(8), 24, D)
    got = np.asarray(favor_attention(q, k, v, mask, w), np.float64)
    qn, kn, vn, wn = f64(q, k, v, w)

    def phi(x):
        x = x * D**-0.25
        return np.exp(np.einsum("blhd,md->blhm", x, wn) - 0.5 * (x * x).sum(-1, keepdims=True)) / np.sqrt(24)

    a = np.einsum("bqhm,bkhm->bhqk", phi(qn), phi(kn)) * np.asarray(mask)[:, None, None, :]
    expected = np.einsum("bhqk,bkhd->bqhd", a, vn) / a.sum(-1).transpose(0, 2, 1)[..., None]
    np.testing.assert_allclose(real_rows(got, mask), real_rows(expected, mask), rtol=2e-4, atol=2e-5)


def test_performer_error_falls_as_the_number_of_features_grows():
    length = LEN
    mask = lengths_mask(length, [LEN, 35])
    errors = {m: [] for m in (16, 256, 4096)}
    for seed in range(3):
        q, k, v = qkv(10 + seed, length, scale=0.7)
        exact = softmax_reference(q, k, v, mask)
        for m in errors:
            # float32 is ample: its rounding (~1e-6) is far below the estimator's error.
            got = favor_attention(q, k, v, mask, draw_projection(jax.random.key(100 + seed), m, D))
            errors[m].append(np.abs(real_rows(np.asarray(got) - exact, mask)).mean())
    mean = [np.mean(errors[m]) for m in (16, 256, 4096)]
    assert mean[0] > mean[1] > mean[2], mean
    assert mean[2] < mean[1] / 2 and mean[2] < 0.02, mean


def test_performer_projection_is_fixed_state_and_redraw_uses_the_rng():
    length = LEN
    q, k, v = qkv(5, length)
    mask = lengths_mask(length, [LEN, 17])
    fixed = PerformerAttention(shape_for(length), num_features=32, rngs=nnx.Rngs(7))
    redraw = PerformerAttention(shape_for(length), num_features=32, redraw=True, rngs=nnx.Rngs(7))
    # Non-trainable: the projection (and its key) are Variables, never Params.
    params = jax.tree_util.tree_leaves(nnx.state(fixed, nnx.Param))
    assert not any(leaf.shape == (32, D) for leaf in params)
    assert fixed.projection[...].shape == (32, D)
    key = jax.random.wrap_key_data(fixed.feature_key[...])
    np.testing.assert_allclose(np.asarray(draw_projection(key, 32, D)), np.asarray(fixed.projection[...]))

    base = fixed.attend(q, k, v, mask, deterministic=True, rngs=None)
    # Evaluation uses the stored features; so does training without redraw.
    evaluated = redraw.attend(q, k, v, mask, deterministic=True, rngs=None)
    np.testing.assert_array_equal(np.asarray(evaluated), np.asarray(base))
    np.testing.assert_array_equal(
        np.asarray(fixed.attend(q, k, v, mask, deterministic=False, rngs=nnx.Rngs(1))), np.asarray(base))
    a = redraw.attend(q, k, v, mask, deterministic=False, rngs=nnx.Rngs(1))
    b = redraw.attend(q, k, v, mask, deterministic=False, rngs=nnx.Rngs(1))
    c = redraw.attend(q, k, v, mask, deterministic=False, rngs=nnx.Rngs(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4
    assert np.abs(np.asarray(a) - np.asarray(base)).max() > 1e-4


# ---------------------------------------------------------------- linformer


def test_linformer_with_identity_projection_is_softmax_attention():
    length = LEN
    q, k, v = qkv(6, length)
    layer = LinformerAttention(shape_for(length), k=length, share_kv=False, rngs=nnx.Rngs(0))
    layer.proj_k[...] = jnp.eye(length)
    layer.proj_v[...] = jnp.eye(length)
    full = jnp.ones((B, length), bool)
    got = layer.attend(q, k, v, full, deterministic=True, rngs=None)
    full_attention = masked_softmax_attention(q, k, v, full)
    np.testing.assert_allclose(np.asarray(got), np.asarray(full_attention), atol=1e-5)
    np.testing.assert_allclose(np.asarray(got), softmax_reference(q, k, v, full), atol=1e-5)
    # With padding, Linformer cannot drop keys after projecting; what holds is that
    # padded keys/values are zeroed first: identity E, F == softmax over the zeroed ones.
    mask = lengths_mask(length, [LEN, 26])
    got = layer.attend(q, k, v, mask, deterministic=True, rngs=None)
    zero = lambda x: jnp.where(mask[:, :, None, None], x, 0.0)  # noqa: E731
    np.testing.assert_allclose(np.asarray(got), softmax_reference(q, zero(k), zero(v), full), atol=1e-5)


def test_linformer_uses_the_first_columns_for_short_inputs():
    seq_len, length = LEN, 33
    q, k, v = qkv(7, seq_len)
    mask = lengths_mask(seq_len, [33, 20])
    layer = LinformerAttention(shape_for(seq_len), k=12, rngs=nnx.Rngs(0))
    long = layer.attend(q, k, v, mask, deterministic=True, rngs=None)
    short = layer.attend(q[:, :length], k[:, :length], v[:, :length], mask[:, :length],
                         deterministic=True, rngs=None)
    np.testing.assert_allclose(np.asarray(short), np.asarray(long[:, :length]), atol=1e-5)


# ---------------------------------------------------------------- reformer


def normalised(x, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) / np.sqrt(x.shape[-1])


def test_reformer_with_one_bucket_is_shared_qk_attention_without_self():
    length = LEN
    q, _, v = qkv(8, length)
    mask = lengths_mask(length, [LEN, 31])
    layer = ReformerAttention(shape_for(length), num_buckets=1, num_hashes=2, rngs=nnx.Rngs(0))
    assert layer.chunk_len == length
    got = layer.attend(q, None, v, mask, deterministic=True, rngs=None)

    qn, vn = f64(q, v)
    scores = np.einsum("bqhd,bkhd->bhqk", qn, normalised(qn))
    visible = np.asarray(mask)[:, None, None, :] & ~np.eye(length, dtype=bool)
    scores = np.where(visible, scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    expected = np.einsum("bhqk,bkhd->bqhd", w, vn)
    np.testing.assert_allclose(real_rows(got, mask), real_rows(expected, mask), rtol=1e-4, atol=1e-5)
    # A token with no other key attends to itself (as in the paper), never to padding.
    alone = layer.attend(q, None, v, lengths_mask(length, [1, 1]), deterministic=True, rngs=None)
    np.testing.assert_allclose(np.asarray(alone[:, 0]), np.asarray(v[:, 0]), rtol=1e-6, atol=1e-6)


def lsh_reference(q, v, mask, rotations, num_buckets, chunk_len):
    """LSH attention by its definition, one (example, head, round) at a time, float64."""
    qn, vn, rot = f64(q, v, rotations)
    mask = np.asarray(mask)
    b_, length, h_, _ = qn.shape
    out = np.zeros_like(vn)
    for b in range(b_):
        for h in range(h_):
            x, k = qn[b, :, h], normalised(qn[b, :, h])
            outs, lses = [], []
            for r in range(rot.shape[1]):
                proj = x @ rot[:, r]
                bucket = np.argmax(np.concatenate([proj, -proj], -1), -1)
                bucket = np.where(mask[b], bucket, num_buckets)
                order = np.lexsort((np.arange(length), bucket))
                rank = np.empty(length, int)
                rank[order] = np.arange(length)
                chunk = rank // chunk_len
                visible = (chunk[None, :] == chunk[:, None]) | (chunk[None, :] == chunk[:, None] - 1)
                visible &= mask[b][None, :]
                scores = np.where(visible, x @ k.T, -np.inf)
                np.fill_diagonal(scores, -1e5)
                top = scores.max(-1, keepdims=True)
                lse = top[:, 0] + np.log(np.exp(scores - top).sum(-1))
                outs.append(np.exp(scores - lse[:, None]) @ vn[b, :, h])
                lses.append(lse)
            weights = np.exp(np.array(lses) - np.logaddexp.reduce(np.array(lses), 0))
            out[b, :, h] = np.einsum("rl,rld->ld", weights, np.array(outs))
    return out


def test_reformer_lsh_matches_its_definition_with_several_buckets_and_rounds():
    length = LEN
    q, _, v = qkv(9, length, scale=2.0)
    mask = lengths_mask(length, [LEN, 38])
    layer = ReformerAttention(shape_for(length), num_buckets=4, num_hashes=3, rngs=nnx.Rngs(1))
    got = layer.attend(q, None, v, mask, deterministic=True, rngs=None)
    expected = lsh_reference(q, v, mask, layer.rotations[...], 4, layer.chunk_len)
    np.testing.assert_allclose(real_rows(got, mask), real_rows(expected, mask), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- synthesizer


def synth_setup(mode, ignore, seq_len=LEN, length=LEN):
    layer = SynthesizerAttention(shape_for(seq_len), mode=mode, k=5, ignore_dot_product=ignore,
                                 rngs=nnx.Rngs(2))
    x = jax.random.normal(jax.random.key(11), (B, length, H * D))
    mask = lengths_mask(length, [length, 21])
    return layer, x, mask


def synth_reference(layer, x, mask, logits):
    """softmax(logits [+ q k^T / sqrt(d)]) V, masked, then the output projection, float64."""
    (xn,) = f64(x)
    kernel = lambda lin: np.asarray(lin.kernel[...], np.float64)  # noqa: E731
    split = lambda a: a.reshape(a.shape[0], a.shape[1], H, D)  # noqa: E731
    vn = split(xn @ kernel(layer.value))
    if not layer.ignore_dot_product:
        qn, kn = split(xn @ kernel(layer.query)), split(xn @ kernel(layer.key))
        logits = logits + np.einsum("bqhd,bkhd->bhqk", qn, kn) / np.sqrt(D)
    logits = np.where(np.asarray(mask)[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", w, vn).reshape(x.shape[0], x.shape[1], H * D)
    return out @ kernel(layer.out)


@pytest.mark.parametrize("ignore", [True, False])
def test_synthesizer_factorized_random_is_softmax_of_r1_r2(ignore):
    layer, x, mask = synth_setup("factorized_random", ignore)
    rng = np.random.default_rng(0)
    r1, r2 = rng.normal(size=(H, LEN, 5)), rng.normal(size=(H, 5, LEN))
    layer.random1[...] = jnp.asarray(r1, jnp.float32)
    layer.random2[...] = jnp.asarray(r2, jnp.float32)
    got = layer(x, mask, deterministic=True)
    expected = synth_reference(layer, x, mask, np.einsum("hlk,hkn->hln", r1, r2)[None])
    np.testing.assert_allclose(real_rows(got, mask), real_rows(expected, mask), rtol=1e-4, atol=1e-4)


def test_synthesizer_dense_and_random_match_their_formulas():
    # Input shorter than seq_len: the first L logits of each row are used.
    layer, x, mask = synth_setup("dense+random", True, seq_len=LEN + 8, length=LEN)
    (xn,) = f64(x)
    w1 = np.asarray(layer.dense1.kernel[...], np.float64).reshape(H * D, H, D)
    w2 = np.asarray(layer.dense2.kernel[...], np.float64)  # [D, seq_len]
    hidden = np.maximum(np.einsum("blc,chd->blhd", xn, w1), 0.0)
    dense = np.einsum("blhd,dn->bhln", hidden, w2)[..., :LEN]
    rand = np.asarray(layer.random[...], np.float64)[None, :, :LEN, :LEN]
    got = layer(x, mask, deterministic=True)
    expected = synth_reference(layer, x, mask, dense + rand)
    np.testing.assert_allclose(real_rows(got, mask), real_rows(expected, mask), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- all five models

# Padding invariance is an eval-mode property (performer's redraw only acts in training);
# gradients are taken in training mode, so there the redrawing performer is the one used.
PADDING_MODELS = [
    ("linformer", {"k": 8}),
    ("reformer", {"num_buckets": 4, "num_hashes": 2}),
    ("synthesizer", {"mode": "dense+factorized_random", "k": 4}),
    ("linear_transformer", {}),
    ("performer", {"num_features": 16}),
]
PADDING_IDS = ["linformer", "reformer", "synthesizer", "linear", "performer"]
GRAD_MODELS = PADDING_MODELS[:2] + [
    ("synthesizer", {}),  # LRA's default: random + dot product
    ("linear_transformer", {}),
    ("performer", {"num_features": 16, "redraw": True}),
]


def tiny_config(pooling="cls", dtype=jnp.float32, max_len=24, num_layers=2):
    return EncoderConfig(vocab_size=11, max_len=max_len, num_layers=num_layers, dim=H * D,
                         num_heads=H, qkv_dim=H * D, mlp_dim=32, dropout=0.1,
                         attention_dropout=0.1, pooling=pooling, dtype=dtype)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("name,options", PADDING_MODELS, ids=PADDING_IDS)
def test_appending_padding_does_not_change_the_logits(name, options, pooling):
    # For linformer this holds exactly too: padded keys/values are zeroed before
    # the length projection, so the extra columns of E, F multiply zeros.
    model = build_model(name, options, tiny_config(pooling), 3, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 13), 1, 11)
    tokens = tokens.at[1, 9:].set(0)  # one example already padded
    padded = jnp.concatenate([tokens, jnp.zeros((2, 11), tokens.dtype)], axis=1)
    short, long = nnx.jit(lambda m, a, b: (m(a), m(b)))(model, tokens, padded)
    np.testing.assert_allclose(np.asarray(short), np.asarray(long), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["linformer", "reformer", "linear_transformer", "performer"])
def test_padded_positions_never_contribute(name):
    length = LEN
    shape = shape_for(length)
    layer = {"linformer": lambda: LinformerAttention(shape, k=10, rngs=nnx.Rngs(0)),
             "reformer": lambda: ReformerAttention(shape, num_buckets=4, num_hashes=2, rngs=nnx.Rngs(0)),
             "linear_transformer": lambda: LinearAttention(shape, rngs=nnx.Rngs(0)),
             "performer": lambda: PerformerAttention(shape, num_features=32, rngs=nnx.Rngs(0))}[name]()
    q, k, v = qkv(12, length)
    mask = lengths_mask(length, [30, 19])
    junk = [100.0 * a for a in qkv(13, length)]
    swap = lambda a, j: jnp.where(mask[:, :, None, None], a, j)  # noqa: E731
    clean = layer.attend(q, k, v, mask, deterministic=True, rngs=None)
    dirty = layer.attend(swap(q, junk[0]), swap(k, junk[1]), swap(v, junk[2]), mask,
                         deterministic=True, rngs=None)
    np.testing.assert_allclose(real_rows(dirty, mask), real_rows(clean, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name,options", GRAD_MODELS, ids=PADDING_IDS)
def test_forward_and_gradient_are_finite_and_deterministic(name, options, dtype):
    cfg = tiny_config("cls", dtype, num_layers=1)
    tokens = jax.random.randint(jax.random.key(2), (2, 24), 1, 11).at[0, 15:].set(0)
    labels = jnp.array([0, 2])

    @nnx.jit
    def step(m, key):
        def loss(m):
            logits = m(tokens, deterministic=False, rngs=nnx.Rngs(key))
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

        value, grads = nnx.value_and_grad(loss)(m)
        return value, grads, m(tokens)

    model = build_model(name, options, cfg, 3, rngs=nnx.Rngs(0))
    value, grads, logits = step(model, jax.random.key(5))
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(logits, np.float32)).all()
    flat = jax.tree_util.tree_leaves
    grad_leaves = [np.asarray(g, np.float32) for g in flat(grads)]
    assert grad_leaves and all(np.isfinite(g).all() for g in grad_leaves)
    assert any(np.abs(g).max() > 0 for g in grad_leaves)
    # Same seed -> same parameters and state; same key -> same loss, gradients, logits
    # (bitwise on CPU; GPU reductions may differ in the last bit, hence the tolerance).
    again = build_model(name, options, cfg, 3, rngs=nnx.Rngs(0))
    for a, b in zip(flat(nnx.state(model)), flat(nnx.state(again))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rerun = step(model, jax.random.key(5))
    tol = 1e-6 if dtype == jnp.float32 else 2e-2
    for a, b in zip(flat((value, grads, logits)), flat(rerun)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=tol, atol=tol / 10)


# ---------------------------------------------------------------- no L x L


def big_intermediates(jaxpr, limit):
    """Shapes of every value in a (nested) jaxpr with two dimensions >= limit."""
    found = []

    def visit(jp):
        jp = getattr(jp, "jaxpr", jp)
        for eqn in jp.eqns:
            for var in eqn.outvars:
                shape = getattr(var.aval, "shape", ())
                if sum(dim >= limit for dim in shape) >= 2:
                    found.append((eqn.primitive.name, shape))
            for param in eqn.params.values():
                subs = param if isinstance(param, (list, tuple)) else [param]
                for sub in subs:
                    if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                        visit(sub)

    visit(jaxpr)
    return found


@pytest.mark.parametrize("name,options", [
    ("linformer", {}), ("linear_transformer", {}), ("performer", {}),
    ("reformer", {}), ("reformer", {"num_hashes": 2, "num_buckets": 16}),
], ids=["linformer", "linear", "performer", "reformer", "reformer-2x16"])
def test_no_length_squared_intermediate(name, options):
    length = 4096
    layer = {"linformer": LinformerAttention, "linear_transformer": LinearAttention,
             "performer": PerformerAttention, "reformer": ReformerAttention}[name](
        shape_for(length), **options, rngs=nnx.Rngs(0))
    q, k, v = (jax.ShapeDtypeStruct((1, length, H, D), jnp.float32) for _ in range(3))
    mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)

    def attend(q, k, v, mask):
        return layer.attend(q, k, v, mask, deterministic=True, rngs=None)

    for fn in (attend, jax.grad(lambda *a: attend(*a).sum(), argnums=(0, 1, 2))):
        jaxpr = jax.make_jaxpr(fn)(q, k, v, mask)
        assert big_intermediates(jaxpr, length) == []
    # The check itself sees an explicit score matrix.
    explicit = jax.make_jaxpr(lambda q, k, v, m: masked_softmax_attention(q, k, v, m))(q, k, v, mask)
    assert big_intermediates(explicit, length)


# ---------------------------------------------------------------- config-time rejection


@pytest.mark.parametrize("name,options,fragment", [
    ("linformer", {"k": 26}, "k=26"),  # seq_len = 24 + CLS = 25
    ("linformer", {"k": 0}, "positive"),
    ("linformer", {"share_kv": "yes"}, "share_kv"),
    ("reformer", {"num_buckets": 3}, "even"),
    ("reformer", {"num_hashes": 0}, "num_hashes"),
    ("reformer", {"num_buckets": 2.0}, "num_buckets"),
    ("synthesizer", {"mode": "dense_random"}, "mode"),
    ("synthesizer", {"k": -1}, "k="),
    ("performer", {"num_features": 0}, "num_features"),
    ("performer", {"redraw": "sometimes"}, "redraw"),
    ("performer", {"features": 8}, "no option"),
    ("linear_transformer", {"eps": 1.0}, "no option"),
])
def test_impossible_configs_are_rejected(name, options, fragment):
    with pytest.raises(LraError, match=fragment) as info:
        check_model(name, options, tiny_config())
    assert "\n" not in str(info.value)
