"""The leaderboard: comparable configurations, their test accuracy, and the published numbers.

A row is a *configuration*, not a model name: records are grouped by (task, model,
hash of the resolved config without the seed and run-local keys). Within a row each
seed counts once (its latest completed record). A row enters the main table only if
its configuration is the task's reference configuration for that model (the config
`lra train task=T model=M` composes, ignoring how and where it ran: precision,
kernel implementation, data source and paths) and every seed ran its full step
budget; every other row is listed apart with the reason (`trainer.max_steps=800
(reference 5000)`, a preset, a run cut short by max_seconds).

Per cell: test accuracy at the best validation step (what the run tested), mean and
std over seeds, the number of seeds, and a 95% interval: a bootstrap over test
examples (predictions.npz) for one seed, a Student-t interval over seeds for several.
Beside it, the published figure (results/reference/*.csv, with its paper and table)
and the difference. The LRA average is given in both conventions: LRA's paper, the
mean of the five tasks without Path-X; S4 and later papers, the mean of all six with
a Path-X at chance counted as 50.

Records that are corrupt, partial, of another schema version, in a folder of another
task, or not completed are named in one line each and never count. Outputs are
written atomically and depend on the records only (no dates, no absolute paths), so
the same records give byte-identical files.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lra.errors import LraError
from lra.records import (RUN_LOCAL, RecordError, RunRecord, config_hash, find_records, flatten,
                         read_record, write_atomic)

TASK_ORDER = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
               "pathfinder": "Pathfinder", "pathx": "Path-X"}
LRA5 = TASK_ORDER[:5]  # LRA paper (Tay et al. 2020, Table 1): Path-X left out of the average
CHANCE_PATHX = 50.0  # S4 (Gu et al. 2022, Table 4) and later: a failed Path-X counts as 50
BASELINE_PREFIX = "baseline_"  # reference rows (majority class, ...) written by lra/stats.py

# How it was executed: part of the row identity (a bf16 row is not an fp32 row), shown in
# the columns, but not a departure from the task's reference configuration.
EXECUTION = ("trainer.precision", "model.implementation", "trainer.eval_batch_size",
             "task.data.source", "task.data.val_split")
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[1] / "results" / "reference"

CSV_COLUMNS = (
    "section", "label", "task", "model", "config_hash", "seeds", "n_seeds", "mean", "std",
    "ci_low", "ci_high", "ci_over", "published", "published_source", "difference",
    "max_steps", "steps", "examples_seen", "stopped_by", "params", "data_source", "lossy",
    "preset", "precision", "device", "gpu_hours", "steps_per_second", "peak_memory_gib",
    "val_is_test", "vs_best", "p_vs_best", "off_reference", "records",
)


@dataclass
class Run:
    path: Path
    record: RunRecord

    @property
    def accuracy(self) -> float:
        return 100.0 * self.record.test_accuracy


@dataclass
class Row:
    task: str
    model: str
    config_hash: str
    full_budget: bool
    runs: list[Run] = field(default_factory=list)  # one per seed, sorted by seed
    off_reference: str = ""
    section: str = "main"
    interval: tuple[float, float] | None = None
    interval_over: str = ""
    published: dict | None = None
    vs_best: str = ""  # main rows: best | indistinguishable | worse | untested (see mark_best)
    p_vs_best: float | None = None

    @property
    def label(self) -> str:
        if self.section == "main" or self.section == "baseline":
            return self.model
        preset = self.runs[-1].record.experiment
        kind = preset or ("cut short" if self.off_reference.startswith("stopped at") else "custom")
        return f"{self.model} [{kind} {self.config_hash[:6]}]"

    @property
    def accuracies(self) -> list[float]:
        return [run.accuracy for run in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float | None:  # sample std; one seed has no spread (not a misleading 0)
        return statistics.stdev(self.accuracies) if len(self.runs) > 1 else None


@functools.lru_cache(maxsize=None)
def reference_config(task: str, model: str) -> dict[str, Any] | None:
    """The flattened config `lra train task=<task> model=<model>` composes (None: no such pair)."""
    from omegaconf import OmegaConf

    from lra.config import compose

    try:
        cfg = compose([f"task={task}", f"model={model}"])
        return flatten(OmegaConf.to_container(cfg, resolve=True))
    except LraError:  # an unregistered model, or a config that no longer composes
        return None


def departures(record: RunRecord, reference_of=reference_config) -> list[str]:
    """How a record's config departs from its task's reference configuration."""
    reference = reference_of(record.task, record.model)
    if reference is None:
        return [f"no reference configuration for {record.task}/{record.model}"]
    ignored = set(RUN_LOCAL) | {"seed"} | set(EXECUTION)
    found = []
    # A key the record lacks predates the record (older code): not counted as a departure.
    for key, value in sorted(flatten(record.config).items()):
        if key in ignored or reference.get(key, object()) == value:
            continue
        found.append(f"{key}={value} (reference {reference[key]})" if key in reference else f"{key}={value} (not in reference)")
    return found


def full_budget(record: RunRecord) -> bool:
    max_steps = (record.config.get("trainer") or {}).get("max_steps")
    return record.steps is None or max_steps is None or record.steps >= max_steps


def folder_task(path: Path, root: Path) -> str | None:
    """The task a record's folder names: runs/<task>/..., or <task>-<model>-s<seed>."""
    try:
        parts = path.parent.relative_to(root).parts
    except ValueError:
        parts = path.parent.parts
    for part in parts:
        if part in TASK_ORDER:
            return part
    for part in parts:
        head = part.split("-", 1)[0]
        if head in TASK_ORDER and "-" in part:
            return head
    return None


