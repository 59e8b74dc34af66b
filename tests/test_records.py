"""The typed run record: validation, strict JSON, atomic writes, and many writers at once."""

import csv
import json
import math
import multiprocessing
import os
from pathlib import Path

import pytest

from lra import records
from lra.records import RECORD, SCHEMA_VERSION, RecordError, RunRecord, read_record, write_atomic, write_record

CONFIG = {"task": {"name": "listops"}, "trainer": {"max_steps": 10, "batch_size": 4}, "seed": 0}


def completed(**changes):
    payload = {"task": "listops", "model": "transformer", "seed": 0, "status": "completed",
               "config": CONFIG, "test": {"accuracy": 0.25, "loss": 1.5, "examples": 8},
               "best_val": {"accuracy": 0.3, "loss": 1.4, "step": 10}, "steps": 10,
               "date": "2026-01-01T00:00:00Z"}
    return {**payload, **changes}


def no_constants(name):
    raise AssertionError(f"bare {name} in a record")


def test_a_dict_round_trips_through_the_typed_record(tmp_path):
    path = write_record(tmp_path, completed(future_field={"kept": True}))
    assert path == tmp_path / RECORD
    record = read_record(path)
    assert isinstance(record, RunRecord)
    assert (record.task, record.model, record.seed, record.status) == ("listops", "transformer", 0, "completed")
    assert record.schema_version == SCHEMA_VERSION
    assert record.test_accuracy == 0.25
    assert record.extra == {"future_field": {"kept": True}}  # a newer writer's field survives
    assert json.loads(path.read_text())["future_field"] == {"kept": True}


def test_nan_and_inf_are_written_as_null_never_bare(tmp_path):
    diverged = completed(status="diverged", test={"accuracy": float("nan"), "loss": float("inf")},
                         extra_loss=[1.0, float("-inf")])
    path = write_record(tmp_path, diverged)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    payload = json.loads(text, parse_constant=no_constants)
    assert payload["test"] == {"accuracy": None, "loss": None}
    assert payload["extra_loss"] == [1.0, None]
    assert read_record(path).test_accuracy is None


@pytest.mark.parametrize("change, message", [
    ({"status": "finished"}, "status 'finished'"),
    ({"seed": "0"}, "'seed' is str"),
    ({"seed": True}, "'seed' is a boolean"),
    ({"test": {"accuracy": float("nan")}}, "finite test accuracy"),
    ({"test": {"accuracy": 37.5}}, "not a fraction"),
    ({"steps": 2.5}, "'steps' is float"),
    ({"config": None}, "'config' is NoneType"),
])
def test_an_invalid_record_is_refused_and_nothing_is_written(tmp_path, change, message):
    with pytest.raises(RecordError, match=message.replace("(", r"\(")):
        write_record(tmp_path, completed(**change))
    assert list(tmp_path.iterdir()) == []


def test_a_record_without_a_required_field_is_partial(tmp_path):
    payload = completed()
    del payload["model"]
    with pytest.raises(RecordError, match="no 'model'"):
        write_record(tmp_path, payload)


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ('{"task": "listops", "mod', "corrupt JSON"),
    ('{"schema_version": 1, "test": {"accuracy": NaN}}', "corrupt JSON"),
    ("[1, 2]", "a JSON object"),
    ('{"schema_version": 99, "task": "listops"}', "schema_version 99"),
    ('{"task": "listops"}', "schema_version None"),
    ('{"schema_version": 1, "task": "listops", "model": "m", "seed": 0, "status": "completed"}', "no 'config'"),
])
def test_reading_a_bad_record_says_what_is_wrong(tmp_path, text, message):
    path = tmp_path / RECORD
    path.write_text(text)
    with pytest.raises(RecordError, match=message):
        read_record(path)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "leaderboard.csv"
    write_atomic(target, "old\n")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.csv"]


def test_atomic_files_are_readable_by_everyone(tmp_path):
    path = write_atomic(tmp_path / "x.md", "x")
    assert path.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- many processes at once

WRITERS, ROUNDS = 4, 12


def _writer(root: str, out: str, index: int) -> None:
    from lra.leaderboard import write_leaderboard

    root_path = Path(root)
    for round_ in range(ROUNDS):
        run_dir = root_path / "listops" / "transformer" / f"w{index}-r{round_}"
        run_dir.mkdir(parents=True)
        write_record(run_dir, completed(seed=index, date=f"2026-01-01T00:{round_:02d}:00Z"))
        write_record(root_path / "shared", completed(seed=index, loss_of_writer=[index, round_]))  # one file, all
        if round_ % 4 == 0:
            write_leaderboard([root], out, plots=False, reference_of=lambda task, model: None)


def test_many_processes_writing_records_and_leaderboards_lose_and_corrupt_nothing(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "board"
    (root / "shared").mkdir(parents=True)
    out.mkdir()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(root), str(out), i)) for i in range(WRITERS)]
    for worker in workers:
        worker.start()
    reads = 0
    while any(w.is_alive() for w in workers):  # a reader racing the writers
        for path in (root / "shared" / RECORD, out / "leaderboard.csv", out / "leaderboard.md"):
            if path.exists():
                text = path.read_text()
                assert text, f"a reader saw an empty {path.name}"
                if path.suffix == ".json":
                    assert read_record(path).status == "completed"
                reads += 1
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    found = records.find_records(root)
    assert len(found) == WRITERS * ROUNDS + 1  # every record, plus the shared one
    assert {read_record(p).status for p in found} == {"completed"}
    assert not [p for p in tmp_path.rglob("*.tmp")], "temporary files left behind"
    assert reads > 0
    with open(out / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["seeds"] for row in rows} == {" ".join(map(str, range(WRITERS)))}  # one row, each seed once
    assert all(math.isfinite(float(row["mean"])) for row in rows)
