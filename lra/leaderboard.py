"""The leaderboard: test accuracy per model and task from run records.

One row per model, one column per task (mean test accuracy over seeds, in
percent), with the standard deviation and the number of runs beside it, and
LRA's averages: over all six tasks and over the five without Path-X, which
most papers report. A model missing a task gets no average. Only completed
runs count. Runs made with an experiment preset get their own column,
`task[preset]` (e.g. `listops[quick]`), and stay out of the averages. Output is sorted and formatted deterministically, so the same
records always give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lra.records import find_records

TASK_ORDER = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
AVERAGES = {"avg": TASK_ORDER, "avg_no_pathx": TASK_ORDER[:-1]}


def load_runs(roots) -> pd.DataFrame:
    rows = []
    for path in find_records(*roots):
        record = json.loads(path.read_text())
        if record.get("status") != "completed":
            continue
        rows.append(
            {
                "model": record["model"],
                "task": record["task"] + (f"[{record['experiment']}]" if record.get("experiment") else ""),
                "seed": record["seed"],
                "test_accuracy": 100.0 * float(record["test"]["accuracy"]),
            }
        )
    return pd.DataFrame(rows, columns=["model", "task", "seed", "test_accuracy"])


def build_table(runs: pd.DataFrame) -> pd.DataFrame:
    tasks = [t for t in TASK_ORDER if t in set(runs["task"])]
    tasks += sorted(set(runs["task"]) - set(tasks))
    stats = runs.groupby(["model", "task"])["test_accuracy"].agg(["mean", "std", "count"])
    # One run has no spread: its std stays empty ("-"), not a misleading 0.00.
    table = pd.DataFrame(index=sorted(set(runs["model"])))
    table.index.name = "model"
    for task in tasks:
        for stat in ("mean", "std", "count"):
            column = stats[stat].xs(task, level="task") if task in stats.index.get_level_values("task") else None
            table[f"{task}" if stat == "mean" else f"{task}_{stat}"] = column
    for name, members in AVERAGES.items():
        if all(t in tasks for t in members):
            table[name] = table[list(members)].mean(axis=1, skipna=False)
    key = next((a for a in AVERAGES if a in table), tasks[0] if tasks else None)
    if key is not None:
        table = table.sort_values([key], ascending=False, kind="mergesort", na_position="last")
    return table.reset_index()


def to_markdown(table: pd.DataFrame) -> str:
    def cell(value, column):
        if pd.isna(value):
            return "-"
        if column.endswith("_count"):
            return str(int(value))
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    lines = [header, rule]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(row[c], c) for c in table.columns) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(roots, out_dir) -> tuple[Path, Path, int]:
    runs = load_runs(roots)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(runs) if len(runs) else pd.DataFrame(columns=["model"])
    for column in table.columns:
        if column.endswith("_count"):
            table[column] = table[column].astype("Int64")
    csv_path, md_path = out / "leaderboard.csv", out / "leaderboard.md"
    csv_path.write_text(table.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    md = (
        "Test accuracy (%) per task: mean over seeds, with std (sample, '-' for one run) and number of runs;"
        " averages over all six LRA tasks (avg) and without Path-X (avg_no_pathx).\n\n"
        + to_markdown(table)
    )
    md_path.write_text(md)
    return csv_path, md_path, len(runs)
