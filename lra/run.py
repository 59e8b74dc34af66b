"""`lra train` minus the command line: validate, load data, train, test, record.

Everything that can be wrong with the input is checked before the run directory
gets any file of ours, so a bad override leaves no partial record behind.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from lra import data as lra_data
from lra.config import check_keys
from lra.errors import LraError
from lra.loader import BatchLoader
from lra.memory import check_fits
from lra.models import EncoderConfig, build_model, check_model
from lra.presets import check_preset
from lra.records import git_commit, package_versions, utc_now, write_record
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


def claim_run_dir(run_dir: Path) -> None:
    """Make `run_dir` this job's alone: two jobs started in the same instant (a
    sweep on several GPUs) would otherwise share one folder and one metrics file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(run_dir / ".claimed", "x") as f:
            f.write(f"{os.getpid()}\n")
    except FileExistsError:
        raise LraError(f"run folder {run_dir} belongs to another run; "
                       "start again, or give hydra.run.dir=<a new folder>") from None


def train_and_record(cfg: DictConfig, run_dir: Path, *, tracker: Tracker | None = None,
                     progress: bool = True, experiment: str | None = None,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """Run one training job described by a composed config and write its record.

    `experiment` names the preset the config was composed with (the leaderboard
    keeps preset runs apart from runs of the task's own configuration);
    `overrides`, the command line it was composed from (`lra train --rerun`).
    """
    spec, enc, trainer_cfg = checked(cfg)
    splits, manifest = lra_data.load(cfg.task, cfg.data_dir)
    seed = int(cfg.seed)
    loaders = {
        name: BatchLoader(
            splits[name],
            trainer_cfg.batch_size if name == "train" else trainer_cfg.eval_batch_size,
            train=name == "train",
            seed=seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        for name in ("train", "val", "test")
    }
    trainer = Trainer(build(cfg, spec, enc), trainer_cfg, seed=seed)
    check_fits(trainer.compile_train_step(splits["train"]["inputs"].shape[1:]), jax.local_devices()[0])
    claim_run_dir(run_dir)
    open_run_log(run_dir)
    log.info("lra train %s", " ".join(overrides or []))
    started, wall = utc_now(), time.perf_counter()
    record: dict[str, Any] = {
        "task": spec.name,
        "model": cfg.model.name,
        "seed": seed,
        "experiment": experiment,
        "overrides": overrides,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data": {"key": manifest["key"], "source": manifest.get("source"), "counts": manifest["counts"]},
        "started": started,
        "run_dir": str(run_dir),
        "git_commit": git_commit(),
        "versions": package_versions(),
        **device_info(),
    }
    tracker = tracker or make_tracker(cfg.logger, run_dir, record["config"])
    try:
        trainer.tracker = tracker
        record["param_count"] = trainer.param_count
        fit = trainer.fit(loaders["train"], loaders["val"], progress=progress)
        test = trainer.evaluate(fit["best_params"], fit["best_model_state"], loaders["test"],
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
        tracker.close()
    timed_steps = max(fit["steps"] - 1, 0)
    seconds = fit["train_seconds"]
    partial = run_dir / ".predictions.tmp.npz"
    np.savez(partial, predictions=test["predictions"], labels=test["labels"])
    os.replace(partial, run_dir / "predictions.npz")
    record.update(
        status=fit["status"],
        steps=fit["steps"],
        stopped_by=fit["stopped_by"],
        best_val={k: fit["best_val"][k] for k in ("accuracy", "loss", "step")},
        test={"accuracy": test["accuracy"], "loss": test["loss"], "examples": test["examples"]},
        wall_seconds=round(time.perf_counter() - wall, 3),
        train_seconds=round(seconds, 3),
        compile_seconds=round(fit["compile_seconds"], 3),
        steps_per_second=round(timed_steps / seconds, 4) if seconds > 0 else None,
        examples_per_second=round(fit["examples"] / seconds, 2) if seconds > 0 else None,
        peak_memory_bytes=peak_memory_bytes(),
        date=utc_now(),
    )
    write_record(run_dir, record)
    log.info("%s: %s/%s seed %d test accuracy %.4f (best val %.4f at step %d) -> %s",
             record["status"], spec.name, cfg.model.name, seed, test["accuracy"],
             fit["best_val"]["accuracy"], fit["best_val"]["step"], run_dir / "record.json")
    close_run_log()
    return record
