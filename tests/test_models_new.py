"""The newer mixers against their definitions, in float64 (issue 15): FNet against a
DFT by matrix product, Nystromformer with as many landmarks as tokens against
softmax attention, cosFormer against its quadratic form, retention's parallel form
against its recurrent form, dilated neighbourhood attention against full attention
and an independently built neighbour matrix. The contract suite
(test_model_contract.py) covers padding, determinism, gradients and bf16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.models.attention import MixerShape
from lra.models.nystromformer import iterative_pinv, segment_means
from lra.models.retnet import decays, parallel_retention, recurrent_retention
from lra.registry import MODELS
from test_model_contract import mixer_jaxprs, quadratic_intermediates
from conftest import jax_settings

H, D = 2, 4


@pytest.fixture(autouse=True, scope="module")
def _fast_float64():
    """float64 throughout; tiny programs compile faster without XLA's optimisations."""
    with jax_settings(jax_enable_x64=True, jax_disable_most_optimizations=True):
        yield


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def lengths_mask(length, lengths):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


def layer(name, length, **options):
    shape = MixerShape(dim=H * D, num_heads=H, qkv_dim=H * D, seq_len=length, dtype=jnp.float64)
    return MODELS.get(name)(shape, **options, rngs=nnx.Rngs(0))


def attend(m, q, k, v, mask):
    fn = jax.jit(lambda *a: m.attend(*a, deterministic=True, rngs=None))
    return np.asarray(fn(*(jnp.asarray(a, jnp.float64) for a in (q, k, v)), jnp.asarray(mask)))


def softmax_reference(q, k, v, mask):
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(mask[:, None, None, :], scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), v)


def real(x, mask):
    return np.where(mask[:, :, None, None], x, 0.0)


# ---------------------------------------------------------------- FNet


def test_fnet_is_the_real_part_of_a_dft_by_matrix_product():
    length, dim = 12, 8
    x = rand(0, 2, length, dim)
    mask = lengths_mask(length, [12, 7])
    m = MODELS.get("fnet")(MixerShape(dim=dim, num_heads=1, qkv_dim=dim, seq_len=length,
                                      dtype=jnp.float64), rngs=nnx.Rngs(0))
    got = np.asarray(jax.jit(lambda x, mask: m(x, mask))(x, mask))

    def dft(n):
        j = np.arange(n)
        return np.exp(-2j * np.pi * np.outer(j, j) / n)

    xm = x * mask[..., None]
    want = np.einsum("ln,bnd,de->ble", dft(length), xm, dft(dim)).real
    np.testing.assert_allclose(got, want, atol=1e-10)
    # Padded contents never reach the output.
    junk = np.where(mask[..., None], x, 1e3 * rand(1, 2, length, dim))
    np.testing.assert_allclose(np.asarray(jax.jit(lambda x, mask: m(x, mask))(junk, mask)), got,
                               atol=1e-9)


# ---------------------------------------------------------------- Nystromformer


def test_nystrom_landmarks_are_means_of_real_token_segments():
    length, m = 30, 8
    x = rand(2, 2, length, H, D)
    mask = lengths_mask(length, [30, 5])  # 5 < 8 landmarks: segments overlap, none empty
    got = np.asarray(segment_means(jnp.asarray(x), jnp.asarray(mask), m))
    for b, n in enumerate([30, 5]):
        for j in range(m):
            lo, hi = (j * n) // m, -(-(j + 1) * n // m)
            assert hi > lo
            np.testing.assert_allclose(got[b, j], x[b, lo:hi].mean(0), atol=1e-12)


