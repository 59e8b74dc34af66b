"""Run records: one JSON file per run, written atomically, read by the leaderboard.

The record holds everything needed to compare and reproduce a run: what ran
(task, model, seed, resolved config, data manifest), what came out (best
validation and test metrics), what it cost (time, throughput, memory), and
where (backend, devices, package versions, git commit).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

SCHEMA_VERSION = 1
RECORD = "record.json"
STATUSES = ("completed", "failed", "diverged", "interrupted")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "hydra-core", "orbax-checkpoint", "lra")


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


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_record(run_dir: Path, record: dict) -> Path:
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}")
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(run_dir) / RECORD
    write_json_atomic(path, record)
    return path


def find_records(*roots: str | os.PathLike) -> list[Path]:
    paths: list[Path] = []
    for root in roots:
        paths.extend(Path(root).rglob(RECORD))
    return sorted(set(paths))
