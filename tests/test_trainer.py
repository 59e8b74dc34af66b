"""The trainer end to end on a toy task, plus its schedules and failure statuses."""

import dataclasses
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import TINY, compose_config
from lra.errors import LraError
from lra.run import train_and_record
from lra.trainer import TrainerConfig, make_schedule


# Golden values of LRA's create_learning_rate_scheduler (google-research/long-range-arena,
# lra_benchmarks/utils/train_utils.py), worked out by hand from its factor definitions:
# constant: base; linear_warmup: min(1, step / warmup); rsqrt_decay: / sqrt(max(step, warmup));
# cosine_decay: progress = max(0, (step - warmup) / steps_per_cycle),
#               * max(0, 0.5 * (1 + cos(pi * (progress % 1)))), cyclic.
RSQRT_GOLDEN = {  # base 0.05, warmup 1000 (LRA's ListOps/Text config)
    0: 0.0, 1: 1.5811388300841898e-06, 500: 0.0007905694150420948,
    1000: 0.0015811388300841897, 1001: 0.0015803488531025349, 4000: 0.0007905694150420948,
}
COSINE_GOLDEN = {  # base 1.0, warmup 10, steps_per_cycle 100; 110 starts the next cycle
    5: 0.5, 35: 0.8535533905932737, 60: 0.5, 85: 0.14644660940672627, 110: 1.0,
    135: 0.8535533905932737,
}


def test_rsqrt_schedule_matches_lra_golden_values():
    schedule = make_schedule(TrainerConfig(lr=0.05, warmup_steps=1000, schedule="rsqrt"))
    for step, expected in RSQRT_GOLDEN.items():
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6, abs=1e-12), step


def test_cosine_schedule_matches_lra_golden_values():
    schedule = make_schedule(TrainerConfig(lr=1.0, warmup_steps=10, max_steps=110,
                                           schedule="cosine", cycle_steps=100))
    for step, expected in COSINE_GOLDEN.items():
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6), step


def test_trainer_config_defaults_are_the_ones_in_configs_trainer_default_yaml():
    from importlib import resources

    yaml_defaults = OmegaConf.load(resources.files("lra.configs") / "trainer" / "default.yaml")
    resolved = OmegaConf.to_container(OmegaConf.create({"trainer": yaml_defaults}), resolve=True)
    assert TrainerConfig.from_config(resolved["trainer"]) == TrainerConfig()
    assert set(resolved["trainer"]) == {f.name for f in dataclasses.fields(TrainerConfig)}


def run(tmp_path, overrides, name="run"):
    cfg = compose_config(*overrides)
    return train_and_record(cfg, tmp_path / name, progress=False)


def test_tiny_run_learns_and_writes_a_complete_record(tmp_path, toy_overrides):
    record = run(tmp_path, [*toy_overrides, "trainer.warmup_steps=10"])
    saved = json.loads((tmp_path / "run" / "record.json").read_text())
    assert saved["status"] == "completed"
    assert saved["task"] == "toy_first_token" and saved["model"] == "transformer"
    assert saved["steps"] == 60
    assert saved["test"]["examples"] == 100
    assert saved["test"]["accuracy"] > 0.6  # chance is 0.25
    for key in ("config", "best_val", "param_count", "wall_seconds", "steps_per_second",
                "examples_per_second", "backend", "device_kind", "device_count", "versions",
                "git_commit", "date", "data"):
        assert key in saved
    assert saved["config"]["trainer"]["max_steps"] == 60
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(train_losses) == 60
    # train/lr is the schedule at the step taken (the row of step s logs step s - 1):
    # warmup 10 of the constant 0.005
    lrs = {r["step"]: r["train/lr"] for r in rows if "train/lr" in r}
    assert lrs == {s: pytest.approx(0.005 * min(1.0, (s - 1) / 10)) for s in range(1, 61)}
    assert np.mean(train_losses[-10:]) < 0.5 * np.mean(train_losses[:10])
    assert any("val/accuracy" in r for r in rows) and any("test/accuracy" in r for r in rows)
    predictions = np.load(tmp_path / "run" / "predictions.npz")
    assert predictions["predictions"].shape == (100,)
    assert np.mean(predictions["predictions"] == predictions["labels"]) == pytest.approx(
        record["test"]["accuracy"])