def test_iterative_pinv_converges_to_the_moore_penrose_inverse():
    a = np.abs(rand(3, 2, 6, 6)) + 0.1
    a /= a.sum(-1, keepdims=True)  # row-stochastic, like softmax(Q~ K~^T)
    want = np.linalg.pinv(a)
    errors = [np.abs(np.asarray(iterative_pinv(jnp.asarray(a), it)) - want).max()
              for it in (2, 6, 40)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-9


def test_nystromformer_with_a_landmark_per_token_is_softmax_attention():
    length = 10
    q, k, v = (0.5 * rand(s, 2, length, H, D) for s in (4, 5, 6))
    mask = np.ones((2, length), bool)
    exact = softmax_reference(q, k, v, mask)
    err = {}
    for it in (6, 40):
        m = layer("nystromformer", length, num_landmarks=length, pinv_iterations=it,
                  conv_kernel_size=0)
        err[it] = np.abs(attend(m, q, k, v, mask) - exact).max()
    assert err[40] < 1e-9 and err[6] > err[40]  # exact up to the iteration's tolerance
    # The convolution skip adds a depthwise convolution of the values, one kernel per head.
    m = layer("nystromformer", length, num_landmarks=length, pinv_iterations=40,
              conv_kernel_size=3)
    w = np.asarray(m.conv[...])  # [H, 3]
    vp = np.pad(v, [(0, 0), (1, 1), (0, 0), (0, 0)])
    conv = sum(w[None, None, :, t, None] * vp[:, t:t + length] for t in range(3))
    np.testing.assert_allclose(attend(m, q, k, v, mask), exact + conv, atol=1e-9)


# ---------------------------------------------------------------- cosFormer


def test_cosformer_equals_its_quadratic_form():
    length = 14
    q, k, v = (rand(s, 2, length, H, D) for s in (7, 8, 9))
    lengths = [14, 9]
    mask = lengths_mask(length, lengths)
    got = attend(layer("cosformer", length), q, k, v, mask)
    want = np.zeros_like(q)
    for b, n in enumerate(lengths):
        i = np.arange(n)
        cos = np.cos(np.pi / 2 * (i[:, None] - i[None, :]) / n)
        s = np.einsum("qhd,khd->hqk", np.maximum(q[b, :n], 0), np.maximum(k[b, :n], 0)) * cos
        want[b, :n] = np.einsum("hqk,khd->qhd", s, v[b, :n]) / (s.sum(-1).T[..., None] + 1e-6)
    np.testing.assert_allclose(real(got, mask), want, atol=1e-10)


# ---------------------------------------------------------------- retention


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bidirectional", "causal"])
def test_retention_parallel_form_equals_the_recurrent_form(bidirectional):
    length = 11
    q, k, v = (jnp.asarray(rand(s, 2, length, H, D)) for s in (10, 11, 12))
    mask = jnp.asarray(lengths_mask(length, [11, 6]))
    gammas = decays(H)
    par = np.asarray(jax.jit(parallel_retention, static_argnums=5)(q, k, v, mask, gammas,
                                                                   bidirectional))
    rec = np.asarray(jax.jit(recurrent_retention, static_argnums=5)(q, k, v, mask, gammas,
                                                                    bidirectional))
    np.testing.assert_allclose(par, rec, atol=1e-10)
    # ... and both are the definition: sum_m gamma^(n-m) (or ^|n-m|) q_n.k_m / sqrt(d) v_m.
    n = np.arange(length)
    diff = n[:, None] - n[None, :]
    decay = np.where(diff >= 0 if not bidirectional else True,
                     gammas[:, None, None] ** np.abs(diff)[None], 0.0)
    w = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(D) * decay * np.asarray(mask)[:, None, None]
    np.testing.assert_allclose(par, np.einsum("bhnm,bmhd->bnhd", w, v), atol=1e-10)


def test_retention_decays_are_the_papers():
    np.testing.assert_allclose(decays(4), [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256])


# ---------------------------------------------------------------- dilated neighbourhood


def dilated_layer(length, kernel_size, dilation):
    shape = MixerShape(dim=H * D, num_heads=H, qkv_dim=H * D, seq_len=length,
                       dtype=jnp.float64, layer=1)  # an odd layer: dilated
    return MODELS.get("dilated_na")(shape, kernel_size=kernel_size, dilation=dilation,
                                    rngs=nnx.Rngs(0))


def neighbour_matrix(n, length, kernel_size, dilation):
    """allowed[i, j] built from NA's definition, one query at a time, in plain Python."""
    allowed = np.zeros((length, length), bool)
    for i in range(n):
        group = [j for j in range(n) if j % dilation == i % dilation]
        size = min(kernel_size, len(group))
        at = group.index(i)
        start = min(max(at - kernel_size // 2, 0), len(group) - size)
        allowed[i, group[start:start + size]] = True
    return allowed


def test_dilated_na_covering_the_sequence_with_dilation_1_is_full_attention():
    length = 12
    q, k, v = (rand(s, 2, length, H, D) for s in (13, 14, 15))
    mask = lengths_mask(length, [12, 8])
    got = attend(dilated_layer(length, 13, 1), q, k, v, mask)
    np.testing.assert_allclose(real(got, mask), real(softmax_reference(q, k, v, mask), mask),
                               atol=1e-10)


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (3, 2), (5, 3), (1, 4)])
def test_dilated_na_matches_an_independently_built_neighbour_matrix(kernel_size, dilation):
    length = 23
    q, k, v = (rand(s, 2, length, H, D) for s in (16, 17, 18))
    lengths = [23, 10]
    mask = lengths_mask(length, lengths)
    got = attend(dilated_layer(length, kernel_size, dilation), q, k, v, mask)
    for b, n in enumerate(lengths):
        allowed = neighbour_matrix(n, length, kernel_size, dilation)
        assert not allowed[:n, :n].all()  # really sparse
        scores = np.einsum("qhd,khd->hqk", q[b, :n], k[b]) / np.sqrt(D)
        scores = np.where(allowed[None, :n], scores, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        want = np.einsum("hqk,khd->qhd", w / w.sum(-1, keepdims=True), v[b])
        np.testing.assert_allclose(got[b, :n], want, atol=1e-10)


def test_dilated_na_alternates_dilation_across_layers_as_dinat():
    from lra.models import EncoderConfig, build_model

    cfg = EncoderConfig(vocab_size=5, max_len=63, num_layers=3, dim=8, num_heads=2, qkv_dim=8,
                        mlp_dim=8, pooling="mean")
    model = build_model("dilated_na", {"kernel_size": 7}, cfg, 2, rngs=nnx.Rngs(0))
    assert [b.mixer.dilation for b in model.encoder.blocks] == [1, 63 // 7, 1]


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize("local_heads", [0, 1, 2])
def test_routing_with_one_cluster_covering_the_sequence_is_full_attention(local_heads):
    length = 12
    q, k, v = (rand(s, 2, length, H, D) for s in (19, 20, 21))
    mask = lengths_mask(length, [12, 7])
    m = layer("routing", length, num_clusters=1, window=16, local_heads=local_heads)
    got = attend(m, q, k, v, mask)
    np.testing.assert_allclose(real(got, mask), real(softmax_reference(q, k, v, mask), mask),
                               atol=1e-10)


def test_routing_balanced_clusters_match_brute_force_top_window():
    length, clusters, window = 12, 3, 4
    q, k, v = (rand(s, 1, length, H, D) for s in (22, 23, 24))
    mask = lengths_mask(length, [10])
    m = layer("routing", length, num_clusters=clusters, window=window, local_heads=0)
    got = attend(m, q, k, v, mask)
    mu = np.asarray(m.centroids[...])  # [H, C, D]
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    want = np.zeros((length, H, D))
    for h in range(H):
        total, count = np.zeros((length, D)), np.zeros(length)
        for c in range(clusters):
            def top(x):
                sim = unit(x[0, :, h]) @ mu[h, c]
                sim[10:] = -np.inf
                return np.argsort(-sim, kind="stable")[:window]
            qi, ki = top(q), top(k)
            ki_real = [j for j in ki if j < 10]
            scores = q[0, qi, h] @ k[0, ki_real, h].T / np.sqrt(D)
            w = np.exp(scores - scores.max(-1, keepdims=True))
            total[qi] += (w / w.sum(-1, keepdims=True)) @ v[0, ki_real, h]
            count[qi] += 1
        want[:, h] = total / np.maximum(count, 1)[:, None]
    np.testing.assert_allclose(got[0, :10], want[:10], atol=1e-10)


def test_routing_centroids_follow_the_moving_average_in_training_only():
    length = 10
    shape = MixerShape(dim=H * D, num_heads=H, qkv_dim=H * D, seq_len=length, dtype=jnp.float64)
    m = MODELS.get("routing")(shape, num_clusters=2, window=5, local_heads=0, rngs=nnx.Rngs(0))
    x = jnp.asarray(rand(25, 2, length, H * D))
    mask = jnp.asarray(lengths_mask(length, [10, 6]))
    before = np.asarray(m.centroids[...])
    assert type(m.centroids).__name__ == "Centroids" and not isinstance(m.centroids, nnx.Param)
    nnx.jit(lambda m, x, mask: m(x, mask, deterministic=True))(m, x, mask)
    np.testing.assert_array_equal(np.asarray(m.centroids[...]), before)  # evaluation: unchanged
    nnx.jit(lambda m, x, mask: m(x, mask, deterministic=False, rngs=nnx.Rngs(1)))(m, x, mask)
    after = np.asarray(m.centroids[...])
    # The definition: nearest centroid of every real unit query and key, EMA of their mean.
    qk = [np.asarray(p(x)).reshape(2, length, H, D) for p in (m.query, m.key)]
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    vecs = [unit(a)[b, :n] for a in qk for b, n in enumerate([10, 6])]
    for h in range(H):
        pts = np.concatenate([p[:, h] for p in vecs])
        nearest = (pts @ before[h].T).argmax(-1)
        for c in range(2):
            if (nearest == c).any():
                moved = 0.999 * before[h, c] + 0.001 * pts[nearest == c].mean(0)
                np.testing.assert_allclose(after[h, c], unit(moved), atol=1e-12)
            else:
                np.testing.assert_array_equal(after[h, c], before[h, c])
    assert not np.allclose(after, before)


# ---------------------------------------------------------------- log-linear


def test_loglinear_with_top_k_covering_every_block_is_full_attention():
    length = 22
    q, k, v = (rand(s, 2, length, H, D) for s in (26, 27, 28))
    mask = lengths_mask(length, [22, 13])
    got = attend(layer("loglinear", length, block_size=4, top_k=6), q, k, v, mask)
    np.testing.assert_allclose(real(got, mask), real(softmax_reference(q, k, v, mask), mask),
                               atol=1e-10)


def brute_force_selection(q_mean, levels, top_k):
    """Per (example, head, query block): the kept fine blocks and the dropped candidates
    of every level, by looping over the hierarchy in plain numpy."""
    counts = [np.asarray(c) for _, _, c in levels]
    means = [np.asarray(km) for km, _, _ in levels]
    q_mean = np.asarray(q_mean)
    b_, nq, h_, _ = q_mean.shape
    kept, dropped = {}, {}
    for b in range(b_):
        for h in range(h_):
            for qi in range(nq):
                chosen = [j for j in range(counts[-1].shape[1]) if counts[-1][b, j] > 0]
                drops = []
                for level in range(len(levels) - 2, -1, -1):
                    cands = [c for p in chosen for c in (2 * p, 2 * p + 1)
                             if c < counts[level].shape[1] and counts[level][b, c] > 0]
                    score = {c: q_mean[b, qi, h] @ means[level][b, c, h] for c in cands}
                    ranked = sorted(cands, key=lambda c: -score[c])
                    chosen, rest = ranked[:top_k], ranked[top_k:]
                    drops.append(set(rest))
                kept[b, h, qi], dropped[b, h, qi] = set(chosen), drops
    return kept, dropped


def test_loglinear_selects_the_brute_force_top_k_at_every_level():
    from lra.models.loglinear import hierarchy, select_blocks

    length, bs, top_k = 64, 2, 3  # 32 fine blocks, levels of 32, 16, 8, 4, 2 blocks
    q, k, v = (jnp.asarray(rand(s, 2, length, H, D)) for s in (29, 30, 31))
    mask = jnp.asarray(lengths_mask(length, [64, 37]))
    kb, vb, qb = (x.reshape(2, length // bs, bs, H, D) for x in (k, v, q))
    mb = mask.reshape(2, length // bs, bs)
    levels = hierarchy(kb, vb, mb, bs, top_k)
    assert [c.shape[1] for _, _, c in levels] == [32, 16, 8, 4, 2]
    q_mean = jnp.einsum("bnshd,bns->bnhd", qb, mb) / jnp.maximum(mb.sum(-1), 1)[..., None, None]
    (sel, ok), dropped = select_blocks(q_mean, levels, top_k)
    kept, drops = brute_force_selection(q_mean, levels, top_k)
    sel, ok = np.asarray(sel), np.asarray(ok)
    for (b, h, qi), want in kept.items():
        if not mb[b, qi].any():
            continue  # a query block of padding: all scores tie, its choice is never used
        assert set(sel[b, h, qi][ok[b, h, qi]].tolist()) == want
        for (idx, idx_ok), want_dropped in zip(dropped, drops[(b, h, qi)]):
            idx, idx_ok = np.asarray(idx), np.asarray(idx_ok)
            assert set(idx[b, h, qi][idx_ok[b, h, qi]].tolist()) == want_dropped
    assert any(len(w) == top_k for w in kept.values())  # really selective: 3 of 32 blocks

    # The output: softmax over the kept blocks' tokens and the dropped blocks' summaries
    # (mean key and value of the real tokens a block spans, score + log of their count).
    got = attend(layer("loglinear", length, block_size=bs, top_k=top_k), q, k, v, mask)
    q, k, v, mask = (np.asarray(x) for x in (q, k, v, mask))
    for (b, h, qi), fine in kept.items():
        if not mask[b, qi * bs:(qi + 1) * bs].any():
            continue
        keys, values, bias = [], [], []
        for block in fine:
            for t in range(block * bs, (block + 1) * bs):
                if mask[b, t]:
                    keys.append(k[b, t, h]), values.append(v[b, t, h]), bias.append(0.0)
        for level, blocks in zip(range(len(levels) - 2, -1, -1), drops[(b, h, qi)]):
            span = bs * 2 ** level
            for block in blocks:
                real_t = [t for t in range(block * span, (block + 1) * span) if mask[b, t]]
                keys.append(k[b, real_t, h].mean(0)), values.append(v[b, real_t, h].mean(0))
                bias.append(np.log(len(real_t)))
        for t in range(qi * bs, (qi + 1) * bs):
            if mask[b, t]:
                scores = np.array(keys) @ q[b, t, h] / np.sqrt(D) + np.array(bias)
                w = np.exp(scores - scores.max())
                np.testing.assert_allclose(got[b, t, h], (w / w.sum()) @ np.array(values),
                                           atol=1e-10)


# ---------------------------------------------------------------- no L x L


@pytest.mark.parametrize("name", ["fnet", "routing", "loglinear"])
def test_subquadratic_models_have_no_length_squared_intermediate(name):
    """Models below L^2 that do not declare linear_time (L log L) still hold no L x L array."""
    length = 4096
    shape = MixerShape(dim=16, num_heads=2, qkv_dim=16, seq_len=length)  # mixer_jaxprs: dim 16
    m = MODELS.get(name)(shape, rngs=nnx.Rngs(0))
    for jaxpr in mixer_jaxprs(m, length):
        assert quadratic_intermediates(jaxpr, length) == []
