"""Run records: one JSON file per run, written atomically, read by the leaderboard.

The record holds everything needed to compare and reproduce a run: what ran
(task, model, seed, resolved config, data manifest), what came out (best
validation and test metrics), what it cost (time, throughput, memory), and
where (backend, devices, package versions, git commit).

`RunRecord` is the one typed form of a record: the writer validates into it,
the leaderboard and the tests read through it. Fields a newer writer adds that
this version does not know are kept in `extra` (and written back), so helpers
can add a field without breaking each other; a change of meaning of a known
field bumps `SCHEMA_VERSION`, and readers skip records of another version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from lra.errors import LraError

SCHEMA_VERSION = 1
RECORD = "record.json"
STATUSES = ("completed", "failed", "diverged", "interrupted")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "hydra-core", "orbax-checkpoint", "lra")


class RecordError(LraError):
    """A record that cannot be written or read as a RunRecord (one line: what is wrong)."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run. Required: what ran and how it ended; the rest is present when known."""

    task: str
    model: str
    seed: int
    status: str
    config: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    experiment: str | None = None
    data: dict[str, Any] | None = None
    started: str | None = None
    date: str | None = None
    run_dir: str | None = None
    git_commit: str | None = None
    versions: dict[str, str] | None = None
    backend: str | None = None
    device_kind: str | None = None
    device_count: int | None = None
    process_count: int | None = None
    param_count: int | None = None
    error: str | None = None
    steps: int | None = None
    stopped_by: str | None = None
    best_val: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    wall_seconds: float | None = None
    train_seconds: float | None = None
    compile_seconds: float | None = None
    steps_per_second: float | None = None
    examples_per_second: float | None = None
    peak_memory_bytes: int | None = None
    val_is_test: bool | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, payload: Any) -> RunRecord:
        """Validate a decoded record; RecordError names the first thing wrong."""
        if not isinstance(payload, dict):
            raise RecordError(f"a record is a JSON object, not {type(payload).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in payload.items() if k in known}
        extra = {k: v for k, v in payload.items() if k not in known}
        for name in ("task", "model", "seed", "status", "config"):
            if name not in values:
                raise RecordError(f"the record has no '{name}' (partial record)")
        record = cls(**values, extra=extra)
        record._check()
        return record

    def _check(self) -> None:
        types = {
            "task": str, "model": str, "seed": int, "status": str, "config": dict, "schema_version": int,
            "experiment": str, "data": dict, "best_val": dict, "test": dict, "steps": int,
            "param_count": int, "device_count": int, "process_count": int, "peak_memory_bytes": int,
            "stopped_by": str, "device_kind": str, "val_is_test": bool,
            "wall_seconds": (int, float), "train_seconds": (int, float), "compile_seconds": (int, float),
            "steps_per_second": (int, float), "examples_per_second": (int, float),
        }
        for name, kind in types.items():
            value = getattr(self, name)
            if value is None and name not in ("task", "model", "seed", "status", "config", "schema_version"):
                continue
            if isinstance(value, bool) and kind is not bool:
                raise RecordError(f"record field '{name}' is a boolean, expected {_kind(kind)}")
            if not isinstance(value, kind):
                raise RecordError(f"record field '{name}' is {type(value).__name__}, expected {_kind(kind)}")
        if self.status not in STATUSES:
            raise RecordError(f"record status '{self.status}' is not one of {', '.join(STATUSES)}")
        if self.status == "completed":
            accuracy = (self.test or {}).get("accuracy")
            if not _finite_number(accuracy):
                raise RecordError(f"a completed record needs a finite test accuracy, not {accuracy!r}")
            if not 0.0 <= accuracy <= 1.0:
                raise RecordError(f"test accuracy {accuracy} is not a fraction in [0, 1]")

    @property
    def test_accuracy(self) -> float | None:
        value = (self.test or {}).get("accuracy")
        return float(value) if _finite_number(value) else None

    def to_dict(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        payload = {k: v for k, v in payload.items() if v is not None or k == "experiment"}
        return {**self.extra, **payload}


def _kind(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_commit() -> str | None:
    """The commit of the lra checkout this code runs from, with '+dirty' if modified.

    A copy without .git (a cluster node, a container) can name it in LRA_GIT_COMMIT.
    """
    if os.environ.get("LRA_GIT_COMMIT"):
        return os.environ["LRA_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


# Settings that cannot change what a run computes: where files go, how it is watched,
# when it stops for the wall clock, how often it checkpoints, how many processes
# generate the data. Everything else (the seed included) decides a run's results.
RUN_LOCAL = (
    "progress", "runs_dir", "data_dir", "resume", "force", "logger", "preset_task",
    "trainer.max_seconds", "trainer.log_every", "trainer.checkpoint_every",
    "trainer.keep_checkpoints", "task.data.workers", "task.data.path",
)


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def result_settings(config: dict, *, seed: bool = True) -> dict[str, Any]:
    """The flattened settings of a resolved config that can change a run's results."""
    def ignored(name: str) -> bool:
        return any(name == key or name.startswith(key + ".") for key in RUN_LOCAL) or (
            not seed and name == "seed")

    return {k: v for k, v in sorted(flatten(config).items()) if not ignored(k)}


def config_hash(config: dict, *, seed: bool = False) -> str:
    """A short hash of `result_settings`: equal iff those settings are equal.

    Without the seed it names a configuration: the leaderboard groups its seeds into
    one row, and `lra sweep` skips a job whose configuration and seed completed. With
    the seed it names one run: a checkpoint is resumed only by the run it belongs to.
    A time budget is left out, so a run made of several time-limited slots is one run.
    """
    text = json.dumps(result_settings(config, seed=seed), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def strict_json(value: Any) -> Any:
    """`value` with NaN and +-Inf as None and numpy scalars as Python numbers, so that
    `json.dumps(..., allow_nan=False)` succeeds: bare NaN/Infinity are not JSON."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalar or 0-d array
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # a Path, a date: their text


def write_atomic(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write a whole file or nothing: a temporary file in the same folder, flushed and
    fsynced, renamed over `path`, then the folder fsynced so the rename survives a crash.
    Readers see the old file or the new one, never a partial or empty one."""
    path = Path(path)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory handles
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def dumps_json(payload: Any) -> str:
    return json.dumps(strict_json(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json_atomic(path: Path, payload: Any) -> None:
    write_atomic(path, dumps_json(payload))


def write_record(run_dir: str | os.PathLike, record: dict | RunRecord) -> Path:
    """Validate `record` (a dict, as lra/run.py builds it, or a RunRecord) and write it
    as run_dir/record.json. NaN and Inf (a diverged loss) are written as null."""
    if isinstance(record, dict):
        record = RunRecord.from_dict(strict_json({"schema_version": SCHEMA_VERSION, **record}))
    elif isinstance(record, RunRecord):
        record._check()
    else:
        raise RecordError(f"write_record takes a dict or a RunRecord, not {type(record).__name__}")
    return write_atomic(Path(run_dir) / RECORD, dumps_json(record.to_dict()))


def read_record(path: str | os.PathLike) -> RunRecord:
    """The record at `path`; RecordError (one line) if it is unreadable, not strict JSON,
    partial, ill-typed, or of another schema version."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(f"cannot read it ({type(err).__name__})") from None
    if not text.strip():
        raise RecordError("empty file")

    def no_constants(name: str):
        raise ValueError(f"bare {name} is not JSON")

    try:
        payload = json.loads(text, parse_constant=no_constants)
    except ValueError as err:
        raise RecordError(f"corrupt JSON ({str(err).splitlines()[0]})") from None
    if isinstance(payload, dict):
        version = payload.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordError(f"schema_version {version!r}; this lra reads version {SCHEMA_VERSION}")
    return RunRecord.from_dict(payload)


def find_records(*roots: str | os.PathLike) -> list[Path]:
    paths: list[Path] = []
    for root in roots:
        paths.extend(Path(root).rglob(RECORD))
    return sorted(set(paths))
