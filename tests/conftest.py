"""Shared test fixtures: a tiny registered task and the compose helper."""

from __future__ import annotations

import numpy as np
import pytest

from lra.config import compose
from lra.registry import TASKS, load_all
from lra.tasks.base import Built, Task

load_all()


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


def compose_config(*overrides: str):
    """The config `lra train` would run with (lra.config.compose)."""
    return compose(list(overrides))


TINY = (
    "encoder.num_layers=1", "encoder.dim=32", "encoder.num_heads=2", "encoder.qkv_dim=32",
    "encoder.mlp_dim=64", "encoder.dropout=0.0", "encoder.attention_dropout=0.0",
)


@pytest.fixture
def toy_overrides(tmp_path):
    """Overrides that point a run at the toy task with a tiny encoder."""
    return [
        "task=listops", "task.name=toy_first_token", "task.seq_len=12", "task.data={seed: 0}",
        *TINY, "trainer.batch_size=32", "trainer.max_steps=60", "trainer.eval_every=30",
        "trainer.eval_batches=null", "trainer.lr=0.005", "trainer.schedule=constant",
        "trainer.warmup_steps=0", "trainer.weight_decay=0.0", "progress=false",
        f"data_dir={tmp_path / 'data'}", f"runs_dir={tmp_path / 'runs'}",
    ]


@pytest.fixture
def fast_compile(monkeypatch):
    """For tests that start JAX in subprocesses (lra bench workers, `lra` smoke runs):
    the children run on the CPU with XLA's backend optimisation off, which halves
    their compile time; a smoke test needs no fast steps."""
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")


def pytest_collection_modifyitems(config, items):
    import jax

    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU; JAX sees none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