def test_same_seed_gives_the_same_run_on_cpu(tmp_path, toy_overrides):
    short = [*toy_overrides, "trainer.max_steps=20", "trainer.eval_every=10"]
    a = run(tmp_path, short, "a")
    b = run(tmp_path, short, "b")
    c = run(tmp_path, [*short, "seed=1"], "c")
    assert a["test"] == b["test"] and a["best_val"] == b["best_val"]
    assert a["test"]["loss"] != c["test"]["loss"]


def strict_json(path):
    """The file's JSON, refusing the bare NaN/Infinity that strict parsers reject."""
    def refuse(constant):
        raise ValueError(f"{path.name} holds a bare {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_diverging_run_is_recorded_as_diverged_with_its_step_and_last_finite_loss(tmp_path, toy_overrides):
    record = run(tmp_path, [*toy_overrides, "trainer.lr=1e30", "trainer.max_steps=30", "trainer.log_every=1"])
    saved = strict_json(tmp_path / "run" / "record.json")
    assert record["status"] == saved["status"] == "diverged" and saved["stopped_by"] == "diverged"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    first_bad = next(step for step, loss in losses if not np.isfinite(float(loss)))
    last_finite = [loss for step, loss in losses if step < first_bad][-1]
    assert saved["diverged"] == {"step": first_bad, "last_finite_loss": last_finite}
    assert saved["steps"] == first_bad and "test" not in saved  # not tested: the leaderboard skips it


def test_bf16_precision_trains(tmp_path, toy_overrides):
    record = run(tmp_path, [*toy_overrides, "trainer.precision=bf16", "trainer.max_steps=30"])
    assert record["status"] == "completed" and np.isfinite(record["test"]["loss"])


def metrics_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


RESULT = ("status", "steps", "stopped_by", "best_val", "test")


def test_a_run_stopped_by_its_time_budget_is_interrupted_and_a_rerun_finishes_it_exactly(tmp_path, toy_overrides):
    """Two slots of GPU time make one run: the rerun of the same command (same runs_dir,
    any time budget) finds the interrupted run and carries it on to max_steps."""
    short = [*toy_overrides, "trainer.max_steps=20", "trainer.eval_every=5", "encoder.dropout=0.1"]
    whole = run(tmp_path, short, "whole")
    first = run(tmp_path, [*short, "trainer.max_seconds=0.001"], "runs/slot1")
    assert first["status"] == "interrupted" and first["stopped_by"] == "max_seconds"
    assert first["steps"] == 5 and "accuracy" in first["test"]  # the first evaluation; a provisional test
    assert (tmp_path / "runs/slot1/checkpoints/5").is_dir()
    second = run(tmp_path, short, "runs/slot2")  # a new folder is asked for: the old run is found
    assert second["run_dir"] == str(tmp_path / "runs/slot1") and not (tmp_path / "runs/slot2").exists()
    assert second["resumed_at"] == [5]
    assert {k: second[k] for k in RESULT} == {k: whole[k] for k in RESULT}
    assert metrics_rows(tmp_path / "runs/slot1") == metrics_rows(tmp_path / "whole")
    saved = np.load(tmp_path / "runs/slot1/predictions.npz")
    np.testing.assert_array_equal(saved["predictions"], np.load(tmp_path / "whole/predictions.npz")["predictions"])
    # finished: rerunning the command changes nothing
    again = run(tmp_path, short, "runs/slot3")
    assert again == strict_json(tmp_path / "runs/slot1/record.json") and not (tmp_path / "runs/slot3").exists()


def test_a_folder_holds_one_run(tmp_path, toy_overrides):
    short = [*toy_overrides, "trainer.max_steps=10", "trainer.eval_every=10"]
    first = run(tmp_path, short)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert run(tmp_path, short) == strict_json(tmp_path / "run" / "record.json")  # finished: not rerun
    with pytest.raises(LraError, match="holds a run of another configuration"):
        run(tmp_path, [*short, "seed=1"])
    with pytest.raises(LraError, match="force=true starts a new run, but .* holds one"):
        run(tmp_path, [*short, "force=true"])
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics  # untouched
    assert json.loads((tmp_path / "run" / "record.json").read_text())["test"] == first["test"]
    forced = run(tmp_path, [*short, "force=true", f"runs_dir={tmp_path}"], "run2")  # would find ./run
    assert forced["run_dir"] == str(tmp_path / "run2") and forced["test"] == first["test"]
    # resume= takes the run's own config: this seed=5 is not what it ran with
    resumed = run(tmp_path, [*short, f"resume={tmp_path / 'run'}", "seed=5"], "unused")
    assert resumed["run_dir"] == str(tmp_path / "run") and resumed["seed"] == 0
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("args, message", [
    (["/nonexistent"], "has no checkpoints; give the folder of a run"),
    ([], "usage: lra eval RUN_DIR"),
    (["a", "b"], "give one run folder; usage"),
    (["a", "split=dev"], "split=dev is not one of train, val, test"),
    (["a", "--predict", "seed=1"], "unknown: seed, --predict; usage"),
])
def test_lra_eval_refuses_bad_arguments_in_one_line(args, message, capsys):
    from lra.cli import main

    assert main(["eval", *args]) == 2
    captured = capsys.readouterr()
    output = (captured.err or captured.out).strip()
    assert message in output and (len(output.splitlines()) == 1 or not args)


# The pure steps, the model state they thread, the optimiser groups ------------------

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from lra.loader import BatchLoader  # noqa: E402
from lra.models.attention import SsmParam  # noqa: E402
from lra.trainer import (  # noqa: E402
    Trainer, TrainState, eval_step_jit, make_optimizer, param_groups, split_model, train_step_jit,
)

MOMENTUM = 0.5


class FirstTokenNorm(nnx.Module):
    """Embeds the first token, BatchNorm (running statistics in training mode only,
    as S4/S5's BatchNorm blocks), linear head: the smallest model with a model state."""

    def __init__(self, *, rngs):
        self.embed = nnx.Embed(9, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, momentum=MOMENTUM, rngs=rngs)
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, inputs, *, deterministic, rngs=None):
        return self.head(self.norm(self.embed(inputs[:, 0]), use_running_average=deterministic))


