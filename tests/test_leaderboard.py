"""The leaderboard from hand-made run records."""

import json

import pandas as pd
import pytest

from lra.leaderboard import write_leaderboard

TASKS6 = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


def record(root, name, model, task, seed, accuracy, status="completed", experiment=None):
    folder = root / name
    folder.mkdir(parents=True)
    payload = {"model": model, "task": task, "seed": seed, "status": status,
               "experiment": experiment, "test": {"accuracy": accuracy, "loss": 1.0}}
    (folder / "record.json").write_text(json.dumps(payload))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    record(root, "a", "transformer", "listops", 0, 0.36)
    record(root, "b", "transformer", "listops", 1, 0.38)
    record(root, "c", "transformer", "text", 0, 0.64)
    record(root, "d", "performer", "listops", 0, 0.18)
    record(root, "e", "performer", "listops", 1, 0.99, status="failed")  # must not count
    record(root, "f", "performer", "text", 0, 0.65)
    record(root, "q", "s4d", "listops", 0, 0.99, experiment="quick")  # a preset: own column
    for i, task in enumerate(TASKS6):
        record(root, f"g{i}", "s4d", task, 0, 0.5 + 0.05 * i)
    return root


def test_table_has_means_stds_counts_and_averages(runs, tmp_path):
    csv_path, md_path, count = write_leaderboard([runs], tmp_path / "out")
    assert count == 12
    table = pd.read_csv(csv_path).set_index("model")
    assert table.loc["transformer", "listops"] == pytest.approx(37.0)
    assert table.loc["transformer", "listops_std"] == pytest.approx(pd.Series([36.0, 38.0]).std(), abs=1e-4)
    assert table.loc["transformer", "listops_count"] == 2
    assert table.loc["performer", "listops"] == pytest.approx(18.0)  # the failed run is ignored
    assert table.loc["performer", "listops_count"] == 1
    assert pd.isna(table.loc["performer", "listops_std"])  # one run: no spread, not 0
    assert table.loc["s4d", "listops[quick]"] == pytest.approx(99.0)
    assert table.loc["s4d", "listops"] == pytest.approx(50.0)
    assert table.loc["s4d", "avg"] == pytest.approx(100 * (0.5 + 0.05 * 2.5))
    assert table.loc["s4d", "avg_no_pathx"] == pytest.approx(100 * (0.5 + 0.05 * 2))
    assert pd.isna(table.loc["transformer", "avg"])  # missing tasks: no average
    assert list(table.index)[0] == "s4d"  # sorted by the average, best first
    markdown = md_path.read_text()
    assert "| s4d |" in markdown and "| transformer | 37.00 | 1.41 | 2 |" in markdown


def test_same_records_give_byte_identical_files(runs, tmp_path):
    first = write_leaderboard([runs], tmp_path / "one")
    second = write_leaderboard([runs], tmp_path / "two")
    for a, b in zip(first[:2], second[:2]):
        assert a.read_bytes() == b.read_bytes()


def test_no_records_gives_an_empty_table(tmp_path):
    csv_path, _, count = write_leaderboard([tmp_path / "nothing"], tmp_path / "out")
    assert count == 0 and csv_path.read_text().strip() == "model"
