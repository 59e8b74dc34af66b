"""Checkpoints: exact round trips, retention, fallback from damage, refusal of other configs, kills."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lra.checkpoint import (
    CLAIM, Checkpoints, Claim, claim_is_live, describe_difference, find_run, fingerprint, read_claim,
    trim_metrics,
)
from lra.records import result_settings
from lra.errors import LraError
from lra.models import EncoderConfig, build_model

CONFIG = {
    "task": {"name": "toy_first_token", "seq_len": 12, "data": {"seed": 0, "workers": 2}},
    "model": {"name": "transformer"},
    "seed": 0,
    "trainer": {"lr": 0.005, "max_steps": 60, "max_seconds": None, "log_every": 10},
    "runs_dir": "runs", "data_dir": "data", "progress": False,
}


def tiny_state(value: float = 0.0):
    params = {"w": jnp.full((4, 3), value, jnp.float32) + jnp.arange(12.0).reshape(4, 3),
              "b": jnp.linspace(-1, 1, 3).astype(jnp.bfloat16)}
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "key": jax.random.fold_in(jax.random.key(7), int(value)),
        "count": jnp.asarray(int(value), jnp.int32),
    }


def bits(tree) -> list[np.ndarray]:
    """Every leaf as raw bytes (typed keys as their data), for bitwise comparison."""
    def raw(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf).tobytes()
    return [raw(leaf) for leaf in jax.tree.leaves(tree)]


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert bits(a) == bits(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape


def step_dirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def test_round_trip_is_bitwise_with_keys_bf16_and_optimizer_state(tmp_path):
    state = tiny_state(3.0)
    meta = {"loader": {"epoch": 1, "batch": 5}, "best_val": {"accuracy": 0.5, "loss": 1.25, "step": 30}}
    with Checkpoints(tmp_path / "ck", CONFIG) as ck:
        ck.save(30, state, meta)
        # the save is asynchronous: the trainer donates its buffers at once
        zero = jax.jit(lambda params: jax.tree.map(jnp.zeros_like, params), donate_argnums=0)
        zero(state["params"])
    restored = Checkpoints(tmp_path / "ck", CONFIG).restore(tiny_state())
    assert restored.step == 30
    assert_bitwise_equal(restored.state, tiny_state(3.0))
    assert restored.meta["loader"] == meta["loader"] and restored.meta["best_val"] == meta["best_val"]
    assert restored.meta["config"] == CONFIG  # enough to rebuild the run without its record
    assert Checkpoints(tmp_path / "empty", CONFIG).restore(tiny_state()) is None


def test_a_tiny_model_round_trips_bitwise(tmp_path):
    """A real model's parameters, non-parameter state (nnx.split's rest) and AdamW
    state after an update: all of a train step's inputs come back bit for bit,
    so the step after a restore is the step the run would have taken."""
    enc = EncoderConfig(vocab_size=9, max_len=8, num_layers=1, dim=16, num_heads=2, qkv_dim=16,
                        mlp_dim=32, dropout=0.1, attention_dropout=0.1)
    _, params, rest = nnx.split(build_model("transformer", {}, enc, 4, rngs=nnx.Rngs(0)), nnx.Param, ...)
    tx = optax.adamw(1e-2)
    grads = jax.tree.map(lambda p: jnp.sin(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape), params)
    updates, opt_state = tx.update(grads, tx.init(params), params)
    state = {"params": optax.apply_updates(params, updates), "rest": rest, "opt_state": opt_state,
             "best_params": params, "key": jax.random.key(0)}
    with Checkpoints(tmp_path / "ck", CONFIG) as ck:
        ck.save(3, state, {})
    template = jax.tree.map(lambda x: x if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else jnp.zeros_like(x),
                            state)
    restored = Checkpoints(tmp_path / "ck", CONFIG).restore(template)
    assert type(restored.state["params"]) is type(params)
    assert_bitwise_equal(restored.state, state)


def test_keeps_the_newest_k_and_the_best(tmp_path):
    with Checkpoints(tmp_path / "ck", CONFIG, keep=2) as ck:
        for step in range(1, 7):
            ck.save(step * 10, tiny_state(step), {}, best_step=20)
            assert len(ck.steps) <= 4  # newest 2 + the best + the one being written
    assert Checkpoints(tmp_path / "ck", CONFIG).steps == [20, 50, 60]
    with Checkpoints(tmp_path / "ck1", CONFIG, keep=1) as ck:
        for step in range(1, 4):
            ck.save(step, tiny_state(step), {}, best_step=3)
    assert Checkpoints(tmp_path / "ck1", CONFIG).steps == [3]
    with pytest.raises(LraError, match="keep_checkpoints"):
        Checkpoints(tmp_path / "ck2", CONFIG, keep=0)


def largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["garble_arrays", "truncate_arrays", "garble_meta", "remove_state",
                                    "arrays_of_another_step"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, damage):
    directory = tmp_path / "ck"
    with Checkpoints(directory, CONFIG, keep=3) as ck:
        for step in (1, 2, 3):
            ck.save(step, tiny_state(step), {"at": step})
    newest = directory / "3"
    if damage == "garble_arrays":
        garble(largest_file(newest / "state"))
    elif damage == "truncate_arrays":
        truncate(largest_file(newest / "state"))
    elif damage == "garble_meta":
        (largest_file(newest / "meta")).write_text('{"step": 3, "fingerpr')
    elif damage == "remove_state":
        shutil.rmtree(newest / "state")
    else:  # well-formed files that orbax reads happily: only the checksums tell
        shutil.rmtree(newest / "state")
        shutil.copytree(directory / "2" / "state", newest / "state")
    capsys.readouterr()
    ck = Checkpoints(directory, CONFIG, keep=3)
    restored = ck.restore(tiny_state())
    assert restored.step == 2 and restored.meta["at"] == 2
    assert_bitwise_equal(restored.state, tiny_state(2))
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "step 3" in warning[0] and "falling back to step 2" in warning[0]
    ck.save(3, tiny_state(33), {"at": 33})  # the run goes on: the damaged step is replaced
    ck.close()
    again = Checkpoints(directory, CONFIG).restore(tiny_state())
    assert again.step == 3 and again.meta["at"] == 33
    assert_bitwise_equal(again.state, tiny_state(33))


def test_another_model_task_or_config_is_refused_naming_the_difference(tmp_path):
    with Checkpoints(tmp_path / "ck", CONFIG) as ck:
        ck.save(5, tiny_state(5), {})
    performer = {**CONFIG, "model": {"name": "performer"}}
    with pytest.raises(LraError, match=r"is for model=transformer, this run is model=performer; use a new"):
        Checkpoints(tmp_path / "ck", performer).restore(tiny_state())
    lr = {**CONFIG, "trainer": {**CONFIG["trainer"], "lr": 0.01}}
    with pytest.raises(LraError, match=r"trainer.lr=0.005, this run is trainer.lr=0.01; resume=x"):
        Checkpoints(tmp_path / "ck", lr).restore(tiny_state(), hint="resume=x")
    wider = {"params": {"w": jnp.zeros((4, 5)), "b": jnp.zeros(3, jnp.bfloat16)}}
    with pytest.raises(LraError, match=r"does not fit this model: array \['params'\]\['w'\] is \[4, 3\]"):
        Checkpoints(tmp_path / "ck", CONFIG).restore({**tiny_state(), **wider})
    # where files go, the wall-clock budget and logging do not change results
    elsewhere = {**CONFIG, "runs_dir": "/x", "data_dir": "/y", "progress": True,
                 "task": {**CONFIG["task"], "data": {"seed": 0, "workers": 8}},
                 "trainer": {**CONFIG["trainer"], "max_seconds": 60, "log_every": 1}}
    assert fingerprint(elsewhere) == fingerprint(CONFIG)
    assert Checkpoints(tmp_path / "ck", elsewhere).restore(tiny_state()).step == 5


def test_difference_names_the_run_first_and_counts_the_rest():
    saved = result_settings({**CONFIG, "seed": 1, "trainer": {"lr": 1, "b1": 2, "b2": 3}})
    assert describe_difference(saved, result_settings(CONFIG)) == (
        "seed=1, trainer.b1=2, trainer.b2=3 (and 2 more)",
        "seed=0, trainer.b1=<unset>, trainer.b2=<unset> (and 2 more)",
    )


CHILD = textwrap.dedent("""
    import sys, jax, jax.numpy as jnp
    from lra.checkpoint import Checkpoints
    directory = sys.argv[1]
    def state(step):  # about 16 MB per step, so that a write takes a while
        return {"a": jnp.full((2_000_000,), step, jnp.float32), "b": jnp.full((2_000_000,), -step, jnp.float32)}
    ck = Checkpoints(directory, {"model": {"name": "m"}}, keep=2)
    ck.save(1, state(1), {}, wait=True)
    print("ready", flush=True)
    for step in range(2, 10_000):
        ck.save(step, state(step), {})