def trainer_cfg(*overrides):
    return compose_config("trainer.lr=0.05", "trainer.schedule=constant", "trainer.warmup_steps=0",
                          "trainer.weight_decay=0.0", *overrides).trainer


def toy_batch(seed, n=32, shift=0):
    tokens = np.random.default_rng(seed).integers(1, 9, (n, 4)).astype(np.int32)
    return {"inputs": tokens, "labels": ((tokens[:, 0] - 1 + shift) % 4).astype(np.int32),
            "weights": np.ones(n, np.float32)}


def test_train_step_updates_the_running_statistics_and_eval_uses_them_without_changing_them():
    model = FirstTokenNorm(rngs=nnx.Rngs(0))
    graphdef, params, model_state = split_model(model)
    cfg = TrainerConfig.from_config(trainer_cfg())
    tx = make_optimizer(cfg)

    def train(state, step, batch, key):
        return train_step_jit(graphdef, cfg, state, step, batch, key)

    def evaluate(params, model_state, batch):
        return eval_step_jit(graphdef, params, model_state, batch)
    batch = toy_batch(0)
    features = np.asarray(params["embed"]["embedding"][...])[batch["inputs"][:, 0]]
    state = TrainState(params, tx.init(params), model_state)
    state, _ = train(state, 0, batch, jax.random.key(0))
    mean = np.asarray(state.model_state["norm"]["mean"][...])
    var = np.asarray(state.model_state["norm"]["var"][...])
    # flax's BatchNorm: running = momentum * running + (1 - momentum) * batch statistic,
    # from the features of the parameters before the step (mean 0 and var 1 at init).
    np.testing.assert_allclose(mean, (1 - MOMENTUM) * features.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, MOMENTUM + (1 - MOMENTUM) * features.var(0), rtol=1e-5)

    eval_batch = toy_batch(1)
    sums, _ = evaluate(state.params, state.model_state, eval_batch)
    p = jax.tree.map(np.asarray, nnx.to_pure_dict(state.params))
    x = p["embed"]["embedding"][eval_batch["inputs"][:, 0]].astype(np.float64)
    x = (x - mean) / np.sqrt(var + 1e-5) * p["norm"]["scale"] + p["norm"]["bias"]
    logits = x @ p["head"]["kernel"] + p["head"]["bias"]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -logp[np.arange(32), eval_batch["labels"]].sum()  # running statistics, float64
    assert float(sums["loss_sum"]) == pytest.approx(expected, rel=1e-4)
    np.testing.assert_array_equal(np.asarray(state.model_state["norm"]["mean"][...]), mean)

    state, _ = train(state, 1, toy_batch(2), jax.random.key(0))  # and into the next step
    assert not np.allclose(np.asarray(state.model_state["norm"]["mean"][...]), mean)


