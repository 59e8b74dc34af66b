"""Pathfinder image generator (Linsley et al. 2018; LRA Pathfinder-32 ... Path-X).

An image holds two *target* paths and a few shorter *distractor* paths, each a
dashed curve made of short line segments ("paddles") separated by gaps, bright on
black, plus two circular markers. Label 1: the markers sit on the two ends of
one target path. Label 0: one marker sits on the start of one target path and the
other on the far end of the other target path.

The procedure follows the published generator (github.com/drewlinsley/pathfinder,
``snakes2.py``/``snakes.py``), re-implemented from its description and vectorised
over a batch of images (numpy only):

* Two target paths are seeded first. The start ("tail") of the first one is drawn
  uniformly from the square that keeps ``2 * seed_distance`` off every border; the
  second tail lies ``seed_distance`` away from it in a uniform direction; both
  first paddles get uniform orientations.
* A path grows one paddle at a time (the two targets alternately). With ``m`` the
  paddle margin, the next paddle starts ``m`` past the previous paddle's end along
  the old direction and then ``m`` along the new one (gap = ``2 m``), and is
  ``paddle_length`` long. The turn between consecutive paddles has density
  ``cos^2(continuity * turn)`` on ``|turn| < pi / (2 * continuity)`` (the
  original's weighting; ``continuity = 1`` allows turns up to 90 degrees,
  ``1.8`` up to 50 degrees).
* Collisions are rejected: every placed paddle claims the pixels within
  ``m + thickness / 2`` of it; a candidate is refused if the pixels within
  ``m + thickness / 2 + 0.5`` of it hold a claim of another path, of an older
  paddle of its own path (all but the one it continues) or of the border band
  (``padding`` pixels). Different paths therefore stay about ``2 m + thickness``
  apart and never touch. A growth step draws up to ``candidates`` turns and keeps
  the first free one (the original tries 3 and additionally zeroes occupied end
  points); if all collide, the image is thrown away and generated afresh (as in
  the original), and a distractor is re-seeded up to 5 times and then skipped.
* Distractors (``num_distractors`` paths of ``contour_length // 3`` paddles) are
  seeded uniformly inside the padding and grown the same way. The original's
  optional single-paddle clutter (``use_single_paddles``) is off, as in its
  wrapper script.
* Rendering: anti-aliased by supersampling precomputed stamps (paddle angle
  quantised to ``180/64`` degrees, sub-pixel position to 1/4 pixel; the path
  geometry itself stays continuous). Paths are drawn at ``path_contrast``
  (``snake_contrast * paddle_contrast`` of the original), markers (discs of
  ``marker_radius``) at 1.0, and each image is scaled so its maximum is 255 (the
  original saved with ``scipy.misc.imsave``, which byte-scales the same way).

Parameters per resolution (``PARAMS`` / ``params()``), sources:

* 32 px: the LRA TFDS builder docstring for Pathfinder32
  (google-research/long-range-arena ``lra_benchmarks/data/pathfinder.py``):
  padding 1, paddle margin [1], paddle length 2, marker radius 1.5, thickness
  0.5, seed distance 7, continuity 1.0, distractors ``20 // distractor_length``,
  contrast 2 * 0.75.
* 64 px and 128 px: the same file's Pathfinder64/Pathfinder128 docstrings (64:
  padding 1, margin [1], seed distance 12, marker radius 2.5, thickness 1,
  continuity 1.8, distractors ``22 // distractor_length``, contrast 0.8;
  128: padding 1, margins [2, 3] (drawn per image), seed distance 20, marker
  radius 3, thickness 1.5, continuity 1.8, distractors ``35 // distractor_length``,
  contrast 0.9). Paddle length is not listed there, so it is the default of the
  original ``snakes2_wrapper.py`` ``Args`` (5).
* 256 px: Pathfinder256 docstring (margin [3], marker radius 5, thickness 2,
  continuity 1.8, distractors ``30 // distractor_length``, contrast 1.0); padding
  (22), seed distance (27) and paddle length (5) are not listed there and come
  from the ``Args`` defaults of ``snakes2_wrapper.py``.
* Difficulty = target contour length in paddles, as LRA's splits: easy =
  ``curv_baseline`` (6), intermediate = ``curv_contour_length_9`` (9), hard =
  ``curv_contour_length_14`` (14); distractor length ``contour_length // 3`` and
  the distractor counts use Python 2 integer division as the original did.
* Not from the sources (this implementation's own choices, recorded in the
  table): the claim radii above, ``candidates`` per growth step, stamp
  quantisation and the supersampling.

``generate`` is deterministic given ``seed``: images come in fixed-size chunks
whose generators derive from ``SeedSequence(seed, spawn_key=(chunk,))``, so the
worker count changes nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any

import numpy as np

from lra.errors import LraError

DIFFICULTIES: dict[str, int] = {"easy": 6, "intermediate": 9, "hard": 14}
RESOLUTIONS: tuple[int, ...] = (32, 64, 128, 256)

_BORDER = 127  # claim id of the border band
_NA = 64  # paddle angle bins over [0, pi)
_Q = 4  # sub-pixel bins per axis
_SS = 5  # supersampling per axis for anti-aliasing
_DISTRACTOR_TRIES = 5  # max_distractor_contour_retrial (4) + 1
_SEED_CANDIDATES = 16


@dataclasses.dataclass(frozen=True)
class PathfinderParams:
    """Everything that fixes the image distribution of one (resolution, difficulty)."""

    resolution: int
    difficulty: str
    contour_length: int  # paddles per target path
    distractor_length: int  # paddles per distractor path
    num_distractors: int
    paddle_length: float  # pixels
    paddle_thickness: float  # pixels
    paddle_margins: tuple[int, ...]  # gap between paddles = 2 * margin; one drawn per image
    continuity: float  # turn density cos^2(continuity * turn)
    seed_distance: float  # distance between the two target-path starts
    padding: int  # border band no path may enter
    marker_radius: float
    path_contrast: float  # path intensity relative to the markers (before byte-scaling)
    candidates: int = 12  # turns checked per growth step (implementation choice)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["paddle_margins"] = list(self.paddle_margins)
        return d


_LRA_DOC = "google-research/long-range-arena lra_benchmarks/data/pathfinder.py Pathfinder{r} docstring"
_WRAPPER = "drewlinsley/pathfinder snakes2_wrapper.py Args defaults"

# resolution -> (paddle_length, thickness, margins, continuity, seed_distance,
#                padding, marker_radius, distractor budget, contrast, source)
_PER_RESOLUTION: dict[int, tuple] = {
    32: (2, 0.5, (1,), 1.0, 7, 1, 1.5, 20, 2 * 0.75, _LRA_DOC.format(r=32)),
    64: (5, 1.0, (1,), 1.8, 12, 1, 2.5, 22, 0.8,
         _LRA_DOC.format(r=64) + "; paddle_length from " + _WRAPPER),
    128: (5, 1.5, (2, 3), 1.8, 20, 1, 3.0, 35, 0.9,
          _LRA_DOC.format(r=128) + "; paddle_length from " + _WRAPPER),
    256: (5, 2.0, (3,), 1.8, 27, 22, 5.0, 30, 1.0,
          _LRA_DOC.format(r=256) + "; padding, seed_distance, paddle_length from " + _WRAPPER),
}


def params(resolution: int = 32, difficulty: str = "hard") -> PathfinderParams:
    """The parameter table entry for one resolution and difficulty."""
    if difficulty not in DIFFICULTIES:
        raise LraError(
            f"unknown Pathfinder difficulty '{difficulty}'; choose one of: {', '.join(DIFFICULTIES)}"
        )
    if resolution not in _PER_RESOLUTION:
        raise LraError(
            f"unsupported Pathfinder resolution {resolution}; choose one of: "
            f"{', '.join(map(str, RESOLUTIONS))}"
        )
    length, thick, margins, cont, seed_d, pad, marker, budget, contrast, src = _PER_RESOLUTION[
        resolution
    ]
    cl = DIFFICULTIES[difficulty]
    dl = cl // 3
    return PathfinderParams(
        resolution=resolution,
        difficulty=difficulty,
        contour_length=cl,
        distractor_length=dl,
        num_distractors=budget // dl,
        paddle_length=float(length),
        paddle_thickness=float(thick),
        paddle_margins=tuple(margins),
        continuity=float(cont),
        seed_distance=float(seed_d),
        padding=int(pad),
        marker_radius=float(marker),
        path_contrast=float(contrast),
        source=src,
    )


PARAMS: dict[tuple[int, str], PathfinderParams] = {
    (r, d): params(r, d) for r in RESOLUTIONS for d in DIFFICULTIES
}

# images per chunk (fixed per resolution so that results never depend on workers)
_CHUNK = {32: 1000, 64: 500, 128: 200, 256: 50}


# --------------------------------------------------------------------------- stamps


def _segment_distance(py, px, ay, ax, by, bx):
    """Distance from points (py, px) to segments a-b (all broadcastable)."""
    vy, vx = by - ay, bx - ax
    wy, wx = py - ay, px - ax
    vv = np.maximum(vy * vy + vx * vx, 1e-12)
    t = np.clip((wy * vy + wx * vx) / vv, 0.0, 1.0)
    dy, dx = wy - t * vy, wx - t * vx
    return np.sqrt(dy * dy + dx * dx)


def _to_offsets(masks: np.ndarray, values: np.ndarray | None, radius: int, width: int):
    """[S, w, w] stamp windows -> padded flat-offset lists [S, E] (+ values)."""
    s, w, _ = masks.shape
    grid = np.arange(-radius, radius + 1)
    flat = (grid[:, None] * width + grid[None, :]).reshape(-1)
    m = masks.reshape(s, -1)
    count = m.sum(1)
    e = max(int(count.max()), 1)
    order = np.argsort(~m, axis=1, kind="stable")[:, :e]  # selected entries first
    offs = flat[order]
    keep = np.take_along_axis(m, order, 1)
    first = offs[:, :1]
    offs = np.where(keep, offs, first).astype(np.int32)  # pad with a duplicate entry
    if values is None:
        return offs, None
    vals = np.take_along_axis(values.reshape(s, -1), order, 1)
    return offs, np.where(keep, vals, 0.0).astype(np.float32)


class _Plan:
    """Precomputed stamps and tables for one parameter set (cached per process)."""

    def __init__(self, p: PathfinderParams):
        self.p = p
        h = p.resolution
        L, t = p.paddle_length, p.paddle_thickness
        mmax = max(p.paddle_margins)
        self.claim_r = [m + t / 2 for m in p.paddle_margins]
        self.check_r = [r + 0.5 for r in self.claim_r]
        self.R = int(math.ceil(L / 2 + max(self.check_r) + 1))
        self.pad = int(math.ceil(1.5 * L + 2 * mmax + self.R + 3))
        self.W = h + 2 * self.pad
        W = self.W

        # stamp table: index = (angle * Q + qy) * Q + qx; midpoint at (q + .5) / Q
        ang = np.arange(_NA) * np.pi / _NA
        q = (np.arange(_Q) + 0.5) / _Q
        A, QY, QX = np.meshgrid(ang, q, q, indexing="ij")
        A, QY, QX = A.reshape(-1, 1, 1), QY.reshape(-1, 1, 1), QX.reshape(-1, 1, 1)
        ay, ax = QY - L / 2 * np.sin(A), QX - L / 2 * np.cos(A)
        by, bx = QY + L / 2 * np.sin(A), QX + L / 2 * np.cos(A)
        g = np.arange(-self.R, self.R + 1, dtype=np.float64)
        GY, GX = g[None, :, None], g[None, None, :]
        dist = _segment_distance(GY, GX, ay, ax, by, bx)
        check, claim = [], []
        for rc, rk in zip(self.claim_r, self.check_r):
            check.append(_to_offsets(dist <= rk, None, self.R, W)[0])
            claim.append(_to_offsets(dist <= rc, None, self.R, W)[0])
        self.check_offs = _stack_pad(check)
        self.claim_offs = _stack_pad(claim)

        # ink: supersampled coverage of the capsule of radius t / 2
        sub = (np.arange(_SS) + 0.5) / _SS - 0.5
        cover = np.zeros((len(A), len(g), len(g)))
        for sy in sub:
            for sx in sub:
                cover += _segment_distance(GY + sy, GX + sx, ay, ax, by, bx) <= t / 2
        cover /= _SS * _SS
        self.ink_offs, self.ink_vals = _to_offsets(cover > 0, cover, self.R, W)

        # markers: discs around (q + .5) / Q
        rm = int(math.ceil(p.marker_radius + 1))
        self.marker_R = rm
        gm = np.arange(-rm, rm + 1, dtype=np.float64)
        MY, MX = np.meshgrid(q, q, indexing="ij")
        MY, MX = MY.reshape(-1, 1, 1), MX.reshape(-1, 1, 1)
        disc = np.zeros((_Q * _Q, len(gm), len(gm)))
        for sy in sub:
            for sx in sub:
                dy = gm[None, :, None] + sy - MY
                dx = gm[None, None, :] + sx - MX
                disc += dy * dy + dx * dx <= p.marker_radius**2
        disc /= _SS * _SS
        self.marker_offs, self.marker_vals = _to_offsets(disc > 0, disc, rm, W)

        # border band: everything outside [padding, res - padding) is claimed
        band = np.full((W, W), _BORDER, np.int8)
        lo, hi = self.pad + p.padding, self.pad + h - p.padding
        band[lo:hi, lo:hi] = 0
        self.band = band.reshape(-1)

    def stamp(self, my, mx, theta):
        """Stamp index and flat base pixel of paddles with midpoints (my, mx)."""
        fy, fx = np.floor(my), np.floor(mx)
        qy = np.minimum(((my - fy) * _Q).astype(np.int64), _Q - 1)
        qx = np.minimum(((mx - fx) * _Q).astype(np.int64), _Q - 1)
        a = np.rint(theta * (_NA / np.pi)).astype(np.int64) % _NA
        sid = (a * _Q + qy) * _Q + qx
        base = (fy.astype(np.int64) + self.pad) * self.W + fx.astype(np.int64) + self.pad
        return sid, base


def _stack_pad(tables: list[np.ndarray]) -> np.ndarray:
    e = max(t.shape[1] for t in tables)
    out = [np.concatenate([t, np.repeat(t[:, :1], e - t.shape[1], 1)], 1) for t in tables]
    return np.stack(out)  # [margins, stamps, E]


_PLANS: dict[PathfinderParams, _Plan] = {}


def _plan(p: PathfinderParams) -> _Plan:
    if p not in _PLANS:
        _PLANS[p] = _Plan(p)
    return _PLANS[p]


# --------------------------------------------------------------------------- batch


class _Batch:
    """Geometry of B images grown in lock-step."""

    def __init__(self, plan: _Plan, b: int, rng: np.random.Generator):
        p = plan.p
        self.plan, self.rng, self.b = plan, rng, b
        self.npaths = 2 + p.num_distractors
        self.kmax = max(p.contour_length, p.distractor_length)
        self.claims = np.tile(plan.band, (b, 1))  # path id + 1 (0 free)
        self.claim_k = np.zeros((b, plan.W * plan.W), np.int8)  # paddle index of the claim
        self.seg = np.full((b, self.npaths, self.kmax, 4), np.nan, np.float32)
        self.end = np.zeros((b, self.npaths, 2))
        self.theta = np.zeros((b, self.npaths))
        self.mi = rng.integers(0, len(p.paddle_margins), b)
        self.margin = np.asarray(p.paddle_margins, np.float64)[self.mi]

    def _try(self, rows, path, k, sy, sx, theta, allowed=None, weight=None):
        """Check candidate paddles [n, T] (start, angle) and commit one free one.

        Without `weight` the first free candidate is taken (candidates are i.i.d.),
        with it one free candidate is drawn with probability proportional to weight.
        Returns a bool [n]: whether row got a paddle.
        """
        plan, L = self.plan, self.plan.p.paddle_length
        s_, c_ = np.sin(theta), np.cos(theta)
        ey, ex = sy + L * s_, sx + L * c_
        sid, base = plan.stamp((sy + ey) / 2, (sx + ex) / 2, theta)
        mi = self.mi[rows][:, None]
        idx = base[..., None] + plan.check_offs[mi, sid]  # [n, T, E]
        r3 = rows[:, None, None]
        cp = self.claims[r3, idx]
        bad = (cp != 0) & ((cp != path + 1) | (self.claim_k[r3, idx] < k - 1))
        free = ~bad.any(-1)
        if allowed is not None:
            free &= allowed
        if weight is None:
            ok = free.any(1)
            j = free.argmax(1)[ok]
        else:
            cum = np.cumsum(np.where(free, weight, 0.0), 1)
            ok = cum[:, -1] > 0
            u = self.rng.random(len(rows)) * cum[:, -1]
            j = np.minimum((cum <= u[:, None]).sum(1), cum.shape[1] - 1)[ok]
        r = rows[ok]
        n = np.arange(len(rows))[ok]
        cidx = base[n, j][:, None] + plan.claim_offs[self.mi[r], sid[n, j]]
        self.claims[r[:, None], cidx] = path + 1
        self.claim_k[r[:, None], cidx] = k
        self.seg[r, path, k] = np.stack([sy[n, j], sx[n, j], ey[n, j], ex[n, j]], 1)
        self.end[r, path, 0], self.end[r, path, 1] = ey[n, j], ex[n, j]
        self.theta[r, path] = theta[n, j]
        return ok

    def seed(self, rows, path, ty, tx, theta, allowed=None):
        return self._try(rows, path, 0, ty, tx, theta, allowed)

    def extend(self, rows, path, k):
        p = self.plan.p
        n = len(rows)
        m = self.margin[rows][:, None]
        th0 = self.theta[rows, path][:, None]
        # a jittered grid over the turn support, weighted cos^2(continuity * turn):
        # like the original, which weighs every free end point on a circle
        lim = np.pi / (2 * p.continuity)
        turn = (np.arange(p.candidates) + self.rng.random((n, 1))) * (2 * lim / p.candidates) - lim
        weight = np.cos(p.continuity * turn) ** 2
        th = th0 + turn
        py = self.end[rows, path, 0][:, None] + m * np.sin(th0)
        px = self.end[rows, path, 1][:, None] + m * np.cos(th0)
        return self._try(rows, path, k, py + m * np.sin(th), px + m * np.cos(th), th, None, weight)

    def erase(self, rows, path):
        """Remove a partly grown path from rows."""
        if len(rows) == 0:
            return
        c = self.claims[rows]
        self.claims[rows] = np.where(c == path + 1, 0, c)
        self.seg[rows, path] = np.nan


def _grow_batch(plan: _Plan, b: int, rng: np.random.Generator) -> tuple[_Batch, np.ndarray]:
    """Grow targets and distractors for b images; returns the batch and alive rows."""
    p = plan.p
    h = p.resolution
    g = _Batch(plan, b, rng)
    rows = np.arange(b)
    T = _SEED_CANDIDATES

    # target seeds: tail A in the square 2 * seed_distance off the borders
    lo, hi = 2 * p.seed_distance, h - 1 - 2 * p.seed_distance
    if hi <= lo:
        lo = hi = (h - 1) / 2
    ty = rng.uniform(lo, hi, (b, T))
    tx = rng.uniform(lo, hi, (b, T))
    ok = g.seed(rows, 0, ty, tx, rng.uniform(0, 2 * np.pi, (b, T)))
    rows = rows[ok]
    n = len(rows)
    phi = rng.uniform(0, 2 * np.pi, (n, T))
    tail_a = g.seg[rows, 0, 0, :2].astype(np.float64)
    ty = tail_a[:, :1] + p.seed_distance * np.sin(phi)
    tx = tail_a[:, 1:] + p.seed_distance * np.cos(phi)
    inside = (ty >= 0) & (ty <= h - 1) & (tx >= 0) & (tx <= h - 1)
    ty, tx = np.clip(ty, 0, h - 1), np.clip(tx, 0, h - 1)
    ok = g.seed(rows, 1, ty, tx, rng.uniform(0, 2 * np.pi, (n, T)), inside)
    rows = rows[ok]

    for k in range(1, p.contour_length):
        for path in (0, 1):
            rows = rows[g.extend(rows, path, k)]

    for d in range(p.num_distractors):
        path = 2 + d
        todo = rows
        for _ in range(_DISTRACTOR_TRIES):
            if len(todo) == 0:
                break
            n = len(todo)
            ty = rng.uniform(p.padding, h - 1 - p.padding, (n, T))
            tx = rng.uniform(p.padding, h - 1 - p.padding, (n, T))
            ok = g.seed(todo, path, ty, tx, rng.uniform(0, 2 * np.pi, (n, T)))
            failed = [todo[~ok]]
            grow = todo[ok]
            for k in range(1, p.distractor_length):
                ok = g.extend(grow, path, k)
                failed.append(grow[~ok])
                g.erase(grow[~ok], path)
                grow = grow[ok]
            todo = np.concatenate(failed)
    return g, rows


def _render(plan: _Plan, g: _Batch, rows: np.ndarray, labels: np.ndarray, origin: np.ndarray):
    """Images [n, H, W] uint8 plus marker coordinates [n, 2, 2] for the chosen rows."""
    p, W, h = plan.p, plan.W, plan.p.resolution
    n = len(rows)
    canvas = np.zeros((n, W * W), np.float32)
    seg = g.seg[rows].reshape(n, -1, 4).astype(np.float64)
    valid = ~np.isnan(seg[..., 0])
    img_i, seg_i = np.nonzero(valid)
    s = seg[img_i, seg_i]
    theta = np.arctan2(s[:, 2] - s[:, 0], s[:, 3] - s[:, 1])
    sid, base = plan.stamp((s[:, 0] + s[:, 2]) / 2, (s[:, 1] + s[:, 3]) / 2, theta)
    idx = base[:, None] + plan.ink_offs[sid]
    np.maximum.at(canvas, (np.broadcast_to(img_i[:, None], idx.shape), idx),
                  plan.ink_vals[sid] * np.float32(p.path_contrast))

    # markers: tail of the origin path, far end of the same (label 1) or other path
    ar = np.arange(n)
    other = np.where(labels == 1, origin, 1 - origin)
    gs = g.seg[rows]
    m0 = gs[ar, origin, 0, :2]
    m1 = gs[ar, other, p.contour_length - 1, 2:]
    markers = np.stack([m0, m1], 1).astype(np.float32)  # [n, 2, (y, x)]
    mk = markers.reshape(-1, 2).astype(np.float64)
    fy, fx = np.floor(mk[:, 0]), np.floor(mk[:, 1])
    qy = np.minimum(((mk[:, 0] - fy) * _Q).astype(np.int64), _Q - 1)
    qx = np.minimum(((mk[:, 1] - fx) * _Q).astype(np.int64), _Q - 1)
    msid = qy * _Q + qx
    mbase = (fy.astype(np.int64) + plan.pad) * W + fx.astype(np.int64) + plan.pad
    midx = mbase[:, None] + plan.marker_offs[msid]
    mrow = np.repeat(ar, 2)
    np.maximum.at(canvas, (np.broadcast_to(mrow[:, None], midx.shape), midx), plan.marker_vals[msid])

    img = canvas.reshape(n, W, W)[:, plan.pad:plan.pad + h, plan.pad:plan.pad + h]
    peak = img.reshape(n, -1).max(1).reshape(n, 1, 1)
    img = np.rint(img * (255.0 / np.maximum(peak, 1e-6))).astype(np.uint8)
    return img, markers, np.stack([origin, other], 1).astype(np.int8)


def _chunk(p: PathfinderParams, labels: np.ndarray, seed: int, index: int, meta: bool):
    """Generate one chunk: images for the given labels, from its own RNG stream."""
    plan = _plan(p)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    need = len(labels)
    parts: list[tuple] = []
    got, rate = 0, 0.5
    while got < need:
        b = int(min(max(math.ceil((need - got) / rate * 1.15) + 8, 16), 4 * need + 16))
        g, rows = _grow_batch(plan, b, rng)
        rate = max(len(rows) / b, 0.005)
        if len(rows) == 0:
            continue
        origin = rng.integers(0, 2, len(rows))
        take = rows[: need - got]
        lab = labels[got:got + len(take)]
        img, markers, mpath = _render(plan, g, take, lab, origin[: len(take)])
        part: tuple = (img,)
        if meta:
            h, pad = p.resolution, plan.pad
            ids = g.claims[take].reshape(-1, plan.W, plan.W)[:, pad:pad + h, pad:pad + h]
            ids = np.where(ids == _BORDER, 0, ids).astype(np.int8)
            part += (markers, mpath, g.seg[take], ids, g.margin[take].astype(np.float32))
        parts.append(part)
        got += len(take)
    return tuple(np.concatenate([q[i] for q in parts]) for i in range(len(parts[0])))


def _chunk_star(args):
    return _chunk(*args)


def _balanced_labels(n: int, seed: int, chunk: int) -> np.ndarray:
    """Per chunk exactly len // 2 positives, shuffled by a stream of its own."""
    labels = np.empty(n, np.int32)
    for c, lo in enumerate(range(0, n, chunk)):
        m = min(chunk, n - lo)
        lab = (np.arange(m) < m // 2).astype(np.int32)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31 + c,)))
        labels[lo:lo + m] = rng.permutation(lab)
    return labels


def generate(
    n: int,
    resolution: int = 32,
    difficulty: str = "hard",
    seed: int = 0,
    workers: int | None = None,
    return_meta: bool = False,
):
    """Generate n Pathfinder images with balanced labels.

    Returns (images uint8 [n, res, res], labels int32 [n]); with return_meta also a
    dict of numpy arrays:
      markers [n, 2, 2] float32: (y, x) of the two marker centres;
      marker_paths [n, 2] int8: which path (0 or 1, the targets) each marker ends;
      segments [n, paths, paddles, 4] float32: paddle (y0, x0, y1, x1), NaN padded;
        paths 0, 1 are the targets, 2.. the distractors, paddles in drawing order
        (the target's first paddle starts at its "origin" end);
      path_ids [n, res, res] int8: 1 + the path whose collision zone holds the pixel;
      margins [n] float32: paddle margin used per image.
    Same seed -> same arrays, whatever `workers` is.
    """
    p = params(resolution, difficulty)
    n = int(n)
    if n < 0:
        raise LraError(f"Pathfinder: n must be >= 0, got {n}")
    chunk = _CHUNK[resolution]
    labels = _balanced_labels(n, seed, chunk)
    jobs = [(p, labels[lo:lo + chunk], int(seed), c, bool(return_meta))
            for c, lo in enumerate(range(0, n, chunk))]
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        results = [_chunk_star(j) for j in jobs]
    else:
        import multiprocessing as mp

        # fork is cheapest, but JAX's threads make fork unsafe once it is imported
        method = "fork" if "jax" not in sys.modules and sys.platform == "linux" else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            results = list(pool.imap(_chunk_star, jobs, chunksize=1))
    h = p.resolution
    if results:
        images = np.concatenate([r[0] for r in results])
    else:
        images = np.zeros((0, h, h), np.uint8)
    if not return_meta:
        return images, labels
    names = ("markers", "marker_paths", "segments", "path_ids", "margins")
    if results:
        meta = {k: np.concatenate([r[i + 1] for r in results]) for i, k in enumerate(names)}
    else:
        meta = {k: np.zeros((0,)) for k in names}
    return images, labels, meta
