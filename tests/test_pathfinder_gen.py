"""Pathfinder generator: shapes, balance, determinism, and labels checked independently.

The label check does not trust the generator's bookkeeping: it redraws every path
from the returned paddle segments as one continuous trace (paddles plus the gaps
between consecutive paddles) on a 4x finer grid, flood-fills from one marker and
asks whether the fill reaches the other marker. It also checks that the returned
segments are what the image shows (each paddle's ink is there, owned by its path),
that the markers are bright in the image, and that paths keep their distance.
"""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest

from lra.errors import LraError
from lra.tasks import pathfinder_gen as pg

FINE = 4  # trace supersampling


@pytest.fixture(scope="module")
def sample32():
    return pg.generate(64, 32, "hard", seed=3, workers=1, return_meta=True)


@pytest.fixture(scope="module")
def sample128():
    return pg.generate(8, 128, "hard", seed=4, workers=1, return_meta=True)


# ----------------------------------------------------------------------------- helpers


def _trace(segments: np.ndarray, res: int) -> set[tuple[int, int]]:
    """Fine pixels on all paths drawn continuously (paddles and the gaps between)."""
    pixels: set[tuple[int, int]] = set()
    for path in segments:
        valid = path[~np.isnan(path[:, 0])].astype(np.float64)
        pieces = [(s[:2], s[2:]) for s in valid]
        pieces += [(a[2:], b[:2]) for a, b in zip(valid[:-1], valid[1:])]  # gaps
        for a, b in pieces:
            steps = int(np.ceil(np.hypot(*(b - a)) * FINE * 4)) + 1
            pts = a[None] + np.linspace(0, 1, steps)[:, None] * (b - a)[None]
            for y, x in np.floor((pts + 0.5) * FINE).astype(int):
                pixels.add((int(y), int(x)))
    return pixels


def _fine(point) -> tuple[int, int]:
    y, x = np.floor((np.asarray(point, np.float64) + 0.5) * FINE).astype(int)
    return int(y), int(x)


def _connected(pixels: set, start, goal) -> bool:
    """8-connected flood fill over `pixels` from start; does it reach goal?"""
    assert start in pixels and goal in pixels
    seen, todo = {start}, deque([start])
    while todo:
        y, x = todo.popleft()
        if (y, x) == goal:
            return True
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                q = (y + dy, x + dx)
                if q in pixels and q not in seen:
                    seen.add(q)
                    todo.append(q)
    return False


def _segment_distances(s: np.ndarray) -> np.ndarray:
    """Exact pairwise distances [N, N] between 2D segments s [N, 4] (0 if they cross)."""
    a0, a1 = s[:, None, :2], s[:, None, 2:]  # [N, 1, 2]
    b0, b1 = s[None, :, :2], s[None, :, 2:]  # [1, N, 2]

    def cross(o, p, q):
        return (p[..., 0] - o[..., 0]) * (q[..., 1] - o[..., 1]) - (
            p[..., 1] - o[..., 1]
        ) * (q[..., 0] - o[..., 0])

    crossing = (cross(b0, b1, a0) * cross(b0, b1, a1) < 0) & (
        cross(a0, a1, b0) * cross(a0, a1, b1) < 0
    )

    def point(p, s0, s1):
        v, w = s1 - s0, p - s0
        t = np.clip((w * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-12), 0, 1)
        return np.hypot(*np.moveaxis(w - t[..., None] * v, -1, 0))

    d = np.minimum.reduce(
        [point(a0, b0, b1), point(a1, b0, b1), point(b0, a0, a1), point(b1, a0, a1)]
    )
    return np.where(crossing, 0.0, d)


def _check_labels(images, labels, meta, res):
    p = pg.params(res, "hard")
    n = len(labels)
    for i in range(n):
        seg = meta["segments"][i].astype(np.float64)
        markers = meta["markers"][i].astype(np.float64)
        # markers sit on target path ends: one on a start, one on a far end
        starts = seg[:2, 0, :2]
        ends = seg[:2, p.contour_length - 1, 2:]
        assert np.min(np.hypot(*(starts - markers[0]).T)) < 1e-3
        assert np.min(np.hypot(*(ends - markers[1]).T)) < 1e-3
        # independent label: are the markers on one continuous path?
        trace = _trace(seg, res)
        same = _connected(trace, _fine(markers[0]), _fine(markers[1]))
        assert same == bool(labels[i]), f"image {i}: label {labels[i]}, connected {same}"
        # markers are visible
        for y, x in np.rint(markers).astype(int):
            assert images[i, y, x] >= 200, f"image {i}: marker at {(y, x)} is dark"


# ----------------------------------------------------------------------------- tests


