"""`lra train` takes Hydra's flags as a plain Hydra app does, completes in bash, and
re-runs a run from its record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import assert_one_line_error, lra, no_records
from test_tracking import read_scalars

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("flags, expect", [
    (["--cfg", "job"], "seq_len: 2000"),
    (["-c", "job", "--resolve"], "seq_len: 2000"),
    (["--cfg", "job", "--package", "trainer"], "max_steps: 5000"),
    (["--info", "defaults"], "task/listops"),
    (["--hydra-help"], "Hydra (1.3"),
])
def test_hydra_flags_take_their_values_as_hydra_does(tmp_path, flags, expect):
    result = lra("train", "task=listops", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout
    assert not (tmp_path / "runs").exists()


def test_package_shows_only_that_package_and_overrides_may_follow_flags(tmp_path):
    result = lra("train", "task=listops", "--cfg", "job", "-p", "trainer", "trainer.b1=0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "seq_len" not in result.stdout and "lr: 0.05" in result.stdout and "b1: 0.5" in result.stdout


def test_config_dir_adds_presets_of_ones_own(tmp_path):
    mine = tmp_path / "mine" / "experiment"
    mine.mkdir(parents=True)
    (mine / "tiny.yaml").write_text("# @package _global_\npreset_task: listops\ntrainer:\n  max_steps: 7\n")
    result = lra("train", "task=listops", "experiment=tiny", "--config-dir", str(tmp_path / "mine"),
                 "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "max_steps: 7" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["+trainer.foo=1"], "unknown trainer option(s) foo; valid: b1, "),
    (["+sed=1"], "unknown key sed; valid: data_dir, "),
    (["seed=-1"], "seed must be an integer >= 0, got -1"),
    (["--cfg", "nope"], "argument --cfg/-c: invalid choice: 'nope'"),
    (["--experimental-rerun", "config.pickle"], "use: lra train --rerun RUN_DIR"),
])
def test_bad_flags_and_keys_are_one_line_errors(tmp_path, capsys, args, fragment):
    from lra.cli import main

    assert main(["train", "task=listops", *args, f"runs_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "runs").exists()


def complete(line: str, tmp_path: Path) -> list[str]:
    """What bash offers for `line` (cursor at its end), through the script that
    `lra train -sc install=bash` prints."""
    script = (f'source <(lra train -sc install=bash) && COMP_LINE="{line}" && '
              'COMP_POINT=${#COMP_LINE} && _lra_completion && printf "%s\\n" "${COMPREPLY[@]}"')
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.split() if word]


def test_bash_completion_of_commands_groups_and_keys(tmp_path):
    assert shutil.which("bash")
    assert complete("lra tr", tmp_path) == ["train"]
    assert complete("lra train task=li", tmp_path) == ["task=listops"]
    assert complete("lra train task=listops model=perf", tmp_path) == ["model=performer"]
    assert "trainer.lr=" in complete("lra sweep trainer.l", tmp_path)


def test_the_install_script_registers_lra_alone(tmp_path):
    result = lra("train", "-sc", "install=bash", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("_lra_completion lra")
    zsh = lra("train", "-sc", "install=zsh", cwd=tmp_path)
    assert zsh.returncode == 0 and "bashcompinit" in zsh.stdout


def test_a_run_is_rerun_exactly_from_its_record(tmp_path, capsys):
    """In-process (one JAX start): a tiny run, then `lra train --rerun` of its folder."""
    from lra.cli import main
    from lra.records import result_settings

    small = ["task=listops", "experiment=quick", "task.data.train_size=64", "task.data.val_size=16",
             "task.data.test_size=16", "task.data.min_length=4", "task.data.max_length=14",
             "task.seq_len=16", "encoder.num_layers=1", "encoder.dim=16", "encoder.qkv_dim=16",
             "encoder.mlp_dim=16", "trainer.max_steps=2", "trainer.eval_every=1", "progress=false",
             "logger=[jsonl,tensorboard]", f"runs_dir={tmp_path / 'runs'}", f"data_dir={tmp_path / 'data'}"]
    assert main(["train", *small]) == 0
    (run_dir,) = [p.parent for p in (tmp_path / "runs").rglob("record.json")]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["overrides"] == small
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(run_dir / "tensorboard")  # both backends got every number
    for tag in ("train/loss", "val/accuracy", "test/accuracy"):
        assert scalars[tag] == [(row["step"], pytest.approx(row[tag])) for row in rows if tag in row]
    assert [step for step, _ in scalars["val/accuracy"]] == [1, 2]
    log = (run_dir / "train.log").read_text()
    assert "lra train task=listops" in log and "step 1/2: train loss" in log and "step 2/2" in log
    assert log.rstrip().endswith(f"-> {run_dir / 'record.json'}")
    assert main(["train", "--rerun", str(run_dir)]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("record.json")]
    assert len(records) == 2
    rerun = next(r for r in records if r["run_dir"] != record["run_dir"])
    # The same settings, but a new run (force=true: a finished run is otherwise not run again)
    assert result_settings(rerun["config"]) == result_settings(record["config"])
    assert rerun["overrides"] == [*small, "force=true"] and rerun["config"]["force"] is True
    assert rerun["test"] == record["test"]  # same seed, same CPU: the same run
    out = capsys.readouterr().out
    assert f"re-running {run_dir}" in out and out.count("step 2/2: train loss") == 2  # progress=false


def test_rerun_of_a_folder_without_a_record_is_one_line(tmp_path):
    result = lra("train", "--rerun", str(tmp_path), cwd=tmp_path)
    assert_one_line_error(result, "record.json")
    assert no_records(tmp_path)


def test_rerun_refuses_when_the_configs_changed_since(tmp_path, capsys):
    """A record whose config is not what its command line composes today (here: its
    lr edited) cannot be re-run exactly: one line, and nothing runs."""
    from omegaconf import OmegaConf

    from conftest import compose_config
    from lra.cli import main

    overrides = ["task=listops", f"runs_dir={tmp_path / 'runs'}"]
    config = OmegaConf.to_container(compose_config(*overrides), resolve=True)
    config["trainer"]["lr"] = 0.5
    (tmp_path / "record.json").write_text(json.dumps(
        {"overrides": overrides, "config": config, "git_commit": "abc123"}))
    assert main(["train", "--rerun", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the trainer config composed today differs" in err and "abc123" in err
    assert not (tmp_path / "runs").exists()
