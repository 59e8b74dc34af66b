"""One (model, length), measured inside a worker subprocess (`python -m lra.bench
--worker`), so that its peak memory is its own and a crash or an out-of-memory
becomes a row."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from lra.bench.settings import unsupported_reason


class _OverBudget(Exception):
    """The compiled footprint exceeds the memory_limit option: treated as an OOM."""


class _Unsupported(Exception):
    """The configuration cannot run on this backend or precision."""


def _trainer_module():
    """lra.trainer, even where tqdm (used only by its progress bar) is not installed."""
    try:
        import lra.trainer as trainer
    except ModuleNotFoundError as err:
        if err.name not in ("tqdm", "tqdm.auto"):
            raise
        import types

        class _NoBar:  # what Trainer.fit would call; the benchmark never does
            def __init__(self, *args, **kwargs):
                pass

            def __getattr__(self, name):
                return lambda *args, **kwargs: None

        package, auto = types.ModuleType("tqdm"), types.ModuleType("tqdm.auto")
        auto.tqdm = package.tqdm = _NoBar
        package.auto = auto
        for name, module in (("tqdm", package), ("tqdm.auto", auto)):
            if sys.modules.get(name) is None:
                sys.modules[name] = module
        import lra.trainer as trainer
    return trainer


def _first_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:400]
    return type(err).__name__


def is_oom(text: str) -> bool:
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                   "OutOfMemory", "Failed to allocate", "Resource exhausted"))


def _cost_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def _compiled_bytes(compiled) -> int | None:
    """temp + arguments + outputs - aliased (donated) bytes of one executable."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if stats is None:
        return None
    try:
        total = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
                 + stats.output_size_in_bytes - stats.alias_size_in_bytes)
    except AttributeError:
        return None
    return int(total) if total > 0 else None


def _uses_cudnn_attention(compiled) -> bool:
    try:
        return "cudnn$fmha" in compiled.as_text()
    except Exception:  # noqa: BLE001
        return False


def attention_flops(batch: int, heads: int, seq_len: int, head_dim: int, layers: int,
                    train: bool) -> float:
    """Exact attention's matmul FLOPs: forward 4*B*H*L^2*D per layer (QK^T and PV);
    training adds the backward at 2.5x the forward (FlashAttention's accounting,
    which recomputes QK^T), i.e. 3.5x the forward in all."""
    forward = 4.0 * batch * heads * seq_len**2 * head_dim * layers
    return forward * (3.5 if train else 1.0)


def _cache_small_programs(cache_dir: str | None) -> Callable[[], Any]:
    """Persistent compilation cache for the many tiny programs of eager model
    initialisation (shared by the configurations of one sweep lane, which saves
    seconds per subprocess). Returns a context manager under which nothing is
    written to the cache: the measured step compilations, whose times must stay
    from scratch (each (model, length) step is compiled once per sweep anyway)."""
    import contextlib

    import jax

    @contextlib.contextmanager
    def no_write():
        if not enabled:
            yield
            return
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
        try:
            yield
        finally:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    enabled = False
    if cache_dir:
        try:
            jax.config.update("jax_compilation_cache_dir", cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
            enabled = True
        except Exception:  # noqa: BLE001 - an older/newer jax without these flags
            enabled = False
    return no_write


def _time_steps(call: Callable[[], Any], warmup: int, repeats: int | None,
                timing_s: float) -> tuple[float, int]:
    """Median seconds of one step (each timed step ends in block_until_ready)."""
    import jax

    last = None
    for _ in range(warmup):
        tick = time.perf_counter()
        jax.block_until_ready(call())
        last = time.perf_counter() - tick
    if repeats is None:
        repeats = int(min(50, max(3, math.ceil(timing_s / max(last or timing_s, 1e-6)))))
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - tick)
    return statistics.median(times), repeats