def test_fit_tests_the_best_validation_parameters_and_their_model_state():
    """Validation labels are the training rule shifted by one, so validation accuracy
    falls as the model learns: the best step is an early evaluation, not the last."""
    rows = {"train": toy_batch(3, 256), "val": toy_batch(4, 64, shift=1)}
    loaders = {k: BatchLoader(v, 32, train=k == "train", seed=0) for k, v in rows.items()}
    trainer = Trainer(FirstTokenNorm(rngs=nnx.Rngs(0)),
                      trainer_cfg("trainer.lr=0.01", "trainer.max_steps=40", "trainer.eval_every=2"),
                      seed=0)
    fit = trainer.fit(loaders["train"], loaders["val"], progress=False)
    final = trainer.evaluate(trainer.state.params, trainer.state.model_state, loaders["val"])
    best = trainer.evaluate(fit["best_params"], fit["best_model_state"], loaders["val"])
    assert fit["best_val"]["step"] < 40 and final["accuracy"] < fit["best_val"]["accuracy"]
    assert best["accuracy"] == fit["best_val"]["accuracy"] and best["loss"] == fit["best_val"]["loss"]


class WithSsm(nnx.Module):
    """A plain Param named like an SSM matrix and an SsmParam named like a norm scale:
    the groups must follow the variable type, not the name."""

    def __init__(self):
        self.B = nnx.Param(jnp.full((3,), 2.0))
        self.scale = SsmParam(jnp.full((2,), 2.0))


def test_ssm_params_get_their_own_learning_rate_and_weight_decay():
    _, params, _ = split_model(WithSsm())
    groups = nnx.to_pure_dict(param_groups(params))
    assert groups == {"B": "default", "scale": "ssm"}
    cfg = trainer_cfg("trainer.lr=0.1", "trainer.weight_decay=0.5", "trainer.warmup_steps=2",
                      "trainer.ssm_lr=0.01", "trainer.ssm_weight_decay=0.25")
    tx = make_optimizer(cfg)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    values = params
    for _ in range(2):  # warmup 2: the first step has lr 0, the second half the base lr
        updates, opt_state = tx.update(grads, opt_state, values)
        values = jax.tree.map(lambda p, u: p + u, values, updates)
    # AdamW with a constant gradient: each step moves by lr_t * (1 + weight_decay * p).
    np.testing.assert_allclose(values["B"][...], 2.0 - 0.5 * 0.1 * (1 + 0.5 * 2.0), rtol=1e-6)
    np.testing.assert_allclose(values["scale"][...], 2.0 - 0.5 * 0.01 * (1 + 0.25 * 2.0), rtol=1e-6)
    one_group = make_optimizer(trainer_cfg("trainer.lr=0.1", "trainer.weight_decay=0.5"))
    updates, _ = one_group.update(grads, one_group.init(params), params)
    np.testing.assert_allclose(updates["scale"][...], -0.1 * (1 + 0.5 * 2.0), rtol=1e-6)


def test_encoder_options_are_the_encoder_config_fields_and_missing_ones_take_its_defaults():
    import dataclasses

    from omegaconf import open_dict

    from lra.models import EncoderConfig
    from lra.run import ENCODER_FIELDS, encoder_config
    from lra.tasks.base import get_task

    cfg = compose_config("task=listops", "encoder.dropout=0.25")
    spec = get_task("listops").spec(cfg.task)
    with open_dict(cfg):
        del cfg.encoder["pooling"], cfg.encoder["learned_pos_emb"]
    enc = encoder_config(cfg, spec)
    assert enc.dropout == 0.25 and enc.max_len == spec.seq_len
    defaults = {f.name: f.default for f in dataclasses.fields(EncoderConfig)}
    assert enc.pooling == defaults["pooling"] and enc.learned_pos_emb == defaults["learned_pos_emb"]
    assert set(ENCODER_FIELDS) == set(defaults) - {"vocab_size", "max_len", "dtype"}
    with open_dict(cfg):
        cfg.encoder["nosuch"] = 1
    with pytest.raises(LraError, match="nosuch"):
        encoder_config(cfg, spec)


# Killed, signalled, resumed: the final result is the uninterrupted run's ----------

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

CHILD = Path(__file__).with_name("stopping_child.py")