def load_runs(roots) -> tuple[list[Run], list[str]]:
    """Completed, valid records under `roots`, and one line per record skipped."""
    runs, skipped = [], []
    for root in map(Path, roots):
        for path in find_records(root):
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            where = f"{root.name or root}/{shown}"
            try:
                record = read_record(path)
            except RecordError as err:
                skipped.append(f"{where}: skipped: {err}")
                continue
            if record.status != "completed":
                skipped.append(f"{where}: skipped: status {record.status}")
                continue
            expected = folder_task(path, root)
            config_task = (record.config.get("task") or {}).get("name")
            if expected is not None and expected != record.task:
                skipped.append(f"{where}: skipped: a {record.task} record in a {expected} folder")
                continue
            if config_task is not None and config_task != record.task:
                skipped.append(f"{where}: skipped: task {record.task} but config task {config_task}")
                continue
            runs.append(Run(path, record))
    return runs, skipped


def group_rows(runs: list[Run], reference_of=reference_config) -> list[Row]:
    rows: dict[tuple, Row] = {}
    latest: dict[tuple, Run] = {}
    for run in runs:
        r = run.record
        key = (r.task, r.model, config_hash(r.config), full_budget(r))
        seed_key = (*key, r.seed)
        best = latest.get(seed_key)
        if best is None or (r.date or "", str(run.path)) > (best.record.date or "", str(best.path)):
            latest[seed_key] = run
    for (task, model, digest, budget, _seed), run in sorted(latest.items(), key=lambda kv: kv[0]):
        row = rows.setdefault((task, model, digest, budget), Row(task, model, digest, budget))
        row.runs.append(run)
    out = []
    for row in rows.values():
        record = row.runs[-1].record
        if model_is_baseline(row.model):
            row.section = "baseline"
        else:
            reasons = departures(record, reference_of)
            if not row.full_budget:
                short = [run.record for run in row.runs if not full_budget(run.record)][0]
                reasons.append(f"stopped at {short.steps} of {short.config['trainer']['max_steps']} steps"
                               f" ({short.stopped_by})")
            row.off_reference = "; ".join(reasons[:4] + ([f"and {len(reasons) - 4} more"] if len(reasons) > 4 else []))
            row.section = "other" if reasons else "main"
        out.append(row)
    # Two reference rows for one (task, model), e.g. fp32 and bf16: the main cell takes the
    # one with more seeds (then the later record); the other is listed apart.
    main: dict[tuple, Row] = {}
    for row in out:
        if row.section != "main":
            continue
        rank = (len(row.runs), max(run.record.date or "" for run in row.runs), row.config_hash)
        other = main.get((row.task, row.model))
        if other is None:
            main[(row.task, row.model)] = row
            continue
        other_rank = (len(other.runs), max(run.record.date or "" for run in other.runs), other.config_hash)
        loser, winner = (other, row) if rank > other_rank else (row, other)
        main[(row.task, row.model)] = winner
        loser.section, loser.off_reference = "other", "reference configuration, another execution (see columns)"
    return sorted(out, key=row_order)