def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (model, length): returns a result row (never raises)."""
    wall = time.perf_counter()
    row: dict[str, Any] = {"status": "error", "message": ""}
    try:
        row.update(_measure(spec))
        row["status"] = "ok"
    except _Unsupported as err:
        row.update(status="unsupported", message=str(err))
    except _OverBudget as err:
        row.update(status="oom", message=str(err))
    except Exception as err:  # noqa: BLE001 - every failure is a row
        message = _first_line(err)
        row.update(status="oom" if is_oom(f"{type(err).__name__}: {err}") else "error",
                   message=message)
    row["wall_s"] = round(time.perf_counter() - wall, 3)
    return row


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from lra.models import EncoderConfig, build_model

    trainer = _trainer_module()
    no_cache_write = _cache_small_programs(spec.get("cache_dir"))
    enc_spec = spec["encoder"]
    length, batch_size = int(spec["length"]), int(spec["batch"])
    reason = unsupported_reason(spec["name"], jax.default_backend(), spec["precision"])
    if reason:
        raise _Unsupported(reason)
    enc = EncoderConfig(
        vocab_size=enc_spec["vocab"], max_len=length, num_layers=enc_spec["layers"],
        dim=enc_spec["dim"], num_heads=enc_spec["heads"], qkv_dim=enc_spec["qkv_dim"],
        mlp_dim=enc_spec["mlp_dim"], dropout=enc_spec["dropout"],
        attention_dropout=enc_spec["attention_dropout"], pooling=enc_spec["pooling"],
        learned_pos_emb=False, dtype=trainer.PRECISIONS[spec["precision"]],
    )
    seed = int(spec["seed"])
    model = build_model(spec["base"], dict(spec["options"]), enc, enc_spec["classes"],
                        rngs=nnx.Rngs(seed))
    graphdef, params, rest = trainer.split_model(model)
    del model
    out: dict[str, Any] = {
        "params": int(sum(x.size for x in jax.tree.leaves(params))),
        "seq_len": enc.seq_len,
    }
    rng = np.random.default_rng(seed)
    batch = {  # random bytes 1..vocab-1: never padding, so every model sees full length
        "inputs": rng.integers(1, enc_spec["vocab"], (batch_size, length), dtype=np.int32),
        "labels": rng.integers(0, enc_spec["classes"], (batch_size,), dtype=np.int32),
        "weights": np.ones((batch_size,), np.float32),
    }
    batch = jax.device_put(batch)
    limit = spec.get("memory_limit")
    peak_flops = spec.get("peak_flops")
    attn = attention_flops(batch_size, enc.num_heads, enc.seq_len, enc.qkv_dim // enc.num_heads,
                           enc.num_layers, train=True)
    flops_source = None

    def check_limit(nbytes, what):
        if limit is not None and nbytes is not None and nbytes > limit:
            raise _OverBudget(f"{what} compiled footprint {nbytes} B exceeds memory_limit "
                              f"{limit} B (not run)")

    def flops_of(compiled, train):
        nonlocal flops_source
        flops = _cost_flops(compiled)
        if _uses_cudnn_attention(compiled):
            # XLA's cost analysis does not see inside the cuDNN custom call.
            extra = attn if train else attn / 3.5
            flops = (flops or 0.0) + extra
            flops_source = "xla+analytic_attention"
        elif flops is not None and flops_source is None:
            flops_source = "xla"
        return flops

    # The steps of `lra train` (lra.trainer.train_step / eval_step), not a copy.
    opt_cfg = trainer.TrainerConfig()  # the defaults of configs/trainer/default.yaml
    tx = trainer.make_optimizer(opt_cfg)
    if spec["mode"] in ("infer", "both"):
        tick = time.perf_counter()
        with no_cache_write():
            compiled = trainer.eval_step_jit.lower(graphdef, params, rest, batch).compile()
        out["compile_infer_s"] = round(time.perf_counter() - tick, 3)
        out["compiled_bytes_infer"] = _compiled_bytes(compiled)
        check_limit(out["compiled_bytes_infer"], "inference step")
        out["infer_flops"] = flops_of(compiled, train=False)
        seconds, repeats = _time_steps(lambda: compiled(params, rest, batch), spec["warmup"],
                                       spec["repeats"], spec["timing_s"])
        out["infer_step_ms"] = round(seconds * 1e3, 4)
        out["infer_repeats"] = repeats
        out["infer_examples_per_s"] = batch_size / seconds
        if out["infer_flops"] and peak_flops:
            out["infer_mfu"] = out["infer_flops"] / seconds / peak_flops
        out["peak_bytes_infer"] = trainer.peak_memory_bytes()
        del compiled

    if spec["mode"] in ("train", "both"):
        dropout_key = jax.random.key(seed + 1)
        state = trainer.TrainState(params, tx.init(params), rest)
        del params, rest
        step0 = jnp.asarray(0, jnp.int32)
        tick = time.perf_counter()
        with no_cache_write():
            compiled = trainer.train_step_jit.lower(graphdef, opt_cfg, state, step0, batch,
                                                    dropout_key).compile()
        out["compile_train_s"] = round(time.perf_counter() - tick, 3)
        out["compiled_bytes_train"] = _compiled_bytes(compiled)
        check_limit(out["compiled_bytes_train"], "training step")
        out["train_flops"] = flops_of(compiled, train=True)
        counter = {"step": 0}

        def one_step():
            nonlocal state
            counter["step"] += 1
            state, metrics = compiled(state, jnp.asarray(counter["step"], jnp.int32), batch, dropout_key)
            return state, metrics

        seconds, repeats = _time_steps(one_step, spec["warmup"], spec["repeats"], spec["timing_s"])
        loss = float(jax.device_get(one_step()[1]["loss"]))
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss}")
        out["train_step_ms"] = round(seconds * 1e3, 4)
        out["train_repeats"] = repeats
        out["train_steps_per_s"] = 1.0 / seconds
        out["train_tokens_per_s"] = batch_size * length / seconds
        if out["train_flops"]:
            out["train_tflops_per_s"] = out["train_flops"] / seconds / 1e12
            if peak_flops:
                out["train_mfu"] = out["train_flops"] / seconds / peak_flops
        out["peak_bytes_train"] = trainer.peak_memory_bytes()
    out["flops_source"] = flops_source
    return out


def probe() -> dict[str, Any]:
    """The device this process sees, and the package versions."""
    import jax

    from lra.records import package_versions

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "platform": devices[0].platform,
        "versions": package_versions(),
    }


def worker_main(argv: list[str]) -> int:
    """python -m lra.bench --worker SPEC RESULT | --probe RESULT"""
    if len(argv) == 2 and argv[0] == "--probe":
        Path(argv[1]).write_text(json.dumps(probe()))
        return 0
    if len(argv) == 3 and argv[0] == "--worker":
        spec = json.loads(Path(argv[1]).read_text())
        row = run_config(spec)
        Path(argv[2]).write_text(json.dumps(row, default=float))
        return 0
    print("usage: python -m lra.bench --worker SPEC RESULT | --probe RESULT", file=sys.stderr)
    return 2