def test_shapes_and_dtypes(sample32):
    images, labels, meta = sample32
    assert images.shape == (64, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (64,) and labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1}
    assert images.max() == 255 and images.min() == 0
    assert meta["markers"].shape == (64, 2, 2)
    assert meta["path_ids"].shape == (64, 32, 32)
    p = pg.params(32, "hard")
    assert meta["segments"].shape == (64, 2 + p.num_distractors, p.contour_length, 4)
    # both target paths are complete
    assert not np.isnan(meta["segments"][:, :2]).any()


@pytest.mark.parametrize("res", pg.RESOLUTIONS)
def test_all_resolutions(res):
    images, labels = pg.generate(4, res, "hard", seed=0, workers=1)
    assert images.shape == (4, res, res) and images.dtype == np.uint8
    assert labels.tolist().count(1) == 2
    assert (images.reshape(4, -1).max(1) == 255).all()


@pytest.mark.parametrize("difficulty", ["easy", "intermediate"])
def test_difficulties(difficulty):
    images, labels, meta = pg.generate(8, 32, difficulty, seed=0, workers=1, return_meta=True)
    p = pg.params(32, difficulty)
    assert images.shape == (8, 32, 32)
    assert meta["segments"].shape[2] == p.contour_length


def test_label_balance():
    _, labels = pg.generate(101, 32, "easy", seed=1, workers=1)
    assert int(labels.sum()) == 50
    _, labels = pg.generate(10, 32, "easy", seed=2, workers=1)
    assert int(labels.sum()) == 5


def test_determinism_and_workers(monkeypatch):
    monkeypatch.setitem(pg._CHUNK, 32, 20)  # several chunks from few images
    a = pg.generate(60, 32, "hard", seed=5, workers=1)
    b = pg.generate(60, 32, "hard", seed=5, workers=1)
    c = pg.generate(60, 32, "hard", seed=5, workers=2)
    d = pg.generate(60, 32, "hard", seed=6, workers=1)
    for x, y in ((a, b), (a, c)):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    assert not np.array_equal(a[0], d[0])
    # a prefix chunk does not depend on how many images follow it
    e = pg.generate(20, 32, "hard", seed=5, workers=1)
    np.testing.assert_array_equal(a[0][:20], e[0])


def test_labels_by_connectivity_32(sample32):
    images, labels, meta = sample32
    _check_labels(images, labels, meta, 32)


def test_labels_by_connectivity_128(sample128):
    images, labels, meta = sample128
    _check_labels(images, labels, meta, 128)


@pytest.mark.parametrize("which", ["sample32", "sample128"])
def test_image_shows_the_segments(which, request):
    images, labels, meta = request.getfixturevalue(which)
    for i in range(len(labels)):
        for path, paddles in enumerate(meta["segments"][i]):
            for s in paddles[~np.isnan(paddles[:, 0])]:
                y, x = np.rint((s[:2] + s[2:]) / 2).astype(int)
                assert images[i, y, x] > 0
                assert meta["path_ids"][i, y, x] == path + 1


@pytest.mark.parametrize("which", ["sample32", "sample128"])
def test_paths_keep_apart(which, request):
    images, labels, meta = request.getfixturevalue(which)
    res = images.shape[-1]
    p = pg.params(res, "hard")
    for i in range(len(labels)):
        sep = 2 * float(meta["margins"][i]) + p.paddle_thickness
        seg = meta["segments"][i].astype(np.float64)
        path, k = np.nonzero(~np.isnan(seg[..., 0]))
        s = seg[path, k]
        assert s.min() >= 0 and s.max() <= res - 1
        d = _segment_distances(s)
        exempt = (path[:, None] == path[None, :]) & (np.abs(k[:, None] - k[None, :]) <= 1)
        d = np.where(exempt, np.inf, d)  # a paddle and its neighbours on one path
        assert d.min() >= sep - 1e-3, f"image {i}: two paths only {d.min():.2f} apart"


def test_params_table():
    p = pg.params(32, "hard")
    assert (p.contour_length, p.paddle_length, p.marker_radius, p.seed_distance) == (14, 2, 1.5, 7)
    assert (p.continuity, p.paddle_margins, p.num_distractors) == (1.0, (1,), 5)
    assert pg.params(32, "easy").contour_length == 6
    assert pg.params(32, "intermediate").contour_length == 9
    assert pg.params(128, "hard").paddle_margins == (2, 3)
    assert set(pg.PARAMS) == {(r, d) for r in pg.RESOLUTIONS for d in pg.DIFFICULTIES}
    json.dumps(p.as_dict())  # recordable in a config


def test_errors():
    with pytest.raises(LraError) as e:
        pg.generate(4, 32, "medium")
    assert "easy, intermediate, hard" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LraError) as e:
        pg.params(48, "hard")
    assert "32, 64, 128, 256" in str(e.value) and "\n" not in str(e.value)
