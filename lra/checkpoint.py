"""Checkpoints of a run: everything needed to carry on exactly where it stopped.

A checkpoint is one orbax step folder with two items:

- `state`: the arrays, as one pytree from the trainer (parameters, optimiser
  state, non-parameter model state, best-validation parameters, dropout key);
- `meta`: strict JSON: the step, whatever the trainer adds (loader position,
  best-validation metrics), the resolved config with its fingerprint, the
  layout (path, shape, dtype) and a checksum of every array.

Orbax writes a step into a temporary folder and renames it when complete, so a
kill during a write leaves the earlier checkpoints as they were. Restoring
tries the newest step first and falls back to older ones, with a one-line
warning, when a step cannot be read or its arrays do not match their
checksums (orbax itself checks no content). A checkpoint of another
configuration is refused with an `LraError` that names the difference.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lra.errors import LraError
from lra.records import config_hash, result_settings

FORMAT_VERSION = 1
CHECKPOINTS = "checkpoints"  # the folder inside a run folder
# Named first when two configurations differ, as a person names a run.
FIRST_NAMED = {"task.name": "task", "model.name": "model", "seed": "seed"}


def fingerprint(config: Mapping) -> str:
    """The run's identity (its result settings, seed included): a checkpoint is
    resumed only by the run that wrote it."""
    return config_hash(dict(config), seed=True)


def describe_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[str, str]:
    """("model=performer", "model=transformer"): the differing settings, as each side has them."""
    keys = [k for k in sorted(set(saved) | set(current)) if saved.get(k, "<unset>") != current.get(k, "<unset>")]
    order = list(FIRST_NAMED)
    keys.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
    shown, more = keys[:3], len(keys) - 3

    def side(settings: Mapping[str, Any]) -> str:
        text = ", ".join(f"{FIRST_NAMED.get(k, k)}={settings.get(k, '<unset>')}" for k in shown)
        return text + (f" (and {more} more)" if more > 0 else "")

    return side(saved), side(current)


# Arrays ----------------------------------------------------------------------

def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _storable(tree):
    """Typed PRNG keys as their raw uint32 data: every orbax version stores those."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _like_template(tree, template):
    """Undo `_storable`: wrap raw key data back where the template holds keys."""
    return jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
        tree, template,
    )


def checksums(tree) -> list[int]:
    """CRC-32 of each array's bytes (typed keys already as data): orbax checks
    no content, so a damaged file could otherwise restore as wrong numbers."""
    values = []
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            values.append(None)  # another process holds part of it (multi-host): not checked
            continue
        data = np.ascontiguousarray(np.asarray(leaf))
        values.append(zlib.crc32(data.reshape(-1).view(np.uint8)))
    return values


def layout(tree) -> list[list]:
    """[path, shape, dtype] per array: what a template must match to restore."""
    return [
        [jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)]
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


# The manager -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Restored:
    step: int
    state: Any
    meta: dict[str, Any]


def warn(message: str) -> None:
    print(f"lra: warning: {message}", file=sys.stderr, flush=True)


