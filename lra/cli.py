"""The `lra` command: train, sweep, leaderboard, data.

`lra train` is a Hydra application: everything after `train` is a Hydra override
(`task=listops model=performer trainer.max_steps=100`, `-m` for sweeps). Before
Hydra runs, the overrides are checked here so that a mistake gives one line
that says what to do, and no run folder.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module, resources
from pathlib import Path

from lra.errors import LraError

GROUPS = ("task", "model", "trainer", "experiment", "task_model")
CONFIG_MODULE = "lra.configs"


def config_choices(group: str) -> list[str]:
    """The option names of a config group (the .yaml files in configs/<group>/)."""
    folder = resources.files(CONFIG_MODULE) / group
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


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


def _check_overrides(overrides: list[str]) -> None:
    """Syntax and group choices, so typos fail before Hydra starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        first = str(err).strip().splitlines()[0]
        raise LraError(f"cannot parse the overrides: {first}")
    for override in parsed:
        group = override.key_or_group
        if group not in GROUPS or override.is_delete():
            continue
        valid = config_choices(group)
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            if value is not None and str(value) not in valid:
                raise LraError(
                    f"unknown {group} '{value}'; choose one of: {', '.join(valid)}"
                )


def compose(overrides: list[str]):
    """The config `lra train` would run with (single run, no sweep)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name="train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0]
        raise LraError(f"bad configuration: {first} (see the keys with: lra train --cfg job)")


_failures: list[str] = []


def _hydra_train(cfg) -> None:
    """The Hydra task function behind `lra train`: one job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lra.run import train_and_record

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        experiment = hydra_cfg.runtime.choices.get("experiment")
        record = train_and_record(cfg, run_dir, progress=bool(cfg.progress), experiment=experiment)
    except LraError as err:
        _remove_empty_dirs(run_dir, Path(cfg.runs_dir))
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one bad job must not stop a sweep
            print(f"lra train: error: {err}", file=sys.stderr)
            _failures.append(str(err))
            return
        print(f"lra train: error: {err}", file=sys.stderr)
        raise SystemExit(2)  # Hydra reports Exceptions with a traceback; this stays one line
    test, val = record.get("test", {}), record.get("best_val", {})
    print(
        f"{record['status']}: {record['task']}/{record['model']} seed {record['seed']} "
        f"test accuracy {test.get('accuracy', float('nan')):.4f} "
        f"(best val {val.get('accuracy', float('nan')):.4f} at step {val.get('step')}) "
        f"-> {run_dir / 'record.json'}"
    )
    if record["status"] != "completed":
        _failures.append(f"{run_dir}: {record['status']}")


def _remove_empty_dirs(path: Path, root: Path) -> None:
    """Remove `path` and its parents up to `root` (included) while they are empty."""
    path, root = path.resolve(), root.resolve()
    while path == root or root in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def cmd_train(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(train_usage())
        return 0
    overrides = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    _check_overrides(overrides)
    multirun = "-m" in flags or "--multirun" in flags
    if not multirun and not {"--cfg", "-c", "--info", "-i"} & set(flags):
        from lra.run import validate

        validate(compose(overrides))
    return _run_hydra(args)


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
            "bench": cmd_bench,
            "baselines": lambda a: import_module("lra.baselines").main(a), "compare": lambda a: import_module("lra.compare").main(a)}


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
