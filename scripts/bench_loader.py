"""How fast the loader delivers training batches from a prepared cache.

Usage: python scripts/bench_loader.py TASK [override ...] [--seconds S]
  e.g. python scripts/bench_loader.py text task.data.source=jsonl task.data.path=../shared/data/imdb

Prepares the task's cache if needed (in data_dir, default ./data), then pulls
training batches of the task's configured batch size for S seconds through the
same BatchLoader that training uses (seeded shuffle, memory-mapped gather,
int32 conversion, read-ahead thread) and prints batches/s and examples/s.
"""

from __future__ import annotations

import argparse
import json
import time

from lra import data as lra_data
from lra.config import compose
from lra.loader import BatchLoader
from lra.registry import load_all


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--seconds", type=float, default=10.0)
    opts = parser.parse_args()
    load_all()
    cfg = compose([f"task={opts.task}", *opts.overrides])
    path = lra_data.prepare(cfg.task, cfg.data_dir)
    splits = lra_data.open_prepared(path)
    batch = int(cfg.trainer.batch_size)
    loader = BatchLoader(splits["train"], batch, train=True, seed=0)
    it = iter(loader)
    next(it)  # start the read-ahead thread
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < opts.seconds:
        next(it)
        count += 1
    seconds = time.perf_counter() - start
    print(json.dumps({
        "task": opts.task,
        "batch_size": batch,
        "seq_len": int(cfg.task.seq_len),
        "batches_per_s": round(count / seconds, 1),
        "examples_per_s": round(count * batch / seconds, 1),
    }))


if __name__ == "__main__":
    main()