class Checkpoints:
    """The checkpoints of one run folder: save every so often, restore the newest good one.

    `config` is the run's resolved config (a plain dict): stored with every
    checkpoint, and compared with a checkpoint's before restoring it. `keep` is
    how many of the newest checkpoints stay, besides the one at `best_step`.
    """

    def __init__(self, directory: str | Path, config: Mapping, *, keep: int = 2,
                 async_save: bool = True, read_only: bool = False):
        if keep < 1:
            raise LraError(f"trainer.keep_checkpoints must be at least 1, got {keep}")
        self.directory = Path(directory).absolute()
        if read_only and not self.directory.is_dir():
            raise LraError(f"{self.directory} holds no checkpoint; is it a run folder of this lra?")
        self.config = json.loads(json.dumps(dict(config), default=str))
        self.settings = result_settings(self.config)
        self.fingerprint = fingerprint(self.config)
        self.keep = int(keep)
        self.read_only = read_only
        self._best_step: int | None = None
        self._unreadable: set[int] = set()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # retention is ours: the newest `keep` plus the best
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,  # a write cut short leaves a temporary folder
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    @property
    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, meta: Mapping[str, Any], *, best_step: int | None = None,
             wait: bool = False) -> None:
        """Checkpoint `state` (a pytree of arrays) and `meta` (strict JSON) as step `step`.

        Asynchronous unless `wait`: orbax copies the arrays off the device before
        this returns, so the trainer may go on (and donate its buffers) at once.
        """
        self._manager.wait_until_finished()  # the previous save is complete before anything is pruned
        if best_step is not None:
            self._best_step = int(best_step)
        for bad in sorted(self._unreadable & set(self.steps)):
            self._manager.delete(bad)
        self._unreadable.clear()
        if step in self.steps:  # e.g. the final save of a run resumed at its last step
            return
        self._prune()
        storable = _storable(state)
        payload = {
            **meta,
            "step": int(step),
            "format": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "layout": layout(storable),
            "checksums": checksums(storable),
        }
        try:
            json.dumps(payload, allow_nan=False)
        except ValueError as err:
            raise ValueError(f"checkpoint meta must be strict JSON (no NaN/Infinity): {err}") from None
        self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(storable), meta=ocp.args.JsonSave(payload)),
            force=True,
        )
        if wait:
            self.wait()

    def wait(self) -> None:
        """Block until every save is on disk, then drop checkpoints beyond `keep`."""
        self._manager.wait_until_finished()
        self._prune()

    def _prune(self) -> None:
        if self.read_only:
            return
        steps = self.steps
        keep = set(steps[-self.keep:])
        if self._best_step in steps:
            keep.add(self._best_step)
        for step in steps:
            if step not in keep:
                self._manager.delete(step)

    def read_meta(self, step: int) -> dict[str, Any]:
        return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def newest_meta(self) -> dict[str, Any] | None:
        """The meta of the newest checkpoint whose meta can be read (warning about the others)."""
        newest_first = sorted(self.steps, reverse=True)
        for index, step in enumerate(newest_first):
            try:
                return self.read_meta(step)
            except Exception as err:  # noqa: BLE001
                self._skip(step, newest_first[index + 1:], err)
        return None

    def check_compatible(self, meta: Mapping[str, Any], hint: str) -> None:
        """Refuse a checkpoint of another configuration, naming the difference."""
        if int(meta.get("format", 0)) > FORMAT_VERSION:
            raise LraError(f"checkpoint in {self.directory} has format {meta['format']}, newer than this "
                           f"lra reads ({FORMAT_VERSION}); update lra or {hint}")
        if meta.get("fingerprint") == self.fingerprint:
            return
        saved, current = describe_difference(result_settings(meta.get("config", {})), self.settings)
        raise LraError(f"checkpoint in {self.directory} is for {saved}, this run is {current}; {hint}")

    def restore(self, template, *, hint: str = "use a new runs_dir") -> Restored | None:
        """The newest readable checkpoint, its arrays shaped and placed like `template`.

        None when there is none. An unreadable step is skipped with a warning
        (and deleted at the next save); a checkpoint of another configuration or
        of other array shapes raises LraError, whose message ends with `hint`.
        """
        storable_template = _storable(template)
        expected = layout(storable_template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, storable_template)
        newest_first = sorted(self.steps, reverse=True)
        for index, step in enumerate(newest_first):
            try:
                meta = self.read_meta(step)
            except Exception as err:  # noqa: BLE001 - any read failure means: try an older one
                self._skip(step, newest_first[index + 1:], err)
                continue
            self.check_compatible(meta, hint)
            if meta.get("layout") != expected:
                raise LraError(self._layout_difference(meta.get("layout") or [], expected, hint))
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                )["state"]
                if checksums(restored) != meta["checksums"]:
                    raise ValueError("the arrays do not match their checksums")
            except Exception as err:  # noqa: BLE001
                self._skip(step, newest_first[index + 1:], err)
                continue
            restored = jax.tree.unflatten(jax.tree.structure(storable_template), jax.tree.leaves(restored))
            return Restored(step, _like_template(restored, template), meta)
        return None

    def _skip(self, step: int, older: Iterable[int], err: Exception) -> None:
        self._unreadable.add(step)
        older = list(older)
        then = f"falling back to step {older[0]}" if older else "no older checkpoint; starting afresh"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        warn(f"checkpoint step {step} in {self.directory} is unreadable "
             f"({type(err).__name__}: {reason}); {then}")

    def _layout_difference(self, saved: list, expected: list, hint: str) -> str:
        saved_by_path = {tuple(entry)[0]: entry for entry in saved}
        for entry in expected:
            other = saved_by_path.get(entry[0])
            if other != entry:
                was = f"{other[1]} {other[2]}" if other else "absent"
                return (f"checkpoint in {self.directory} does not fit this model: array {entry[0]} is "
                        f"{was} there, {entry[1]} {entry[2]} here; {hint}")
        extra = sorted(set(saved_by_path) - {entry[0] for entry in expected})
        return (f"checkpoint in {self.directory} does not fit this model: it has array(s) "
                f"{', '.join(extra[:3])} that this model lacks; {hint}")

    def close(self) -> None:
        self.wait()
        self._manager.close()

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Run folders: who holds one, which one a rerun carries on ---------------------

