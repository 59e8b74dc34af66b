"""The `lra` command: train, sweep, leaderboard, data.

`lra train` is a Hydra application: everything after `train` is a Hydra override
(`task=listops model=performer trainer.max_steps=100`, `-m` for sweeps). Before
Hydra runs, the overrides are checked here so that a mistake gives one line
that says what to do, and no run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lra.config import CONFIG_MODULE, GROUPS, check_overrides, compose, config_choices
from lra.errors import LraError

def usage() -> str:
    from lra.registry import MODELS, TASKS, load_all

    load_all()
    return "\n".join(
        [
            "usage: lra <command> [arguments]",
            "",
            "commands:",
            "  train [overrides]     train, evaluate and write a run record (Hydra; -m to sweep)",
            "  sweep [tasks= models= seeds=] the task x model x seed matrix, resumable (skips completed runs)",
            "  eval RUN_DIR [split=test] [--predictions]  evaluate a run's checkpoint, no training",
            "  leaderboard           leaderboard (csv, md, html, png) from run records (--out results)",
            "  plot RUN_DIR...       loss and accuracy curves of runs (--out file.png)",
            "  data prepare|info|verify  prepare, list and check data caches",
            "  bench [key=value]     speed and memory of every model, 1K-16K tokens (LRA Table 2)",
            "  baselines [task=...]  reference baselines (chance, majority, rules, logistic regression) as run records",
            "  compare A B [task=...]  paired test of two runs or models: difference, interval, p-values",
            "",
            f"tasks:       {', '.join(TASKS.names())}",
            f"models:      {', '.join(MODELS.names())}",
            f"experiments: {', '.join(config_choices('experiment'))}",
            "",
            "example: lra train task=listops model=transformer experiment=quick",
            "`lra <command> --help` for more.",
        ]
    )


def train_usage() -> str:
    return "\n".join(
        [
            "usage: lra train [-m] [group=option ...] [key.path=value ...]",
            "",
            *(f"  {group:<11} {', '.join(config_choices(group)) or '-'}" for group in GROUPS),
            "",
            "keys: seed, data_dir, runs_dir, progress, task.*, encoder.*, model.*, trainer.*",
            "  show the composed config: lra train task=listops --cfg job",
            "examples:",
            "  lra train task=listops model=transformer experiment=quick",
            "  lra train task=listops model=performer trainer.max_steps=200 seed=1",
            "  lra train -m task=listops model=transformer,performer seed=0,1,2",
        ]
    )


def _train_job(cfg, run_dir: Path, experiment: str | None) -> str | None:
    """Run one job and print its summary; returns why it did not complete, or None."""
    from lra.run import train_and_record

    record = train_and_record(cfg, run_dir, progress=bool(cfg.progress), experiment=experiment)
    test, val = record.get("test") or {}, record.get("best_val") or {}

    def accuracy(result):  # absent when the run was not tested or never evaluated
        return "n/a" if result.get("accuracy") is None else f"{result['accuracy']:.4f}"

    print(
        f"{record['status']}: {record['task']}/{record['model']} seed {record['seed']} "
        f"test accuracy {accuracy(test)} "
        f"(best val {accuracy(val)} at step {val.get('step')}) "
        f"-> {Path(record['run_dir']) / 'record.json'}"
    )
    return None if record["status"] == "completed" else f"{run_dir}: {record['status']}"


def _sweep_job(cfg) -> str | None:
    """One job of `lra train -m` (Hydra's task function): why it did not complete, or None."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return _train_job(cfg, run_dir, hydra_cfg.runtime.choices.get("experiment"))
    except LraError as err:  # one bad job must not stop a sweep
        _remove_empty_dirs(run_dir, Path(cfg.runs_dir))
        print(f"lra train: error: {err}", file=sys.stderr)
        return str(err)


def _train_single(overrides: list[str]) -> int:
    """One run, composed and validated once, without a second compose by Hydra."""
    from omegaconf import open_dict

    cfg = compose(overrides, hydra=True)
    run_dir = Path(cfg.hydra.run.dir)
    experiment = cfg.hydra.runtime.choices.get("experiment")
    with open_dict(cfg):
        del cfg["hydra"]  # what hydra.main hands its task function
    return 1 if _train_job(cfg, run_dir, experiment) else 0


def _remove_empty_dirs(path: Path, root: Path) -> None:
    """Remove `path` and its parents up to `root` (included) while they are empty."""
    path, root = path.resolve(), root.resolve()
    while path == root or root in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


# Hydra flags that take the next argument as their value (`--cfg job`, `-p trainer`);
# --info takes one of its topics, or none.
_VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                 "--config-dir", "-cd", "--experimental-rerun"}
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, Hydra flags with their values) of `lra train`'s arguments."""
    overrides, flags = [], []
    previous = None
    for arg in args:
        is_value = previous in _VALUED_FLAGS or (previous in ("--info", "-i") and arg in _INFO_TOPICS)
        if is_value or arg.startswith("-"):
            flags.append(arg)
            previous = None if is_value else arg
        else:
            overrides.append(arg)
            previous = None
    return overrides, flags


