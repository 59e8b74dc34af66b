"""`lra compare A B`: is A's accuracy really different from B's?

A and B are run folders (holding record.json), folders of runs, or model names
looked up in the runs folders. Two levels of evidence, see lra/stats.py:

- on the same test examples: for each seed both ran (or for the one run of each),
  the paired bootstrap interval of the difference and its p-value, and McNemar's
  exact p-value. The runs must have been tested on the same examples: their saved
  labels must be identical, otherwise the comparison is refused;
- across seeds, where each side has two runs or more: the t test over per-seed
  accuracies (paired where the seeds match, Welch's otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lra import stats
from lra.errors import LraError
from lra.records import RECORD, find_records

USAGE = """usage: lra compare A B [task=NAME] [runs=DIR[,DIR]] [level=0.95] [resamples=N]

A and B: run folders, folders of runs, or model names found in the runs folders
(default: runs). Prints accuracy(A) - accuracy(B) with its interval and p-values:
paired on the same test examples (paired bootstrap, McNemar) and across seeds (t test).
example: lra compare transformer baseline_outer_operator task=listops runs=results/baselines,runs"""

KEYS = ("task", "runs", "level", "resamples")


def _completed(paths) -> list[dict]:
    runs = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LraError(f"{path} is not a readable run record ({err})")
        if record.get("status") == "completed":
            record["_dir"] = Path(path).parent
            runs.append(record)
    return runs


def resolve(spec: str, roots: list[str], task: str | None) -> list[dict]:
    """The completed runs that `spec` names, on `task` if given."""
    folder = Path(spec)
    if folder.is_dir():
        runs = _completed([folder / RECORD] if (folder / RECORD).exists() else find_records(folder))
        where = str(folder)
    else:
        runs = [r for r in _completed(find_records(*[r for r in roots if Path(r).is_dir()])) if r["model"] == spec]
        where = f"model '{spec}' in {', '.join(roots)}"
    if task is not None:
        runs = [r for r in runs if r["task"] == task]
    if not runs:
        raise LraError(f"no completed run of {where}" + (f" on task {task}" if task else "")
                       + "; give a run folder, or a model name and runs=DIR")
    tasks = sorted({r["task"] for r in runs})
    if len(tasks) > 1:
        raise LraError(f"{where} has runs on several tasks ({', '.join(tasks)}); add task=NAME")
    experiments = sorted({str(r.get("experiment")) for r in runs})
    if len(experiments) > 1:
        raise LraError(f"{where} mixes runs of different experiment presets ({', '.join(experiments)}); "
                       "give a run folder")
    latest: dict[int, dict] = {}
    for record in sorted(runs, key=lambda r: str(r.get("date"))):
        latest[int(record["seed"])] = record  # a rerun of a seed replaces the earlier one
    return [latest[s] for s in sorted(latest)]


def _name(runs: list[dict]) -> str:
    seeds = ",".join(str(r["seed"]) for r in runs)
    return f"{runs[0]['model']} ({runs[0]['task']}, {len(runs)} run(s), seed {seeds})"


def _pairs(runs_a: list[dict], runs_b: list[dict]) -> list[tuple[dict, dict]]:
    if len(runs_a) == 1 and len(runs_b) == 1:
        return [(runs_a[0], runs_b[0])]
    by_seed = {r["seed"]: r for r in runs_b}
    return [(a, by_seed[a["seed"]]) for a in runs_a if a["seed"] in by_seed]


def _correct_pair(run_a: dict, run_b: dict) -> tuple[np.ndarray, np.ndarray]:
    pred_a, labels_a = stats.load_predictions(run_a["_dir"])
    pred_b, labels_b = stats.load_predictions(run_b["_dir"])
    if labels_a.shape != labels_b.shape or not np.array_equal(labels_a, labels_b):
        raise LraError(f"{run_a['_dir']} and {run_b['_dir']} were tested on different examples "
                       f"({labels_a.size} and {labels_b.size} labels, not identical); compare runs on the same data")
    return pred_a == labels_a, pred_b == labels_b


def compare(runs_a: list[dict], runs_b: list[dict], level: float = 0.95,
            n_resamples: int = stats.N_RESAMPLES) -> dict:
    """Paired tests per matched run and a seed-level test; all numbers, no printing."""
    if runs_a[0]["task"] != runs_b[0]["task"]:
        raise LraError(f"A is on {runs_a[0]['task']} and B on {runs_b[0]['task']}; compare runs of one task")
    paired = []
    for run_a, run_b in _pairs(runs_a, runs_b):
        correct_a, correct_b = _correct_pair(run_a, run_b)
        result = stats.paired_comparison(correct_a, correct_b, level=level, n_resamples=n_resamples)
        paired.append({"seed_a": run_a["seed"], "seed_b": run_b["seed"], "resamples": n_resamples, **result})
    seeds = None
    if len(runs_a) >= 2 and len(runs_b) >= 2:
        seeds = stats.seed_comparison(
            [r["test"]["accuracy"] for r in runs_a], [r["test"]["accuracy"] for r in runs_b], level=level,
            seeds_a=[r["seed"] for r in runs_a], seeds_b=[r["seed"] for r in runs_b])
    return {"paired": paired, "seeds": seeds}


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}"


def report(runs_a: list[dict], runs_b: list[dict], result: dict, level: float) -> str:
    pct = f"{100 * level:g}%"
    lines = [f"A: {_name(runs_a)}", f"B: {_name(runs_b)}",
             "difference = accuracy(A) - accuracy(B), in points"]
    if not result["paired"]:
        lines.append("same test examples: no seed that both ran; give run folders to pair two runs")
    for r in result["paired"]:
        low, high = r["interval"]
        boot = f"{r['bootstrap_p']:.3g}"
        if r["bootstrap_p"] <= 1.0 / (1 + r["resamples"]):
            boot = f"<={boot} (the floor of {r['resamples']} resamples)"
        lines.append(
            f"same {r['examples']} test examples (seed {r['seed_a']} vs {r['seed_b']}): "
            f"A {100 * r['accuracy_a']:.2f}  B {100 * r['accuracy_b']:.2f}  difference {_pct(r['difference'])} "
            f"[{pct} CI {_pct(low)}, {_pct(high)}]  paired bootstrap p{'=' if boot[0] != '<' else ''}{boot}  "
            f"McNemar p={r['mcnemar_p']:.3g}  (only A right {r['only_a']}, only B right {r['only_b']})")
    seeds = result["seeds"]
    if seeds is None:
        lines.append("across seeds: needs two runs or more of each (seed=0,1,2)")
    else:
        low, high = seeds["interval"]
        lines.append(
            f"across seeds ({seeds['test']}, {seeds['n_a']} vs {seeds['n_b']} runs, df {seeds['df']:.1f}): "
            f"difference {_pct(seeds['difference'])} [{pct} CI {_pct(low)}, {_pct(high)}]  p={seeds['p']:.3g}")
    return "\n".join(lines)


def _float(options: dict, key: str, default: float) -> float:
    try:
        return float(options.get(key, default))
    except ValueError:
        raise LraError(f"{key} must be a number, got '{options[key]}'") from None


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise LraError(f"unknown option '{unknown[0]}'; valid: {', '.join(KEYS)}")
    if len(positional) != 2:
        raise LraError(f"give two runs or models to compare (got {len(positional)}); see: lra compare --help")
    level = _float(options, "level", 0.95)
    if not 0 < level < 1:
        raise LraError(f"level must be between 0 and 1, got {level}")
    resamples = _float(options, "resamples", stats.N_RESAMPLES)
    if resamples < 100 or resamples != int(resamples):
        raise LraError(f"resamples must be an integer of at least 100, got {options['resamples']}")
    roots = options.get("runs", "runs").split(",")
    task = options.get("task")
    runs_a, runs_b = (resolve(spec, roots, task) for spec in positional)
    result = compare(runs_a, runs_b, level=level, n_resamples=int(resamples))
    print(report(runs_a, runs_b, result, level))
    return 0