""")


def test_a_kill_during_a_write_leaves_the_previous_checkpoint_restorable(tmp_path):
    directory = tmp_path / "ck"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for attempt in range(5):
        shutil.rmtree(directory, ignore_errors=True)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)], stdout=subprocess.PIPE, env=env)
        assert child.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = [p.name for p in directory.iterdir()]
            if any("tmp" in name for name in names) and len(names) > 2:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        child.wait(timeout=60)
        if any("tmp" in p.name for p in directory.iterdir()):  # killed mid-write, as wanted
            break
    else:
        pytest.fail("never caught the child in the middle of a write")
    assert child.returncode == -signal.SIGKILL
    template = {"a": jnp.zeros(2_000_000), "b": jnp.zeros(2_000_000)}
    ck = Checkpoints(directory, {"model": {"name": "m"}})
    restored = ck.restore(template)
    assert restored is not None and restored.step >= 1
    assert float(restored.state["a"][0]) == restored.step == -float(restored.state["b"][-1])
    ck.save(restored.step + 1, template, {}, wait=True)  # the resumed run goes on
    assert not any("tmp" in name for name in step_dirs(directory))  # the cut-short write is gone


def test_a_leftover_temporary_folder_is_ignored_and_removed(tmp_path):
    directory = tmp_path / "ck"
    with Checkpoints(directory, CONFIG) as ck:
        ck.save(1, tiny_state(1), {})
    partial = directory / "2.orbax-checkpoint-tmp-1234567"
    shutil.copytree(directory / "1", partial)
    shutil.rmtree(partial / "meta")
    ck = Checkpoints(directory, CONFIG)
    assert ck.steps == [1]
    assert_bitwise_equal(ck.restore(tiny_state()).state, tiny_state(1))
    ck.save(2, tiny_state(2), {}, wait=True)
    assert ck.steps == [1, 2] and not partial.exists()
    assert_bitwise_equal(ck.restore(tiny_state()).state, tiny_state(2))


# Run folders and signals -------------------------------------------------------

def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_a_claim_is_exclusive_while_held_and_taken_over_after_its_process_dies(tmp_path):
    run_dir = tmp_path / "run"
    claim = Claim(run_dir, "abc")
    assert read_claim(run_dir) == {"pid": os.getpid(), "host": read_claim(run_dir)["host"], "fingerprint": "abc"}
    with pytest.raises(LraError, match=rf"belongs to a running process \(pid {os.getpid()}\)"):
        Claim(run_dir, "abc")
    claim.release()
    assert not claim_is_live(run_dir)
    Claim(run_dir, "abc").release()
    # a killed process leaves its claim file, but not its lock
    child = spawn("""
        import sys, time
        from lra.checkpoint import Claim
        claim = Claim(sys.argv[1], "abc")
        print("claimed", flush=True)
        time.sleep(60)
    """, str(run_dir))
    assert child.stdout.readline().strip() == b"claimed"
    assert claim_is_live(run_dir) and read_claim(run_dir)["pid"] == child.pid
    with pytest.raises(LraError, match=rf"pid {child.pid}"):
        Claim(run_dir, "abc")
    child.kill()
    child.wait()
    assert (run_dir / CLAIM).exists() and not claim_is_live(run_dir)
    Claim(run_dir, "abc").release()
    assert read_claim(run_dir)["pid"] == os.getpid()


def test_find_run_prefers_the_unfinished_run_of_the_same_config(tmp_path):
    runs = tmp_path / "runs"

    claimed = iter(range(1_000_000, 2_000_000, 1000))

    def make(name: str, fingerprint: str, status: str | None = None, hold: bool = False):
        claim = Claim(runs / name, fingerprint)
        os.utime(runs / name / CLAIM, (next(claimed),) * 2)  # claimed in this order, whatever the clock
        if status:
            (runs / name / "record.json").write_text(json.dumps({"status": status}))
        if not hold:
            claim.release()
        return claim

    assert find_run(runs, "f1") is None
    make("toy/transformer/1-s0", "f1", "completed")
    assert find_run(runs, "f1") == (runs / "toy/transformer/1-s0", "finished")
    held = make("toy/transformer/2-s0", "f1", hold=True)
    assert find_run(runs, "f1") == (runs / "toy/transformer/2-s0", "running")
    make("multirun/x/toy-transformer-s0-0", "f1", "interrupted")
    make("toy/transformer/3-s0", "f2")  # another config
    assert find_run(runs, "f1") == (runs / "multirun/x/toy-transformer-s0-0", "unfinished")
    held.release()  # its process ended without a record: killed
    assert find_run(runs, "f1") == (runs / "multirun/x/toy-transformer-s0-0", "unfinished")  # the newer
    (runs / "multirun/x/toy-transformer-s0-0/record.json").write_text(json.dumps({"status": "completed"}))
    assert find_run(runs, "f1") == (runs / "toy/transformer/2-s0", "unfinished")
    assert find_run(runs, "f2") == (runs / "toy/transformer/3-s0", "unfinished")
    make("toy/transformer/4-s0", "f2", "diverged")
    assert find_run(runs, "f2") == (runs / "toy/transformer/3-s0", "unfinished")


def test_a_first_signal_asks_to_stop_and_a_second_exits_at_once():
    child = spawn("""
        import time
        from lra.checkpoint import StopSignals
        with StopSignals() as stop:
            print("ready", flush=True)
            while not stop.received:
                time.sleep(0.01)
            print("stopping on", stop.name, flush=True)
            time.sleep(60)  # a slow checkpoint write
    """)
    assert child.stdout.readline().strip() == b"ready"
    child.send_signal(signal.SIGTERM)
    assert child.stdout.readline().strip() == b"stopping on SIGTERM"
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) == 128 + signal.SIGINT and time.monotonic() - started < 10
    err = child.stderr.read().decode().strip().splitlines()
    assert len(err) == 1 and "SIGTERM: stopping after this step" in err[0]


def test_trim_metrics_keeps_what_a_resumed_run_will_not_log_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "train/loss": 2.0}, {"step": 6, "val/accuracy": 0.5}, {"step": 7, "train/loss": 1.0},
            {"step": 6, "test/accuracy": 0.4}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "train/lo')
    trim_metrics(path, 6)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:2]
    trim_metrics(tmp_path / "absent.jsonl", 6)
    assert not (tmp_path / "absent.jsonl").exists()
