"""Prepared data caches: every task's splits as plain .npy arrays plus a manifest.

A cache lives in `<data_dir>/<task>/<key>/` where `key` hashes everything that
shapes the arrays (the task's `data` config, `seq_len`, the task's version).
It is written into a temporary folder and renamed into place, so a cache is
either complete or absent. Training memory-maps the arrays and never needs the
original source (or TensorFlow) again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lra.errors import LraError
from lra.tasks.base import SPLITS, Task, check_split, get_task, sha256_file

MANIFEST = "manifest.json"


def _plain(cfg) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


# Data options that change how fast a cache is built, never what it holds.
NOT_SHAPING = ("workers",)


def cache_key(task: Task, task_cfg) -> str:
    data = {k: v for k, v in (_plain(task_cfg.data) or {}).items() if k not in NOT_SHAPING}
    shaping = {
        "task": task.name,
        "version": task.version,
        "seq_len": int(task_cfg.seq_len),
        "data": data,
    }
    blob = json.dumps(shaping, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_dir(task_cfg, data_dir: str | os.PathLike) -> Path:
    task = get_task(task_cfg.name)
    return Path(data_dir) / task.name / cache_key(task, task_cfg)


def prepare_command(task_cfg) -> str:
    """The exact command that prepares this task's data as configured."""
    data = _plain(task_cfg.data) or {}
    args = " ".join(f"task.data.{k}={_cli_value(v)}" for k, v in sorted(data.items()))
    return f"lra data prepare {task_cfg.name} {args}".strip()


def _cli_value(value) -> str:
    if value is None:
        return "null"
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"'{text}'" if any(c in text for c in " ,[]{}") else text


def prepare(task_cfg, data_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Build the task's arrays from its source and store them as a cache."""
    task = get_task(task_cfg.name)
    task.check(task_cfg)
    target = cache_dir(task_cfg, data_dir)
    if target.exists() and not force:
        return target
    start = time.perf_counter()
    built = task.build(task_cfg)
    seconds = time.perf_counter() - start
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files, counts = {}, {}
        for split in SPLITS:
            arrays = built.splits[split]
            check_split(task, split, arrays, int(task_cfg.seq_len))
            labels = np.asarray(arrays["labels"], np.int32)
            counts[split] = {
                "examples": int(len(labels)),
                "per_class": np.bincount(labels, minlength=task.num_classes).tolist(),
            }
            for field, array in (("inputs", arrays["inputs"]), ("labels", labels)):
                name = f"{split}_{field}.npy"
                np.save(tmp / name, np.ascontiguousarray(array))
                files[name] = sha256_file(tmp / name)
        manifest = {
            "task": task.name,
            "version": task.version,
            "key": target.name,
            "seq_len": int(task_cfg.seq_len),
            "data": _plain(task_cfg.data),
            "counts": counts,
            "files": files,
            "source": built.meta,
            "warnings": list(built.warnings),
            "val_is_test": bool(built.val_is_test),
            "build_seconds": round(seconds, 2),
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if force and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_manifest(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LraError(f"{path} is not a complete prepared cache ({err}); delete it and prepare again")


def open_prepared(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Memory-map the arrays of every split of a cache."""
    manifest = read_manifest(path)
    splits = {}
    for split in SPLITS:
        splits[split] = {}
        for field in ("inputs", "labels"):
            file = path / f"{split}_{field}.npy"
            if f"{split}_{field}.npy" not in manifest["files"] or not file.exists():
                raise LraError(f"{file} is missing; delete {path} and prepare again")
            try:
                splits[split][field] = np.load(file, mmap_mode="r")
            except ValueError as err:
                raise LraError(f"{file} is corrupt ({err}); delete {path} and prepare again")
    return splits


def load(task_cfg, data_dir: str | os.PathLike) -> tuple[dict, dict]:
    """The task's prepared splits and manifest; cheap generators are prepared on the spot."""
    task = get_task(task_cfg.name)
    path = cache_dir(task_cfg, data_dir)
    if not (path / MANIFEST).exists():
        if not task.auto_prepare:
            raise LraError(
                f"no prepared data for task '{task.name}' in {path.parent}; "
                f"run: {prepare_command(task_cfg)}"
            )
        path = prepare(task_cfg, data_dir)
    return open_prepared(path), read_manifest(path)


def verify(path: Path) -> list[str]:
    """Files whose checksum no longer matches the manifest (empty when intact)."""
    manifest = read_manifest(path)
    bad = []
    for name, digest in sorted(manifest["files"].items()):
        file = path / name
        if not file.exists() or sha256_file(file) != digest:
            bad.append(str(file))
    return bad


def list_prepared(data_dir: str | os.PathLike) -> list[tuple[Path, dict]]:
    root = Path(data_dir)
    found = []
    for manifest in sorted(root.glob(f"*/*/{MANIFEST}")):
        found.append((manifest.parent, json.loads(manifest.read_text())))
    return found
