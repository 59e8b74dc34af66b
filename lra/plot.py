"""Figures: a run's loss and accuracy curves (`lra plot RUN_DIR...`) and the leaderboard's
accuracy-against-speed plot in the style of LRA's Figure 3 (Tay et al. 2020: accuracy on
the y axis, speed on the x axis, circle size for memory).

matplotlib is an optional dependency (`pip install 'lra[plot]'`); without it the
functions return None and the callers say so. Figures are drawn with the object API
(no pyplot state) and saved without the software version, so the same input gives
the same bytes with the same matplotlib.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

from lra.errors import LraError

METRICS = ("metrics.jsonl", "metrics.jsonl.gz")
MAX_POINTS = 1000  # train curves are averaged into at most this many points


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def metrics_file(run_dir: Path) -> Path | None:
    for name in METRICS:
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl[.gz]; a torn last line (a killed run) is left out."""
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), int):
                    rows.append(row)
    except (OSError, EOFError) as err:
        raise LraError(f"cannot read {path} ({err}); is it a metrics file of `lra train`?") from None
    return rows


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and finite values of one metric ('nan' strings of a diverged run left out)."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(row["step"])
            values.append(float(value))
    return steps, values


def block_mean(steps: list[int], values: list[float], points: int = MAX_POINTS):
    """Averages of consecutive blocks, so a 500k-step curve stays a readable line."""
    if len(values) <= points:
        return steps, values
    size = math.ceil(len(values) / points)
    return ([steps[min(i + size, len(steps)) - 1] for i in range(0, len(steps), size)],
            [sum(values[i:i + size]) / len(values[i:i + size]) for i in range(0, len(values), size)])


def run_label(run_dir: Path) -> str:
    try:
        record = json.loads((run_dir / "record.json").read_text())
        return f"{record['task']}/{record['model']} s{record['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return run_dir.name


def curves_png(run_dirs: list[Path]) -> bytes | None:
    """Loss (left) and accuracy (right) against step for each run: train (block means),
    validation (points of each evaluation), test (a marker at the last step)."""
    fig = _figure(11, 4.2)
    if fig is None:
        return None
    loss_ax, acc_ax = fig.subplots(1, 2)
    colours = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    for i, run_dir in enumerate(run_dirs):
        path = metrics_file(run_dir)
        if path is None:
            raise LraError(f"{run_dir} has no metrics.jsonl; give the folder of a run of `lra train`")
        rows, colour, label = read_metrics(path), colours[i % len(colours)], run_label(run_dir)
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(*block_mean(*series(rows, f"train/{metric}")), color=colour, alpha=0.45, linewidth=0.8,
                    label=f"{label} train")
            ax.plot(*series(rows, f"val/{metric}"), color=colour, marker="o", markersize=3, linewidth=1.4,
                    label=f"{label} val")
            steps, values = series(rows, f"test/{metric}")
            if values:
                ax.plot(steps, values, color=colour, marker="*", markersize=11, linestyle="none",
                        label=f"{label} test")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig)


def bubble_plot_png(fields: list[dict]) -> bytes | None:
    """Test accuracy against training steps/s per leaderboard row, circle area = peak memory,
    one panel per task (rows without a speed are left out; None if none has one)."""
    rows = [f for f in fields if f["steps_per_second"] and f["section"] != "baseline"]
    if not rows:
        return None
    tasks = sorted({f["task"] for f in rows}, key=_task_rank)
    fig = _figure(4.6 * len(tasks), 4.2)
    if fig is None:
        return None
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    largest = max((f["peak_memory_gib"] or 0.0) for f in rows) or 1.0
    for ax, task in zip(axes, tasks):
        for f in (f for f in rows if f["task"] == task):
            memory = f["peak_memory_gib"]
            area = 60 + 1500 * (memory / largest) if memory else 60
            ax.scatter([f["steps_per_second"]], [f["mean"]], s=area, alpha=0.5,
                       facecolor="none" if f["section"] != "main" else None, edgecolor="k", linewidth=0.7)
            ax.annotate(f["label"], (f["steps_per_second"], f["mean"]), fontsize=7, ha="center", va="center")
        ax.set_xlabel("training speed (steps/s)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{task} (hollow: not the reference config)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.margins(0.25)
    fig.tight_layout()
    return _png(fig)


def _task_rank(task: str):
    from lra.leaderboard import TASK_ORDER

    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lra plot", description="Loss and accuracy curves of runs "
                                     "(from each run folder's metrics.jsonl or metrics.jsonl.gz).")
    parser.add_argument("runs", nargs="+", help="run folders of `lra train`")
    parser.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    opts = parser.parse_args(args)
    from lra.records import write_atomic

    run_dirs = [Path(r) for r in opts.runs]
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise LraError(f"no run folder {run_dir}; give the folder of a run of `lra train`")
    out = Path(opts.out)
    if not out.parent.is_dir():
        raise LraError(f"no folder {out.parent} for --out; create it or give another path")
    png = curves_png(run_dirs)
    if png is None:
        raise LraError("plotting needs matplotlib: pip install 'lra[plot]'")
    try:
        write_atomic(out, png)
    except OSError as err:
        raise LraError(f"cannot write {out} ({err.strerror}); give a writable path") from None
    print(f"{len(run_dirs)} run(s) -> {out}")
    return 0
