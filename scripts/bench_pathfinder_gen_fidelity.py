"""Fidelity figures of the Pathfinder generator, against the original's.

    python scripts/bench_pathfinder_gen_fidelity.py [--n 1000] [--resolution 32]
    python scripts/bench_pathfinder_gen_fidelity.py --original DIR --n 200

Without --original: our generator's figures (`pathfinder_gen.fidelity_stats`).
With --original DIR: the same figures for the original procedure, run from a
checkout of drewlinsley/pathfinder (commit ab9c130, the generator LRA used; its
files are imported from DIR, never copied here) at LRA's Pathfinder-32 settings
(google-research/long-range-arena lra_benchmarks/data/pathfinder.py docstring;
single paddles off, as snakes2_wrapper.py runs it). The original needs SciPy's
removed `scipy.misc.imresize` and OpenCV's `cv2.dilate`; they are re-created
here as SciPy 1.0 and OpenCV define them (bytescale then PIL LANCZOS resize;
the maximum over the unflipped kernel footprint). Each path's ink is kept apart
by handing `make_snake` an empty image and taking the maximum afterwards, which
changes neither the random stream nor the result.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import types

import numpy as np

from lra.tasks import pathfinder_gen


def ours(n: int, resolution: int, difficulty: str, seed: int) -> dict:
    p = pathfinder_gen.params(resolution, difficulty)
    images, _, meta = pathfinder_gen.generate(n, resolution, difficulty, seed=seed, workers=1, return_meta=True)
    return pathfinder_gen.fidelity_stats(images, pathfinder_gen.path_inks(p, meta["segments"]))


def _bytescale(data):
    if data.dtype == np.uint8:
        return data
    lo, hi = data.min(), data.max()
    scale = 255.0 / ((hi - lo) or 1)
    return ((data * 1.0 - lo) * scale + 0.4999).clip(0, 255).astype(np.uint8)


def _install_shims() -> None:
    import scipy
    import scipy.misc
    from PIL import Image
    from scipy import ndimage

    np.float = float  # removed aliases the 2019 code uses
    np.round_ = np.round
    scipy.misc.imresize = lambda arr, size, interp="lanczos": np.array(
        Image.fromarray(_bytescale(np.asarray(arr))).resize((size[1], size[0]), resample=Image.LANCZOS))
    cv2 = types.ModuleType("cv2")
    cv2.useOptimized = lambda: None
    cv2.dilate = lambda im, kernel, iterations=1: ndimage.maximum_filter(
        np.asarray(im), footprint=np.asarray(kernel).astype(bool), mode="constant", cval=0).astype(np.asarray(im).dtype)
    sys.modules["cv2"] = cv2
    plt = types.ModuleType("matplotlib.pyplot")
    sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
    sys.modules["matplotlib.pyplot"] = plt


def original(folder: str, n: int, contour_length: int, seed: int) -> dict:
    _install_shims()
    sys.path.insert(0, folder)
    import snakes
    import snakes2

    drawn: list[np.ndarray] = []
    make_snake = snakes.make_snake

    def own_ink(image, mask, *args, **kwargs):
        ink, mask, ok = make_snake(np.zeros_like(image), mask, *args, **kwargs)
        if ok:
            drawn.append(ink)
            return np.maximum(image, ink), mask, ok
        return image, mask, ok

    snakes.make_snake = own_ink
    np.random.seed(seed)
    random.seed(seed)
    # LRA's Pathfinder32 settings; the rest are snakes2_wrapper.py's Args defaults
    size, margin, length, thick, aa, dl = [32, 32], 1, 2, 0.5, 2, contour_length // 3
    distractors = 20 // dl
    small, large = snakes.generate_dilation_struct(margin), snakes.generate_dilation_struct(margin * aa)
    images, inks = [], []
    for _ in range(n):
        while True:
            ok = False
            while not ok:
                two, mask, origin, terminal, ok = snakes2.two_snakes(
                    size, 1, 7, contour_length, length, thick, margin, 1.0, small, large, [2], [0.75], 2, aa)
            drawn.clear()
            image, mask = snakes.make_many_snakes(
                np.maximum(two[0], two[1]), mask, distractors, 4, dl, length, thick, margin, 1.0, [2], 2, aa,
                allow_incomplete=True, allow_shorter_snakes=False, stop_with_availability=0.01)
            if image is not None:
                break
        label, first = np.random.randint(0, 2), np.random.randint(0, 2)
        last = first if label else 1 - first
        circles = np.maximum(snakes2.draw_circle(size, origin[first], 1.5, aa),
                             snakes2.draw_circle(size, terminal[last], 1.5, aa))
        images.append(_bytescale(np.maximum(image, circles.astype(float) / 255)))
        paths = [two[0], two[1]] + drawn + [np.zeros(size)] * (distractors - len(drawn))
        inks.append(np.stack(paths))
    return pathfinder_gen.fidelity_stats(np.stack(images), np.stack(inks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--difficulty", default="hard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--original", default=None, help="folder holding the original's snakes.py, snakes2.py")
    args = parser.parse_args()
    if args.original:
        with contextlib.redirect_stdout(io.StringIO()):  # the original prints every failed paddle
            stats = original(args.original, args.n, pathfinder_gen.DIFFICULTIES[args.difficulty], args.seed)
    else:
        stats = ours(args.n, args.resolution, args.difficulty, args.seed)
    print(json.dumps({"n": args.n, "original": bool(args.original), **{k: round(v, 3) for k, v in stats.items()}}))


if __name__ == "__main__":
    main()
