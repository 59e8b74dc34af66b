"""`lra sweep`: the (task x model x seed) matrix, resumable and idempotent.

A sweep is a list of jobs, each exactly one `lra train` run. A job whose
completed record already exists under `runs_dir` (same task, model, seed and
configuration fingerprint) is skipped, so re-running a sweep continues it: after
a crash, in the next GPU slot, or on another machine from committed records. An
interrupted job is simply run again with the same overrides, which lets
`lra train` resume it from its checkpoint where one exists.

Jobs run one after another in this process (`jobs=1`, the default), or in
`jobs=N` worker processes, each pinned to its own GPU where several are visible.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lra.errors import LraError
from lra.records import config_hash, find_records

SWEEP_KEYS = ("tasks", "models", "seeds", "jobs", "dry_run")


@dataclasses.dataclass(frozen=True)
class Job:
    task: str
    model: str
    seed: int
    overrides: tuple[str, ...]  # exactly what `lra train` is given
    fingerprint: str
    experiment: str | None

    @property
    def label(self) -> str:
        return f"{self.task}/{self.model} seed {self.seed}"


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.strip("[]").split(",") if v.strip()]


def parse_args(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split `lra sweep` arguments into sweep options and plain `lra train` overrides."""
    options: dict[str, Any] = {"tasks": None, "models": None, "seeds": [0, 1, 2], "jobs": 1,
                               "dry_run": False}
    overrides = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in SWEEP_KEYS:
            if key in ("task", "model", "seed"):
                raise LraError(f"lra sweep takes {key}s=..., not {key}=... (e.g. {key}s={value})")
            overrides.append(arg)
            continue
        if key in ("tasks", "models"):
            options[key] = _list(value)
        elif key == "seeds":
            seeds = _list(value)
            if not all(s.isdigit() for s in seeds):
                raise LraError(f"seeds={value} must be a count (seeds=3) or a list of seeds (seeds=[0,2])")
            options["seeds"] = list(range(int(seeds[0]))) if "[" not in value and len(seeds) == 1 \
                else [int(s) for s in seeds]
        elif key == "jobs":
            if not value.isdigit() or int(value) < 1:
                raise LraError(f"jobs={value} must be a positive integer (worker processes)")
            options["jobs"] = int(value)
        else:
            if value not in ("true", "false"):
                raise LraError(f"dry_run={value} must be true or false")
            options["dry_run"] = value == "true"
    if not options["seeds"]:
        raise LraError("seeds= names no seed; use seeds=3 or seeds=[0,1,2]")
    return options, overrides


def prepared_tasks(data_dir: str) -> list[str]:
    from lra.data import list_prepared

    return sorted({manifest["task"] for _, manifest in list_prepared(data_dir)})


def plan(options: dict[str, Any], overrides: list[str]) -> list[Job]:
    """Every job of the matrix, each composed and validated before any runs."""
    from lra.config import compose
    from lra.registry import MODELS, TASKS, load_all
    from lra.run import validate

    load_all()
    base = compose(overrides)
    tasks = options["tasks"] or prepared_tasks(base.data_dir)
    if not tasks:
        raise LraError(f"no prepared data in {base.data_dir}; prepare a task first "
                       "(lra data prepare listops) or name them: tasks=listops,text")
    models = options["models"] or MODELS.names()
    for task in tasks:
        TASKS.get(task)
    for model in models:
        MODELS.get(model)
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    jobs = []
    for task in tasks:
        for model in models:
            job_overrides = [f"task={task}", f"model={model}", *overrides]
            try:
                cfg = compose(job_overrides)
                validate(cfg)
            except LraError as err:  # refuse the whole sweep before any job has run
                raise LraError(f"job {task}/{model} is invalid: {err}; fix it, or leave it out "
                               "with tasks=/models=") from None
            fingerprint = config_hash(OmegaConf.to_container(cfg, resolve=True))
            for seed in options["seeds"]:  # named as records name them (task.name may be overridden)
                jobs.append(Job(cfg.task.name, cfg.model.name, seed, (*job_overrides, f"seed={seed}"),
                                fingerprint, experiment))
    return jobs