def lra_train(args, stops="", cache=None, devices=1):
    """`lra train ARGS` in a subprocess that signals itself at `stops` (stopping_child.py)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LRA_TEST_STOPS": stops,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} "
                        "--xla_backend_optimization_level=0"}  # as conftest's fast_compile
    if cache:  # the same compiled steps for every process: seconds, not tens of seconds, each
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.run([sys.executable, str(CHILD), *args], env=env, capture_output=True, text=True,
                          timeout=300)


def child_overrides(tmp_path, runs):
    return ["task=listops", "task.name=toy_first_token", "task.seq_len=12", "task.data={seed: 0}",
            *TINY, "encoder.dropout=0.1", "trainer.batch_size=32", "trainer.max_steps=24",
            "trainer.eval_every=6", "trainer.eval_batches=null", "trainer.lr=0.005",
            "trainer.schedule=constant", "trainer.warmup_steps=0", "progress=false",
            f"data_dir={tmp_path / 'data'}", f"runs_dir={tmp_path / runs}"]


def only_run(runs: Path) -> Path:
    (folder,) = [p.parent for p in runs.rglob(".claimed")]
    return folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted 1-device run in a subprocess: (its folder, the shared folder)."""
    shared = tmp_path_factory.mktemp("resume")
    whole = lra_train(child_overrides(shared, "whole"), cache=shared / "jax-cache")
    assert whole.returncode == 0, whole.stderr
    return only_run(shared / "whole"), shared


def test_killed_and_signalled_runs_resume_to_the_uninterrupted_result(uninterrupted):
    reference, tmp_path = uninterrupted
    cache = tmp_path / "jax-cache"
    args = child_overrides(tmp_path, "runs")

    killed = lra_train(args, "KILL@save:2", cache)  # checkpoint 6 written, killed writing 12
    assert killed.returncode == -signal.SIGKILL
    run_dir = only_run(tmp_path / "runs")
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]  # cut short

    killed = lra_train(args, "KILL@eval:1", cache)  # resumes at 6, killed evaluating 12
    assert killed.returncode == -signal.SIGKILL
    assert f"resuming {run_dir} at step 6 of 24" in killed.stderr

    stopped = lra_train(args, "TERM@train:9", cache)  # resumes at 6, saves 12; SIGTERM during step 15
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr + stopped.stdout
    assert stopped.stdout.strip().splitlines()[-1].startswith("interrupted: toy_first_token/transformer seed 0")
    record = strict_json(run_dir / "record.json")
    assert record["status"] == "interrupted" and record["stopped_by"] == "SIGTERM" and record["steps"] == 15

    twice = lra_train(args, "TERM@train:2,TERM@save:1", cache)  # a second SIGTERM while saving 17
    assert twice.returncode == 128 + signal.SIGTERM and "Traceback" not in twice.stderr
    assert strict_json(run_dir / "record.json") == record  # the last good record, untouched

    final = lra_train(args, cache=cache)
    assert final.returncode == 0, final.stderr
    assert f"resuming {run_dir} at step 15 of 24" in final.stderr  # 17 was never completed
    ours, theirs = strict_json(run_dir / "record.json"), strict_json(reference / "record.json")
    assert {k: ours[k] for k in RESULT} == {k: theirs[k] for k in RESULT}
    assert ours["resumed_at"] == [6, 15]  # the slots that left a checkpoint
    assert metrics_rows(run_dir) == metrics_rows(reference)
    np.testing.assert_array_equal(np.load(run_dir / "predictions.npz")["predictions"],
                                  np.load(reference / "predictions.npz")["predictions"])


def test_eight_devices_train_like_one_and_their_checkpoint_restores_on_one(uninterrupted, capsys):
    reference, tmp_path = uninterrupted
    eight = lra_train(child_overrides(tmp_path, "eight"), devices=8)
    assert eight.returncode == 0, eight.stderr
    run_dir = only_run(tmp_path / "eight")
    record = strict_json(run_dir / "record.json")
    assert record["device_count"] == 8 and strict_json(reference / "record.json")["device_count"] == 1
    ours = [r["train/loss"] for r in metrics_rows(run_dir) if "train/loss" in r]
    theirs = [r["train/loss"] for r in metrics_rows(reference) if "train/loss" in r]
    assert len(ours) == 24
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)  # float sums in another order, no more
    from lra.cli import main

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--predictions"]) == 0  # this process has one device
    line = capsys.readouterr().out.strip()
    assert f"test accuracy {record['test']['accuracy']:.4f} (record: {record['test']['accuracy']:.4f})" in line
    np.testing.assert_array_equal(np.load(run_dir / "predictions-test.npz")["predictions"],
                                  np.load(run_dir / "predictions.npz")["predictions"])


