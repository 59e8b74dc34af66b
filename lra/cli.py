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
            "usage: lra train [Hydra flags] [group=option ...] [key.path=value ...]",
            "       lra train --rerun RUN_DIR",
            "",
            *(f"  {group:<11} {', '.join(config_choices(group)) or '-'}" for group in GROUPS),
            "",
            "keys: seed, data_dir, runs_dir, progress, logger, task.*, encoder.*, model.*, trainer.*",
            "  show the composed config: lra train task=listops --cfg job [-p trainer] [--resolve]",
            "  Hydra's flags (--cfg, --info, -m, --config-dir, ...): lra train --hydra-help",
            "  shell completion: eval \"$(lra train -sc install=bash)\"",
            "examples:",
            "  lra train task=listops model=transformer experiment=quick",
            "  lra train task=listops model=performer trainer.max_steps=200 seed=1",
            "  lra train -m task=listops model=transformer,performer seed=0,1,2",
        ]
    )


def _train_job(cfg, run_dir: Path, experiment: str | None, overrides: list[str]) -> str | None:
    """Run one job (its summary line ends its train.log and the terminal's output);
    returns why it did not complete, or None."""
    from lra.run import train_and_record

    record = train_and_record(cfg, run_dir, progress=bool(cfg.progress), experiment=experiment,
                              overrides=overrides)
    return None if record["status"] == "completed" else f"{run_dir}: {record['status']}"


def _sweep_job(cfg) -> str | None:
    """One job of `lra train -m` (Hydra's task function): why it did not complete, or None."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return _train_job(cfg, run_dir, hydra_cfg.runtime.choices.get("experiment"),
                          list(hydra_cfg.overrides.task))
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
    return 1 if _train_job(cfg, run_dir, experiment, overrides) else 0


def _remove_empty_dirs(path: Path, root: Path) -> None:
    """Remove `path` and its parents up to `root` (included) while they are empty."""
    path, root = path.resolve(), root.resolve()
    while path == root or root in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def _hydra_args(args: list[str]):
    """`lra train`'s arguments parsed by Hydra's own parser, so that every flag takes
    its value as in a plain Hydra app (`--cfg job`, `-sc install=bash`, `-p trainer`)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def refuse(message: str):
        raise LraError(f"{message} (see lra train --help, or --hydra-help for Hydra's flags)")

    parser.error = refuse
    return parser.parse_intermixed_args(args)  # overrides before and after flags, as Hydra users write


def _runs_through_hydra(opts) -> bool:
    """Whether Hydra itself must handle the call: its flags that show instead of
    running, sweeps, and config folders or names of one's own."""
    return bool(opts.cfg or opts.info or opts.hydra_help or opts.multirun or opts.package
                or opts.resolve or opts.config_dir or opts.config_path or opts.config_name)


def cmd_train(args: list[str]) -> int:
    if args[:1] == ["--rerun"]:
        return _rerun(args[1:])
    opts = _hydra_args(args)
    if opts.help:
        print(train_usage())
        return 0
    if opts.shell_completion:
        return _shell_completion(opts.overrides, args)
    if opts.experimental_rerun:  # hydra.main's path, which _run_hydra does not take
        raise LraError("lra runs write no Hydra config.pickle for --experimental-rerun; "
                       "use: lra train --rerun RUN_DIR")
    if opts.hydra_help:  # Hydra's help composes no task config: overrides cannot apply
        return _run_hydra(["--hydra-help"])
    check_overrides(opts.overrides, config_dirs=(opts.config_dir,) if opts.config_dir else ())
    if not _runs_through_hydra(opts):
        return _train_single(opts.overrides)
    flags = list(args)
    for override in opts.overrides:
        flags.remove(override)
    return _run_hydra([*opts.overrides, *flags])  # Hydra's parser wants the overrides together


# bash (and zsh through bashcompinit): the line up to the cursor goes to
# `lra train -sc query=bash`, which answers with the completions of its last word.
COMPLETION_SCRIPT = r"""_lra_completion()
{
    local IFS=$' \t\n'
    COMPREPLY=($(COMP_LINE="${COMP_LINE:0:$COMP_POINT}" command lra train -sc query=bash 2>/dev/null))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _lra_completion lra"""


def _shell_completion(words: list[str], args: list[str]) -> int:
    action, _, shell = (words[0] if len(words) == 1 else "").partition("=")
    if action == "install" and shell in ("bash", "zsh"):
        print(("autoload -Uz bashcompinit && bashcompinit\n" if shell == "zsh" else "") + COMPLETION_SCRIPT)
        return 0
    if action == "uninstall" and shell in ("bash", "zsh"):
        print("complete -r lra 2> /dev/null; unset -f _lra_completion")
        return 0
    if action == "query" and shell in ("bash", "zsh"):
        return _complete_query(args)
    raise LraError("shell completion: use -sc install=bash (or zsh); "
                   "eval \"$(lra train -sc install=bash)\" in ~/.bashrc")


def _complete_query(args: list[str]) -> int:
    """Complete COMP_LINE (`lra ...` up to the cursor): the command, then, after
    `train` or `sweep`, Hydra's completion of the overrides."""
    import os

    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if line.endswith(" "):
        words.append("")
    if len(words) <= 2:
        current = words[1] if len(words) == 2 else ""
        print(" ".join(c for c in COMMANDS if c.startswith(current)))
        return 0
    if words[1] not in ("train", "sweep"):
        return 0
    os.environ["COMP_LINE"] = "lra " + "".join(line.split(None, 2)[2:])  # Hydra strips one word
    return _run_hydra(args)


RERUN_KEYS = ("task", "encoder", "model", "trainer", "seed", "logger")  # what decides a run's numbers


def _rerun(args: list[str]) -> int:
    """`lra train --rerun RUN_DIR`: the same command line again, into a new run
    folder, refused if the configs have changed since (the run would not be the same)."""
    import json

    from omegaconf import OmegaConf

    if len(args) != 1:
        raise LraError("usage: lra train --rerun RUN_DIR (the folder holding record.json)")
    path = Path(args[0]) / "record.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LraError(f"{path}: cannot read the run's record ({type(err).__name__}); "
                       "--rerun needs the folder of a finished run") from None
    overrides = record.get("overrides")
    if not isinstance(overrides, list):
        raise LraError(f"{path} holds no command line (written by an older lra); "
                       "re-run it with the overrides of its config")
    now = OmegaConf.to_container(compose(overrides), resolve=True)
    for key in RERUN_KEYS:
        if now.get(key) != record["config"].get(key):
            raise LraError(f"the {key} config composed today differs from the one {path} "
                           f"recorded; check out its commit {record.get('git_commit')} to re-run it")
    print(f"re-running {args[0]}: lra train {' '.join(overrides)}")
    # force=true: a new run, not the finished one that a plain rerun of the command would find
    return cmd_train([*(o for o in overrides if not o.startswith("force=")), "force=true"])


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