def model_is_baseline(model: str) -> bool:
    return model.startswith(BASELINE_PREFIX)


def row_order(row: Row):
    sections = {"main": 0, "other": 1, "baseline": 2}
    task = TASK_ORDER.index(row.task) if row.task in TASK_ORDER else len(TASK_ORDER)
    return sections[row.section], task, row.task, row.model, row.config_hash, row.full_budget


def add_intervals(rows: list[Row]) -> None:
    from lra import stats

    for row in rows:
        if len(row.runs) > 1:
            low, high = stats.seed_interval(row.accuracies)
            row.interval, row.interval_over = (low, high), f"{len(row.runs)} seeds (t)"
            continue
        try:
            correct = stats.run_correct(row.runs[0].path.parent)
        except LraError:
            row.interval_over = "no predictions.npz"
            continue
        if correct.size != (row.runs[0].record.test or {}).get("examples", correct.size):
            row.interval_over = "predictions.npz does not match the record"
            continue
        low, high = stats.bootstrap_accuracy_ci(correct)
        row.interval, row.interval_over = (100 * low, 100 * high), f"{correct.size} test examples (bootstrap)"


def mark_best(rows: list[Row], level: float = 0.95) -> None:
    """Per task, mark the main-table row with the best mean, and each other main row as
    indistinguishable from it or worse at the 5% level: one seed each on the same test
    examples, McNemar's exact test (paired); several seeds each, a t test over seeds
    (paired where the seeds match). Mixed seed counts cannot be tested: `untested`."""
    from lra import stats

    for task in {row.task for row in rows if row.section == "main"}:
        main = sorted((r for r in rows if r.section == "main" and r.task == task), key=lambda r: (-r.mean, r.model))
        best = main[0]
        best.vs_best = "best"
        for row in main[1:]:
            row.p_vs_best = compare(row, best, stats)
            row.vs_best = ("untested" if row.p_vs_best is None
                           else "indistinguishable" if row.p_vs_best >= 1 - level else "worse")


def compare(row: Row, best: Row, stats) -> float | None:
    if len(row.runs) == 1 and len(best.runs) == 1:
        try:
            mine, theirs = (stats.load_predictions(r.runs[0].path.parent) for r in (row, best))
        except LraError:
            return None
        if mine[1].shape != theirs[1].shape or not (mine[1] == theirs[1]).all():
            return None  # not the same test examples
        return stats.paired_comparison(mine[0] == mine[1], theirs[0] == theirs[1])["mcnemar_p"]
    if len(row.runs) > 1 and len(best.runs) > 1:
        result = stats.seed_comparison(row.accuracies, best.accuracies,
                                       seeds_a=[r.record.seed for r in row.runs],
                                       seeds_b=[r.record.seed for r in best.runs])
        return None if math.isnan(result["p"]) else result["p"]
    return None


# ---------------------------------------------------------------- published numbers

def load_published(folder: Path) -> list[dict[str, Any]]:
    """Every row of results/reference/*.csv: model, task, accuracy (blank: FAIL/not run),
    paper_model, source, table, role (paper | reproduction), note."""
    rows = []
    for path in sorted(Path(folder).glob("*.csv")):
        with open(path, newline="") as handle:
            for line in csv.DictReader(handle):
                value = line["accuracy"].strip()
                rows.append({**line, "accuracy": float(value) if value else None, "file": path.name})
    return rows


def published_for(published: list[dict], model: str, task: str) -> dict | None:
    """The paper's own number for a cell (a re-run by others is listed, not compared)."""
    for line in published:
        if line["model"] == model and line["task"] == task and line["role"] == "paper":
            return line
    return None


