"""Time the Pathfinder generator and extrapolate to a full LRA-sized dataset.

    python scripts/bench_pathfinder_gen.py                 # 20k x 32 px + 1k x 128 px, 2 workers
    python scripts/bench_pathfinder_gen.py --n32 200000    # the full 200k directly

Prints images/s, the time 200,000 images would take at that rate, and the CPU
time per image (of this process and its workers). The machine's load average is
printed too: on a shared box other processes slow the generator down, so compare
runs at similar load (the CPU time per image depends less on it).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

from lra.tasks import pathfinder_gen


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def bench(n: int, resolution: int, difficulty: str, workers: int, target: int) -> float:
    load = os.getloadavg()[0]
    c0, t0 = cpu_seconds(), time.perf_counter()
    images, labels = pathfinder_gen.generate(n, resolution, difficulty, seed=0, workers=workers)
    dt, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    rate = n / dt
    assert images.shape == (n, resolution, resolution) and int(labels.sum()) == n // 2
    print(
        f"{resolution:>3} px {difficulty:<12} n={n:>7} workers={workers}: {dt:8.1f} s, "
        f"{rate:8.1f} images/s -> {target:,} images in {target / rate / 60:6.1f} min; "
        f"{1000 * cpu / n:.2f} CPU ms/image "
        f"(load avg at start {load:.1f}, {os.cpu_count()} cpus)",
        flush=True,
    )
    return rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n32", type=int, default=20_000, help="images at 32 px")
    ap.add_argument("--n128", type=int, default=1_000, help="images at 128 px (Path-X)")
    ap.add_argument("--n64", type=int, default=0, help="images at 64 px (slow; 0 = skip)")
    ap.add_argument("--n256", type=int, default=0, help="images at 256 px (0 = skip)")
    ap.add_argument("--difficulty", default="hard")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--target", type=int, default=200_000, help="dataset size to extrapolate to")
    args = ap.parse_args(argv)
    for res, n in ((32, args.n32), (64, args.n64), (128, args.n128), (256, args.n256)):
        if n > 0:
            bench(n, res, args.difficulty, args.workers, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
