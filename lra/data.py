"""Prepared data caches: every task's splits as plain .npy arrays plus a manifest.

A cache lives in `<data_dir>/<task>/<key>/` where `key` hashes everything that
shapes the arrays (the task's `data` config, `seq_len`, the task's version).
It is written into a temporary folder and renamed into place, so a cache is
either complete or absent; a lock file lets several jobs that need the same
cache at once build it once. Training memory-maps the arrays and never needs the
original source (or TensorFlow) again.

Evaluation splits are shuffled once, with a fixed seed, when the cache is
built: sources list their labels in order (CIFAR's validation images by class,
IMDb's negatives first), so evaluating the first K batches would otherwise see
one class. The training split is shuffled every epoch by the loader instead.

Trust: every use checks the files' sizes and the arrays' shapes against the
manifest; the checksums are checked on first use and again whenever a file's
size or modification time changes, and the result is stamped in `.verified`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from lra.errors import LraError
from lra.tasks.base import SPLITS, Task, check_split, get_task, sha256_file

MANIFEST = "manifest.json"
VERIFIED = ".verified"
# 2: evaluation splits shuffled once at build time; file sizes in the manifest.
CACHE_FORMAT = 2
EVAL_SHUFFLE_SEED = 0
# Data options that say where the source lies, not what it holds: a cache
# prepared from a local copy is found by training without repeating them.
LOCATION_KEYS = ("source", "path")


def _plain(cfg) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


# Data options that change how fast a cache is built, never what it holds.
NOT_SHAPING = ("workers",)


def cache_key(task: Task, task_cfg) -> str:
    data = {k: v for k, v in (_plain(task_cfg.data) or {}).items() if k not in NOT_SHAPING}
    shaping = {
        "task": task.name,
        "version": task.version,
        "format": CACHE_FORMAT,
        "seq_len": int(task_cfg.seq_len),
        "data": data,
    }
    blob = json.dumps(shaping, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_dir(task_cfg, data_dir: str | os.PathLike) -> Path:
    task = get_task(task_cfg.name)
    return Path(data_dir) / task.name / cache_key(task, task_cfg)


def prepare_command(task_cfg) -> str:
    """The exact command that prepares this task's data as configured (the sequence
    length is part of the cache key, so a preset's shorter length is named too)."""
    data = _plain(task_cfg.data) or {}
    args = " ".join(f"task.data.{k}={_cli_value(v)}" for k, v in sorted(data.items()))
    return f"lra data prepare {task_cfg.name} task.seq_len={int(task_cfg.seq_len)} {args}".strip()


def _cli_value(value) -> str:
    if value is None:
        return "null"
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"'{text}'" if any(c in text for c in " ,[]{}") else text


def eval_order(split: str, size: int) -> np.ndarray:
    """The fixed order an evaluation split is stored in (identity for train)."""
    if split == "train":
        return np.arange(size)
    return np.random.default_rng([EVAL_SHUFFLE_SEED, SPLITS.index(split)]).permutation(size)


@contextlib.contextmanager
def _build_lock(target: Path):
    """Held while one process builds `target`; others wait, then find it built."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(task_cfg, data_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Build the task's arrays from its source and store them as a cache."""
    task = get_task(task_cfg.name)
    task.check(task_cfg)
    target = cache_dir(task_cfg, data_dir)
    if target.exists() and not force:
        return target
    with _build_lock(target):
        if (target / MANIFEST).exists() and not force:  # built by another job meanwhile
            return target
        _build(task, task_cfg, target, force)
    return target