class StopAtStep:
    """A stand-in for StopSignals: 'received' from the `step`-th step of the loop on."""

    name = "SIGTERM"

    def __init__(self, step):
        self.step, self.seen = step, 0

    @property
    def received(self):
        self.seen += 1
        return signal.SIGTERM if self.seen >= self.step else None


class ListTracker:
    def __init__(self):
        self.rows = []

    def log(self, step, metrics):
        self.rows.append((step, metrics))

    def flush(self):
        pass

    def close(self):
        pass


def test_a_stopped_fit_restored_into_a_new_trainer_ends_bit_for_bit_like_one_fit(tmp_path):
    """The best validation step comes early here (validation labels are the training rule
    shifted), before the stop: the best parameters and metrics must come back too."""
    from lra.checkpoint import Checkpoints

    rows = {"train": toy_batch(3, 256), "val": toy_batch(4, 64, shift=1)}
    cfg = trainer_cfg("trainer.lr=0.01", "trainer.max_steps=40", "trainer.eval_every=2", "trainer.log_every=1")

    def trainer_and_loaders(position=None):
        tracker = ListTracker()
        trainer = Trainer(FirstTokenNorm(rngs=nnx.Rngs(0)), cfg, seed=0, tracker=tracker)
        train = BatchLoader(rows["train"], 32, train=True, seed=0, state=position)
        return trainer, train, BatchLoader(rows["val"], 32, train=False), tracker

    whole, train, val, whole_rows = trainer_and_loaders()
    expected = whole.fit(train, val, progress=False)
    assert 2 <= expected["best_val"]["step"] < 25

    first, train, val, first_rows = trainer_and_loaders()
    checkpoints = Checkpoints(tmp_path / "ck", {"toy": 1})
    stopped = first.fit(train, val, progress=False, checkpoints=checkpoints, stop=StopAtStep(25))
    assert stopped["status"] == "interrupted" and stopped["stopped_by"] == "SIGTERM" and stopped["steps"] == 25

    second, _, val, second_rows = trainer_and_loaders()
    meta = second.restore(Checkpoints(tmp_path / "ck", {"toy": 1}), hint="")
    train = BatchLoader(rows["train"], 32, train=True, seed=0, state=meta["loader"])
    resumed = second.fit(train, val, progress=False)
    for key in ("status", "stopped_by", "best_val", "steps"):
        assert resumed[key] == expected[key], key
    assert first_rows.rows + second_rows.rows == whole_rows.rows
    for ours, theirs in ((resumed["best_params"], expected["best_params"]), (second.state, whole.state)):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)))


def test_step_options_keep_exactly_what_the_step_depends_on():
    cosine = TrainerConfig(schedule="cosine", max_steps=300, warmup_steps=10, lr=0.1)
    shared = cosine.step_options()
    assert shared == TrainerConfig(schedule="cosine", max_steps=900, cycle_steps=300, warmup_steps=10,
                                   lr=0.1, eval_every=7).step_options()
    for step in (0, 5, 10, 150, 299):
        assert float(make_schedule(shared)(step)) == float(make_schedule(cosine)(step))
    assert TrainerConfig(max_steps=10).step_options() == TrainerConfig(max_steps=20).step_options()
    assert TrainerConfig(lr=0.1).step_options() != TrainerConfig(lr=0.2).step_options()


def test_the_run_scores_the_test_split_with_the_best_validation_state(tmp_path, toy_overrides,
                                                                      monkeypatch):
    """After fit, the trainer's own state is zeroed: a run that tested it instead of
    fit's best_params would predict one class (accuracy about 0.25)."""
    fit = Trainer.fit

    def fit_then_spoil_the_final_state(self, *args, **kwargs):
        result = fit(self, *args, **kwargs)
        self.state = dataclasses.replace(
            self.state, params=jax.tree.map(jnp.zeros_like, self.state.params))
        return result

    monkeypatch.setattr(Trainer, "fit", fit_then_spoil_the_final_state)
    record = run(tmp_path, toy_overrides)
    assert record["test"]["accuracy"] > 0.6
