"""`lra sweep`: the matrix, skipping what is done, and continuing after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lra import sweep
from lra.errors import LraError

TESTS = Path(__file__).resolve().parent


def sweep_args(toy_overrides, runs):
    """The toy task through the listops config group, 2 seeds, 20 steps each."""
    keep = [o for o in toy_overrides if not o.startswith(("task=", "trainer.max_steps", "runs_dir"))]
    return ["tasks=listops", "models=transformer", "seeds=2", *keep, "trainer.max_steps=20",
            "trainer.eval_every=10", f"runs_dir={runs}"]


def records(runs: Path) -> dict[int, dict]:
    found = {}
    for path in runs.rglob("record.json"):
        record = json.loads(path.read_text())
        found[record["seed"]] = record
    return found


def test_sweep_options_are_parsed_and_the_rest_passed_to_train():
    options, overrides = sweep.parse_args(["seeds=3", "models=a,b", "trainer.lr=0.1", "jobs=2"])
    assert options["seeds"] == [0, 1, 2] and options["models"] == ["a", "b"] and options["jobs"] == 2
    assert overrides == ["trainer.lr=0.1"]
    assert sweep.parse_args(["seeds=[4]"])[0]["seeds"] == [4]
    assert sweep.parse_args(["seeds=0,2"])[0]["seeds"] == [0, 2]
    for bad, fragment in (("seeds=abc", "seeds=abc"), ("model=x", "models=..."), ("jobs=0", "jobs=0"),
                          ("dry_run=maybe", "dry_run")):
        with pytest.raises(LraError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
            sweep.parse_args([bad])


def test_an_invalid_job_stops_the_sweep_before_anything_runs(toy_overrides, tmp_path):
    args = sweep_args(toy_overrides, tmp_path / "runs") + ["encoder.num_heads=3"]  # 3 does not divide 32
    with pytest.raises(LraError, match="job listops/transformer is invalid: .*does not divide"):
        sweep.main(args)
    assert not (tmp_path / "runs").exists()


def test_without_prepared_data_the_default_task_list_is_an_error(tmp_path):
    with pytest.raises(LraError, match="no prepared data"):
        sweep.main([f"data_dir={tmp_path / 'empty'}", f"runs_dir={tmp_path / 'runs'}"])


def test_a_killed_sweep_resumes_to_the_records_of_an_uninterrupted_one(toy_overrides, tmp_path, capsys,
                                                                        monkeypatch):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LRA_PLUGINS": "toy_task",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    for key in ("LRA_PLUGINS", "PYTHONPATH"):
        monkeypatch.setenv(key, env[key])
    # Uninterrupted, with two worker processes at once.
    whole = tmp_path / "whole"
    assert sweep.main([*sweep_args(toy_overrides, whole), "jobs=2"]) == 0
    expected = records(whole)
    assert sorted(expected) == [0, 1]

    # The same sweep, one job at a time in one process, killed once its first record exists.
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "lra.cli", "sweep", *sweep_args(toy_overrides, killed)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not records(killed) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(records(killed)) == 1, "the kill came too late to test a resume"

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "completed before" in resumed.stdout
    got = records(killed)
    assert sorted(got) == [0, 1]
    for seed in expected:
        for field in ("status", "steps", "test", "best_val"):
            assert got[seed][field] == expected[seed][field], (seed, field)

    # Once finished, the same command has nothing left to do and writes nothing.
    capsys.readouterr()
    before = sorted(p for p in killed.rglob("record.json"))
    assert sweep.main(sweep_args(toy_overrides, killed)) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert sorted(p for p in killed.rglob("record.json")) == before


def test_hydra_multirun_on_the_local_parallel_launcher_preset(toy_overrides, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LRA_PLUGINS": "toy_task",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    runs = tmp_path / "runs"
    keep = [o for o in toy_overrides if not o.startswith(("trainer.max_steps", "runs_dir"))]
    result = subprocess.run(
        [sys.executable, "-m", "lra.cli", "train", "-m", "hydra/launcher=local_parallel",
         "model=transformer,linear_transformer", *keep, "trainer.max_steps=10",
         "trainer.eval_every=10", f"runs_dir={runs}"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = [json.loads(p.read_text()) for p in runs.rglob("record.json")]
    assert sorted(r["model"] for r in found) == ["linear_transformer", "transformer"]
    assert all(r["status"] == "completed" for r in found)
    assert len({r["run_dir"] for r in found}) == 2
