"""`lra train` minus the command line: validate, load data, train, test, record.

Everything that can be wrong with the input is checked before the run directory
gets any file of ours, so a bad override leaves no partial record behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from lra import data as lra_data
from lra.checkpoint import (
    CHECKPOINTS, CLAIM, Checkpoints, Claim, StopSignals, find_run, fingerprint, read_claim,
    run_state, trim_metrics,
)
from lra.config import check_keys
from lra.errors import LraError
from lra.loader import BatchLoader
from lra.memory import check_fits
from lra.models import EncoderConfig, build_model, check_model
from lra.presets import check_preset
from lra.records import RECORD, RUN_LOCAL, git_commit, package_versions, utc_now, write_record
from lra.registry import load_all
from lra.tasks.base import TaskSpec, get_task
from lra.tracking import Tracker, close_run_log, log, logger_names, make_tracker, open_run_log
from lra.trainer import PRECISIONS, Trainer, TrainerConfig, peak_memory_bytes

# The encoder options a config may set: every EncoderConfig field but those the
# task (vocab_size, max_len) and trainer.precision (dtype) decide.
ENCODER_FIELDS = tuple(
    f.name for f in dataclasses.fields(EncoderConfig) if f.name not in ("vocab_size", "max_len", "dtype")
)


def model_options(cfg: DictConfig) -> dict[str, Any]:
    options = OmegaConf.to_container(cfg.model, resolve=True)
    options.pop("name")
    return options


def encoder_config(cfg: DictConfig, spec: TaskSpec) -> EncoderConfig:
    unknown = set(cfg.encoder) - set(ENCODER_FIELDS)
    if unknown:
        raise LraError(
            f"unknown encoder option(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(ENCODER_FIELDS)}"
        )
    return EncoderConfig(  # an option the config does not set takes the dataclass default
        vocab_size=spec.vocab_size,
        max_len=spec.seq_len,
        dtype=PRECISIONS.get(cfg.trainer.precision),
        **{field: cfg.encoder[field] for field in ENCODER_FIELDS if field in cfg.encoder},
    )


def validate(cfg: DictConfig) -> tuple[TaskSpec, EncoderConfig]:
    """All config-time checks: seed, names, trainer, task and model against the task."""
    spec, enc, _ = checked(cfg)
    return spec, enc


def checked(cfg: DictConfig) -> tuple[TaskSpec, EncoderConfig, TrainerConfig]:
    """`validate`, also returning the typed trainer options (what a run uses)."""
    try:
        return _validate(cfg)
    except (ValueError, TypeError) as err:  # e.g. task.seq_len=abc
        raise LraError(f"a config value has the wrong type ({err}); fix the override")


def check_seed(seed) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LraError(f"seed must be an integer >= 0, got {seed!r}")
    return seed


def _validate(cfg: DictConfig) -> tuple[TaskSpec, EncoderConfig, TrainerConfig]:
    load_all()
    check_seed(cfg.seed)
    task = get_task(cfg.task.name)
    check_keys(cfg)
    check_preset(cfg)
    task.check(cfg.task)
    trainer = TrainerConfig.from_config(cfg.trainer)
    trainer.check_devices(jax.device_count())
    logger_names(cfg.logger)
    spec = task.spec(cfg.task)
    enc = encoder_config(cfg, spec)
    check_model(cfg.model.name, model_options(cfg), enc)
    return spec, enc, trainer


def build(cfg: DictConfig, spec: TaskSpec, enc: EncoderConfig) -> nnx.Module:
    return build_model(
        cfg.model.name,
        model_options(cfg),
        enc,
        spec.num_classes,
        pair=spec.pair,
        interaction=cfg.task.get("interaction", "concat"),
        rngs=nnx.Rngs(int(cfg.seed)),
    )


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
    }


def stored_config(run_dir: Path, cfg: DictConfig | None = None) -> DictConfig:
    """The config a run folder's newest checkpoint was made with; the settings that
    cannot change results (RUN_LOCAL: max_seconds, progress, data_dir...) are
    taken from `cfg`, this command's config, where it has them."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        raise LraError(f"{run_dir} has no checkpoints; give the folder of a run (runs/<task>/<model>/...)")
    meta = Checkpoints(folder, {}, read_only=True).newest_meta()
    if meta is None:
        raise LraError(f"{run_dir} has no readable checkpoint")
    stored = OmegaConf.create(meta["config"])
    for key in RUN_LOCAL if cfg is not None else ():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            OmegaConf.update(stored, key, value, force_add=True)
    return stored


def choose_run_dir(cfg: DictConfig, run_dir: Path, key: str) -> tuple[Path, str | None]:
    """Where this run goes, and the state of the run already there (run_state), if any.

    A rerun of a config finds its run under runs_dir (or in a fixed run_dir): an
    unfinished one is resumed, a finished one is not rerun, a running one is left
    alone; force=true always starts a new one.
    """
    holder = read_claim(run_dir).get("fingerprint")
    if cfg.get("force"):
        if (run_dir / CLAIM).exists():
            raise LraError(f"force=true starts a new run, but {run_dir} holds one; give a new hydra.run.dir")
        return run_dir, None
    if holder is not None and holder != key:
        raise LraError(f"run folder {run_dir} holds a run of another configuration; give a new "
                       f"hydra.run.dir, or resume={run_dir} to carry on that run")
    state = run_state(run_dir, key)
    if state:
        return run_dir, state
    found = find_run(Path(cfg.runs_dir), key)
    return found if found else (run_dir, None)


