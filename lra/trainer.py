"""One trainer for every task and model.

The model is split once into a static graph, its parameters and its other
variables (nnx.split); `train_step` and `eval_step` are pure module-level
functions of that state, compiled with jax.jit, and the only steps: `lra bench`
and scripts/profile_train_step.py time these same functions.
Data parallelism is a sharding of the batch axis over a mesh of all devices,
so the same code runs on one CPU, one GPU or many hosts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from lra.errors import LraError
from lra.loader import BatchLoader
from lra.memory import compile_with_estimate
from lra.tracking import NoOpTracker, Tracker, log

if TYPE_CHECKING:  # orbax is imported by runs that checkpoint, not by every user of the steps
    from lra.checkpoint import Checkpoints, StopSignals

SCHEDULES = ("rsqrt", "cosine", "constant")
PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
GROUPS = ("default", "ssm")  # optimiser groups: see `param_groups`


def make_schedule(cfg, base_lr: float | None = None) -> Callable:
    """LRA's schedules (lra_benchmarks/utils/train_utils.py), all with linear warmup.

    rsqrt: base * min(1, step/warmup) / sqrt(max(step, warmup)), the LRA code's
    'constant * linear_warmup * rsqrt_decay'; cosine: 'constant * linear_warmup *
    cosine_decay', LRA's cyclic half cosine over `cycle_steps` counted from the end
    of warmup (LRA's steps_per_cycle; null = max_steps, so one cycle spans the run);
    constant: warmup only.
    `base_lr` replaces `cfg.lr` (the SSM group's schedule has the same shape).
    """
    base, warmup = float(cfg.lr if base_lr is None else base_lr), int(cfg.warmup_steps)
    cycle = int(cfg.cycle_steps or cfg.max_steps)

    def warm(step):
        return jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0

    if cfg.schedule == "rsqrt":
        return lambda step: base * warm(step) / jnp.sqrt(jnp.maximum(step, max(warmup, 1)))
    if cfg.schedule == "cosine":
        def cosine(step):
            progress = jnp.maximum(0.0, (step - warmup) / cycle)
            return base * warm(step) * 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0)))
        return cosine
    return lambda step: base * warm(step)


def _is_variable(node) -> bool:
    return isinstance(node, nnx.Variable)


def param_groups(params) -> Any:
    """The optimiser group of each parameter, by its variable TYPE: "ssm" for
    `SsmParam` (A's eigenvalues, B, the step size of the S4/S5/LRU recipes), else
    "default". A tree of labels with the shape of `params` (optax.multi_transform)."""
    from lra.models.attention import SsmParam

    return jax.tree.map(lambda v: "ssm" if isinstance(v, SsmParam) else "default", params,
                        is_leaf=_is_variable)


def make_optimizer(cfg) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay scaled by the learning rate, as LRA's flax Adam).

    With `trainer.ssm_lr` set, the `SsmParam`s get their own AdamW at that rate (same
    schedule shape) and `trainer.ssm_weight_decay`, as the S4/S5 recipes train them.
    """
    def adamw(schedule, weight_decay):
        return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=weight_decay)

    parts = []
    if cfg.grad_clip and cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
    default = adamw(make_schedule(cfg), cfg.weight_decay)
    if cfg.ssm_lr is None:
        parts.append(default)
    else:
        ssm = adamw(make_schedule(cfg, cfg.ssm_lr), cfg.ssm_weight_decay)
        parts.append(optax.multi_transform({"default": default, "ssm": ssm}, param_groups))
    return optax.chain(*parts)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    """A finite int or float (not a bool, a string, nan or inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The trainer's options, typed and checked once. configs/trainer/default.yaml
    states the same defaults (tests/test_trainer.py keeps the two equal); the task
    configs set LRA's values per task."""

    max_steps: int = 5000
    batch_size: int = 32
    eval_batch_size: int | None = None  # null = batch_size
    eval_every: int = 200          # steps between validation passes
    eval_batches: int | None = None  # batches per validation pass; null = the whole split
    log_every: int = 10            # steps between metric flushes
    lr: float = 0.05
    schedule: str = "rsqrt"        # one of SCHEDULES, all with linear warmup
    warmup_steps: int = 1000
    cycle_steps: int | None = None  # cosine: half-cycle steps after warmup; null = max_steps
    # AdamW as the LRA code's create_optimizer (lra_benchmarks/*/train.py): beta1 0.9,
    # beta2 0.98, eps 1e-9, weight decay from the task config.
    weight_decay: float = 0.1
    ssm_lr: float | None = None    # the SsmParam group's lr; null = one group
    ssm_weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-9
    grad_clip: float | None = None  # global-norm clipping; null or 0 = none (LRA did not clip)
    max_seconds: float | None = None  # wall-clock budget, checked at evaluations: then interrupted
    checkpoint_every: int | None = None  # steps between checkpoints; null = at each evaluation
    keep_checkpoints: int = 2      # newest checkpoints kept, besides the best validation one
    precision: str = "fp32"        # one of PRECISIONS (compute dtype; parameters stay fp32)

    def __post_init__(self):
        if self.eval_batch_size is None:
            object.__setattr__(self, "eval_batch_size", self.batch_size)
        for name in ("max_steps", "batch_size", "eval_batch_size", "eval_every", "log_every",
                     "keep_checkpoints"):
            value = self._int(name)
            self._require(name, _integer(value) and value > 0, "a positive integer")
        for name in ("eval_batches", "cycle_steps", "checkpoint_every"):
            value = self._int(name)
            self._require(name, value is None or (_integer(value) and value > 0),
                          "a positive integer or null")
        value = self._int("warmup_steps")
        self._require("warmup_steps", _integer(value) and value >= 0, "an integer >= 0")
        self._require("lr", _number(self.lr) and self.lr > 0, "a finite number > 0")
        self._require("eps", _number(self.eps) and self.eps > 0, "a finite number > 0")
        for name in ("weight_decay", "ssm_weight_decay"):
            value = getattr(self, name)
            self._require(name, _number(value) and value >= 0, "a finite number >= 0")
        for name in ("b1", "b2"):
            value = getattr(self, name)
            self._require(name, _number(value) and 0 <= value < 1, "a number in [0, 1)")
        for name, what in (("ssm_lr", "a finite number > 0 or null (one group)"),
                           ("max_seconds", "a finite number > 0 or null (no time budget)")):
            value = getattr(self, name)
            self._require(name, value is None or (_number(value) and value > 0), what)
        self._require("grad_clip", self.grad_clip is None or (_number(self.grad_clip) and self.grad_clip >= 0),
                      "a finite number >= 0 or null (no clipping)")
        self._require("schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
        self._require("precision", self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}")

    def _int(self, name):
        """An integer field as an int: 1e3 (a float with an integer value) reads as 1000."""
        value = getattr(self, name)
        if isinstance(value, float) and value.is_integer():
            object.__setattr__(self, name, int(value))
        return getattr(self, name)

    def _require(self, name: str, ok: bool, what: str) -> None:
        if not ok:
            raise LraError(f"trainer.{name} must be {what}, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, node) -> "TrainerConfig":
        """From the composed `trainer` node (a DictConfig or a mapping)."""
        from omegaconf import DictConfig, OmegaConf

        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LraError(f"unknown trainer option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    def step_options(self) -> "TrainerConfig":
        """The options `train_step` depends on, the loop's own at their defaults: runs
        that differ only in steps, cadence, budget or batch share one compilation."""
        defaults = TrainerConfig()
        cosine = self.schedule == "cosine"
        return dataclasses.replace(
            self, **{name: getattr(defaults, name) for name in (
                "batch_size", "eval_batch_size", "eval_every", "eval_batches", "log_every",
                "max_seconds", "checkpoint_every", "keep_checkpoints", "precision", "max_steps")},
            cycle_steps=(self.cycle_steps or self.max_steps) if cosine else None)

    def check_devices(self, devices: int) -> None:
        """The batch axis is sharded over every device: batches must divide evenly."""
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) % devices:
                raise LraError(f"trainer.{name}={getattr(self, name)} is not divisible by the "
                               f"{devices} devices")


@dataclasses.dataclass
class TrainState:
    """Everything that changes during training (what a checkpoint must hold).

    `model_state` is the model's non-parameter variables: BatchNorm running
    statistics, EMA-updated buffers (e.g. k-means centroids), constant tables.
    The training forward pass updates them; evaluation reads them.
    """

    params: Any
    opt_state: Any
    model_state: Any


jax.tree_util.register_dataclass(
    TrainState, data_fields=["params", "opt_state", "model_state"], meta_fields=[])


def split_model(model: nnx.Module) -> tuple[Any, Any, Any]:
    """(graphdef, params, model_state): the parameters (nnx.Param and subclasses
    such as SsmParam) apart from every other variable."""
    return nnx.split(model, nnx.Param, ...)


def weighted_metrics(logits, labels, weights):
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    predictions = jnp.argmax(logits, axis=-1)
    correct = (predictions == labels).astype(jnp.float32)
    return {
        "loss_sum": (losses * weights).sum(),
        "correct_sum": (correct * weights).sum(),
        "count": weights.sum(),
    }, predictions


# The pure steps: the one training step of `lra train`, `lra bench` and the profiler.

def forward_loss(graphdef, params, model_state, batch, key, *, deterministic: bool = False):
    """The weighted mean cross-entropy of `batch`, with (metric sums, model_state after
    the forward pass): the function `train_step` differentiates. `key` seeds dropout."""
    # copy: the forward pass may write model_state, whose variables belong to the
    # trace outside jax.value_and_grad
    model = nnx.merge(graphdef, params, model_state, copy=True)
    logits = model(batch["inputs"], deterministic=deterministic, rngs=nnx.Rngs(key))
    sums, _ = weighted_metrics(logits, batch["labels"], batch["weights"])
    _, _, model_state = split_model(model)
    return sums["loss_sum"] / jnp.maximum(sums["count"], 1.0), (sums, model_state)


def train_step(graphdef, cfg: TrainerConfig, state: TrainState, step, batch,
               dropout_key) -> tuple[TrainState, dict]:
    """One AdamW step (`make_optimizer(cfg)`) on the weighted mean cross-entropy of `batch`.

    Dropout's key is `dropout_key` folded with `step`, so a step is a function of
    (state, step, batch) alone. The forward pass runs in training mode and may
    update `model_state` (BatchNorm statistics, EMA buffers): the updated values
    come out in the new state. Metrics: loss, accuracy, gradient norm, lr.
    """
    tx = make_optimizer(cfg)
    key = jax.random.fold_in(dropout_key, step)
    (loss, (sums, model_state)), grads = jax.value_and_grad(forward_loss, argnums=1, has_aux=True)(
        graphdef, state.params, state.model_state, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": sums["correct_sum"] / jnp.maximum(sums["count"], 1.0),
        "grad_norm": jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))),
        "lr": make_schedule(cfg)(step),
    }
    return TrainState(params, opt_state, model_state), metrics


def eval_step(graphdef, params, model_state, batch) -> tuple[dict, jax.Array]:
    """Metric sums and predictions of `batch` in inference mode: reads `model_state`
    (e.g. BatchNorm's running averages) and returns no update of it."""
    model = nnx.merge(graphdef, params, model_state)
    logits = model(batch["inputs"], deterministic=True)
    return weighted_metrics(logits, batch["labels"], batch["weights"])


# Compiled once per (model graph, trainer options) in a process: both are hashable
# static arguments, so runs of one shape (seeds, tests, sweep jobs) share a compilation.
# train_step_jit(graphdef, cfg, state, step, batch, dropout_key) donates `state`.
train_step_jit = jax.jit(train_step, static_argnums=(0, 1), donate_argnums=(2,))
eval_step_jit = jax.jit(eval_step, static_argnums=(0,))


class Trainer:
    """Runs the compiled steps of one model in the train/eval loop."""

    def __init__(self, model: nnx.Module, cfg: TrainerConfig, *, seed: int,
                 tracker: Tracker | None = None):
        self.cfg = cfg if isinstance(cfg, TrainerConfig) else TrainerConfig.from_config(cfg)
        cfg = self.cfg
        self.tracker = tracker or NoOpTracker()
        self.graphdef, params, model_state = split_model(model)
        self.param_count = int(sum(x.size for x in jax.tree.leaves(params)))
        self.tx = make_optimizer(cfg)  # the optimiser train_step builds from the same cfg
        self.dropout_key = jax.random.key(seed + 1)
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        params = jax.device_put(params, self.replicated)
        self.state = jax.device_put(TrainState(params, self.tx.init(params), model_state),
                                    self.replicated)
        self.step = 0  # steps taken; with `state` and the loader position, a resumable point
        self._train_step = functools.partial(train_step_jit, self.graphdef, cfg.step_options())
        self._eval_step = functools.partial(eval_step_jit, self.graphdef)
        # What else the loop carries from step to step (and a checkpoint with it):
        self.best = {"accuracy": None, "loss": None, "step": 0}  # best validation so far
        self.best_state: tuple[Any, Any] | None = None  # its (params, model_state)
        self.last_finite_loss: float | None = None
        self.totals = {"train_seconds": 0.0, "compile_seconds": 0.0, "examples": 0}
        self.resumed_at: list[int] = []  # steps at which earlier slots stopped

    # Checkpoints ---------------------------------------------------------------

    def _checkpoint_tree(self) -> dict[str, Any]:
        params, model_state = self.best_state or (self.state.params, self.state.model_state)
        return {"train": self.state, "best": {"params": params, "model_state": model_state},
                "dropout_key": self.dropout_key}

    def save(self, checkpoints: Checkpoints, train: BatchLoader, *, wait: bool) -> None:
        """Checkpoint everything the loop needs to go on as if it had never stopped."""
        self.tracker.flush()  # the metrics up to this step are on disk before the checkpoint
        meta = {"loader": train.state(), "best_val": self.best, "last_finite_loss": self.last_finite_loss,
                "totals": self.totals, "resumed_at": self.resumed_at}
        checkpoints.save(self.step, self._checkpoint_tree(), meta, best_step=self.best["step"] or None,
                         wait=wait)

    def restore(self, checkpoints: Checkpoints, *, hint: str) -> dict[str, Any] | None:
        """Carry on from the newest good checkpoint; its meta (loader position...), or None."""
        restored = checkpoints.restore(self._checkpoint_tree(), hint=hint)
        if restored is None:
            return None
        tree, meta = restored.state, restored.meta
        self.state, self.dropout_key, self.step = tree["train"], tree["dropout_key"], restored.step
        self.best = meta["best_val"]
        self.best_state = (tree["best"]["params"], tree["best"]["model_state"]) if self.best["step"] else None
        self.last_finite_loss = meta["last_finite_loss"]
        # This slot's ahead-of-time compilation (compile_train_step) counts on top.
        self.totals = {**meta["totals"], "compile_seconds": meta["totals"]["compile_seconds"]
                       + self.totals["compile_seconds"]}
        self.resumed_at = [*meta["resumed_at"], restored.step]
        return meta

    def compile_train_step(self, input_shape: tuple[int, ...]) -> int | None:
        """Compile the train step for batches of `input_shape` examples before the
        first batch, and return its peak memory in bytes (lra/memory.py). The loop
        then calls this compiled step: knowing the memory costs no second compile."""
        def batch_of(shape, dtype):
            return jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)

        size = int(self.cfg.batch_size)
        batch = {"inputs": batch_of((size, *input_shape), jnp.int32),
                 "labels": batch_of((size,), jnp.int32), "weights": batch_of((size,), jnp.float32)}
        tick = time.perf_counter()
        self._train_step, estimate = compile_with_estimate(  # called as _train_step was
            train_step_jit, self.graphdef, self.cfg.step_options(), self.state, self.step, batch,
            self.dropout_key)
        self.totals["compile_seconds"] += time.perf_counter() - tick
        return estimate

    # Loops -------------------------------------------------------------------

    def shard(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {
            key: jax.make_array_from_process_local_data(self.batch_sharding, value)
            for key, value in batch.items()
        }

    def evaluate(self, params, model_state, loader: BatchLoader, max_batches: int | None = None,
                 keep_predictions: bool = False, progress: str | None = None) -> dict[str, Any]:
        """Metrics over `loader` (its first `max_batches`); `progress` names a tqdm bar
        of the batches (e.g. "val", "test"), None shows none."""
        totals = {"loss_sum": 0.0, "correct_sum": 0.0, "count": 0.0}
        predictions, labels = [], []
        batches = loader.batches_per_epoch if max_batches is None else min(max_batches, loader.batches_per_epoch)
        bar = tqdm(total=batches, desc=progress, unit="batch", disable=progress is None,
                   dynamic_ncols=True, leave=False)
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            bar.update(1)
            sums, preds = self._eval_step(params, model_state, self.shard(batch))
            for key in totals:
                totals[key] += float(sums[key])
            if keep_predictions:
                real = batch["weights"] > 0
                predictions.append(np.asarray(preds)[real])
                labels.append(batch["labels"][real])
        bar.close()
        count = max(totals["count"], 1.0)
        result = {
            "loss": totals["loss_sum"] / count,
            "accuracy": totals["correct_sum"] / count,
            "examples": int(totals["count"]),
        }
        if keep_predictions:
            result["predictions"] = np.concatenate(predictions) if predictions else np.zeros(0)
            result["labels"] = np.concatenate(labels) if labels else np.zeros(0)
        return result

    def fit(self, train: BatchLoader, val: BatchLoader, *, progress: bool = True,
            checkpoints: Checkpoints | None = None, stop: StopSignals | None = None) -> dict[str, Any]:
        """Train from `self.step` to max_steps, evaluating on `val` every eval_every steps.

        With `checkpoints`, saves every checkpoint_every steps (default: at each
        evaluation; asynchronously, which cannot change results) and at the end.
        Stops early, status `interrupted` with a checkpoint, at the first
        evaluation past max_seconds or at the first step after a signal (`stop`);
        status `diverged` at the first non-finite loss. Returns the best
        validation result, its parameters and model state (what the test is run
        with), the status and timing.
        """
        cfg = self.cfg
        max_steps = int(cfg.max_steps)
        every = cfg.checkpoint_every or cfg.eval_every
        status, stopped_by, diverged = "completed", "max_steps", None
        budget = float(cfg.max_seconds) if cfg.max_seconds else math.inf
        started = time.perf_counter()
        bar = tqdm(total=max_steps, initial=self.step, disable=not progress, dynamic_ncols=True, leave=True)
        train_iter = iter(train)
        first, pending = self.step, []
        tick = time.perf_counter()
        for step in range(self.step, max_steps):
            batch = self.shard(next(train_iter))
            self.state, metrics = self._train_step(self.state, step, batch, self.dropout_key)
            self.step = step + 1
            if step == first:  # the first call compiles; keep it out of the throughput
                jax.block_until_ready(metrics)
                self.totals["compile_seconds"] += time.perf_counter() - tick
                tick = time.perf_counter()
            else:
                self.totals["examples"] += int(cfg.batch_size)
            pending.append((step + 1, metrics))
            at_eval = (step + 1) % int(cfg.eval_every) == 0 or step + 1 == max_steps
            at_checkpoint = checkpoints is not None and ((step + 1) % every == 0 or step + 1 == max_steps)
            stopping = stop is not None and stop.received is not None
            if at_eval or at_checkpoint or stopping or len(pending) >= int(cfg.log_every):
                rows = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(pending)]
                pending = []
                for s, row in rows:
                    self.tracker.log(s, {f"train/{k}": v for k, v in row.items()})
                    if diverged is None and math.isfinite(row["loss"]):
                        self.last_finite_loss = row["loss"]
                    elif diverged is None:
                        diverged = {"step": s, "last_finite_loss": self.last_finite_loss}
                recent = rows[-1][1]
                bar.set_postfix(loss=f"{recent['loss']:.3f}", acc=f"{recent['accuracy']:.3f}")
                bar.update(len(rows))
                if diverged:
                    status = stopped_by = "diverged"
                    break
            if at_eval:
                self.totals["train_seconds"] += time.perf_counter() - tick
                result = self.evaluate(self.state.params, self.state.model_state, val, cfg.eval_batches,
                                       progress="val" if progress else None)
                self.tracker.log(step + 1, {"val/loss": result["loss"], "val/accuracy": result["accuracy"]})
                if self.best["accuracy"] is None or result["accuracy"] > self.best["accuracy"]:
                    self.best = {"accuracy": result["accuracy"], "loss": result["loss"], "step": step + 1}
                    self.best_state = jax.tree.map(jnp.copy, (self.state.params, self.state.model_state))
                log.info("step %d/%d: train loss %.4f, val loss %.4f accuracy %.4f (best %.4f at step %d)",
                         step + 1, max_steps, recent["loss"], result["loss"], result["accuracy"],
                         self.best["accuracy"], self.best["step"])
                bar.set_postfix(loss=f"{recent['loss']:.3f}", val_acc=f"{result['accuracy']:.3f}")
                tick = time.perf_counter()
                if time.perf_counter() - started > budget and step + 1 < max_steps:
                    status, stopped_by = "interrupted", "max_seconds"
            if stopping:
                status, stopped_by = "interrupted", stop.name
            if checkpoints is not None and (at_checkpoint or status == "interrupted"):
                self.save(checkpoints, train, wait=status == "interrupted")
            if status == "interrupted":
                break
        bar.close()
        best_params, best_model_state = self.best_state or (self.state.params, self.state.model_state)
        return {
            "status": status,
            "stopped_by": stopped_by,
            "diverged": diverged,
            "best_val": dict(self.best),
            "best_params": best_params,
            "best_model_state": best_model_state,
            "steps": self.step,
            "resumed_at": list(self.resumed_at),
            **self.totals,
        }


def peak_memory_bytes() -> int | None:
    """Peak device memory over the run, where the backend reports it (GPU/TPU)."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without stats raise various errors
        return None
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", 0)) or None
