"""A tiny registered task for trainer and sweep tests.

conftest.py imports it; a test's worker processes load it with
LRA_PLUGINS=toy_task and tests/ on PYTHONPATH.
"""

from __future__ import annotations

import numpy as np

from lra.registry import TASKS
from lra.tasks.base import Built, Task


@TASKS.register("toy_first_token")
class FirstToken(Task):
    """Label = first token's class: learnable in a few steps, for trainer tests."""

    name = "toy_first_token"
    num_classes = 4
    auto_prepare = True

    def vocab_size(self, cfg) -> int:
        return 9

    def build(self, cfg) -> Built:
        rng = np.random.default_rng(int(cfg.data.seed))
        splits = {}
        for split, n in (("train", 512), ("val", 96), ("test", 100)):
            lengths = rng.integers(4, int(cfg.seq_len) + 1, n)
            tokens = rng.integers(1, 9, (n, int(cfg.seq_len)))
            tokens[np.arange(int(cfg.seq_len))[None, :] >= lengths[:, None]] = 0
            splits[split] = {"inputs": tokens.astype(np.int32), "labels": ((tokens[:, 0] - 1) % 4).astype(np.int32)}
        return Built(splits, {"source": "toy"})