def lra_averages(cells: dict[str, float | None], pathx_failed: bool) -> tuple[float | None, float | None]:
    """(LRA paper: mean of the five tasks without Path-X, S4 and later: mean of six with a
    failed Path-X as 50). None where a task is missing."""
    five = [cells.get(t) for t in LRA5]
    avg5 = statistics.fmean(five) if all(v is not None for v in five) else None
    pathx = CHANCE_PATHX if pathx_failed else cells.get("pathx")
    avg6 = statistics.fmean([*five, pathx]) if avg5 is not None and pathx is not None else None
    return avg5, avg6


def pathx_failed(row: Row | None) -> bool:
    """A Path-X at chance: mean at most 50%, or a 95% interval that reaches 50%."""
    if row is None:
        return False
    return row.mean <= CHANCE_PATHX or (row.interval is not None and row.interval[0] <= CHANCE_PATHX)


# ---------------------------------------------------------------- the table

def row_fields(row: Row, out_dir: Path) -> dict[str, Any]:
    records = [run.record for run in row.runs]
    last = records[-1]
    trainer, task_cfg = last.config.get("trainer") or {}, last.config.get("task") or {}
    data = (last.data or {}).get("source") or {}
    steps = [r.steps for r in records if r.steps is not None]
    gpu = [r for r in records if r.backend == "gpu" and r.wall_seconds is not None]
    memory = [r.peak_memory_bytes for r in records if r.peak_memory_bytes]
    speed = [r.steps_per_second for r in records if r.steps_per_second]
    val_is_test = last.val_is_test if last.val_is_test is not None else task_cfg.get("data", {}).get("val") == "test"
    published = row.published or {}
    value = published.get("accuracy")
    return {
        "section": row.section,
        "label": row.label,
        "task": row.task,
        "model": row.model,
        "config_hash": row.config_hash,
        "seeds": " ".join(str(r.seed) for r in records),
        "n_seeds": len(records),
        "mean": row.mean,
        "std": row.std,
        "ci_low": row.interval[0] if row.interval else None,
        "ci_high": row.interval[1] if row.interval else None,
        "ci_over": row.interval_over,
        "published": value,
        "published_source": f"{published['source']}, {published['table']}" if published else "",
        "difference": row.mean - value if value is not None else None,
        "max_steps": trainer.get("max_steps"),
        "steps": min(steps) if steps else None,
        "examples_seen": min(steps) * trainer["batch_size"] if steps and trainer.get("batch_size") else None,
        "stopped_by": " ".join(sorted({r.stopped_by for r in records if r.stopped_by})),
        "params": last.param_count,
        "data_source": task_cfg.get("data", {}).get("source") or data.get("source") or "",
        "lossy": bool(data.get("lossy", False)),
        "preset": last.experiment or "default",
        "precision": trainer.get("precision") or "",
        "device": f"{last.device_count or 1}x {last.device_kind}" if last.device_kind else "",
        "gpu_hours": sum(r.wall_seconds * (r.device_count or 1) for r in gpu) / 3600 if gpu else None,
        "steps_per_second": statistics.fmean(speed) if speed else None,
        "peak_memory_gib": max(memory) / 2**30 if memory else None,
        "val_is_test": bool(val_is_test),
        "vs_best": row.vs_best,
        "p_vs_best": row.p_vs_best,
        "off_reference": row.off_reference,
        "records": " ".join(relative(run.path, out_dir) for run in row.runs),
    }


