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
            "  sweep [overrides]     train every model (or model=a,b) on a task, seeds via seed=0,1,2",
            "  leaderboard           build results/leaderboard.csv and .md from run records",
            "  data prepare|info|verify  prepare, list and check data caches",
            "  bench [key=value]     speed and memory of every model, 1K-16K tokens (LRA Table 2)",
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


_failures: list[str] = []


def _train_job(cfg, run_dir: Path, experiment: str | None) -> str | None:
    """Run one job and print its summary; returns why it did not complete, or None."""
    from lra.run import train_and_record

    record = train_and_record(cfg, run_dir, progress=bool(cfg.progress), experiment=experiment)
    test, val = record.get("test", {}), record.get("best_val", {})
    print(
        f"{record['status']}: {record['task']}/{record['model']} seed {record['seed']} "
        f"test accuracy {test.get('accuracy', float('nan')):.4f} "
        f"(best val {val.get('accuracy', float('nan')):.4f} at step {val.get('step')}) "
        f"-> {run_dir / 'record.json'}"
    )
    return None if record["status"] == "completed" else f"{run_dir}: {record['status']}"


def _hydra_train(cfg) -> None:
    """The Hydra task function behind `lra train -m`: one job of a sweep."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        failure = _train_job(cfg, run_dir, hydra_cfg.runtime.choices.get("experiment"))
    except LraError as err:  # one bad job must not stop a sweep
        _remove_empty_dirs(run_dir, Path(cfg.runs_dir))
        print(f"lra train: error: {err}", file=sys.stderr)
        failure = str(err)
    if failure:
        _failures.append(failure)


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


# Hydra flags that take the next argument as their value (`--cfg job`, `-p trainer`).
_VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                 "--config-dir", "-cd", "--experimental-rerun"}


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, Hydra flags with their values) of `lra train`'s arguments."""
    overrides, flags = [], []
    expects_value = False
    for arg in args:
        if expects_value or arg.startswith("-"):
            flags.append(arg)
            expects_value = not expects_value and arg in _VALUED_FLAGS
        else:
            overrides.append(arg)
    return overrides, flags


def cmd_train(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(train_usage())
        return 0
    overrides, flags = split_flags(args)
    check_overrides(overrides)
    if not flags:
        return _train_single(overrides)
    return _run_hydra(args)  # -m sweeps and Hydra's own flags (--cfg, --info)


def _run_hydra(args: list[str]) -> int:
    import hydra

    app = hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")(
        _hydra_train
    )
    saved = sys.argv
    sys.argv = ["lra train", *args]
    _failures.clear()
    try:
        app()
    finally:
        sys.argv = saved
    if _failures:
        print(f"lra train: {len(_failures)} job(s) did not complete", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args: list[str]) -> int:
    """Every registered model (unless model= is given) as one Hydra multirun."""
    if any(a in ("-h", "--help") for a in args):
        print("usage: lra sweep [task=...] [model=a,b] [seed=0,1,2] [other overrides]\n"
              "Runs `lra train -m` over every registered model by default.")
        return 0
    from lra.registry import MODELS, load_all

    load_all()
    if not any(a.startswith("model=") for a in args):
        args = [*args, "model=" + ",".join(MODELS.names())]
    return cmd_train(["-m", *[a for a in args if a not in ("-m", "--multirun")]])


def cmd_leaderboard(args: list[str]) -> int:
    from lra.leaderboard import write_leaderboard

    parser = argparse.ArgumentParser(prog="lra leaderboard", description="Build the leaderboard from run records.")
    parser.add_argument("--runs", nargs="+", default=["runs"], help="folders searched for record.json (default: runs)")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    opts = parser.parse_args(args)
    csv_path, md_path, count = write_leaderboard(opts.runs, opts.out)
    print(f"{count} run(s) -> {csv_path} and {md_path}")
    return 0


def cmd_data(args: list[str]) -> int:
    from lra.datacli import main as data_main

    return data_main(args)


def cmd_bench(args: list[str]) -> int:
    from lra.bench import main as bench_main

    return bench_main(args)


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "leaderboard": cmd_leaderboard, "data": cmd_data,
            "bench": cmd_bench}


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
