"""The `lra` command: help, one-line errors, no partial records, and a real train run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

def lra(*args, cwd):
    """`lra ...` in a fresh process: the one smoke test of the installed entry point."""
    return subprocess.run([sys.executable, "-m", "lra.cli", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=600)


def lra_here(capsys, *args):
    """`lra ...` in this process (no interpreter start-up): (exit status, stdout, stderr)."""
    from lra.cli import main

    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status, stderr, *fragments):
    assert status != 0
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def no_records(root: Path):
    return not list(root.rglob("record.json"))


def test_help_lists_tasks_and_models(capsys):
    status, out, _ = lra_here(capsys, "--help")
    assert status == 0
    assert "listops" in out and "transformer" in out
    status, out, _ = lra_here(capsys, "train", "--help")
    assert status == 0
    assert "listops" in out and "transformer" in out and "quick" in out


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("model=nope", ["unknown model 'nope'", "transformer"]),
        ("task=nope", ["unknown task 'nope'", "listops"]),
        ("experiment=nope", ["unknown experiment 'nope'", "quick"]),
        ("trainer.max_steps=-1", ["trainer.max_steps must be a positive integer"]),
        ("trainer.batch_size=0", ["trainer.batch_size must be a positive integer"]),
        ("trainer.nosuch=1", ["trainer.nosuch", "--cfg job"]),
        ("model.window=3", ["model.window"]),
        ("+model.window=3", ["no option 'window'", "implementation"]),
        ("encoder.num_heads=3", ["does not divide"]),
        ("task.seq_len=abc", ["wrong type", "abc"]),
        ("seed=abc", ["seed must be an integer >= 0", "abc"]),
        ("seed=1.5", ["seed must be an integer >= 0", "1.5"]),
        ("seed=-1", ["seed must be an integer >= 0", "-1"]),
        ("trainer.grad_clip=abc", ["trainer.grad_clip must be", "abc"]),
        ("trainer.max_steps=2.5", ["trainer.max_steps must be a positive integer", "2.5"]),
        ("trainer.batch_size=8.5", ["trainer.batch_size must be a positive integer", "8.5"]),
        ("trainer.weight_decay=-1", ["trainer.weight_decay must be", ">= 0"]),
        ("trainer.b2=1.5", ["trainer.b2 must be a number in [0, 1)", "1.5"]),
        ("trainer.lr=nan", ["trainer.lr must be a finite number", "nan"]),
        ("trainer.lr=inf", ["trainer.lr must be a finite number", "inf"]),
        ("trainer.ssm_lr=0", ["trainer.ssm_lr must be"]),
    ],
)
def test_bad_overrides_fail_in_one_line_without_a_run(tmp_path, capsys, override, fragments):
    status, _, err = lra_here(capsys, "train", "task=listops", override,
                              f"runs_dir={tmp_path / 'runs'}", f"data_dir={tmp_path / 'data'}")
    assert_one_line_error(status, err, *fragments)
    assert no_records(tmp_path)
    assert not (tmp_path / "runs").exists()


def test_missing_tsv_folder_is_a_one_line_error(tmp_path, capsys):
    status, _, err = lra_here(capsys, "train", "task=listops", "task.data.source=tsv",
                              f"task.data.path={tmp_path / 'absent'}", f"runs_dir={tmp_path / 'runs'}",
                              f"data_dir={tmp_path / 'data'}")
    assert_one_line_error(status, err, "absent")
    assert no_records(tmp_path)
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "data").rglob("*.npy")) if (tmp_path / "data").exists() else True


def test_malformed_tsv_row_is_a_one_line_error_naming_file_and_row(tmp_path, capsys):
    folder = tmp_path / "tsv"
    folder.mkdir()
    good = "( ( [MAX 2 ) 9 ] )\t9\n"
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n" + good * 3)
    (folder / "basic_val.tsv").write_text("Source\tTarget\n" + good + "( [MIN 3 ] )\t3\textra\n")
    status, _, err = lra_here(capsys, "train", "task=listops", "task.data.source=tsv",
                              f"task.data.path={folder}", f"runs_dir={tmp_path / 'runs'}",
                              f"data_dir={tmp_path / 'data'}")
    assert_one_line_error(status, err, "basic_val.tsv", "3")
    assert no_records(tmp_path)
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("*.npy"))


def test_train_then_leaderboard_end_to_end(tmp_path, fast_compile):
    small = ["task.data.train_size=400", "task.data.val_size=64", "task.data.test_size=64",
             "task.data.min_length=10", "task.data.max_length=60", "task.seq_len=64",
             "trainer.max_steps=20", "trainer.eval_every=10", "progress=false"]
    result = lra("train", "task=listops", "model=transformer", "experiment=quick", *small,
                 f"runs_dir={tmp_path / 'runs'}", f"data_dir={tmp_path / 'data'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = list((tmp_path / "runs").rglob("record.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["status"] == "completed" and record["task"] == "listops"
    assert record["experiment"] == "quick"
    board = lra("leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results"),
                cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    csv_text = (tmp_path / "results" / "leaderboard.csv").read_text()
    assert csv_text.splitlines()[0].startswith("model,listops[quick],")
    assert csv_text.splitlines()[1].startswith("transformer,")
    assert (tmp_path / "results" / "leaderboard.md").exists()



def test_sweep_runs_every_named_model_and_keeps_going_past_a_bad_job(tmp_path, capsys):
    small = ["task.data.train_size=200", "task.data.val_size=32", "task.data.test_size=32",
             "task.data.min_length=10", "task.data.max_length=40", "task.seq_len=40",
             "encoder.num_layers=1", "encoder.dim=16", "encoder.qkv_dim=16", "encoder.mlp_dim=32",
             "trainer.max_steps=4", "trainer.eval_every=2", "trainer.batch_size=16",
             "progress=false"]
    # 3 heads do not divide a width of 16: those two jobs fail, the other two still run.
    status, _, err = lra_here(capsys, "sweep", "task=listops", "model=transformer,linear_transformer",
                              "encoder.num_heads=2,3", *small, f"runs_dir={tmp_path / 'runs'}",
                              f"data_dir={tmp_path / 'data'}")
    assert status == 1
    assert err.count("does not divide") == 2
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("record.json")]
    assert sorted(r["model"] for r in records) == ["linear_transformer", "transformer"]
    assert all(r["status"] == "completed" and r["config"]["encoder"]["num_heads"] == 2 for r in records)