def relative(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def csv_text(fields: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for line in fields:
        writer.writerow({k: fmt_csv(line[k]) for k in CSV_COLUMNS})
    return buffer.getvalue()


def fmt_csv(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def num(value, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def signed(value) -> str:
    return "-" if value is None else f"{value:+.2f}"


@dataclass
class Board:
    rows: list[Row]
    fields: list[dict]
    skipped: list[str]
    published: list[dict]
    summary: list[dict]  # one per model of the main table, then per baseline: cells and averages


def build(roots, out_dir, reference_dir=DEFAULT_REFERENCE_DIR, reference_of=reference_config) -> Board:
    runs, skipped = load_runs(roots)
    rows = group_rows(runs, reference_of)
    add_intervals(rows)
    mark_best(rows)
    published = load_published(reference_dir)
    for row in rows:
        row.published = published_for(published, row.model, row.task)
    fields = [row_fields(row, Path(out_dir)) for row in rows]
    summary = []
    for section in ("main", "baseline"):  # models, then the baselines as reference lines
        chosen = [r for r in rows if r.section == section]
        entries = []
        for model in sorted({r.model for r in chosen}):
            cells: dict[str, Row] = {}
            for row in chosen:  # a baseline with several configurations: its first (most seeds first)
                if row.model == model and (row.task not in cells or len(row.runs) > len(cells[row.task].runs)):
                    cells[row.task] = row
            means = {task: cells[task].mean if task in cells else None for task in TASK_ORDER}
            avg5, avg6 = lra_averages(means, pathx_failed(cells.get("pathx")))
            entries.append({"model": model, "cells": cells, "avg5": avg5, "avg6": avg6,
                            "baseline": section == "baseline"})
        summary += sorted(entries, key=lambda s: (-(s["avg5"] if s["avg5"] is not None else -1.0), s["model"]))
    return Board(rows, fields, skipped, published, summary)


def md_cell(row: Row | None) -> str:
    if row is None:
        return "-"
    text = num(row.mean)
    if row.std is not None:
        text += f" ± {num(row.std)}"
    text += f" (n={len(row.runs)})"
    if row.interval:
        text += f" [{num(row.interval[0])}, {num(row.interval[1])}]"
    text += {"best": " **best**", "indistinguishable": " ≈best"}.get(row.vs_best, "")
    if row.published and row.published["accuracy"] is not None:
        caveat = " †" if row.published["note"] else ""
        text += f"; paper {num(row.published['accuracy'])}{caveat} ({signed(row.mean - row.published['accuracy'])})"
    return text


def to_markdown(board: Board, plot_name: str | None) -> str:
    lines = [
        "# Leaderboard",
        "",
        "Test accuracy (%) at the best validation step. Main table: runs of each task's reference",
        "configuration (the config `lra train task=T model=M` composes) that ran their full step budget.",
        "Cell: mean ± sample std over seeds (n = seeds; a repeated seed counts once, its latest run),",
        "[95% interval: bootstrap over test examples for one seed, Student-t over seeds for several],",
        "then the paper's number and our difference. Averages: `LRA avg (5)` is the LRA paper's",
        "(Tay et al. 2020: mean of the five tasks without Path-X); `avg (6)` is S4's and later",
        "papers' (mean of six, a Path-X at chance counted as 50). **best**: the best mean of the column;",
        "≈best: not distinguishable from it at the 5% level (McNemar's exact test for one seed each on the",
        "same test examples, a t test over seeds for several). †: the paper's number has a caveat (see its note).",
        "",
    ]
    header = ["model", *(TASK_TITLES[t] for t in TASK_ORDER), "LRA avg (5)", "avg (6)"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for entry in board.summary:
        cells = [md_cell(entry["cells"].get(t)) for t in TASK_ORDER]
        name = f"*{entry['model']}* (baseline)" if entry["baseline"] else entry["model"]
        lines.append("| " + " | ".join([name, *cells, num(entry["avg5"]), num(entry["avg6"])]) + " |")
    if not board.summary:
        lines.append("| (no run of a reference configuration yet) |" + " |" * (len(header) - 1))
    lines += ["", "## Every configuration", "",
              "One row per (task, model, configuration). Rows outside the main table say why.",
              "`examples` = steps x batch; `val=test`: the validation split is the test split",
              "(Text, as LRA did), so best-validation selection has seen the test set.", ""]
    columns = ["label", "task", "n", "mean", "std", "95% interval", "paper", "diff", "steps", "examples",
               "stopped by", "params", "data", "preset", "precision", "device", "GPU-h", "val=test",
               "why not in the main table", "records"]
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for f in board.fields:
        interval = f"[{num(f['ci_low'])}, {num(f['ci_high'])}] {f['ci_over']}" if f["ci_low"] is not None else f["ci_over"] or "-"
        steps = f"{f['steps']}/{f['max_steps']}" if f["steps"] is not None else "-"
        data = f["data_source"] + (" (lossy)" if f["lossy"] else "")
        links = " ".join(f"[{i}]({p})" for i, p in enumerate(f["records"].split(), 1))
        values = [f["label"], f["task"], str(f["n_seeds"]), num(f["mean"]), num(f["std"]), interval,
                  num(f["published"]), signed(f["difference"]), steps, str(f["examples_seen"] or "-"),
                  f["stopped_by"] or "-", str(f["params"] or "-"), data or "-", f["preset"], f["precision"] or "-",
                  f["device"] or "-", num(f["gpu_hours"], 3), "yes" if f["val_is_test"] else "no",
                  f["off_reference"] or "-", links]
        lines.append("| " + " | ".join(v.replace("|", "/") for v in values) + " |")
    if plot_name:
        lines += ["", f"![accuracy against training speed]({plot_name})", "",
                  "Accuracy against training speed (steps/s), bubble area proportional to peak memory,",
                  "in the style of LRA's Figure 3."]
    lines += ["", "## Published numbers", "", "From `results/reference/*.csv`; each row names its paper and table.",
              "FAIL: no better than chance (LRA's mark); blank: not reported.", ""]
    lines += published_markdown(board.published)
    lines += ["", "## Records skipped", ""]
    lines += [f"- {line}" for line in board.skipped] or ["- none"]
    return "\n".join(lines) + "\n"


def published_markdown(published: list[dict]) -> list[str]:
    header = ["model (as published)", *(TASK_TITLES[t] for t in TASK_ORDER), "avg (5)", "avg (6)", "source", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for (source, paper_model), entries in published_groups(published):
        by_task = {e["task"]: e for e in entries}
        cells = [published_cell(by_task.get(t)) for t in TASK_ORDER]
        notes = "; ".join(sorted({e["note"] for e in entries if e["note"]}))
        table = entries[0]["table"]
        avg5, avg6 = published_averages(by_task)
        lines.append("| " + " | ".join([paper_model, *cells, num(avg5), num(avg6), f"{source}, {table}", notes]) + " |")
    return lines


def published_averages(by_task: dict[str, dict]) -> tuple[float | None, float | None]:
    """Both averages of a published row, computed here from its numbers (a FAIL as 50)."""
    cells = {t: by_task[t]["accuracy"] for t in TASK_ORDER if t in by_task}
    failed = "pathx" in by_task and by_task["pathx"]["accuracy"] is None and "FAIL" in by_task["pathx"]["note"].upper()
    return lra_averages(cells, failed)


def published_groups(published: list[dict]):
    groups: dict[tuple, list] = {}
    for line in published:
        groups.setdefault((line["source"], line["paper_model"]), []).append(line)
    return list(groups.items())


def published_cell(entry: dict | None) -> str:
    if entry is None:
        return ""
    if entry["accuracy"] is None:
        return "FAIL" if "FAIL" in entry["note"].upper() else "-"
    return num(entry["accuracy"])


# ---------------------------------------------------------------- HTML

SORT_SCRIPT = """
for (const table of document.querySelectorAll('table.sortable')) {
  table.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const up = th.dataset.order !== 'asc'; th.dataset.order = up ? 'asc' : 'desc';
    const key = r => { const c = r.cells[col]; const v = c.dataset.value ?? c.textContent.trim();
                       const x = parseFloat(v); return isNaN(x) ? v : x; };
    rows.sort((a, b) => { const x = key(a), y = key(b);
      const c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
      return up ? c : -c; });
    rows.forEach(r => body.appendChild(r));
  }));
}
"""
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #eee; cursor: pointer; user-select: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.other td { color: #555; } tr.baseline td { font-style: italic; }
small { color: #666; }
"""


def td(value: Any, numeric: bool = False, sort_value: Any = None, raw: bool = False) -> str:
    attrs = ' class="num"' if numeric else ""
    if sort_value is not None:
        attrs += f' data-value="{html.escape(str(sort_value))}"'
    text = value if raw else html.escape(str(value))
    return f"<td{attrs}>{text}</td>"


def to_html(board: Board, plot_png: bytes | None, curves: dict[str, str]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>LRA leaderboard</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>Long Range Arena leaderboard</h1>",
             "<p>Test accuracy (%) at the best validation step; click a column heading to sort. "
             "Main table: each task's reference configuration at its full step budget. Cell: mean ± std "
             "(n seeds) [95% interval], the paper's number and the difference. LRA avg (5): mean of the five "
             "tasks without Path-X (Tay et al. 2020); avg (6): mean of six with a Path-X at chance as 50 "
             "(S4 and later).</p>",
             '<table class="sortable" id="main"><thead><tr><th>model</th>']
    parts += [f"<th>{TASK_TITLES[t]}</th>" for t in TASK_ORDER] + ["<th>LRA avg (5)</th><th>avg (6)</th></tr></thead><tbody>"]
    for entry in board.summary:
        cells = [td(e(md_cell(entry["cells"].get(t))).replace("**best**", "<b>best</b>"), True,
                    num(entry["cells"][t].mean) if t in entry["cells"] else "", raw=True)
                 for t in TASK_ORDER]
        kind = ' class="baseline"' if entry["baseline"] else ""
        name = entry["model"] + (" (baseline)" if entry["baseline"] else "")
        parts.append(f"<tr{kind}>{td(name)}{''.join(cells)}{td(num(entry['avg5']), True)}{td(num(entry['avg6']), True)}</tr>")
    parts.append("</tbody></table>")
    if plot_png is not None:
        import base64

        parts.append('<h2>Accuracy against training speed</h2><p><img alt="accuracy against training speed, '
                     f'bubble area = peak memory" src="data:image/png;base64,{base64.b64encode(plot_png).decode()}">'
                     "</p><p><small>In the style of LRA's Figure 3: bubble area proportional to peak memory."
                     "</small></p>")
    parts += ["<h2>Every configuration</h2>", "<p>One row per (task, model, configuration); rows outside the main "
              "table say why. val=test: the validation split is the test split (Text, as in LRA).</p>",
              '<table class="sortable" id="rows"><thead><tr>']
    headings = ["label", "task", "n", "mean", "std", "95% low", "95% high", "interval over", "paper", "diff",
                "steps", "max steps", "examples", "stopped by", "params", "data", "preset", "precision", "device",
                "GPU-h", "val=test", "why not in the main table", "records", "curves"]
    parts += [f"<th>{h}</th>" for h in headings] + ["</tr></thead><tbody>"]
    for f in board.fields:
        links = " ".join(f'<a href="{e(p)}">record {i}</a>' for i, p in enumerate(f["records"].split(), 1))
        curve_links = " ".join(f'<a href="{e(curves[p])}">curve {i}</a>' for i, p in enumerate(f["records"].split(), 1)
                               if p in curves)
        data = f["data_source"] + (" (lossy JPEG)" if f["lossy"] else "")
        cells = [td(f["label"]), td(f["task"]), td(f["n_seeds"], True), td(num(f["mean"]), True),
                 td(num(f["std"]), True), td(num(f["ci_low"]), True), td(num(f["ci_high"]), True), td(f["ci_over"]),
                 td(num(f["published"]), True), td(signed(f["difference"]), True), td(f["steps"] or "-", True),
                 td(f["max_steps"] or "-", True), td(f["examples_seen"] or "-", True), td(f["stopped_by"] or "-"),
                 td(f["params"] or "-", True), td(data or "-"), td(f["preset"]), td(f["precision"] or "-"),
                 td(f["device"] or "-"), td(num(f["gpu_hours"], 3), True), td("yes" if f["val_is_test"] else "no"),
                 td(f["off_reference"] or "-"), td(links, raw=True), td(curve_links or "-", raw=True)]
        parts.append(f'<tr class="{f["section"]}">{"".join(cells)}</tr>')
    parts += ["</tbody></table>", "<h2>Published numbers</h2>",
              "<p>From results/reference/*.csv; each row names its paper and table. FAIL: no better than chance.</p>",
              '<table class="sortable" id="published"><thead><tr><th>model (as published)</th>']
    parts += [f"<th>{TASK_TITLES[t]}</th>" for t in TASK_ORDER]
    parts += ["<th>avg (5)</th><th>avg (6)</th><th>source</th><th>note</th></tr></thead><tbody>"]
    for (source, paper_model), entries in published_groups(board.published):
        by_task = {x["task"]: x for x in entries}
        cells = "".join(td(published_cell(by_task.get(t)), True) for t in TASK_ORDER)
        averages = "".join(td(num(v), True) for v in published_averages(by_task))
        notes = "; ".join(sorted({x["note"] for x in entries if x["note"]}))
        parts.append(f"<tr>{td(paper_model)}{cells}{averages}{td(source + ', ' + entries[0]['table'])}{td(notes)}</tr>")
    parts += ["</tbody></table>", "<h2>Records skipped</h2><ul>"]
    parts += [f"<li>{e(line)}</li>" for line in board.skipped] or ["<li>none</li>"]
    parts += ["</ul>", f"<script>{SORT_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- writing

def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise LraError(f"--out {out_dir} is a file, not a folder; give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LraError(f"cannot create --out {out_dir} ({err.strerror}); give a writable folder") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise LraError(f"--out {out_dir} is not writable; give a writable folder")


def write_leaderboard(roots, out_dir, reference_dir=DEFAULT_REFERENCE_DIR, plots: bool = True,
                      reference_of=reference_config) -> dict[str, Any]:
    """Build the leaderboard from the records under `roots` into `out_dir`.

    `reference_of(task, model)` gives the flattened reference configuration (default: the
    composed config). Returns the paths written, the number of runs counted and the lines
    of skipped records. Every file is written atomically; a write that fails (a full or
    read-only disk) is a one-line LraError, and the files written before it stay whole.
    """
    try:
        return _write_leaderboard(roots, out_dir, reference_dir, plots, reference_of)
    except OSError as err:
        raise LraError(f"cannot write the leaderboard under {out_dir} ({err.strerror or err}); "
                       "give a writable --out folder") from None


def _write_leaderboard(roots, out_dir, reference_dir, plots, reference_of) -> dict[str, Any]:
    roots = [Path(r) for r in roots]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise LraError(f"no runs folder {', '.join(missing)}; give --runs <folder with record.json files>")
    out = Path(out_dir)
    board = build(roots, out, reference_dir, reference_of)
    check_out_dir(out)
    paths: dict[str, Path] = {}
    plot_png, curves = None, {}
    if plots:
        from lra import plot

        plot_png = plot.bubble_plot_png(board.fields)
        if plot_png is not None:
            paths["png"] = write_atomic(out / "leaderboard.png", plot_png)
        curves = write_curves(board, out)
    paths["csv"] = write_atomic(out / "leaderboard.csv", csv_text(board.fields))
    paths["md"] = write_atomic(out / "leaderboard.md", to_markdown(board, "leaderboard.png" if plot_png else None))
    paths["html"] = write_atomic(out / "leaderboard.html", to_html(board, plot_png, curves))
    return {"paths": paths, "runs": sum(len(r.runs) for r in board.rows), "skipped": board.skipped}


def write_curves(board: Board, out: Path) -> dict[str, str]:
    """One loss/accuracy PNG per run that has metrics, under out/curves/; {record link: png link}."""
    from lra import plot

    curves = {}
    for row in board.rows:
        for run in row.runs:
            metrics = plot.metrics_file(run.path.parent)
            if metrics is None:
                continue
            name = f"{row.task}-{row.model}-{row.config_hash[:6]}-s{run.record.seed}.png"
            png = plot.curves_png([run.path.parent])
            if png is None:
                continue
            (out / "curves").mkdir(exist_ok=True)
            write_atomic(out / "curves" / name, png)
            curves[relative(run.path, out)] = f"curves/{name}"
    return curves
