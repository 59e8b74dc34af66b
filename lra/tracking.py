"""Where metrics go: a tracker interface and its backends.

The run's human-readable log (`train.log`, Python logging) lives here too: it
is where the same numbers go for people.

A tracker receives one flat dict of numbers per step (`log`) and is closed once
(`close`). Backends, chosen with `logger=` (one name or a list, e.g.
`logger=[jsonl,tensorboard]`):

- `jsonl`: metrics.jsonl in the run folder, one JSON object per line (always
  available; `lra leaderboard` and the record's readers need nothing else).
- `tensorboard`: event files in <run>/tensorboard, written by tensorboardX, so
  neither TensorFlow nor TensorBoard is needed to write them (`pip install -e
  '.[tensorboard]'`; view with `tensorboard --logdir runs`).
- `wandb`: a Weights & Biases run (`pip install -e '.[wandb]'`), imported only
  when chosen; `WANDB_MODE=offline` keeps it on disk (<run>/wandb), and
  WANDB_PROJECT / WANDB_ENTITY pick where it goes (project `lra` by default).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Protocol

from lra.errors import LraError

RUN_LOG = "train.log"
log = logging.getLogger("lra")


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def flush(self) -> None: ...  # on disk now: a checkpoint is about to say so

    def close(self) -> None: ...


class NoOpTracker:
    """For tests and dry runs."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlTracker:
    """One JSON object per line: {"step": n, ...metrics}, as big_vision does."""

    def __init__(self, path: Path):
        self.handle = open(path, "a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else str(value)
        self.handle.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.flush()
        self.handle.close()


class TensorBoardTracker:
    """Scalars as TensorBoard event files (tensorboardX: no TensorFlow)."""

    def __init__(self, logdir: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(logdir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), global_step=int(step))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run holding the resolved config and every metric."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "lra"),
            name="/".join(run_dir.parts[-3:]),  # task/model/<time>-s<seed>
            dir=str(run_dir),
            config=config,
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({key: float(value) for key, value in metrics.items()}, step=int(step))

    def flush(self) -> None:
        pass  # wandb streams its rows itself; a checkpoint has nothing to wait for here

    def close(self) -> None:
        self.run.finish()


class MultiTracker:
    """Several backends at once; closing closes every one, even if one fails."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log(step, metrics)

    def flush(self) -> None:
        for tracker in self.trackers:
            tracker.flush()

    def close(self) -> None:
        errors = []
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as err:  # noqa: BLE001 - the others must still close
                errors.append(err)
        if errors:
            raise errors[0]


# name -> (module it needs, the extra that installs it)
LOGGERS = {"jsonl": (None, None), "tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


def logger_names(value: Any) -> list[str]:
    """The backends named by the `logger` key (a name or a list of names), checked:
    unknown names and backends whose package is missing are one-line errors."""
    if isinstance(value, str):
        names = [value]
    elif value is not None and not isinstance(value, (bytes, dict)) and hasattr(value, "__iter__"):
        names = [str(name) for name in value]
    else:
        names = []
    if not names:
        raise LraError(f"logger={value} names no backend; choose from: {', '.join(LOGGERS)} "
                       "(several: logger=[jsonl,tensorboard])")
    for name in names:
        if name not in LOGGERS:
            raise LraError(f"unknown logger '{name}'; choose from: {', '.join(LOGGERS)} "
                           "(several: logger=[jsonl,tensorboard])")
        module, extra = LOGGERS[name]
        if module is not None and importlib.util.find_spec(module) is None:
            raise LraError(f"logger={name} needs the {module} package: pip install -e '.[{extra}]'")
    return list(dict.fromkeys(names))


def make_tracker(value: Any, run_dir: Path, config: dict[str, Any]) -> Tracker:
    """The tracker(s) a run logs to, from the `logger` key of its config."""
    trackers: list[Tracker] = []
    try:
        for name in logger_names(value):
            if name == "jsonl":
                trackers.append(JsonlTracker(run_dir / "metrics.jsonl"))
            elif name == "tensorboard":
                trackers.append(TensorBoardTracker(run_dir / "tensorboard"))
            else:
                trackers.append(WandbTracker(run_dir, config))
    except BaseException:
        MultiTracker(trackers).close()
        raise
    return trackers[0] if len(trackers) == 1 else MultiTracker(trackers)


class _ConsoleHandler(logging.Handler):
    """Log lines on the terminal, printed above a tqdm bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never stop a run
            self.handleError(record)


_run_handlers: list[logging.Handler] = []


def open_run_log(run_dir: Path) -> None:
    """From now until `close_run_log`, what the `lra` loggers say goes to
    <run>/train.log (with times) and to the terminal (without). Called once the run
    folder is the run's own, so a run refused earlier leaves no file."""
    close_run_log()
    file = logging.FileHandler(run_dir / RUN_LOG, encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = _ConsoleHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    log.setLevel(logging.INFO)
    log.propagate = False  # a library's root handler (logging.basicConfig) would print each line twice
    for handler in (file, console):
        log.addHandler(handler)
        _run_handlers.append(handler)


def close_run_log() -> None:
    """Detach and close the handlers of `open_run_log` (a no-op without a run)."""
    while _run_handlers:
        handler = _run_handlers.pop()
        log.removeHandler(handler)
        handler.close()
    log.propagate = True