def _build(task: Task, task_cfg, target: Path, force: bool) -> None:
    start = time.perf_counter()
    built = task.build(task_cfg)
    seconds = time.perf_counter() - start
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files, sizes, counts = {}, {}, {}
        for split in SPLITS:
            arrays = built.splits[split]
            check_split(task, split, arrays, int(task_cfg.seq_len))
            order = eval_order(split, len(arrays["labels"]))
            labels = np.asarray(arrays["labels"], np.int32)[order]
            counts[split] = {
                "examples": int(len(labels)),
                "per_class": np.bincount(labels, minlength=task.num_classes).tolist(),
            }
            for field, array in (("inputs", np.asarray(arrays["inputs"])[order]), ("labels", labels)):
                name = f"{split}_{field}.npy"
                np.save(tmp / name, np.ascontiguousarray(array))
                files[name] = sha256_file(tmp / name)
                sizes[name] = (tmp / name).stat().st_size
        manifest = {
            "task": task.name,
            "version": task.version,
            "format": CACHE_FORMAT,
            "key": target.name,
            "seq_len": int(task_cfg.seq_len),
            "data": _plain(task_cfg.data),
            "counts": counts,
            "files": files,
            "sizes": sizes,
            "eval_order": f"val and test shuffled once: numpy default_rng([{EVAL_SHUFFLE_SEED}, split index])",
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


_MANIFEST_FIELDS = ("task", "key", "seq_len", "counts", "files")


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LraError(
            f"{path} is not a complete prepared cache ({type(err).__name__}: {err}); "
            "delete it and prepare again"
        ) from None
    missing = [f for f in _MANIFEST_FIELDS if not isinstance(manifest, dict) or f not in manifest]
    if missing:
        raise LraError(
            f"{path / MANIFEST} lacks {', '.join(missing)}; delete {path} and prepare again"
        )
    return manifest


def open_prepared(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Memory-map the arrays of every split of a cache, after checking them (see the module doc)."""
    manifest = read_manifest(path)
    if manifest.get("format") != CACHE_FORMAT:
        raise LraError(
            f"{path} was prepared by an older lra (cache format {manifest.get('format', 1)}, "
            f"now {CACHE_FORMAT}: evaluation splits are shuffled once); delete it and prepare again"
        )
    splits: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        splits[split] = {}
        for field in ("inputs", "labels"):
            name = f"{split}_{field}.npy"
            file = path / name
            if name not in manifest["files"] or not file.exists():
                raise LraError(f"{file} is missing; delete {path} and prepare again")
            size, expected = file.stat().st_size, manifest.get("sizes", {}).get(name)
            if size == 0 or (expected is not None and size != expected):
                raise LraError(
                    f"{file} has {size} bytes, the manifest says {expected}; "
                    f"delete {path} and prepare again"
                )
            try:
                splits[split][field] = np.load(file, mmap_mode="r")
            except (ValueError, OSError, EOFError) as err:
                raise LraError(f"{file} is corrupt ({err}); delete {path} and prepare again") from None
        _check_shapes(path, manifest, split, splits[split])
    _verify_once(path, manifest)
    return splits


def _check_shapes(path: Path, manifest: dict, split: str, arrays: dict[str, np.ndarray]) -> None:
    n = manifest["counts"][split]["examples"]
    inputs, labels = arrays["inputs"], arrays["labels"]
    if labels.shape != (n,) or inputs.shape[:1] != (n,) or inputs.shape[-1] != manifest["seq_len"]:
        raise LraError(
            f"{path}/{split}: arrays of shape {inputs.shape} and {labels.shape} do not match the "
            f"manifest ({n} examples of length {manifest['seq_len']}); delete {path} and prepare again"
        )


def _file_state(path: Path, manifest: dict) -> dict[str, list[int]]:
    return {name: [(path / name).stat().st_size, (path / name).stat().st_mtime_ns]
            for name in sorted(manifest["files"])}


def _verify_once(path: Path, manifest: dict) -> None:
    """Check the checksums unless `.verified` says they were checked on these very files."""
    stamp = {"manifest_sha256": hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest(),
             "files": _file_state(path, manifest)}
    try:
        if json.loads((path / VERIFIED).read_text()) == stamp:
            return
    except (OSError, json.JSONDecodeError):
        pass
    bad = verify(path)
    if bad:
        raise LraError(
            f"{path}: {', '.join(Path(b).name for b in bad)} no longer match the manifest's "
            f"checksums; delete {path} and prepare again"
        )
    tmp = path / f"{VERIFIED}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(stamp, sort_keys=True) + "\n")
        os.replace(tmp, path / VERIFIED)
    except OSError:  # a read-only cache: verified now, verified again next time
        tmp.unlink(missing_ok=True)


def load(task_cfg, data_dir: str | os.PathLike) -> tuple[dict, dict]:
    """The task's prepared splits and manifest; cheap generators are prepared on the spot.

    When the configured cache is absent but exactly one cache of the task differs
    from the config only in where its source lay (`LOCATION_KEYS`), that one is
    used, the config's data options are set to the cache's, and a line says so.
    """
    task = get_task(task_cfg.name)
    path = cache_dir(task_cfg, data_dir)
    if not (path / MANIFEST).exists():
        if task.auto_prepare:
            path = prepare(task_cfg, data_dir)
        else:
            path = _the_one_prepared(task, task_cfg, data_dir)
    return open_prepared(path), read_manifest(path)


def _the_one_prepared(task: Task, task_cfg, data_dir) -> Path:
    wanted = _what_it_holds(_plain(task_cfg.data) or {})
    found = [
        (path, manifest) for path, manifest in list_prepared(data_dir)
        if manifest.get("task") == task.name and manifest.get("version") == task.version
        and manifest.get("format") == CACHE_FORMAT and manifest.get("seq_len") == int(task_cfg.seq_len)
        and _what_it_holds(manifest.get("data") or {}) == wanted
    ]
    if len(found) == 1:
        path, manifest = found[0]
        picks = _location_overrides(manifest)
        print(f"using the one prepared {task.name} cache, {path} ({picks})", file=sys.stderr)
        with open_dict(task_cfg):
            task_cfg.data = manifest["data"]
        return path
    where = Path(data_dir) / task.name
    if not found:
        raise LraError(f"no prepared data for task '{task.name}' in {where}; run: {prepare_command(task_cfg)}")
    choices = "; ".join(f"{path.name}: {_location_overrides(m)}" for path, m in found)
    raise LraError(f"{len(found)} prepared caches of task '{task.name}' in {where} fit; pick one with its "
                   f"overrides ({choices})")


def _what_it_holds(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in LOCATION_KEYS + NOT_SHAPING}


def _location_overrides(manifest: dict) -> str:
    data = manifest.get("data") or {}
    return " ".join(f"task.data.{k}={_cli_value(data[k])}" for k in LOCATION_KEYS if k in data)


def verify(path: Path) -> list[str]:
    """Files whose checksum no longer matches the manifest (empty when intact)."""
    manifest = read_manifest(path)
    bad = []
    for name, digest in sorted(manifest["files"].items()):
        file = path / name
        if not file.exists() or sha256_file(file) != digest:
            bad.append(str(file))
    return bad


def cache_paths(data_dir: str | os.PathLike) -> list[Path]:
    """Every folder under `data_dir` that holds a cache manifest, readable or not."""
    return sorted(m.parent for m in Path(data_dir).glob(f"*/*/{MANIFEST}"))


def list_prepared(data_dir: str | os.PathLike) -> list[tuple[Path, dict]]:
    """Every cache under `data_dir` with its manifest (unreadable manifests skipped)."""
    found = []
    for path in cache_paths(data_dir):
        try:
            found.append((path, json.loads((path / MANIFEST).read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return found


_AUDIT_ROWS = 4096  # rows hashed per block, so that a large memory-mapped split stays on disk


def _row_digests(inputs: np.ndarray) -> list[bytes]:
    out = []
    for start in range(0, len(inputs), _AUDIT_ROWS):
        block = np.ascontiguousarray(inputs[start : start + _AUDIT_ROWS])
        flat = block.reshape(len(block), -1)
        out += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
    return out


def _lengths(inputs: np.ndarray) -> np.ndarray:
    """Tokens before the right padding, per sequence (per document for pair tasks)."""
    out = []
    for start in range(0, len(inputs), _AUDIT_ROWS):
        rows = np.asarray(inputs[start : start + _AUDIT_ROWS])
        rows = rows.reshape(-1, rows.shape[-1]) != 0
        last = rows.shape[1] - np.argmax(rows[:, ::-1], axis=1)
        out.append(np.where(rows.any(axis=1), last, 0))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def audit(path: Path) -> dict[str, Any]:
    """Leakage and data facts of a cache: exact duplicate sequences within and across
    splits (hash of each example's tokens), class balance and length statistics
    per split, and whether validation is the test split."""
    manifest = read_manifest(path)
    splits = open_prepared(path)
    digests = {split: _row_digests(splits[split]["inputs"]) for split in SPLITS}
    labels = {split: np.asarray(splits[split]["labels"]) for split in SPLITS}
    report: dict[str, Any] = {"val_is_test": bool(manifest.get("val_is_test", False)), "splits": {}}
    for split in SPLITS:
        lengths = _lengths(splits[split]["inputs"])
        counts = np.bincount(labels[split], minlength=len(manifest["counts"][split]["per_class"]))
        report["splits"][split] = {
            "examples": len(digests[split]),
            "duplicates": len(digests[split]) - len(set(digests[split])),
            "class_share": [round(float(c) / max(len(labels[split]), 1), 4) for c in counts],
            "length": {
                "min": int(lengths.min()) if len(lengths) else 0,
                "mean": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
                "max": int(lengths.max()) if len(lengths) else 0,
                "full": int(np.count_nonzero(lengths == splits[split]["inputs"].shape[-1])),
            },
        }
    report["across"] = {}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            seen = set(digests[a])
            report["across"][f"{a}-{b}"] = sum(d in seen for d in digests[b])
    return report
