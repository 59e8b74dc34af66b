"""Block-sparse models (local, sparse_transformer, longformer, bigbird, sinkhorn):
each against its mathematical definition, padding invariance, numerics, config checks,
and a structural proof that no L x L intermediate exists."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.errors import LraError
from lra.models import EncoderConfig, build_model, check_model
from lra.models.attention import MixerShape, masked_softmax_attention
from lra.models.bigbird import random_blocks
from lra.models.sinkhorn import SinkhornAttention, sinkhorn_permutation
from lra.registry import MODELS

NAMES = ("local", "sparse_transformer", "longformer", "bigbird", "sinkhorn")

# Small patterns so that tiny sequences are only partly covered.
SMALL = {
    "local": dict(block_size=8),
    "sparse_transformer": dict(block_size=8, summary_size=2),
    "longformer": dict(sliding_window_size=7, global_positions=[5]),
    "bigbird": dict(block_size=4, num_rand_blocks=2, seed=3),
    "sinkhorn": dict(block_size=8, sinkhorn_iters=3),
}


@pytest.fixture(autouse=True, scope="module")
def quick_exact_compiles():
    """Skip XLA's optimisation passes (they cost far more than these tiny programs), and
    keep float32 matmuls exact on GPUs too (no TF32), so the float32 tolerances hold."""
    flag = "jax_disable_most_optimizations"
    try:
        old = jax.config.values[flag]
        jax.config.update(flag, True)
    except (AttributeError, KeyError):  # a JAX without the flag: just slower
        old = None
    with jax.default_matmul_precision("highest"):
        yield
    if old is not None:
        jax.config.update(flag, old)


@dataclasses.dataclass(frozen=True)
class ClsShape(MixerShape):
    """A mixer shape whose position 0 is a CLS token (`MixerShape.cls_token`)."""

    cls_token: bool = True


def x64():
    """A context in which JAX computes in float64 (test-local)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older JAX

    return enable_x64()


def make_qkv(seed, b=2, length=45, h=2, d=8):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, length, h, d)) for _ in range(3)]


def lengths_mask(length, lengths):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


def shape_for(length, h=2, d=8, cls=False):
    kind = ClsShape if cls else MixerShape
    return kind(dim=16, num_heads=h, qkv_dim=h * d, seq_len=length)


def layer(name, shape, **options):
    return MODELS.get(name)(shape, **options, rngs=nnx.Rngs(0))


def attend(mixer, q, k, v, mask, dtype):
    """jit(mixer.attend) in evaluation mode on inputs cast to `dtype`."""
    fn = jax.jit(lambda *a: mixer.attend(*a, deterministic=True, rngs=None))
    out = fn(*(jnp.asarray(a, dtype) for a in (q, k, v)), jnp.asarray(mask))
    assert out.dtype == dtype
    return out


def attend64(mixer, q, k, v, mask):
    """mixer.attend on float64 inputs, computed in float64."""
    with x64():
        return np.asarray(attend(mixer, q, k, v, mask, jnp.float64))


