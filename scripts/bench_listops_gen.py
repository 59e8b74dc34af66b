"""Time ListOps generation at LRA's full size (96000/2000/2000, lengths 500-2000).

    python scripts/bench_listops_gen.py [--workers N] [--seed S] [--tsv DIR]

Prints the generation time and examples/s, then the time to tokenise the
splits; with --tsv it also writes the splits as LRA TSV files into DIR and
times reading them back (and checks the round trip gives identical arrays).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from lra.tasks import listops_gen, listops_tsv


def _cpu_seconds() -> float:
    """User + system time of this process and of its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=96000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seq-len", type=int, default=2000)
    parser.add_argument("--tsv", default=None, help="also write and re-read LRA TSV files here")
    args = parser.parse_args()

    total = args.train + args.val + args.test
    workers = listops_gen._resolve_workers(args.workers)
    print(f"cores visible: {os.cpu_count()}, workers: {workers}, examples: {total}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    start, cpu = time.perf_counter(), _cpu_seconds()
    splits = listops_gen.generate_splits(
        seed=args.seed, train_size=args.train, val_size=args.val, test_size=args.test, workers=workers
    )
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    lengths = np.concatenate([d.lengths() for d in splits.values()])
    print(
        f"generated {total} examples in {seconds:.2f} s = {total / seconds:,.0f} examples/s "
        f"(CPU {cpu:.1f} s over all processes; length mean {lengths.mean():.1f}, "
        f"min {lengths.min()}, max {lengths.max()})"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    arrays = {}
    for tokenizer in listops_gen.TOKENIZERS:
        start = time.perf_counter()
        arrays[tokenizer] = {k: listops_gen.encode(d, tokenizer, args.seq_len)[0] for k, d in splits.items()}
        print(f"tokenised ({tokenizer}) in {time.perf_counter() - start:.2f} s")
    if args.tsv:
        start = time.perf_counter()
        paths = listops_gen.write_tsv(args.tsv, splits)
        size = sum(p.stat().st_size for p in paths) / 2**20
        print(f"wrote {size:,.0f} MiB of TSV in {time.perf_counter() - start:.2f} s")
        for tokenizer in listops_gen.TOKENIZERS:
            start = time.perf_counter()
            read, _ = listops_tsv.read_tsv(args.tsv, tokenizer, args.seq_len)
            print(f"read back ({tokenizer}) in {time.perf_counter() - start:.2f} s")
            for split, data in splits.items():
                assert np.array_equal(read[split]["inputs"], arrays[tokenizer][split]), split
                assert np.array_equal(read[split]["labels"], data.labels), split
        print("TSV round trip: identical arrays")


if __name__ == "__main__":
    main()