def cmd_train(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(train_usage())
        return 0
    overrides, flags = split_flags(args)
    check_overrides(overrides)
    if not flags:
        return _train_single(overrides)
    return _run_hydra([*overrides, *flags])  # -m sweeps and Hydra's flags (--cfg, --info)


def _run_hydra(args: list[str]) -> int:
    """Hydra's own command line (-m sweeps, --cfg, --info) on `args`, given explicitly.

    hydra.main reads only sys.argv and drops its task function's return values, so
    this calls the function hydra.main calls (hydra-core 1.3's `_run_hydra`) with the
    parsed `args`, and collects each job's failure from its return value.
    """
    from hydra._internal.utils import _run_hydra as run_hydra
    from hydra._internal.utils import get_args_parser

    failures: list[str] = []

    def task(cfg) -> None:
        failure = _sweep_job(cfg)
        if failure:
            failures.append(failure)

    parser = get_args_parser()
    parser.prog = "lra train"
    run_hydra(args=parser.parse_args(args), args_parser=parser, task_function=task,
              config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
    if failures:
        print(f"lra train: {len(failures)} job(s) did not complete", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args: list[str]) -> int:
    from lra.sweep import main as sweep_main

    return sweep_main(args)


def cmd_leaderboard(args: list[str]) -> int:
    from lra.leaderboard import DEFAULT_REFERENCE_DIR, write_leaderboard

    parser = argparse.ArgumentParser(prog="lra leaderboard", description="Build the leaderboard from run records.")
    parser.add_argument("--runs", nargs="+", default=["runs"], help="folders searched for record.json (default: runs)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: <first runs folder>/leaderboard; the committed one: --out results)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE_DIR), help="folder of published-number CSVs")
    opts = parser.parse_args(args)
    out = opts.out if opts.out is not None else str(Path(opts.runs[0]) / "leaderboard")
    result = write_leaderboard(opts.runs, out, reference_dir=opts.reference)
    for line in result["skipped"]:
        print(line, file=sys.stderr)
    written = ", ".join(str(p) for p in result["paths"].values())
    print(f"{result['runs']} run(s), {len(result['skipped'])} record(s) skipped -> {written}")
    return 0


def cmd_data(args: list[str]) -> int:
    from lra.datacli import main as data_main

    return data_main(args)


def cmd_plot(args: list[str]) -> int:
    from lra.plot import main as plot_main

    return plot_main(args)


def cmd_bench(args: list[str]) -> int:
    from lra.bench import main as bench_main

    return bench_main(args)


def cmd_eval(args: list[str]) -> int:
    from lra.run import cmd_eval as eval_main

    return eval_main(args)


def cmd_baselines(args: list[str]) -> int:
    from lra.baselines import main as baselines_main

    return baselines_main(args)


def cmd_compare(args: list[str]) -> int:
    from lra.compare import main as compare_main

    return compare_main(args)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sweep": cmd_sweep, "leaderboard": cmd_leaderboard,
            "data": cmd_data, "bench": cmd_bench, "plot": cmd_plot, "baselines": cmd_baselines,
            "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"lra: error: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except LraError as err:
        print(f"lra {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