def dense_reference(q, k, v, allowed):
    """Softmax attention over the keys `allowed` ([B|1, H|1, L, L]) in numpy float64."""
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    allowed = np.broadcast_to(allowed, scores.shape)
    scores = np.where(allowed, scores, -np.inf)
    top = scores.max(-1, keepdims=True)
    weights = np.where(allowed, np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
    denom = weights.sum(-1, keepdims=True)
    weights = weights / np.where(denom > 0, denom, 1.0)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


def with_keys(pattern, mask):
    """[.., L, L] pattern (or [H, L, L]) AND the key padding mask [B, L] -> [B, H|1, L, L]."""
    pattern = pattern if pattern.ndim == 3 else pattern[None]
    return pattern[None] & mask[:, None, None, :]


# ---------------------------------------------------------------- patterns, in numpy


def local_pattern(length, bs):
    r = np.arange(length)
    return r[:, None] // bs == r[None, :] // bs


def sparse_pattern(length, bs, c, causal, cls):
    def fixed(n):
        r = np.arange(n)
        q, k = r[:, None], r[None, :]
        allowed = (q // bs == k // bs) | (k % bs == 0) | (k % bs >= bs - c)
        return allowed & (k <= q) if causal else allowed

    if not cls:
        return fixed(length)
    allowed = np.ones((length, length), bool)
    allowed[1:, 1:] = fixed(length - 1)
    return allowed


def longformer_pattern(length, window, globals_):
    r = np.arange(length)
    diff = r[None, :] - r[:, None]  # key - query
    allowed = (diff >= -(window - window // 2 - 1)) & (diff <= window // 2)
    g = np.zeros(length, bool)
    g[[p for p in globals_ if p < length]] = True
    return allowed | g[:, None] | g[None, :]


def bigbird_blocks(nb, heads, r, seed):
    idx, valid = random_blocks(nb, heads, r, seed)
    allowed = np.zeros((heads, nb, nb), bool)
    for h in range(heads):
        for i in range(nb):
            for j in range(nb):
                allowed[h, i, j] = (i in (0, nb - 1) or j in (0, nb - 1) or abs(i - j) <= 1
                                    or j in idx[h, i][valid[h, i]])
    return allowed


def bigbird_token_pattern(length, seq_len, bs, heads, r, seed):
    nb = -(-max(length, seq_len) // bs)
    blocks = bigbird_blocks(nb, heads, r, seed)
    tokens = np.repeat(np.repeat(blocks, bs, axis=1), bs, axis=2)
    return tokens[:, :length, :length]


# ---------------------------------------------------------------- full coverage = full attention


FULL_COVER = {
    "local": dict(block_size=64),
    "sparse_transformer": dict(block_size=64, summary_size=3, causal=False),
    "longformer": dict(sliding_window_size=2 * 45 + 1),
    # 4 blocks of 12: the window + the two global blocks cover every block.
    "bigbird": dict(block_size=12, num_rand_blocks=0),
    "sinkhorn": dict(block_size=64),  # one block
}


@pytest.mark.parametrize("name", NAMES)
def test_full_coverage_equals_full_softmax_attention(name):
    q, k, v = make_qkv(0)
    mask = lengths_mask(45, [45, 31])
    mixer = layer(name, shape_for(45), **FULL_COVER[name])
    got = attend64(mixer, q, k, v, mask)
    with x64():
        want = np.asarray(masked_softmax_attention(
            *(jnp.asarray(a, jnp.float64) for a in (q, k, v)), jnp.asarray(mask)))
    # masked_softmax_attention takes its softmax in float32, hence the tolerance ...
    np.testing.assert_allclose(got, want, atol=1e-6)
    # ... and the float64 definition is met to float64 accuracy.
    exact = dense_reference(q, k, v, mask[:, None, None, :])
    np.testing.assert_allclose(got, exact, rtol=1e-10, atol=1e-10)
    # float32 compute agrees to float32 accuracy
    got32 = attend(mixer, q, k, v, mask, jnp.float32)
    np.testing.assert_allclose(np.asarray(got32), want, atol=2e-5)


# ---------------------------------------------------------------- partial coverage = dense pattern


@pytest.mark.parametrize("length,bs", [(45, 8), (40, 8), (45, 1)])
def test_local_matches_the_dense_block_pattern(length, bs):
    q, k, v = make_qkv(1, length=length)
    mask = lengths_mask(length, [length, 19])
    got = attend64(layer("local", shape_for(length), block_size=bs), q, k, v, mask)
    want = dense_reference(q, k, v, with_keys(local_pattern(length, bs), mask))
    np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("causal,cls,c", [(True, False, 2), (False, True, 2), (True, True, 0),
                                         (False, False, 8)])
def test_sparse_transformer_matches_the_dense_fixed_pattern(causal, cls, c):
    length, bs = 45, 8
    q, k, v = make_qkv(2, length=length)
    mask = lengths_mask(length, [length, 30])
    mixer = layer("sparse_transformer", shape_for(length, cls=cls),
                  block_size=bs, summary_size=c, causal=causal)
    got = attend64(mixer, q, k, v, mask)
    want = dense_reference(q, k, v, with_keys(sparse_pattern(length, bs, c, causal, cls), mask))
    np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("window,cls,extra", [(1, False, ()), (6, True, ()), (7, False, (17,)),
                                              (20, True, (17, 44, 60))])
def test_longformer_matches_the_dense_window_and_global_pattern(window, cls, extra):
    length = 45
    q, k, v = make_qkv(3, length=length)
    mask = lengths_mask(length, [length, 33])
    mixer = layer("longformer", shape_for(64, cls=cls), sliding_window_size=window,
                  global_positions=list(extra))
    got = attend64(mixer, q, k, v, mask)
    globals_ = ([0] if cls else []) + list(extra)
    want = dense_reference(q, k, v, with_keys(longformer_pattern(length, window, globals_), mask))
    np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("length,seq_len,bs,r", [(64, 64, 4, 2), (61, 61, 4, 3), (50, 64, 4, 1),
                                                 (45, 45, 5, 0), (45, 45, 9, 2)])
def test_bigbird_matches_the_dense_block_pattern(length, seq_len, bs, r):
    heads, seed = 2, 7
    q, k, v = make_qkv(4, length=length, h=heads)
    mask = lengths_mask(length, [length, 23])
    mixer = layer("bigbird", shape_for(seq_len, h=heads), block_size=bs, num_rand_blocks=r,
                  seed=seed)
    got = attend64(mixer, q, k, v, mask)
    pattern = bigbird_token_pattern(length, seq_len, bs, heads, r, seed)
    if -(-seq_len // bs) >= 6:
        assert not pattern.all()  # the pattern is really sparse here
    want = dense_reference(q, k, v, with_keys(pattern, mask))
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_bigbird_random_blocks_are_valid_fixed_and_seeded():
    nb, heads, r = 16, 3, 3
    idx, valid = random_blocks(nb, heads, r, 0)
    assert idx.shape == valid.shape == (heads, nb, r)
    assert not valid[:, [0, nb - 1]].any()  # global query blocks draw nothing
    assert valid[:, 1:-1].all()  # 16 blocks leave enough candidates
    for h in range(heads):
        for i in range(1, nb - 1):
            picks = idx[h, i]
            assert len(set(picks.tolist())) == r
            assert all(1 <= j <= nb - 2 and abs(j - i) > 1 for j in picks)
    again = random_blocks.__wrapped__(nb, heads, r, 0)
    np.testing.assert_array_equal(again[0], idx)
    assert not np.array_equal(random_blocks(nb, heads, r, 1)[0], idx)
    assert not np.array_equal(idx[0], idx[1])  # heads differ
    # Too few candidates: the free slots are invalid, never duplicated or out of range.
    idx, valid = random_blocks(6, 1, 3, 0)
    assert valid[0, 1].sum() == 2 and valid[0, 2].sum() == 1  # block 1: {3, 4}; block 2: {4}
    assert idx[0, 2][valid[0, 2]].tolist() == [4]


# ---------------------------------------------------------------- sinkhorn


def test_sinkhorn_permutation_is_doubly_stochastic():
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.standard_normal((2, 3, 7, 7)), jnp.float32)
    p = np.asarray(sinkhorn_permutation(logits, iters=100, temperature=0.9))
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.sum(-2), 1.0, atol=1e-5)
    # One iteration ends on a column normalisation: columns are exact.
    p1 = np.asarray(sinkhorn_permutation(logits, iters=1))
    np.testing.assert_allclose(p1.sum(-2), 1.0, atol=1e-6)
    # With invalid (padding) blocks: the valid sub-matrix is doubly stochastic, the rest 0.
    valid = jnp.asarray([[True] * 5 + [False] * 2, [True] * 7])[:, None, :]
    p = np.asarray(sinkhorn_permutation(logits, valid, iters=100, temperature=0.9))
    np.testing.assert_allclose(p[0, :, :5, :5].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p[0, :, :5, :5].sum(-2), 1.0, atol=1e-5)
    assert (p[0, :, 5:, :] == 0).all() and (p[0, :, :, 5:] == 0).all()
    np.testing.assert_allclose(p[1].sum(-1), 1.0, atol=1e-5)
    assert np.isfinite(p).all()
    # No valid block at all: zeros, no NaN.
    none = jnp.zeros((2, 1, 7), bool)
    assert (np.asarray(sinkhorn_permutation(logits, none, iters=3)) == 0).all()


def test_sinkhorn_with_a_hard_permutation_matches_the_dense_sorted_pattern():
    """When P is a permutation pi of the real blocks, block i sees blocks i and pi(i) exactly."""
    length, bs, heads, nb = 40, 8, 2, 5
    q, k, v = make_qkv(6, length=length, h=heads)
    mask = lengths_mask(length, [length, 27])
    valid = [5, 4]  # blocks holding a real token
    rng = np.random.default_rng(0)
    pi = np.zeros((2, heads, nb), int)
    perm = np.zeros((2, heads, nb, nb))
    for b in range(2):
        for h in range(heads):
            pi[b, h, : valid[b]] = rng.permutation(valid[b])
            perm[b, h, np.arange(valid[b]), pi[b, h, : valid[b]]] = 1.0

    class GivenPermutation(SinkhornAttention):
        def permutation(self, k, mask):
            return jnp.asarray(perm, k.dtype)

    mixer = GivenPermutation(shape_for(length, h=heads), block_size=bs, rngs=nnx.Rngs(0))
    blocks = np.arange(length) // bs
    allowed = np.zeros((2, heads, length, length), bool)
    for b in range(2):
        for h in range(heads):
            target = pi[b, h][blocks]  # pi(block of the query)
            same = blocks[None, :] == blocks[:, None]
            allowed[b, h] = same | (blocks[None, :] == target[:, None])
    allowed &= mask[:, None, None, :]
    got = attend64(mixer, q, k, v, mask)
    want = dense_reference(q, k, v, allowed)
    real = mask[:, :, None, None]
    np.testing.assert_allclose(got * real, want * real, atol=1e-10)


def test_sinkhorn_matches_its_soft_definition():
    """Sorted block i = P[i]-weighted mean of the real key/value slots; one joint softmax."""
    length, bs, heads = 45, 8, 2
    q, k, v = make_qkv(7, length=length, h=heads)
    mask = lengths_mask(length, [length, 21])
    mixer = layer("sinkhorn", shape_for(48, h=heads), block_size=bs, sinkhorn_iters=4,
                  temperature=0.5)
    with x64():
        perm = jax.jit(mixer.permutation)(jnp.asarray(k), jnp.asarray(mask))
        perm = np.asarray(perm)  # [B, H, 6, 6]
    nb = 6

    def blocks(x):
        x = np.concatenate([x, np.zeros((x.shape[0], nb * bs - length, *x.shape[2:]))], axis=1)
        return x.reshape(x.shape[0], nb, bs, *x.shape[2:])

    qb, kb, vb = blocks(q), blocks(k), blocks(v)
    real = blocks(mask.astype(float))  # [B, nb, bs]
    weight = np.einsum("bhij,bjs->bhis", perm, real)
    ok = weight > 1e-6
    norm = 1.0 / np.where(ok, weight, 1)[..., None]
    ks = np.einsum("bhij,bjshd->bhisd", perm, kb * real[..., None, None]) * norm
    vs = np.einsum("bhij,bjshd->bhisd", perm, vb * real[..., None, None]) * norm
    s_own = np.einsum("bnqhd,bnkhd->bhnqk", qb, kb) / np.sqrt(8)
    s_sort = np.einsum("bnqhd,bhnkd->bhnqk", qb, ks) / np.sqrt(8)
    s = np.concatenate([s_own, s_sort], -1)
    m = np.concatenate([np.broadcast_to(real[:, None, :, None, :] > 0, s_own.shape),
                        np.broadcast_to(ok[:, :, :, None, :], s_sort.shape)], -1)
    s = np.where(m, s, -1e300)
    w = np.where(m, np.exp(s - s.max(-1, keepdims=True)), 0)
    w /= np.maximum(w.sum(-1, keepdims=True), 1e-300)
    out = (np.einsum("bhnqk,bnkhd->bnqhd", w[..., :bs], vb)
           + np.einsum("bhnqk,bhnkd->bnqhd", w[..., bs:], vs))
    want = out.reshape(2, nb * bs, heads, 8)[:, :length]
    got = attend64(mixer, q, k, v, mask)
    real_q = mask[:, :, None, None]
    np.testing.assert_allclose(got * real_q, want * real_q, atol=1e-10)
    # P over the real blocks is (after 4 iterations, nearly) doubly stochastic
    np.testing.assert_allclose(perm[1, :, :3, :3].sum(-2), 1.0, atol=1e-10)
    assert (perm[1, :, 3:] == 0).all() and (perm[1, :, :, 3:] == 0).all()


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("name,cls", [(n, False) for n in NAMES]
                         + [("sparse_transformer", True), ("longformer", True)])
def test_attend_ignores_padding_and_whatever_it_holds(name, cls):
    """Outputs at real positions are unchanged by appended padding, garbage or not."""
    short, long_ = 29, 48
    q, k, v = make_qkv(8, length=long_)
    mask = lengths_mask(long_, [short, 17])
    mixer = layer(name, shape_for(long_, cls=cls), **SMALL[name])
    full = attend64(mixer, q, k, v, mask)  # positions >= the length hold random garbage
    cut = attend64(mixer, q[:, :short], k[:, :short], v[:, :short], mask[:, :short])
    real = mask[:, :short, None, None]
    np.testing.assert_allclose(full[:, :short] * real, cut * real, atol=1e-12)
    assert np.isfinite(full).all()


def tiny_encoder(pooling, dtype=jnp.float32, dropout=0.1, num_layers=1):
    return EncoderConfig(vocab_size=11, max_len=40, num_layers=num_layers, dim=16, num_heads=2,
                         qkv_dim=16, mlp_dim=32, dropout=dropout, attention_dropout=dropout,
                         pooling=pooling, dtype=dtype)


@nnx.jit
def evaluate(model, tokens):
    return model(tokens)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_appending_padding_does_not_change_the_logits(name, pooling):
    model = build_model(name, SMALL[name], tiny_encoder(pooling), 3, rngs=nnx.Rngs(0))
    tokens = np.array(jax.random.randint(jax.random.key(1), (3, 21), 1, 11))
    tokens[1, 9:] = 0  # a shorter example inside the batch
    padded = np.concatenate([tokens, np.zeros((3, 40 - 21), tokens.dtype)], axis=1)
    a, b = evaluate(model, jnp.asarray(tokens)), evaluate(model, jnp.asarray(padded))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


# ---------------------------------------------------------------- numerics and determinism


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_attend_is_close_to_float64(name):
    q, k, v = make_qkv(9)
    mask = lengths_mask(45, [45, 3])  # example 2: most blocks are padding only
    mixer = layer(name, shape_for(45), **SMALL[name])
    want = attend64(mixer, q, k, v, mask)
    got = np.asarray(attend(mixer, q, k, v, mask, jnp.bfloat16).astype(jnp.float32))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=0.08)


def squared_logits(model, tokens, seed):
    logits = model(tokens, deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(seed)))
    return jnp.sum(logits.astype(jnp.float32) ** 2), logits


train_step = nnx.jit(nnx.value_and_grad(squared_logits, has_aux=True))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_and_gradient_are_finite_and_deterministic(name, dtype):
    cfg = tiny_encoder("mean", dtype=dtype)
    model = build_model(name, SMALL[name], cfg, 3, rngs=nnx.Rngs(0))
    twin = build_model(name, SMALL[name], cfg, 3, rngs=nnx.Rngs(0))
    tokens = np.array(jax.random.randint(jax.random.key(2), (3, 40), 1, 11))
    tokens[1, 5:] = 0
    tokens[2, :] = 0  # nothing but padding: every query sees no key
    tokens = jnp.asarray(tokens)

    (value, logits), grads = train_step(model, tokens, 4)  # dropout on
    assert np.isfinite(np.asarray(logits, np.float32)).all() and np.isfinite(float(value))
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(np.isfinite(np.asarray(g, np.float32)).all() for g in leaves)
    assert any(np.abs(np.asarray(g, np.float32)).sum() > 0 for g in leaves)
    # Same seed: same parameters, same dropout masks, same result; another seed differs.
    # (Equal up to rounding: GPU reductions need not be bitwise reproducible.)
    tol = 1e-4 if dtype == jnp.float32 else 2e-2
    (value2, _), grads2 = train_step(twin, tokens, 4)
    np.testing.assert_allclose(float(value2), float(value), rtol=tol)
    for g, g2 in zip(leaves, jax.tree_util.tree_leaves(grads2)):
        g, g2 = np.asarray(g, np.float32), np.asarray(g2, np.float32)
        np.testing.assert_allclose(g2, g, rtol=tol, atol=tol * (np.abs(g).max() + 1e-30))
    (value3, _), _ = train_step(model, tokens, 5)
    assert abs(float(value3) - float(value)) > 1e-3 * abs(float(value))


# ---------------------------------------------------------------- no L x L


def _intermediate_shapes(jaxpr):
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield eqn.primitive.name, tuple(getattr(var.aval, "shape", ()))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _intermediate_shapes(inner)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cls", [False, True])
def test_no_quadratic_intermediate_at_length_4096(name, cls):
    """Walk the jaxpr of attend and of its gradient: no array has two axes >= L / 2."""
    length, heads, d = 4096, 2, 4
    mixer = layer(name, shape_for(length, h=heads, d=d, cls=cls))  # LRA default options
    spec = jax.ShapeDtypeStruct((1, length, heads, d), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)

    def f(q, k, v, m):
        return mixer.attend(q, k, v, m, deterministic=True, rngs=None)

    def g(q, k, v, m):
        return jax.grad(lambda *a: f(*a, m).sum(), argnums=(0, 1, 2))(q, k, v)

    for fn in (f, g):
        jaxpr = jax.make_jaxpr(fn)(spec, spec, spec, mask).jaxpr
        shapes = list(_intermediate_shapes(jaxpr))
        assert shapes
        big = [(p, s) for p, s in shapes if sum(dim >= length // 2 for dim in s) >= 2]
        assert not big, big[:3]


# ---------------------------------------------------------------- configuration


def encoder(**kw):
    base = dict(vocab_size=11, max_len=1000, num_layers=1, dim=16, num_heads=2, qkv_dim=16,
                mlp_dim=32, pooling="cls")
    return EncoderConfig(**{**base, **kw})


BAD = [
    ("local", {"block_size": 0}, "block_size"),
    ("local", {"block_size": -3}, "block_size"),
    ("local", {"block_size": 2.5}, "block_size"),
    ("local", {"block_size": True}, "block_size"),
    ("sparse_transformer", {"block_size": 0}, "block_size"),
    ("sparse_transformer", {"summary_size": -1}, "summary_size"),
    ("sparse_transformer", {"block_size": 8, "summary_size": 9}, "summary_size"),
    ("sparse_transformer", {"causal": "yes"}, "causal"),
    ("longformer", {"sliding_window_size": 0}, "sliding_window_size"),
    ("longformer", {"global_positions": [3, 1001]}, "global_positions"),
    ("longformer", {"global_positions": [-1]}, "global_positions"),
    ("longformer", {"global_positions": 4}, "global_positions"),
    ("bigbird", {"block_size": 0}, "block_size"),
    ("bigbird", {"num_rand_blocks": -1}, "num_rand_blocks"),
    ("bigbird", {"seed": -2}, "seed"),
    ("sinkhorn", {"block_size": 0}, "block_size"),
    ("sinkhorn", {"sinkhorn_iters": 0}, "sinkhorn_iters"),
    ("sinkhorn", {"temperature": 0.0}, "temperature"),
    ("sinkhorn", {"temperature": -1}, "temperature"),
    ("sinkhorn", {"window": 3}, "window"),  # unknown option
]


@pytest.mark.parametrize("name,options,word", BAD)
def test_impossible_configs_are_rejected_at_config_time(name, options, word):
    with pytest.raises(LraError, match=word) as err:
        check_model(name, options, encoder())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_heads_must_divide_the_width(name):
    with pytest.raises(LraError, match="num_heads"):
        check_model(name, {}, encoder(num_heads=3, qkv_dim=16))