def train_and_record(cfg: DictConfig, run_dir: Path, *, tracker: Tracker | None = None,
                     progress: bool = True, experiment: str | None = None,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """Run one training job described by a composed config and write its record.

    `experiment` names the preset the config was composed with (the leaderboard
    keeps preset runs apart from runs of the task's own configuration);
    `overrides`, the command line it was composed from (`lra train --rerun`). A
    rerun of the same config carries on its unfinished run (see `choose_run_dir`);
    `resume=<run dir>` carries on that run with its own config.
    """
    run_dir = Path(run_dir)
    if cfg.get("resume"):
        run_dir, cfg = Path(cfg.resume), stored_config(cfg.resume, cfg)
    spec, enc, trainer_cfg = checked(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    key = fingerprint(config)
    asked, (run_dir, state) = run_dir, choose_run_dir(cfg, run_dir, key)
    if state == "finished":
        print(f"lra train: already finished: {run_dir} (force=true runs it again)", file=sys.stderr)
        return json.loads((run_dir / RECORD).read_text())
    if state == "running":
        raise LraError(f"this run is in progress in {run_dir} (pid {read_claim(run_dir).get('pid')}); "
                       "wait for it, or force=true for a separate run")
    if asked != run_dir and asked.is_dir():  # a sweep job's folder Hydra made: ours is the old one
        _remove_if_empty(asked)
    splits, manifest = lra_data.load(cfg.task, cfg.data_dir)
    seed = int(cfg.seed)

    def loader(name: str, position: dict | None = None) -> BatchLoader:
        return BatchLoader(
            splits[name],
            trainer_cfg.batch_size if name == "train" else trainer_cfg.eval_batch_size,
            train=name == "train",
            seed=seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            state=position,
        )

    trainer = Trainer(build(cfg, spec, enc), trainer_cfg, seed=seed)
    # Compiled before the folder is claimed: a step that cannot fit is refused with no file written.
    check_fits(trainer.compile_train_step(splits["train"]["inputs"].shape[1:]), jax.local_devices()[0])
    claim = Claim(run_dir, key)
    open_run_log(run_dir)
    try:
        return _train_claimed(cfg, run_dir, spec, trainer, trainer_cfg, claim, manifest, loader, state,
                              tracker=tracker, progress=progress, experiment=experiment,
                              overrides=overrides)
    finally:
        close_run_log()


def _train_claimed(cfg, run_dir, spec, trainer, trainer_cfg, claim, manifest, loader, state, *,
                   tracker, progress, experiment, overrides) -> dict[str, Any]:
    """The run in its claimed folder: restore, train, test, record."""
    log.info("lra train %s", " ".join(overrides or []))
    seed = int(cfg.seed)
    config = OmegaConf.to_container(cfg, resolve=True)
    started, wall = utc_now(), time.perf_counter()
    record: dict[str, Any] = {
        "task": spec.name,
        "model": cfg.model.name,
        "seed": seed,
        "experiment": experiment,
        "overrides": overrides,
        "config": config,
        "data": {"key": manifest["key"], "source": manifest.get("source"), "counts": manifest["counts"],
                 "warnings": manifest.get("warnings", [])},
        "val_is_test": manifest.get("val_is_test", False),
        "started": started,
        "run_dir": str(run_dir),
        "git_commit": git_commit(),
        "versions": package_versions(),
        **device_info(),
    }
    checkpoints = Checkpoints(run_dir / CHECKPOINTS, config, keep=trainer_cfg.keep_checkpoints)
    with StopSignals() as stop:
        try:
            record["param_count"] = trainer.param_count
            meta = trainer.restore(checkpoints, hint=f"give a new hydra.run.dir, or resume={run_dir}")
            if meta is not None or state:
                print(f"lra train: resuming {run_dir} at step {trainer.step} of {trainer_cfg.max_steps}",
                      file=sys.stderr)
            trim_metrics(run_dir / "metrics.jsonl", trainer.step)
            tracker = trainer.tracker = tracker or make_tracker(cfg.logger, run_dir, config)
            fit = trainer.fit(loader("train", meta and meta["loader"]), loader("val"), progress=progress,
                              checkpoints=checkpoints, stop=stop)
            checkpoints.wait()
            # a finished run is tested; so is one the time budget stopped (a provisional result)
            test = None
            if fit["status"] == "completed" or fit["stopped_by"] == "max_seconds":
                test = trainer.evaluate(fit["best_params"], fit["best_model_state"], loader("test"),
                                        keep_predictions=True, progress="test" if progress else None)
                tracker.log(fit["steps"], {"test/loss": test["loss"], "test/accuracy": test["accuracy"]})
        except LraError:
            raise
        except Exception as err:  # a crash mid-run is a result too: record it, then re-raise
            record.update(status="failed", error=f"{type(err).__name__}: {err}",
                          wall_seconds=time.perf_counter() - wall, date=utc_now())
            write_record(run_dir, record)
            raise
        finally:
            if tracker is not None:
                tracker.close()
            checkpoints.close()
            claim.release()
    timed_steps = max(fit["steps"] - 1 - len(fit["resumed_at"]), 0)  # each slot's first step compiles
    seconds = fit["train_seconds"]
    if test is not None:
        partial = run_dir / ".predictions.tmp.npz"
        np.savez(partial, predictions=test["predictions"], labels=test["labels"])
        os.replace(partial, run_dir / "predictions.npz")
        record["test"] = {"accuracy": test["accuracy"], "loss": test["loss"], "examples": test["examples"]}
    record.update(
        status=fit["status"],
        steps=fit["steps"],
        stopped_by=fit["stopped_by"],
        best_val={k: fit["best_val"][k] for k in ("accuracy", "loss", "step")},
        wall_seconds=round(time.perf_counter() - wall, 3),
        train_seconds=round(seconds, 3),
        compile_seconds=round(fit["compile_seconds"], 3),
        steps_per_second=round(timed_steps / seconds, 4) if seconds > 0 else None,
        examples_per_second=round(fit["examples"] / seconds, 2) if seconds > 0 else None,
        peak_memory_bytes=peak_memory_bytes(),
        date=utc_now(),
    )
    if fit["diverged"]:
        record["diverged"] = fit["diverged"]
    if fit["resumed_at"]:
        record["resumed_at"] = fit["resumed_at"]
    write_record(run_dir, record)
    def accuracy(result):  # absent when the run was not tested or never evaluated
        return "n/a" if not result or result.get("accuracy") is None else f"{result['accuracy']:.4f}"

    log.info("%s: %s/%s seed %d test accuracy %s (best val %s at step %s) -> %s", record["status"],
             spec.name, cfg.model.name, seed, accuracy(test), accuracy(fit["best_val"]),
             fit["best_val"]["step"], run_dir / "record.json")
    return record


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


EVAL_USAGE = """usage: lra eval RUN_DIR [split=test|val|train] [data_dir=...] [--predictions]

Evaluates the best validation parameters of RUN_DIR's newest checkpoint on a split,
without training; --predictions writes RUN_DIR/predictions-<split>.npz."""


def cmd_eval(args: list[str]) -> int:
    """`lra eval`: re-check a run's result from its checkpoint."""
    if not args or any(a in ("-h", "--help") for a in args):
        print(EVAL_USAGE)
        return 0 if args else 2
    folders = [a for a in args if "=" not in a and not a.startswith("-")]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    flags = [a for a in args if a.startswith("-")]
    unknown = sorted(set(options) - {"split", "data_dir"}) + sorted(set(flags) - {"--predictions"})
    if len(folders) != 1 or unknown:
        raise LraError(f"{'unknown: ' + ', '.join(unknown) if unknown else 'give one run folder'}; "
                       "usage: lra eval RUN_DIR [split=test|val|train] [data_dir=...] [--predictions]")
    run_dir, split = Path(folders[0]), options.get("split", "test")
    if split not in ("train", "val", "test"):
        raise LraError(f"split={split} is not one of train, val, test")
    cfg = stored_config(run_dir, OmegaConf.create({"data_dir": options["data_dir"]}) if "data_dir" in options else None)
    spec, enc, trainer_cfg = checked(cfg)
    splits, _ = lra_data.load(cfg.task, cfg.data_dir)
    trainer = Trainer(build(cfg, spec, enc), trainer_cfg, seed=int(cfg.seed))
    checkpoints = Checkpoints(run_dir / CHECKPOINTS, OmegaConf.to_container(cfg, resolve=True), read_only=True)
    if trainer.restore(checkpoints, hint="the run folder was changed by hand") is None:
        raise LraError(f"{run_dir} has no readable checkpoint")
    params, model_state = trainer.best_state or (trainer.state.params, trainer.state.model_state)
    result = trainer.evaluate(params, model_state, BatchLoader(splits[split], trainer_cfg.eval_batch_size,
                              train=False), keep_predictions="--predictions" in flags)
    recorded = ""
    if split == "test" and (run_dir / RECORD).exists():
        accuracy = (json.loads((run_dir / RECORD).read_text()).get("test") or {}).get("accuracy")
        recorded = f" (record: {accuracy:.4f})" if isinstance(accuracy, float) else ""
    print(f"{run_dir}: step {trainer.step}, best validation step {trainer.best['step']}: {split} accuracy "
          f"{result['accuracy']:.4f}{recorded}, loss {result['loss']:.4f}, {result['examples']} examples")
    if "--predictions" in flags:
        partial = run_dir / f".predictions-{split}.tmp.npz"
        np.savez(partial, predictions=result["predictions"], labels=result["labels"])
        os.replace(partial, run_dir / f"predictions-{split}.npz")
    return 0
