"""The trainer end to end on a toy task, plus its schedules and failure statuses."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from lra.errors import LraError
from lra.run import train_and_record
from lra.trainer import make_schedule


def test_rsqrt_schedule_matches_the_lra_formula():
    cfg = OmegaConf.create({"lr": 0.05, "warmup_steps": 1000, "max_steps": 5000, "schedule": "rsqrt"})
    schedule = make_schedule(cfg)
    for step in (0, 1, 500, 1000, 1001, 4000):
        expected = 0.05 * min(1.0, step / 1000) / np.sqrt(max(step, 1000))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)


def test_cosine_schedule_matches_the_lra_formula():
    cfg = OmegaConf.create({"lr": 1.0, "warmup_steps": 10, "max_steps": 110, "schedule": "cosine",
                            "cycle_steps": 100})
    schedule = make_schedule(cfg)
    assert float(schedule(5)) == pytest.approx(0.5)
    for step in (10, 35, 60, 110):
        progress = (step - 10) / 100
        assert float(schedule(step)) == pytest.approx(0.5 * (1 + np.cos(np.pi * progress)), abs=1e-6)
    assert float(schedule(200)) == pytest.approx(0.0, abs=1e-6)


def run(tmp_path, overrides, name="run"):
    cfg = compose_config(*overrides)
    return train_and_record(cfg, tmp_path / name, progress=False)


def test_tiny_run_learns_and_writes_a_complete_record(tmp_path, toy_overrides):
    record = run(tmp_path, toy_overrides)
    saved = json.loads((tmp_path / "run" / "record.json").read_text())
    assert saved["status"] == "completed"
    assert saved["task"] == "toy_first_token" and saved["model"] == "transformer"
    assert saved["steps"] == 60
    assert saved["test"]["examples"] == 100
    assert saved["test"]["accuracy"] > 0.6  # chance is 0.25
    for key in ("config", "best_val", "param_count", "wall_seconds", "steps_per_second",
                "examples_per_second", "backend", "device_kind", "device_count", "versions",
                "git_commit", "date", "data"):
        assert key in saved
    assert saved["config"]["trainer"]["max_steps"] == 60
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(train_losses) == 60
    assert np.mean(train_losses[-10:]) < 0.5 * np.mean(train_losses[:10])
    assert any("val/accuracy" in r for r in rows) and any("test/accuracy" in r for r in rows)
    predictions = np.load(tmp_path / "run" / "predictions.npz")
    assert predictions["predictions"].shape == (100,)
    assert np.mean(predictions["predictions"] == predictions["labels"]) == pytest.approx(
        record["test"]["accuracy"])


def test_same_seed_gives_the_same_run_on_cpu(tmp_path, toy_overrides):
    short = [*toy_overrides, "trainer.max_steps=20", "trainer.eval_every=10"]
    a = run(tmp_path, short, "a")
    b = run(tmp_path, short, "b")
    c = run(tmp_path, [*short, "seed=1"], "c")
    assert a["test"] == b["test"] and a["best_val"] == b["best_val"]
    assert a["test"]["loss"] != c["test"]["loss"]


def test_a_diverging_run_is_recorded_as_diverged(tmp_path, toy_overrides):
    record = run(tmp_path, [*toy_overrides, "trainer.lr=1e30", "trainer.max_steps=30"])
    assert record["status"] == "diverged"
    assert json.loads((tmp_path / "run" / "record.json").read_text())["status"] == "diverged"


def test_bf16_precision_trains(tmp_path, toy_overrides):
    record = run(tmp_path, [*toy_overrides, "trainer.precision=bf16", "trainer.max_steps=30"])
    assert record["status"] == "completed" and np.isfinite(record["test"]["loss"])


def test_a_time_budget_stops_at_the_next_evaluation(tmp_path, toy_overrides):
    record = run(tmp_path, [*toy_overrides, "trainer.max_seconds=0.001"])
    assert record["status"] == "completed" and record["stopped_by"] == "max_seconds"
    assert record["steps"] == 30  # the first evaluation (eval_every=30), not max_steps=60


def test_a_second_run_cannot_write_into_a_folder_another_run_holds(tmp_path, toy_overrides):
    short = [*toy_overrides, "trainer.max_steps=10", "trainer.eval_every=10"]
    first = run(tmp_path, short)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(LraError, match="belongs to another run"):
        run(tmp_path, short)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics  # untouched
    assert json.loads((tmp_path / "run" / "record.json").read_text())["test"] == first["test"]

