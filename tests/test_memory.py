"""The step-memory estimate (XLA's compiled memory analysis) and the refusal when it cannot fit."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import pytest

from lra.errors import LraError
from lra.memory import (GIB, available_ram_bytes, check_fits, compile_with_estimate,
                        compiled_bytes, device_memory_bytes, human_size)


def scores(q, k):
    """An L x L matrix as big as attention scores, reduced to a number."""
    return jax.nn.softmax(q @ k.T, axis=-1).sum()


def test_estimate_counts_arguments_outputs_and_the_l_by_l_temporary():
    n, d = 1024, 8
    q = k = jnp.ones((n, d), jnp.float32)
    compiled, estimate = compile_with_estimate(jax.jit(scores), q, k)
    stats = compiled.memory_analysis()
    assert stats.argument_size_in_bytes == 2 * n * d * 4
    assert stats.output_size_in_bytes == 4
    assert estimate >= n * n * 4  # the 4 MiB score matrix is a temporary
    assert estimate < 4 * n * n * 4  # and it is not counted many times over
    assert float(compiled(q, k)) == pytest.approx(n, rel=1e-5)  # the compiled step is usable


def test_donated_outputs_are_not_counted_twice():
    x = jnp.ones((256, 256), jnp.float32)
    plain = compiled_bytes(jax.jit(lambda a: a * 2).lower(x).compile())
    donated = compiled_bytes(jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile())
    assert plain == 2 * x.nbytes
    assert donated == x.nbytes


def fake_device(platform, limit=None):
    return types.SimpleNamespace(platform=platform, memory_stats=lambda: {"bytes_limit": limit} if limit else None)


def test_a_step_that_cannot_fit_is_refused_in_one_line():
    with pytest.raises(LraError) as err:
        check_fits(143 * GIB, fake_device("gpu", 24 * GIB))
    assert str(err.value) == (
        "the training step needs about 143 GiB, this device has 24 GiB; use a GPU, a smaller "
        "batch (trainer.batch_size=...) or trainer.precision=bf16")


def test_a_step_that_fits_goes_ahead_and_unknowns_do_not_block():
    check_fits(2 * GIB, fake_device("gpu", 24 * GIB))
    check_fits(None, fake_device("gpu", 1))
    check_fits(100 * GIB, fake_device("gpu", None))


def test_the_real_toy_step_against_a_small_fake_limit():
    q = k = jnp.ones((1024, 8), jnp.float32)
    _, estimate = compile_with_estimate(jax.jit(scores), q, k)
    device = jax.devices()[0]
    with pytest.raises(LraError, match=r"needs about 4 MiB, this machine has 1 MiB free"):
        check_fits(estimate, device, available=2 ** 20)
    check_fits(estimate, device, available=GIB)


def test_cpu_memory_is_the_available_ram(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683584 kB\nMemFree: 1 kB\nMemAvailable:   19997352 kB\n")
    assert available_ram_bytes(meminfo) == 19997352 * 1024
    assert available_ram_bytes(tmp_path / "absent") is None
    meminfo.write_text("MemTotal: 5 kB\n")
    assert available_ram_bytes(meminfo) is None
    assert device_memory_bytes(fake_device("gpu", 80 * GIB)) == 80 * GIB
    real = device_memory_bytes(types.SimpleNamespace(platform="cpu"))
    assert real is None or real > 0


@pytest.mark.parametrize("n, text", [(143 * GIB, "143 GiB"), (int(2.5 * GIB), "2.5 GiB"),
                                     (300 * 2 ** 20, "300 MiB")])
def test_sizes_read_as_people_write_them(n, text):
    assert human_size(n) == text


def test_a_run_that_cannot_fit_is_refused_before_its_folder(tmp_path, toy_overrides, monkeypatch):
    from conftest import compose_config
    from lra.run import train_and_record

    monkeypatch.setattr("lra.memory.device_memory_bytes", lambda device: 2 ** 20)
    cfg = compose_config(*toy_overrides)
    with pytest.raises(LraError, match=r"^the training step needs about \d+ MiB, this machine has "
                                       r"1 MiB free; use a GPU"):
        train_and_record(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_run_trains_with_the_step_compiled_for_the_estimate(toy_overrides):
    """The estimate's compile is not thrown away: the loop calls that compiled step."""
    from conftest import compose_config
    from lra import data as lra_data
    from lra.loader import BatchLoader
    from lra.run import build, validate
    from lra.trainer import Trainer

    cfg = compose_config(*toy_overrides, "trainer.max_steps=2", "trainer.eval_every=2")
    spec, enc = validate(cfg)
    splits, _ = lra_data.load(cfg.task, cfg.data_dir)
    trainer = Trainer(build(cfg, spec, enc), cfg.trainer, seed=0)
    estimate = trainer.compile_train_step(splits["train"]["inputs"].shape[1:])
    ahead = trainer.totals["compile_seconds"]
    assert isinstance(trainer._train_step, jax.stages.Compiled) and estimate > 0 and ahead > 0
    loaders = [BatchLoader(splits[name], 32, train=name == "train") for name in ("train", "val")]
    fit = trainer.fit(*loaders, progress=False)
    assert fit["steps"] == 2 and fit["compile_seconds"] >= ahead
