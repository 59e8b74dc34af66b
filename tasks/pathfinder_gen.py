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
* Collisions are rejected, tested on the continuous geometry: a paddle must stay
  inside the box that keeps ``padding + m / 2 + thickness / 2`` off the image
  edges (about where the original's dilated paddle mask meets its blocked
  padding rows), and at least ``separation`` = ``2 m + thickness - 1`` (centre
  line to centre line; see ``separation``) from the paddles the original's
  occupancy mask holds when it is placed: its own path's except the one it
  continues; the other target's except its latest (the mask takes a paddle in
  one step late, and the second target's seed is not checked at all); for a
  distractor, every target paddle but the first target's last (never merged
  into the mask) and the earlier distractors. Paths can therefore cross where
  the original lets them. To choose a turn, one is drawn from the density;
  if that paddle collides, one is drawn among a jittered grid of ``candidates``
  turns over the support, weighted by the density, among those that are free
  (the original weighs every free end point on a circle, then retries the
  collision test 3 times). If no turn is free the image is thrown away and
  generated afresh (as in the original; most tries end so, since long paths must
  curl inside the image), while a distractor is re-seeded up to 5 times and then
  left out.
* Distractors (``num_distractors`` paths of ``contour_length // 3`` paddles) are
  seeded uniformly inside the padding and grown the same way. The original's
  optional single-paddle clutter (``use_single_paddles``) is off, as in its
  wrapper script.
* Rendering: precomputed stamps drawn as the original draws each paddle, at twice
  the resolution and downsampled with PIL's LANCZOS filter in 8 bits
  (``_render_stamps``; paddle angle quantised to ``180/64`` degrees, sub-pixel
  position to 1/4 pixel; the path geometry itself stays continuous, where the
  original's paddles start on whole pixels). Target paths are drawn at
  ``target_contrast`` (``snake_contrast * paddle_contrast`` of the original's
  ``two_snakes``), distractors at ``distractor_contrast`` (the original's
  ``make_many_snakes`` is given ``snake_contrast_list`` alone), markers (discs of
  ``marker_radius``) at 1.0, and each image is scaled so its maximum is 255 (the
  original saved with ``scipy.misc.imsave``, which byte-scales the same way).

Parameters per resolution (``PARAMS`` / ``params()``), sources:

* 32 px: the LRA TFDS builder docstring for Pathfinder32
  (google-research/long-range-arena ``lra_benchmarks/data/pathfinder.py``):
  padding 1, paddle margin [1], paddle length 2, marker radius 1.5, thickness
  0.5, seed distance 7, continuity 1.0, distractors ``20 // distractor_length``,
  contrast: targets 2 * 0.75 = 1.5, distractors 2.
* 64 px and 128 px: the same file's Pathfinder64/Pathfinder128 docstrings (64:
  padding 1, margin [1], seed distance 12, marker radius 2.5, thickness 1,
  continuity 1.8, distractors ``22 // distractor_length``, contrast 0.8 for targets and distractors;
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
* Not from the sources (this implementation's own choices): the exact
  collision distance (``separation``, derived from the original's mask test
  rather than copied) and edge box above, the turn grid (``candidates``, about the
  original's number of candidate end points in the turn support), 16 random
  seed positions per seeding try, stamp quantisation and 5x5 supersampling.
  How close the result comes to the original is measured by
  ``scripts/bench_pathfinder_gen_fidelity.py`` and pinned in the tests.

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

_NA = 64  # paddle angle bins over [0, pi)
_Q = 4  # sub-pixel bins per axis
_SS = 5  # supersampling per axis of each fine pixel
_AA = 2  # antialias_scale: shapes are drawn at twice the resolution (LRA's docstrings)
_LANCZOS_A = 3  # PIL's LANCZOS support, in output pixels
_DISTRACTOR_ROUNDS = (2, 3)  # 5 attempts per distractor: max_distractor_contour_retrial + 1
_SEED_CANDIDATES = 16
_SPANS = ((0, 1), (1, 4), (4, 1 << 30))  # candidate columns checked per round
_BATCH = 8192  # most tries of one batch
_INK_SCALE = 1 << 14  # fixed-point scale of path intensities while drawing


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
    target_contrast: float  # target path intensity relative to the markers (before byte-scaling)
    distractor_contrast: float  # distractor path intensity, likewise
    # turns on the grid tried after a collision: about as many as the original's
    # candidate end points (pixels on a circle of radius length + margin) that
    # fall inside the turn support
    candidates: int = 12
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["paddle_margins"] = list(self.paddle_margins)
        return d


_LRA_DOC = (
    "google-research/long-range-arena lra_benchmarks/data/pathfinder.py Pathfinder{r} docstring"
)
_WRAPPER = "drewlinsley/pathfinder snakes2_wrapper.py Args defaults"

# resolution -> (paddle_length, thickness, margins, continuity, seed_distance,
#                padding, marker_radius, distractor budget,
#                (target contrast, distractor contrast), source)
_PER_RESOLUTION: dict[int, tuple] = {
    32: (2, 0.5, (1,), 1.0, 7, 1, 1.5, 20, (2 * 0.75, 2.0), _LRA_DOC.format(r=32)),
    64: (5, 1.0, (1,), 1.8, 12, 1, 2.5, 22, (0.8, 0.8),
         _LRA_DOC.format(r=64) + "; paddle_length from " + _WRAPPER),
    128: (5, 1.5, (2, 3), 1.8, 20, 1, 3.0, 35, (0.9, 0.9),
          _LRA_DOC.format(r=128) + "; paddle_length from " + _WRAPPER),
    256: (5, 2.0, (3,), 1.8, 27, 22, 5.0, 30, (1.0, 1.0),
          _LRA_DOC.format(r=256) + "; padding, seed_distance, paddle_length from " + _WRAPPER),
}


def params(resolution: int = 32, difficulty: str = "hard") -> PathfinderParams:
    """The parameter table entry for one resolution and difficulty."""
    if difficulty not in DIFFICULTIES:
        raise LraError(
            f"unknown Pathfinder difficulty '{difficulty}'; "
            f"choose one of: {', '.join(DIFFICULTIES)}"
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
    radius = length + sum(margins) / len(margins)
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
        target_contrast=float(contrast[0]),
        distractor_contrast=float(contrast[1]),
        candidates=max(4, round(radius * math.pi / cont)),
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


def _to_offsets(values: np.ndarray, radius: int, width: int):
    """[S, w, w] stamp windows -> padded flat-offset lists [S, E] and values [S, E]."""
    s = values.shape[0]
    grid = np.arange(-radius, radius + 1)
    flat = (grid[:, None] * width + grid[None, :]).reshape(-1)
    v = values.reshape(s, -1)
    m = v > 0
    e = max(int(m.sum(1).max()), 1)
    order = np.argsort(~m, axis=1, kind="stable")[:, :e]  # non-zero entries first
    keep = np.take_along_axis(m, order, 1)
    offs = flat[order]
    offs = np.where(keep, offs, offs[:, :1]).astype(np.int64)  # pad: repeat, value 0
    vals = np.where(keep, np.take_along_axis(v, order, 1), 0.0).astype(np.float32)
    return offs, vals


def _render_stamps(inside, radius: int) -> np.ndarray:
    """Stamps [S, 2r+1, 2r+1] of a shape drawn as the original generator draws it:
    at `_AA` times the resolution, downsampled with PIL's LANCZOS filter (a = 3, as
    `scipy.misc.imresize(..., interp='lanczos')` does), in PIL's two 8-bit passes.

    `inside(y, x)` says (broadcast to [S, ., .]) which points, in pixels relative
    to the stamp's base pixel, lie in the shape; each fine pixel is supersampled.
    The filter's lobes reach 3 pixels, so faint ink surrounds every paddle, as in
    LRA's images (this sets how many pixels are non-zero).
    """
    g = np.arange(-radius, radius + 1, dtype=np.float64)
    fine = (g[:, None] + (np.arange(_AA) + 0.5) / _AA - 0.5).reshape(-1)
    sub = ((np.arange(_SS) + 0.5) / _SS - 0.5) / _AA
    cover = 0.0
    for sy in sub:
        for sx in sub:
            cover = cover + inside(fine[None, :, None] + sy, fine[None, None, :] + sx)
    cover = cover / _SS**2
    d = fine[None, :] - g[:, None]  # fine pixel centre - output pixel centre, in output pixels
    w = np.where(np.abs(d) < _LANCZOS_A, np.sinc(d) * np.sinc(d / _LANCZOS_A), 0.0)
    w /= w.sum(1, keepdims=True)
    # PIL resamples 8-bit images in two passes, x then y, each rounded and clipped to 0-255
    rows = np.clip(np.rint(np.einsum("sfh,kh->sfk", cover * 255, w)), 0, 255)
    return np.clip(np.rint(np.einsum("gf,sfk->sgk", w, rows)), 0, 255) / 255


class _Plan:
    """Drawing stamps and tables for one parameter set (cached per process)."""

    def __init__(self, p: PathfinderParams):
        self.p = p
        h = p.resolution
        L, t = p.paddle_length, p.paddle_thickness
        # stamp windows: the shape plus the reach of the Lanczos filter
        self.R = int(math.ceil(L / 2 + t / 2 + 1.5)) + _LANCZOS_A
        rm = int(math.ceil(p.marker_radius + 1)) + _LANCZOS_A
        self.pad = max(self.R, rm) + 2
        self.W = W = h + 2 * self.pad

        # paddle ink: the capsule of radius t / 2 for angle bins over [0, pi) and
        # 1/Q sub-pixel midpoints, rendered as the original does (_render_stamps);
        # stamp index = (angle * Q + qy) * Q + qx, midpoint at (q + .5) / Q
        ang = np.arange(_NA) * np.pi / _NA
        q = (np.arange(_Q) + 0.5) / _Q
        A, QY, QX = np.meshgrid(ang, q, q, indexing="ij")
        A, QY, QX = A.reshape(-1, 1, 1), QY.reshape(-1, 1, 1), QX.reshape(-1, 1, 1)
        ay, ax = QY - L / 2 * np.sin(A), QX - L / 2 * np.cos(A)
        by, bx = QY + L / 2 * np.sin(A), QX + L / 2 * np.cos(A)
        ink = _render_stamps(lambda y, x: _segment_distance(y, x, ay, ax, by, bx) <= t / 2, self.R)
        # The original draws each paddle in a window of half-width
        # length + ceil(thickness) + margin pixels around one of its ends, which cuts
        # the filter's outer lobes beyond it; stamps do not know which end, so the
        # window is centred on the midpoint with the mean reach on both sides.
        reach = L + math.ceil(t) + min(p.paddle_margins) - L / 2
        g = np.arange(-self.R, self.R + 1, dtype=np.float64)
        inside = (np.abs(g[None, :, None] - QY) <= reach + 0.5) & (np.abs(g[None, None, :] - QX) <= reach + 0.5)
        ink = ink * inside
        self.ink_offs, self.ink_vals = _to_offsets(ink, self.R, W)

        # markers: discs around (q + .5) / Q
        MY, MX = np.meshgrid(q, q, indexing="ij")
        MY, MX = MY.reshape(-1, 1, 1), MX.reshape(-1, 1, 1)
        disc = _render_stamps(lambda y, x: (y - MY) ** 2 + (x - MX) ** 2 <= p.marker_radius**2, rm)
        self.marker_offs, self.marker_vals = _to_offsets(disc, rm, W)

        # turn density cos^2(c * turn) on |turn| < pi / (2c), as an inverse CDF
        c = p.continuity
        grid = np.linspace(-np.pi / (2 * c), np.pi / (2 * c), 2001)
        pdf = np.cos(c * grid) ** 2
        cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2)])
        self.turn_cdf, self.turn_grid = cdf / cdf[-1], grid

    def turns(self, rng, shape):
        return np.interp(rng.random(shape), self.turn_cdf, self.turn_grid)

    def stamp(self, my, mx, theta):
        """Ink stamp index and flat base pixel of paddles with midpoints (my, mx)."""
        fy, fx = np.floor(my), np.floor(mx)
        qy = np.minimum(((my - fy) * _Q).astype(np.int64), _Q - 1)
        qx = np.minimum(((mx - fx) * _Q).astype(np.int64), _Q - 1)
        a = np.rint(theta * (_NA / np.pi)).astype(np.int64) % _NA
        sid = (a * _Q + qy) * _Q + qx
        base = (fy.astype(np.int64) + self.pad) * self.W + fx.astype(np.int64) + self.pad
        return sid, base


_PLANS: dict[PathfinderParams, _Plan] = {}


def _plan(p: PathfinderParams) -> _Plan:
    if p not in _PLANS:
        _PLANS[p] = _Plan(p)
    return _PLANS[p]


# --------------------------------------------------------------------------- geometry


def _point_segment_d2(py, px, ay, ax, by, bx, inv_len2):
    """Squared distance from points to segments of known squared length 1 / inv_len2."""
    vy, vx = by - ay, bx - ax
    wy, wx = py - ay, px - ax
    t = np.minimum(np.maximum((wy * vy + wx * vx) * inv_len2, 0.0), 1.0)
    dy, dx = wy - t * vy, wx - t * vx
    return dy * dy + dx * dx


def separation(margin, p: PathfinderParams):
    """Least distance between the centre lines of two paddles the collision rule checks.

    The original dilates each paddle by `margin`, downsamples the mask (8 bits,
    LANCZOS) and rejects a paddle when the summed masks reach 1.8 on a pixel,
    i.e. when both are above about 0.8: their cores, the dilated paddle less
    about half a pixel, share a pixel. That is 2 * margin + thickness - 1. It is
    kept at least length / 2, below which the end-point test below would miss
    crossings in the middle of two paddles.
    """
    return np.maximum(2 * np.asarray(margin, np.float64) + p.paddle_thickness - 1, p.paddle_length / 2)


class _Batch:
    """Paths of B images grown in lock-step, as paddle segments (y0, x0, y1, x1).

    Collisions are tested geometrically: a candidate paddle must lie inside the
    box that keeps ``padding + margin / 2 + thickness / 2`` off the image edges
    and at least ``separation(margin)`` from the paddles `_obstacles` names
    (those the original's occupancy mask holds at that moment).
    """

    def __init__(self, plan: _Plan, b: int, rng: np.random.Generator):
        p = plan.p
        self.plan, self.rng, self.b = plan, rng, b
        # images x fields (y0, x0, y1, x1, y0 + y1, x0 + x1) x paths x paddles
        self.targets = np.full((b, 6, 2, p.contour_length), np.nan)
        self.distractors = np.full((b, 6, p.num_distractors, p.distractor_length), np.nan)
        self.end = np.zeros((b, 2 + p.num_distractors, 2))
        self.theta = np.zeros((b, 2 + p.num_distractors))
        self.mi = rng.integers(0, len(p.paddle_margins), b)
        self.margin = np.asarray(p.paddle_margins, np.float64)[self.mi]
        self.sep2 = separation(self.margin, p) ** 2
        self.lo = p.padding + 0.5 * self.margin + p.paddle_thickness / 2
        self.hi = p.resolution - 1 - self.lo
        self.inv_len2 = 1.0 / p.paddle_length**2

    def _obstacles(self, rows, path, k):
        """Blocks [n, 6, J] of paddles that paddle k of `path` must keep off."""
        n = len(rows)
        t = self.targets[rows]  # one contiguous gather per row is the fast way
        if path < 2:
            # The original's occupancy mask takes in a paddle only when the next
            # paddle of its path is placed (`extend_snake` merges `last_segment_mask`).
            # Lock-step, A's paddle k sees B's paddles 0..k-2 and B's paddle k sees
            # A's 0..k-1 (so B's seed, unchecked in `initialize_two_seeds`, sees none).
            own, other = max(k - 1, 0), (max(k - 1, 0) if path == 0 else k)
            return [t[:, :, path, :own], t[:, :, 1 - path, :other]]
        # distractors see every target paddle except A's last (`two_snakes` merges
        # only the second path's last paddle into the mask), and earlier distractors
        d = path - 2
        ds = self.distractors[rows]
        targets = [t[:, :, 0, :-1], t[:, :, 1]]
        return targets + [ds[:, :, :d].reshape(n, 6, -1), ds[:, :, d, : max(k - 1, 0)]]

    def _free(self, rows, y0, x0, y1, x1, blocks):
        """Bool [n, T]: candidates inside the box and clear of the obstacles."""
        lo, hi = self.lo[rows][:, None], self.hi[rows][:, None]
        free = (np.minimum(y0, y1) >= lo) & (np.maximum(y0, y1) <= hi)
        free &= (np.minimum(x0, x1) >= lo) & (np.maximum(x0, x1) <= hi)
        # only pairs whose midpoints are closer than separation + length can
        # collide; compare doubled midpoints (the stored y0 + y1, x0 + x1)
        reach = (4 * (np.sqrt(self.sep2[rows]) + self.plan.p.paddle_length) ** 2)[:, None, None]
        cy, cx = (y0 + y1)[..., None], (x0 + x1)[..., None]
        sep2 = self.sep2[rows]
        for obs in blocks:
            if obs.shape[2] == 0:
                continue
            dy = cy - obs[:, None, 4]
            dx = cx - obs[:, None, 5]
            np.multiply(dy, dy, out=dy)
            np.multiply(dx, dx, out=dx)
            dy += dx
            a, t, j = np.nonzero(dy < reach)
            if a.size == 0:
                continue
            c = (y0[a, t], x0[a, t], y1[a, t], x1[a, t])
            o = tuple(obs[:, f][a, j] for f in range(4))
            il = self.inv_len2
            # separation >= length / 2 (checked in _Plan), so end point distances
            # suffice: two crossing paddles always have an end within length / 2
            d2 = _point_segment_d2(c[0], c[1], *o, il)
            d2 = np.minimum(d2, _point_segment_d2(c[2], c[3], *o, il))
            d2 = np.minimum(d2, _point_segment_d2(o[0], o[1], *c, il))
            d2 = np.minimum(d2, _point_segment_d2(o[2], o[3], *c, il))
            hit = d2 < sep2[a]
            free[a[hit], t[hit]] = False
        return free

    def _try(self, rows, path, k, sy, sx, theta, keys=None):
        """Commit, per row, one free candidate paddle; returns a bool [n]: success.

        Candidates are [n, T] (start, angle). Among the free ones the first is
        taken, or the one with the largest `keys`. Columns are checked a few at a
        time, in that order, for the rows still without a free one (the result
        is the same as checking all of them).
        """
        n, T = sy.shape
        if n == 0:
            return np.zeros(0, bool)
        if keys is not None:  # check in descending key order; then the first free wins
            order = np.argsort(-keys, axis=1)
            sy, sx, theta = (np.take_along_axis(a, order, 1) for a in (sy, sx, theta))
        L = self.plan.p.paddle_length
        ey, ex = sy + L * np.sin(theta), sx + L * np.cos(theta)
        blocks = self._obstacles(rows, path, k)
        choice = np.full(n, -1)
        todo = np.arange(n)
        for lo, hi in _SPANS:
            if lo >= T or todo.size == 0:
                break
            cols = slice(lo, hi)
            if todo.size == n:  # all rows: views, no gathers
                free = self._free(rows, sy[:, cols], sx[:, cols], ey[:, cols], ex[:, cols],
                                  blocks)
            else:
                free = self._free(rows[todo], sy[todo, cols], sx[todo, cols], ey[todo, cols],
                                  ex[todo, cols], [b[todo] for b in blocks])
            got = free.any(1)
            choice[todo[got]] = lo + free[got].argmax(1)
            todo = todo[~got]
        ok = choice >= 0
        i, j, r = np.nonzero(ok)[0], choice[ok], rows[ok]
        y0, x0, y1, x1 = sy[i, j], sx[i, j], ey[i, j], ex[i, j]
        seg = np.stack([y0, x0, y1, x1, y0 + y1, x0 + x1])
        if path < 2:
            self.targets[r, :, path, k] = seg.T
        else:
            self.distractors[r, :, path - 2, k] = seg.T
        self.end[r, path, 0], self.end[r, path, 1] = y1, x1
        self.theta[r, path] = theta[i, j]
        return ok

    def seed(self, rows, path, ty, tx, theta):
        """Seed paddles from i.i.d. candidates [n, T]: the first free one is taken."""
        return self._try(rows, path, 0, ty, tx, theta)

    def extend(self, rows, path, k):
        """Grow `path` of each row by paddle k; returns a bool [n]: success.

        The turn follows cos^2(continuity * turn) on |turn| < pi / (2 continuity)
        restricted to free paddles (the original weighs every free end point on a
        circle): first one draw from the continuous density; rows where it is not
        free then draw among a jittered grid of `candidates` turns over the support,
        with probability proportional to the density among the free ones
        (Gumbel-max). Together that is the restricted density, up to the grid's
        discretisation.
        """
        p = self.plan.p
        n, T = len(rows), p.candidates
        m = self.margin[rows][:, None]
        th0 = self.theta[rows, path][:, None]
        py = self.end[rows, path, 0][:, None] + m * np.sin(th0)
        px = self.end[rows, path, 1][:, None] + m * np.cos(th0)

        th = th0 + self.plan.turns(self.rng, (n, 1))
        ok = self._try(rows, path, k, py + m * np.sin(th), px + m * np.cos(th), th)
        miss = np.nonzero(~ok)[0]
        if miss.size == 0:
            return ok
        rows, m, th0, py, px = rows[miss], m[miss], th0[miss], py[miss], px[miss]
        lim = np.pi / (2 * p.continuity)
        turn = (np.arange(T) + self.rng.random((len(miss), 1))) * (2 * lim / T) - lim
        u = self.rng.random((len(miss), T))
        keys = 2 * np.log(np.cos(p.continuity * turn)) - np.log(-np.log(u))
        th = th0 + turn
        ok[miss] = self._try(rows, path, k, py + m * np.sin(th), px + m * np.cos(th), th, keys)
        return ok

    def replicate(self, rows, reps: int) -> "_Batch":
        """A batch holding `reps` copies of each of `rows` (copies of one row adjacent)."""
        v = _Batch.__new__(_Batch)
        idx = np.repeat(rows, reps)
        v.plan, v.rng, v.b, v.inv_len2 = self.plan, self.rng, len(idx), self.inv_len2
        for name in ("targets", "distractors", "end", "theta", "mi", "margin", "sep2", "lo", "hi"):
            setattr(v, name, getattr(self, name)[idx])
        return v

    def segments(self, rows) -> np.ndarray:
        """[n, paths, paddles, 4]: targets then distractors, NaN padded."""
        p = self.plan.p
        t = np.moveaxis(self.targets[rows, :4], 1, -1)
        d = np.moveaxis(self.distractors[rows, :4], 1, -1)
        pad = np.full(d.shape[:2] + (p.contour_length - p.distractor_length, 4), np.nan)
        return np.concatenate([t, np.concatenate([d, pad], 2)], 1)


def _grow_batch(plan: _Plan, b: int, rng: np.random.Generator) -> tuple[_Batch, np.ndarray]:
    """Grow targets and distractors for b images; returns the batch and its good rows."""
    p = plan.p
    h = p.resolution
    g = _Batch(plan, b, rng)
    rows = np.arange(b)
    T = _SEED_CANDIDATES

    # target seeds: tail A in the square 2 * seed_distance off the borders, tail
    # B seed_distance away in a uniform direction, both with uniform orientations
    lo, hi = 2 * p.seed_distance, h - 1 - 2 * p.seed_distance
    if hi <= lo:
        lo = hi = (h - 1) / 2
    ty = rng.uniform(lo, hi, (b, T))
    tx = rng.uniform(lo, hi, (b, T))
    rows = rows[g.seed(rows, 0, ty, tx, rng.uniform(0, 2 * np.pi, (b, T)))]
    n = len(rows)
    phi = rng.uniform(0, 2 * np.pi, (n, T))
    ty = g.targets[rows, 0, 0, 0][:, None] + p.seed_distance * np.sin(phi)
    tx = g.targets[rows, 1, 0, 0][:, None] + p.seed_distance * np.cos(phi)
    rows = rows[g.seed(rows, 1, ty, tx, rng.uniform(0, 2 * np.pi, (n, T)))]

    for k in range(1, p.contour_length):
        for path in (0, 1):
            rows = rows[g.extend(rows, path, k)]

    # distractors one after the other; each gets up to 5 attempts
    # (seed + growth) and keeps the first that succeeds, or is left out. Attempts
    # run side by side on copies of the rows, a few at a time.
    for d in range(p.num_distractors):
        path, todo = 2 + d, rows
        for R in _DISTRACTOR_ROUNDS:
            n = len(todo)
            if n == 0:
                break
            v = g.replicate(todo, R)  # row i * R + a is attempt a for todo[i]
            vr = np.arange(n * R)
            lo, hi = v.lo[:, None], v.hi[:, None]
            ty = lo + (hi - lo) * rng.random((n * R, T))
            tx = lo + (hi - lo) * rng.random((n * R, T))
            grow = vr[v.seed(vr, path, ty, tx, rng.uniform(0, 2 * np.pi, (n * R, T)))]
            for k in range(1, p.distractor_length):
                grow = grow[v.extend(grow, path, k)]
            done = np.zeros(n * R, bool)
            done[grow] = True
            done = done.reshape(n, R)
            has = done.any(1)
            src = np.arange(n) * R + done.argmax(1)
            g.distractors[todo[has], :, d] = v.distractors[src[has], :, d]
            todo = todo[~has]
    return g, rows


def _render(plan: _Plan, g: _Batch, rows: np.ndarray, labels: np.ndarray, origin: np.ndarray):
    """Draw the chosen rows.

    Returns images uint8 [n, H, W], marker centres [n, 2, (y, x)], the target path
    each marker ends [n, 2] and the ink owner map int8 [n, H, W] (1 + path index of
    the brightest paddle on the pixel, 0 = no ink).
    """
    p, W, h, pad = plan.p, plan.W, plan.p.resolution, plan.pad
    n = len(rows)
    # paths: one int32 per pixel, (intensity << 6) | (path + 1); the max keeps
    # both the brightest intensity and its owner
    canvas = np.zeros((n, W * W), np.int32)
    seg = g.segments(rows)
    img_i, path_i, _ = np.nonzero(~np.isnan(seg[..., 0]))
    s = seg[~np.isnan(seg[..., 0])]
    theta = np.arctan2(s[:, 2] - s[:, 0], s[:, 3] - s[:, 1])
    sid, base = plan.stamp((s[:, 0] + s[:, 2]) / 2, (s[:, 1] + s[:, 3]) / 2, theta)
    idx = base[:, None] + plan.ink_offs[sid] + (img_i * (W * W))[:, None]
    contrast = np.where(path_i < 2, p.target_contrast, p.distractor_contrast)[:, None]
    level = np.rint(plan.ink_vals[sid] * (contrast * _INK_SCALE)).astype(np.int32)
    np.maximum.at(canvas.reshape(-1), idx, (level << 6) | (path_i + 1)[:, None])
    canvas = canvas.reshape(n, W, W)[:, pad:pad + h, pad:pad + h]
    owner = (canvas & 63).astype(np.int8)
    img = (canvas >> 6).astype(np.float32) / _INK_SCALE

    # markers: tail of the origin path, far end of the same (label 1) or other path
    ar = np.arange(n)
    other = np.where(labels == 1, origin, 1 - origin)
    m0 = g.targets[rows, :2, origin, 0]
    m1 = g.targets[rows, 2:4, other, p.contour_length - 1]
    markers = np.stack([m0, m1], 1).astype(np.float32)  # [n, 2, (y, x)]
    mk = markers.reshape(-1, 2).astype(np.float64)
    fy, fx = np.floor(mk[:, 0]), np.floor(mk[:, 1])
    qy = np.minimum(((mk[:, 0] - fy) * _Q).astype(np.int64), _Q - 1)
    qx = np.minimum(((mk[:, 1] - fx) * _Q).astype(np.int64), _Q - 1)
    msid = qy * _Q + qx
    mbase = (fy.astype(np.int64) + pad) * W + fx.astype(np.int64) + pad
    midx = mbase[:, None] + plan.marker_offs[msid] + (np.repeat(ar, 2) * (W * W))[:, None]
    mcanvas = np.zeros(n * W * W, np.float32)
    np.maximum.at(mcanvas, midx, plan.marker_vals[msid])
    mcanvas = mcanvas.reshape(n, W, W)[:, pad:pad + h, pad:pad + h]

    img = np.maximum(img, mcanvas)
    peak = img.reshape(n, -1).max(1).reshape(n, 1, 1)
    img = np.rint(img * (255.0 / np.maximum(peak, 1e-6))).astype(np.uint8)
    return img, markers, np.stack([origin, other], 1).astype(np.int8), owner


def path_inks(p: PathfinderParams, segments: np.ndarray) -> np.ndarray:
    """Each path's own ink [n, paths, H, W] (coverage x contrast, before markers and
    byte-scaling), from `segments` as `generate(..., return_meta=True)` returns them;
    for measuring crossings and contrasts."""
    plan = _plan(p)
    W, h, pad = plan.W, p.resolution, plan.pad
    n, paths = segments.shape[:2]
    canvas = np.zeros((n * paths, W * W), np.float32)
    real = ~np.isnan(segments[..., 0])
    img_i, path_i, _ = np.nonzero(real)
    s = segments[real].astype(np.float64)
    theta = np.arctan2(s[:, 2] - s[:, 0], s[:, 3] - s[:, 1])
    sid, base = plan.stamp((s[:, 0] + s[:, 2]) / 2, (s[:, 1] + s[:, 3]) / 2, theta)
    idx = base[:, None] + plan.ink_offs[sid] + ((img_i * paths + path_i) * (W * W))[:, None]
    contrast = np.where(path_i < 2, p.target_contrast, p.distractor_contrast)[:, None]
    np.maximum.at(canvas.reshape(-1), idx, plan.ink_vals[sid] * contrast)
    return canvas.reshape(n, paths, W, W)[:, :, pad:pad + h, pad:pad + h]


def fidelity_stats(images: np.ndarray, inks: np.ndarray) -> dict[str, float]:
    """The figures compared with the original generator (tests, scripts/bench_pathfinder_gen_fidelity.py).

    images uint8 [n, H, W] as saved; inks [n, paths, H, W] each path's own ink
    (targets first; an absent distractor is all zero). Returns the mean number of
    distractors placed, the mean number of non-zero pixels, the share of images
    whose brightest distractor ink exceeds their brightest target ink, the mean
    ratio of those two peaks (images with a distractor) and the share of images
    where two paths cross: some pixel at half or more of each path's own peak.
    """
    n, paths = inks.shape[:2]
    peak = inks.reshape(n, paths, -1).max(-1)
    placed = peak[:, 2:] > 0
    target_peak, distractor_peak = peak[:, :2].max(1), peak[:, 2:].max(1, initial=0.0)
    strong = inks >= 0.5 * np.maximum(peak, 1e-12)[:, :, None, None]
    strong &= (peak > 0)[:, :, None, None]
    crossing = (strong.sum(1) >= 2).reshape(n, -1).any(1)
    has = placed.any(1)
    return {
        "distractors_placed": float(placed.sum(1).mean()),
        "nonzero_pixels": float((images > 0).reshape(n, -1).sum(1).mean()),
        "distractor_brighter": float((distractor_peak > target_peak).mean()),
        "contrast_ratio": float((distractor_peak[has] / target_peak[has]).mean()) if has.any() else 0.0,
        "crossing": float(crossing.mean()),
    }


def _chunk(p: PathfinderParams, labels: np.ndarray, seed: int, index: int, meta: bool):
    """Generate one chunk: images for the given labels, from its own RNG stream."""
    plan = _plan(p)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    need = len(labels)
    parts: list[tuple] = []
    got, tries, good = 0, 0, 0
    while got < need:
        # batch size from the success rate so far (prior: 1 in 20)
        rate = max((good + 1) / (tries + 20), 0.001)
        b = int(min(math.ceil((need - got) / rate * 1.2) + 8, _BATCH))
        g, rows = _grow_batch(plan, b, rng)
        tries, good = tries + b, good + len(rows)
        if len(rows) == 0:
            continue
        origin = rng.integers(0, 2, len(rows))
        take = rows[: need - got]
        lab = labels[got:got + len(take)]
        img, markers, mpath, owner = _render(plan, g, take, lab, origin[: len(take)])
        part: tuple = (img,)
        if meta:
            segs = g.segments(take).astype(np.float32)
            part += (markers, mpath, segs, owner, g.margin[take].astype(np.float32))
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
      path_ids [n, res, res] int8: 1 + the path whose ink is brightest on the
        pixel (0 = no path ink; markers are not included);
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
    _plan(p)  # build the stamps once here; forked workers inherit them
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
