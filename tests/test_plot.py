"""`lra plot`: loss and accuracy curves from metrics.jsonl[.gz]."""

import gzip
import json

import numpy as np
import pytest

from lra.cli import main as lra_main
from lra.plot import block_mean, read_metrics, series

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(folder, steps=50, gz=False):
    folder.mkdir(parents=True)
    rows = [{"step": s, "train/loss": 2.0 / s, "train/accuracy": min(1.0, s / 50)} for s in range(1, steps + 1)]
    rows += [{"step": s, "val/loss": 1.0 / s, "val/accuracy": s / 100} for s in (10, 20, 30)]
    rows.append({"step": steps, "test/loss": 0.5, "test/accuracy": 0.4})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(folder / "metrics.jsonl.gz", "wt") as handle:
            handle.write(text)
    else:
        (folder / "metrics.jsonl").write_text(text)
    (folder / "record.json").write_text(json.dumps({"task": "listops", "model": "transformer", "seed": 0}))
    return folder


def test_metrics_are_read_from_plain_and_gzipped_files_and_nan_or_torn_lines_are_dropped(tmp_path):
    plain, packed = write_run(tmp_path / "a"), write_run(tmp_path / "b", gz=True)
    assert read_metrics(plain / "metrics.jsonl") == read_metrics(packed / "metrics.jsonl.gz")
    with open(plain / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 51, "train/loss": "nan"}) + "\n" + '{"step": 52, "train/lo')
    rows = read_metrics(plain / "metrics.jsonl")
    assert rows[-1] == {"step": 51, "train/loss": "nan"}  # the torn line of a killed run is gone
    steps, values = series(rows, "train/loss")
    assert steps == list(range(1, 51)) and values[0] == 2.0  # 'nan' (a diverged step) is not plotted
    assert series(rows, "val/accuracy") == ([10, 20, 30], [0.1, 0.2, 0.3])


def test_block_mean_is_the_mean_of_consecutive_blocks():
    values = np.random.default_rng(0).normal(size=1003)
    steps = list(range(1, 1004))
    out_steps, out_values = block_mean(steps, list(values), points=100)
    size = 11  # ceil(1003 / 100)
    expected = [values[i:i + size].mean(dtype=np.float64) for i in range(0, 1003, size)]
    assert np.allclose(out_values, expected, rtol=0, atol=1e-12)
    assert out_steps[0] == size and out_steps[-1] == 1003
    assert block_mean([1, 2], [3.0, 4.0], points=10) == ([1, 2], [3.0, 4.0])


def test_lra_plot_writes_one_png_for_several_runs(tmp_path, capsys):
    runs = [write_run(tmp_path / "a"), write_run(tmp_path / "b", gz=True)]
    out = tmp_path / "curves.png"
    assert lra_main(["plot", *map(str, runs), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    assert "2 run(s)" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [("no-metrics", "has no metrics.jsonl"), ("missing", "no run folder"),
                                           ("bad-out", "no folder")])
def test_lra_plot_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, message):
    run = tmp_path / "run"
    run.mkdir()
    if case == "bad-out":
        write_run(tmp_path / "ok")
        run = tmp_path / "ok"
    target = tmp_path / ("nowhere/x.png" if case == "bad-out" else "x.png")
    args = [str(run if case != "missing" else tmp_path / "absent"), "--out", str(target)]
    assert lra_main(["plot", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not target.exists()