def completed_runs(runs_dir: str) -> dict[tuple, Path]:
    """(task, model, seed, fingerprint) of every completed record under `runs_dir`."""
    done = {}
    for path in find_records(runs_dir) if Path(runs_dir).exists() else []:
        try:
            record = json.loads(path.read_text())
            key = (record["task"], record["model"], int(record["seed"]),
                   config_hash(record["config"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the leaderboard reports unreadable records; a sweep just reruns them
        if record.get("status") == "completed":
            done[key] = path
    return done


def _run_in_process(job: Job) -> tuple[str, float | None]:
    from omegaconf import open_dict

    from lra.config import compose
    from lra.run import train_and_record

    cfg = compose(list(job.overrides), hydra=True)
    run_dir = Path(cfg.hydra.run.dir)  # the folder `lra train` would use
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        record = train_and_record(cfg, run_dir, progress=False, experiment=job.experiment)
    except LraError as err:
        return f"error: {err}", None
    except Exception as err:  # noqa: BLE001 - one broken job must not stop the sweep
        return f"failed: {type(err).__name__}: {err}", None
    return record["status"], record.get("test", {}).get("accuracy")


def _gpu_count() -> int:
    """GPUs visible to worker processes, without initialising JAX in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def _start_worker(job: Job, log_dir: Path, gpu: int | None, sharing: int) -> subprocess.Popen:
    """One `lra train` process; `sharing` workers share its GPU, so each takes that share
    of the GPU's memory instead of JAX's default 75%."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if sharing > 1:
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / sharing:.3f}")
    log = open(log_dir / f"{job.task}-{job.model}-s{job.seed}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "lra.cli", "train", *job.overrides, "progress=false"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def _summary(done: int, failed: int, running: int, left: int, seconds: list[float]) -> str:
    eta = ""
    if seconds and left + running:
        eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime(sum(seconds) / len(seconds) * (left + running)))}"
    return f"[sweep] done {done}, running {running}, failed {failed}, left {left}{eta}"


def run(jobs: list[Job], runs_dir: str, workers: int = 1) -> list[tuple[Job, str, float | None]]:
    """Run the jobs not yet completed; returns (job, status, test accuracy) for every job."""
    done_before = completed_runs(runs_dir)
    results: dict[Job, tuple[str, float | None]] = {}
    todo = []
    for job in jobs:
        path = done_before.get((job.task, job.model, job.seed, job.fingerprint))
        if path is None:
            todo.append(job)
        else:
            results[job] = ("completed (before)", json.loads(path.read_text())["test"]["accuracy"])
    if not todo:
        print(f"[sweep] all {len(jobs)} job(s) already completed in {runs_dir}; nothing to run")
    else:
        print(f"[sweep] {len(todo)} of {len(jobs)} job(s) to run ({len(jobs) - len(todo)} completed before)")
    seconds: list[float] = []
    failed = 0
    if workers == 1:
        for index, job in enumerate(todo):
            print(_summary(index, failed, 1, len(todo) - index - 1, seconds) + f"; now {job.label}", flush=True)
            start = time.perf_counter()
            results[job] = _run_in_process(job)
            seconds.append(time.perf_counter() - start)
            failed += results[job][0] != "completed"
    else:
        log_dir = Path(runs_dir) / "sweep-logs" / time.strftime("%Y%m%d-%H%M%S")
        log_dir.mkdir(parents=True, exist_ok=True)
        gpus = _gpu_count()
        sharing = -(-workers // gpus) if gpus else 1
        queue, active = list(todo), {}
        while queue or active:
            while queue and len(active) < workers:
                job = queue.pop(0)
                slot = next(s for s in range(workers) if s not in {a[1] for a in active.values()})
                active[job] = (_start_worker(job, log_dir, slot % gpus if gpus > 1 else None, sharing), slot,
                               time.perf_counter())
            time.sleep(0.5)
            for job, (proc, _, start) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[job]
                seconds.append(time.perf_counter() - start)
                status = "completed" if proc.returncode == 0 else f"failed (exit {proc.returncode}; log in {log_dir})"
                failed += proc.returncode != 0
                results[job] = (status, None)
                print(_summary(len(seconds), failed, len(active), len(queue), seconds), flush=True)
        fresh = completed_runs(runs_dir)
        for job in todo:
            path = fresh.get((job.task, job.model, job.seed, job.fingerprint))
            if path is not None:
                results[job] = ("completed", json.loads(path.read_text())["test"]["accuracy"])
    return [(job, *results[job]) for job in jobs]


def table(results: list[tuple[Job, str, float | None]]) -> str:
    lines = [f"{'task':<11} {'model':<20} {'seed':>4}  {'test acc':>8}  status"]
    for job, status, accuracy in results:
        acc = f"{100 * accuracy:8.2f}" if accuracy is not None else f"{'-':>8}"
        lines.append(f"{job.task:<11} {job.model:<20} {job.seed:>4}  {acc}  {status}")
    return "\n".join(lines)


USAGE = """usage: lra sweep [tasks=a,b] [models=a,b] [seeds=3|seeds=[0,1,2]] [jobs=N] [dry_run=true] [overrides]

Runs every (task, model, seed) as one `lra train` job. Defaults: every task with
prepared data, every registered model, seeds 0, 1, 2, one job at a time.
A job whose completed record exists in runs_dir (same configuration) is skipped,
so the same command continues an interrupted sweep. Other arguments are
`lra train` overrides applied to every job (experiment=..., trainer.*=...).
jobs=N runs N worker processes, one GPU each where several are visible."""


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    options, overrides = parse_args(args)
    jobs = plan(options, overrides)
    from lra.config import compose

    runs_dir = compose(overrides).runs_dir
    if options["dry_run"]:
        done = completed_runs(runs_dir)
        for job in jobs:
            state = "completed" if (job.task, job.model, job.seed, job.fingerprint) in done else "to run"
            print(f"{job.label:<40} {job.fingerprint}  {state}")
        return 0
    results = run(jobs, runs_dir, options["jobs"])
    print(table(results))
    bad = [r for r in results if not r[1].startswith("completed")]
    if bad:
        print(f"lra sweep: {len(bad)} job(s) did not complete", file=sys.stderr)
        return 1
    return 0
