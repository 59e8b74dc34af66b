"""Shared test fixtures: a tiny registered task and the compose helper."""

from __future__ import annotations

import contextlib

import jax
import pytest

from lra.config import compose
from lra.registry import load_all

import toy_task  # noqa: F401  (registers toy_first_token; worker processes get it via LRA_PLUGINS)

load_all()


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


@contextlib.contextmanager
def jax_settings(**settings):
    """JAX config values for a block, restored afterwards. Test modules of tiny programs
    use `jax_disable_most_optimizations` (they compile far faster and run no slower),
    `jax_default_matmul_precision="highest"` (GPUs default to TF32) and `jax_enable_x64`
    (float64 references)."""
    values = getattr(jax.config, "values", {})
    old = {name: values[name] for name in settings if name in values}
    for name in old:
        jax.config.update(name, settings[name])
    try:
        yield
    finally:
        for name, value in old.items():
            jax.config.update(name, value)


def pytest_collection_modifyitems(config, items):
    import jax

    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU; JAX sees none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