CLAIM = ".claimed"
FINISHED = ("completed", "diverged")  # a rerun does not repeat these (unless forced)


def read_claim(run_dir: Path) -> dict[str, Any]:
    """{"pid", "host", "fingerprint"} of the process that claimed `run_dir` ({} if unknown)."""
    try:
        claim = json.loads((Path(run_dir) / CLAIM).read_text())
    except (OSError, ValueError):  # none, being written, or the older form (the pid alone)
        return {}
    return claim if isinstance(claim, dict) else {}


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def claim_is_live(run_dir: Path) -> bool:
    """Whether a process holds `run_dir`: the kernel lock on its claim, which dies
    with the process (kill -9 included), so a stale claim never blocks a rerun."""
    try:
        fd = os.open(Path(run_dir) / CLAIM, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return not _try_lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)  # also releases the shared lock


class Claim:
    """This process's hold on a run folder: a locked `.claimed` naming it, until released."""

    def __init__(self, run_dir: Path, fingerprint: str | None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / CLAIM, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(20):  # another process may be peeking (claim_is_live) right now
            if _try_lock(fd, fcntl.LOCK_EX):
                break
            time.sleep(0.05)
        else:
            os.close(fd)
            pid = read_claim(self.run_dir).get("pid")
            who = f" (pid {pid})" if pid else ""
            raise LraError(f"run folder {self.run_dir} belongs to a running process{who}; wait for it, "
                           "or give hydra.run.dir=<a new folder>")
        claim = {"pid": os.getpid(), "host": socket.gethostname(), "fingerprint": fingerprint}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(claim) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def record_status(run_dir: Path) -> str | None:
    """The status in run_dir/record.json; None when there is no readable record."""
    try:
        status = json.loads((Path(run_dir) / "record.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def run_state(run_dir: Path, fingerprint: str) -> str | None:
    """"finished", "running" or "unfinished" for a run folder of this fingerprint;
    None when `run_dir` holds no run of it."""
    run_dir = Path(run_dir)
    if read_claim(run_dir).get("fingerprint") != fingerprint:
        return None
    if record_status(run_dir) in FINISHED:
        return "finished"
    return "running" if claim_is_live(run_dir) else "unfinished"


def find_run(runs_dir: Path, fingerprint: str) -> tuple[Path, str] | None:
    """The run folder under `runs_dir` of a config with this fingerprint, and its
    `run_state`: the newest unfinished one, else a running one, else a finished
    one. None when no run of this config exists there."""
    found: dict[str, list[tuple[float, Path]]] = {"unfinished": [], "running": [], "finished": []}
    for folder, subfolders, files in os.walk(runs_dir):
        if CLAIM not in files:
            subfolders[:] = [d for d in subfolders if d != CHECKPOINTS]
            continue
        subfolders[:] = []  # a run folder holds no other runs
        state = run_state(Path(folder), fingerprint)
        if state:
            found[state].append(((Path(folder) / CLAIM).stat().st_mtime, Path(folder)))
    for state in ("unfinished", "running", "finished"):
        if found[state]:
            return max(found[state])[1], state
    return None


def trim_metrics(path: Path, step: int) -> None:
    """Keep the rows of a metrics file that a run resumed at `step` will not log
    again: none after `step`, no test rows, no line cut short by a kill."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", step + 1) <= step and not any(
                key.startswith("test/") for key in row):
            kept.append(line + "\n")
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(partial, "w", encoding="utf-8") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


# Signals -------------------------------------------------------------------------

class StopSignals:
    """SIGTERM and SIGINT ask the run to stop at the next step boundary, where it
    saves a checkpoint and records `interrupted`; a second signal exits at once
    (os._exit: orbax and the record writer only ever rename finished files, so
    the last good checkpoint and record stay as they were)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received else None

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            os._exit(128 + signum)
        self.received = signum
        warn(f"{signal.Signals(signum).name}: stopping after this step with a checkpoint "
             "(a second signal stops at once)")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # only there can Python catch signals
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
