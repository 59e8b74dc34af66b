"""`lra bench`: training and inference speed and memory of every model, 1K to 16K.

LRA's Table 2 compared training steps per second and peak memory at 1K-4K tokens
on the byte-level text task (batch 32), relative to the Transformer. Since fused
exact attention (FlashAttention, cuDNN), the fair question is whether an
efficient model beats *that* in wall-clock time and memory, and from which
length on. This module measures it.

Shape: the LRA text classification config (4 layers, width 256, 4 heads, qkv 256,
MLP 1024, 257-symbol byte vocabulary, 2 classes, CLS pooling, batch 32, dropout
0.1). Attention dropout is 0 for every model: in `transformer` attention dropout
needs the weights and forces the explicit (materialised) path, which would make
the fused baselines impossible.

Every registered model runs, plus the Transformer twice: `transformer_xla`
(implementation=xla) and `transformer_cudnn` (implementation=cudnn, GPU with
bf16 only; elsewhere its rows say `unsupported`). Each (model, length) runs in a
fresh subprocess, so that `peak_bytes_in_use` is that configuration's own peak
and an out-of-memory or a crash becomes a row instead of ending the sweep.

The parent process never initialises an accelerator (it would take the GPU's
memory from its children): it finds the device through a probe subprocess.
Hydra is not needed: arguments are `key=value` pairs parsed here.
"""

from __future__ import annotations

import csv
import json
import math
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lra.errors import LraError

DEFAULT_LENGTHS = (1024, 2048, 3072, 4096, 8192, 16384)
BASELINES = {
    "transformer_xla": ("transformer", {"implementation": "xla"}),
    "transformer_cudnn": ("transformer", {"implementation": "cudnn"}),
}
# Models whose memory should grow linearly with length (fitted in the report). A new
# linear-time mixer (an SSM, say) joins them by setting `linear_time = True` on its class.
LINEAR_MODELS = ("performer", "linear_transformer", "linformer", "local")
# Training steps/s of a plain PyTorch 2.11 implementation of the same shape
# (torch.compile, SDPA flash, bf16 autocast, fused AdamW) on the H200. Given to
# us in the issue, NOT measured by this harness.
PYTORCH_REFERENCE = {1024: 121.0, 2048: 92.0, 3072: 52.0, 4096: 34.0, 8192: 11.0, 16384: 3.15}
PYTORCH_TARGET_RATIO = 1.1
PEAK_TFLOPS = {"bf16": 790.0, "fp32": 67.0}  # measured H200 dense matmul peaks
MODES = ("train", "infer", "both")
PRECISIONS = ("bf16", "fp32")
POOLINGS = ("cls", "mean")
STATUSES = ("ok", "oom", "error", "unsupported", "timeout", "skipped")
RESULT_MARK = "efficiency"

COLUMNS = (
    "device", "backend", "model", "base_model", "options", "length", "seq_len", "batch",
    "precision", "mode", "status", "message", "params",
    "train_steps_per_s", "train_tokens_per_s", "train_step_ms", "train_repeats",
    "infer_examples_per_s", "infer_step_ms", "infer_repeats",
    "compile_train_s", "compile_infer_s",
    "peak_bytes_train", "peak_bytes_infer", "compiled_bytes_train", "compiled_bytes_infer",
    "memory_bytes", "memory_source",
    "train_flops", "infer_flops", "flops_source", "train_tflops_per_s", "train_mfu", "infer_mfu",
    "steps_ratio_vs_transformer_xla", "steps_ratio_vs_transformer_cudnn",
    "memory_ratio_vs_transformer_xla", "memory_ratio_vs_transformer_cudnn",
    "infer_ratio_vs_transformer_xla", "infer_ratio_vs_transformer_cudnn",
    "wall_s",
)


# ---------------------------------------------------------------------------
# Arguments


def _positive_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LraError(f"{key}={text!r} must be a positive integer")
    if value <= 0:
        raise LraError(f"{key}={text!r} must be a positive integer")
    return value


def _nonnegative_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LraError(f"{key}={text!r} must be a non-negative integer")
    if value < 0:
        raise LraError(f"{key}={text!r} must be a non-negative integer")
    return value


def _positive_float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LraError(f"{key}={text!r} must be a positive number")
    if not value > 0 or not math.isfinite(value):
        raise LraError(f"{key}={text!r} must be a positive number")
    return value


def _fraction(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LraError(f"{key}={text!r} must be a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise LraError(f"{key}={text!r} must be a number in [0, 1)")
    return value


def _unit_fraction(key: str, text: str) -> float:
    value = _positive_float(key, text)
    if value > 1:
        raise LraError(f"{key}={text!r} must be a fraction in (0, 1]")
    return value


def _bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise LraError(f"{key}={text!r} must be true or false")


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(key: str, text: str) -> str:
        if text not in choices:
            raise LraError(f"{key}={text!r} is not one of {', '.join(choices)}")
        return text
    return parse


def _items(text: str) -> list[str]:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    return [item.strip() for item in body.split(",") if item.strip()]


def _lengths(key: str, text: str) -> list[int]:
    items = _items(text)
    if not items:
        raise LraError(f"{key}={text!r} must list at least one length, e.g. {key}=[1024,2048]")
    values = sorted({_positive_int(key, item) for item in items})
    return values


def _names(key: str, text: str) -> list[str]:
    items = _items(text)
    if not items:
        raise LraError(f"{key}={text!r} must name at least one model")
    return list(dict.fromkeys(items))


_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _paths(key: str, text: str) -> list[str]:
    items = _items(text)
    if not items:
        raise LraError(f"{key}= needs at least one file, e.g. {key}=a.json,b.json")
    return items


def _bytes(key: str, text: str) -> int:
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise LraError(f"{key}={text!r} must be a size such as 2e9, 512MB or 40GiB")
    try:
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    except ValueError:
        raise LraError(f"{key}={text!r} must be a size such as 2e9, 512MB or 40GiB")
    if value <= 0:
        raise LraError(f"{key}={text!r} must be positive")
    return int(value)


def _auto(parse: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    def parse_or_auto(key: str, text: str):
        return None if text.strip().lower() in ("auto", "none", "null") else parse(key, text)
    return parse_or_auto


def _text(key: str, text: str) -> str:
    if not text:
        raise LraError(f"{key}= needs a value")
    return text


def _slug_text(key: str, text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise LraError(f"{key}={text!r} may only use letters, digits, '.', '_' and '-'")
    return text


# key -> (parser, default, help)
OPTIONS: dict[str, tuple[Callable[[str, str], Any], Any, str]] = {
    "model": (_names, None, "models to run, e.g. model=performer,local (default: every registered model)"),
    "lengths": (_lengths, list(DEFAULT_LENGTHS), "sequence lengths (tokens, CLS not counted)"),
    "batch": (_positive_int, 32, "batch size"),
    "mode": (_choice(MODES), "both", "train (steps/s), infer (examples/s) or both"),
    "precision": (_choice(PRECISIONS), "bf16", "compute dtype; parameters stay fp32"),
    "out": (_text, "results", "output folder"),
    "tag": (_auto(_slug_text), None, "suffix for the output file names (default: none)"),
    "repeats": (_auto(_positive_int), None, "timed steps (auto: about timing_s seconds, 3..50 steps)"),
    "warmup": (_positive_int, 2, "untimed steps after compilation"),
    "timing_s": (_positive_float, 2.0, "target seconds of timed steps when repeats=auto"),
    "peak_tflops": (_auto(_positive_float), None, "peak for MFU (auto: 790 bf16 / 67 fp32 on GPU, none on CPU)"),
    "timeout": (_positive_float, 600.0, "seconds one (model, length) subprocess may take"),
    "budget": (_auto(_positive_float), None, "seconds for the whole sweep; later configs become 'skipped' (default: none)"),
    "skip_after": (_auto(_positive_float), None, "skip a model's longer lengths once one took more seconds than this (default: none)"),
    "memory_limit": (_auto(_bytes), None, "mark a config 'oom' without running it if its compiled footprint exceeds this, e.g. 40GiB (default: none)"),
    "mem_fraction": (_unit_fraction, 0.9, "XLA_PYTHON_CLIENT_MEM_FRACTION for GPU subprocesses (unless set)"),
    "isolate": (_bool, True, "one fresh subprocess per (model, length); false = in-process, no peak memory"),
    "workers": (_auto(_positive_int), None, "concurrent subprocesses, one GPU each (auto: all GPUs; 1 on CPU)"),
    "baselines": (_bool, True, "always add transformer_xla and transformer_cudnn"),
    "resume": (_bool, False, "keep the rows of an earlier run in the same output files (same shape, "
               "batch, precision, mode) and run only the rest; 'skipped' and 'error' rows run again"),
    "merge": (_paths, None, "merge=a.json,b.json: write one report of earlier runs' efficiency-*.json "
              "(later files win), measuring nothing"),
    "plot": (_bool, True, "write the PNG plot (needs matplotlib: pip install 'lra[plot]')"),
    "seed": (_nonnegative_int, 0, "parameter and token seed"),
    "layers": (_positive_int, 4, "encoder layers"),
    "dim": (_positive_int, 256, "model width"),
    "heads": (_positive_int, 4, "attention heads"),
    "qkv_dim": (_positive_int, 256, "query/key/value width"),
    "mlp_dim": (_positive_int, 1024, "MLP width"),
    "vocab": (_positive_int, 257, "vocabulary (tokens are drawn from 1..vocab-1)"),
    "classes": (_positive_int, 2, "output classes"),
    "dropout": (_fraction, 0.1, "dropout in training mode (LRA: 0.1)"),
    "attention_dropout": (_fraction, 0.0, "attention dropout (0: >0 forces transformer's explicit path)"),
    "pooling": (_choice(POOLINGS), "cls", "cls or mean pooling"),
}


def usage() -> str:
    lines = [
        "usage: lra bench [key=value ...] [<model>.<option>=value ...]",
        "",
        "Training steps/s, inference examples/s, peak memory, compile time, FLOPs and MFU",
        "of every model on the LRA text shape, against transformer_xla and transformer_cudnn.",
        "Writes <out>/efficiency-<device>.csv, .md, .json and .png.",
        "",
        "keys:",
    ]
    for key, (_, default, text) in OPTIONS.items():
        if default is None:  # the help text says what happens without it
            lines.append(f"  {key:<18} {text}")
            continue
        if isinstance(default, list):
            shown = "[" + ",".join(map(str, default)) + "]"
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = default
        lines.append(f"  {key:<18} {text} (default: {shown})")
    lines += [
        "  <model>.<option>   a model option, e.g. linformer.k=256 performer.num_features=128",
        "",
        "examples:",
        "  lra bench",
        "  lra bench model=performer,local lengths=[1024,4096] mode=train",
        "  lra bench lengths=[64,128] batch=2 layers=1 dim=32 heads=2 qkv_dim=32 mlp_dim=64 precision=fp32",
    ]
    return "\n".join(lines)


def parse_args(args: list[str]) -> dict[str, Any]:
    """`key=value` pairs -> settings; model options go to settings['model_options']."""
    settings = {key: (list(default) if isinstance(default, list) else default)
                for key, (_, default, _) in OPTIONS.items()}
    settings["model_options"] = {}
    seen: set[str] = set()
    for arg in args:
        if "=" not in arg:
            raise LraError(f"argument {arg!r} is not key=value; see `lra bench --help`")
        key, text = arg.split("=", 1)
        key = key.strip()
        if key in seen:
            raise LraError(f"{key} is given twice")
        seen.add(key)
        if "." in key:
            model, option = key.split(".", 1)
            if not model or not option:
                raise LraError(f"{key!r} is not <model>.<option>")
            settings["model_options"].setdefault(model, {})[option] = _yaml_value(text)
            continue
        if key not in OPTIONS:
            raise LraError(f"unknown key {key!r}; valid keys: {', '.join(OPTIONS)} "
                           "(and <model>.<option>)")
        settings[key] = OPTIONS[key][0](key, text)
    if settings["qkv_dim"] % settings["heads"]:
        raise LraError(f"heads={settings['heads']} does not divide qkv_dim={settings['qkv_dim']}")
    if settings["vocab"] < 2:
        raise LraError("vocab must be at least 2 (tokens are drawn from 1..vocab-1)")
    return settings


def _yaml_value(text: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with flax
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ---------------------------------------------------------------------------
# Models


def _model_registry():
    """The registry of models; imports lra.models (not the tasks: no omegaconf needed)."""
    import lra.models  # noqa: F401 - registers the models
    from lra.registry import MODELS

    return MODELS


def config_options(name: str) -> dict[str, Any]:
    """A model's options from configs/model/<name>.yaml (the LRA defaults), if present."""
    try:
        from importlib import resources

        import yaml

        path = resources.files("lra.configs") / "model" / f"{name}.yaml"
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text()) or {}
    except Exception:  # noqa: BLE001 - no configs or no yaml: the class defaults apply
        return {}
    data.pop("name", None)
    return {k: v for k, v in data.items() if not (isinstance(v, str) and "${" in v)}


def resolve_models(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark entries: name, registered base model and options."""
    registry = _model_registry()
    from lra.models import model_options

    registered = registry.names()
    known = [n for n in registered if n != "transformer"] + list(BASELINES)
    if settings["model"] is None:
        names = list(BASELINES) + [n for n in registered if n != "transformer"]
    else:
        names = list(settings["model"])
        if settings["baselines"]:
            names = [b for b in BASELINES if b not in names] + names
    for name in names:
        if name not in BASELINES and name not in registered:
            raise LraError(f"unknown model '{name}'; choose from: {', '.join(sorted(set(known + registered)))}")
    for name in settings["model_options"]:
        if name not in names:
            raise LraError(f"options given for '{name}', which is not benchmarked "
                           f"(models: {', '.join(names)})")
    entries = []
    for name in names:
        base, fixed = BASELINES.get(name, (name, {}))
        allowed = model_options(registry.get(base))
        options = {k: v for k, v in config_options(base).items() if k in allowed}
        extra = settings["model_options"].get(name, {})
        for key in extra:
            if key not in allowed:
                raise LraError(f"model '{name}' has no option '{key}'; its options are: "
                               f"{', '.join(allowed) or 'none'}")
            if key in fixed:
                raise LraError(f"{name}.{key} is fixed by the benchmark ({key}={fixed[key]})")
        options.update(extra)
        options.update(fixed)
        entries.append({"name": name, "base": base, "options": options})
    return entries


def unsupported_reason(name: str, backend: str, precision: str) -> str | None:
    if name == "transformer_cudnn" and (backend != "gpu" or precision not in ("bf16", "fp16")):
        return (f"cuDNN flash attention needs a GPU and bf16/fp16 "
                f"(backend {backend}, {precision})")
    return None


def linear_models(names: list[str]) -> list[str]:
    """Models whose memory should grow linearly: the LINEAR_MODELS names, and any
    registered mixer class that sets `linear_time = True`."""
    try:
        registry = _model_registry()
    except Exception:  # noqa: BLE001 - the report must not fail on this
        registry = None

    def declared(name):
        return bool(registry and name in registry and getattr(registry.get(name), "linear_time", False))

    return [n for n in names if n in LINEAR_MODELS or declared(n)]


# ---------------------------------------------------------------------------
# One configuration (runs inside the worker subprocess)


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


class _Config(dict):
    """A mapping that also reads as attributes, as the trainer reads its DictConfig."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def optimizer_config() -> _Config:
    """The trainer defaults (configs/trainer/default.yaml): AdamW as `lra train` builds it.
    Only the step's cost matters here, not the learning-rate values."""
    values = {"lr": 0.05, "schedule": "rsqrt", "warmup_steps": 1000, "max_steps": 5000,
              "weight_decay": 0.1, "b1": 0.9, "b2": 0.98, "eps": 1e-9, "grad_clip": None}
    try:
        from importlib import resources

        import yaml

        data = yaml.safe_load((resources.files("lra.configs") / "trainer" / "default.yaml").read_text())
        values.update({k: v for k, v in (data or {}).items()
                       if not (isinstance(v, str) and "${" in v)})
    except Exception:  # noqa: BLE001 - fall back to the values above
        pass
    return _Config(values)


def _first_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:400]
    return type(err).__name__


def _is_oom(text: str) -> bool:
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
        row.update(status="oom" if _is_oom(f"{type(err).__name__}: {err}") else "error",
                   message=message)
    row["wall_s"] = round(time.perf_counter() - wall, 3)
    return row


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
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
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
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

    if spec["mode"] in ("infer", "both"):
        def eval_fn(params, rest, batch):
            model = nnx.merge(graphdef, params, rest)
            logits = model(batch["inputs"], deterministic=True)
            sums, predictions = trainer.weighted_metrics(logits, batch["labels"], batch["weights"])
            return sums, predictions

        tick = time.perf_counter()
        with no_cache_write():
            compiled = jax.jit(eval_fn).lower(params, rest, batch).compile()
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
        tx = trainer.make_optimizer(optimizer_config())
        dropout_key = jax.random.key(seed + 1)

        def train_fn(state, step, rest, batch):  # the pure step of lra.trainer.Trainer
            params, opt_state = state

            def loss_fn(params):
                model = nnx.merge(graphdef, params, rest)
                rngs = nnx.Rngs(jax.random.fold_in(dropout_key, step))
                logits = model(batch["inputs"], deterministic=False, rngs=rngs)
                sums, _ = trainer.weighted_metrics(logits, batch["labels"], batch["weights"])
                return sums["loss_sum"] / jnp.maximum(sums["count"], 1.0), sums

            (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics = {"loss": loss,
                       "accuracy": sums["correct_sum"] / jnp.maximum(sums["count"], 1.0)}
            return (params, opt_state), metrics

        state = (params, tx.init(params))
        del params
        step0 = jnp.asarray(0, jnp.int32)
        tick = time.perf_counter()
        with no_cache_write():
            compiled = jax.jit(train_fn, donate_argnums=(0,)).lower(state, step0, rest, batch).compile()
        out["compile_train_s"] = round(time.perf_counter() - tick, 3)
        out["compiled_bytes_train"] = _compiled_bytes(compiled)
        check_limit(out["compiled_bytes_train"], "training step")
        out["train_flops"] = flops_of(compiled, train=True)
        counter = {"step": 0}

        def one_step():
            nonlocal state
            counter["step"] += 1
            state, metrics = compiled(state, jnp.asarray(counter["step"], jnp.int32), rest, batch)
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


def _worker_main(argv: list[str]) -> int:
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


# ---------------------------------------------------------------------------
# The sweep (parent process)


# JAX_PLATFORMS as it was before main() pinned this (orchestrating) process to the
# CPU; the measuring subprocesses get the original back. None: it was not set.
_CHILD_PLATFORMS: dict[str, str | None] = {}


def _child_env(settings: dict[str, Any], gpu: str | None, backend: str) -> dict[str, str]:
    env = dict(os.environ)
    if "JAX_PLATFORMS" in _CHILD_PLATFORMS:
        original = _CHILD_PLATFORMS["JAX_PLATFORMS"]
        if original is None:
            env.pop("JAX_PLATFORMS", None)
        else:
            env["JAX_PLATFORMS"] = original
    if backend == "gpu":
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(settings["mem_fraction"]))
    return env


def _stderr_tail(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    interesting = [line for line in lines if "Error" in line or "error" in line or "Killed" in line]
    return ((interesting or lines or ["(no output)"])[-1])[:400]


def run_isolated(spec: dict[str, Any], env: dict[str, str], timeout: float,
                 workdir: Path) -> dict[str, Any]:
    """run_config in a fresh Python process; a crash or timeout becomes a row."""
    handle, spec_path = tempfile.mkstemp(prefix="spec-", suffix=".json", dir=workdir)
    os.close(handle)
    result_path = spec_path.replace("spec-", "result-")
    Path(spec_path).write_text(json.dumps(spec))
    command = [sys.executable, "-m", "lra.bench", "--worker", spec_path, result_path]
    tick = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"did not finish within {timeout:.0f} s (killed)",
                "wall_s": round(time.perf_counter() - tick, 3)}
    finally:
        Path(spec_path).unlink(missing_ok=True)
    wall = round(time.perf_counter() - tick, 3)
    result = Path(result_path)
    if proc.returncode == 0 and result.is_file():
        row = json.loads(result.read_text())
        result.unlink(missing_ok=True)
        row["wall_s"] = wall  # the whole subprocess: start-up, build, compile, timing
        return row
    result.unlink(missing_ok=True)
    tail = _stderr_tail(proc.stderr)
    if proc.returncode in (-9, 137) or _is_oom(proc.stderr or ""):
        return {"status": "oom", "message": f"process killed or out of memory (exit {proc.returncode}): {tail}",
                "wall_s": wall}
    return {"status": "error", "message": f"worker exited with {proc.returncode}: {tail}", "wall_s": wall}


def device_slug(device_kind: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-")
    return slug or "device"


class Sweep:
    """Runs the configurations, keeps the rows and rewrites the outputs after each."""

    def __init__(self, settings, entries, device, paths, command, previous=None,
                 earlier_commands=()):
        previous = previous or {}
        self.settings = settings
        self.entries = entries
        self.device = device
        self.paths = paths
        self.command = command
        self.earlier_commands = list(earlier_commands)
        # Earlier rows of models or lengths that this run does not cover stay in the report
        # as they were (a resume that measures one model again keeps the others); covered
        # ones are kept unless 'skipped' or 'error', which run again.
        covered = {(e["name"], length) for e in entries for length in settings["lengths"]}
        self.rows: list[dict[str, Any]] = [
            {k: v for k, v in row.items() if k in COLUMNS}
            for key, row in previous.items() if key not in covered]
        self.previous = {key: row for key, row in previous.items()
                         if key in covered and row.get("status") not in ("skipped", "error")}
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.total = len(self.rows) + len(covered)
        self.peak_flops = None
        if settings["peak_tflops"] is not None:
            self.peak_flops = settings["peak_tflops"] * 1e12
        elif device["backend"] == "gpu":
            self.peak_flops = PEAK_TFLOPS[settings["precision"]] * 1e12

    def spec(self, entry, length, cache_dir: str | None = None) -> dict[str, Any]:
        s = self.settings
        return {
            "cache_dir": cache_dir,
            "name": entry["name"], "base": entry["base"], "options": entry["options"],
            "length": length, "batch": s["batch"], "mode": s["mode"], "precision": s["precision"],
            "warmup": s["warmup"], "repeats": s["repeats"], "timing_s": s["timing_s"],
            "seed": s["seed"], "memory_limit": s["memory_limit"], "peak_flops": self.peak_flops,
            "encoder": {k: s[k] for k in ("vocab", "classes", "layers", "dim", "heads", "qkv_dim",
                                          "mlp_dim", "dropout", "attention_dropout", "pooling")},
        }

    def base_row(self, entry, length) -> dict[str, Any]:
        s = self.settings
        return {
            "device": self.device["slug"], "backend": self.device["backend"],
            "model": entry["name"], "base_model": entry["base"],
            "options": json.dumps(entry["options"], sort_keys=True), "length": length,
            "seq_len": length + (1 if s["pooling"] == "cls" else 0), "batch": s["batch"],
            "precision": s["precision"], "mode": s["mode"],
        }

    def precheck(self, entry, length) -> str | None:
        """The model's own config check at this length, here, without a subprocess."""
        import jax.numpy as jnp

        from lra.models import EncoderConfig, check_model

        s = self.settings
        enc = EncoderConfig(
            vocab_size=s["vocab"], max_len=length, num_layers=s["layers"], dim=s["dim"],
            num_heads=s["heads"], qkv_dim=s["qkv_dim"], mlp_dim=s["mlp_dim"], dropout=s["dropout"],
            attention_dropout=s["attention_dropout"], pooling=s["pooling"],
            dtype={"bf16": jnp.bfloat16, "fp32": jnp.float32}[s["precision"]],
        )
        try:
            check_model(entry["base"], dict(entry["options"]), enc)
        except LraError as err:
            return f"LraError: {err}"
        return None

    def remaining(self) -> float | None:
        if self.settings["budget"] is None:
            return None
        return self.settings["budget"] - (time.perf_counter() - self.start)

    def emit(self, entry, length, result, kept: bool = False) -> None:
        row = {**self.base_row(entry, length), **result}
        if not self.settings["isolate"] and not kept:
            row["peak_bytes_train"] = row["peak_bytes_infer"] = None  # not isolated: meaningless
        with self.lock:
            self.rows.append(row)
            done = len(self.rows)
            write_outputs(self, plot=False)
        print(progress_line(row, done, self.total) + (" (kept from the earlier run)" if kept else ""),
              flush=True)

    def run_model(self, entry, gpu, workdir, lane: int = 0) -> None:
        s = self.settings
        stop = None
        for length in s["lengths"]:
            reason = unsupported_reason(entry["name"], self.device["backend"], s["precision"])
            left = self.remaining()
            kept = self.previous.get((entry["name"], length))
            if kept is not None and kept["options"] != json.dumps(entry["options"], sort_keys=True):
                kept = None  # measured with other model options: run again
            if kept is not None:
                result = {k: v for k, v in kept.items() if k in COLUMNS and v is not None}
            elif reason:
                result = {"status": "unsupported", "message": reason}
            elif stop:
                result = {"status": "skipped", "message": stop}
            elif left is not None and left < 10:
                result = {"status": "skipped", "message": "time budget spent"}
            elif s["isolate"] and (problem := self.precheck(entry, length)):
                result = {"status": "error", "message": problem}
            elif s["isolate"]:
                timeout = s["timeout"] if left is None else min(s["timeout"], left)
                env = _child_env(s, gpu, self.device["backend"])
                cache = workdir / f"jax-cache-lane{lane}"  # one process at a time uses it
                result = run_isolated(self.spec(entry, length, str(cache)), env, timeout, workdir)
                if result["status"] == "timeout" and timeout < s["timeout"]:
                    result.update(status="skipped",
                                  message=f"time budget spent (killed after {timeout:.0f} s)")
            else:
                result = run_config(self.spec(entry, length))
            self.emit(entry, length, result, kept=kept is not None)
            status = result["status"]
            if status in ("oom", "timeout") and not stop:
                stop = f"not run: {status} at length {length}"
            elif (status == "ok" and s["skip_after"] is not None
                  and result.get("wall_s", 0) > s["skip_after"] and not stop):
                stop = (f"not run: length {length} took {result['wall_s']:.0f} s "
                        f"> skip_after={s['skip_after']:.0f} s")

    def run(self) -> None:
        s = self.settings
        workdir = Path(tempfile.mkdtemp(prefix=".bench-", dir=self.paths["dir"]))
        try:
            if not s["isolate"]:
                for entry in self.entries:
                    self.run_model(entry, None, workdir)
                return
            work: queue.Queue = queue.Queue()
            for entry in self.entries:
                work.put(entry)
            gpus = self.gpu_slots()

            def lane(index, gpu):
                while True:
                    try:
                        entry = work.get_nowait()
                    except queue.Empty:
                        return
                    self.run_model(entry, gpu, workdir, index)

            threads = [threading.Thread(target=lane, args=(index, gpu), daemon=True)
                       for index, gpu in enumerate(gpus)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def gpu_slots(self) -> list[str | None]:
        workers = self.settings["workers"]
        if self.device["backend"] != "gpu":
            return [None] * (workers or 1)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = ([v.strip() for v in visible.split(",") if v.strip()] if visible
               else [str(i) for i in range(self.device["device_count"])])
        count = min(workers or len(ids), len(ids))
        return ids[:max(count, 1)]


def progress_line(row: dict[str, Any], done: int, total: int) -> str:
    head = f"[{done:>3}/{total}] {row['model']:<20} L={row['length']:<6} {row['status']:<11}"
    if row["status"] != "ok":
        return f"{head} {row.get('message', '')}"
    parts = []
    if row.get("train_steps_per_s"):
        parts.append(f"{row['train_steps_per_s']:.3g} steps/s")
    if row.get("infer_examples_per_s"):
        parts.append(f"{row['infer_examples_per_s']:.4g} ex/s")
    memory = row.get("peak_bytes_train") or row.get("peak_bytes_infer") \
        or row.get("compiled_bytes_train") or row.get("compiled_bytes_infer")
    if memory:
        parts.append(_fmt_bytes(memory))
    compile_s = (row.get("compile_train_s") or 0) + (row.get("compile_infer_s") or 0)
    if compile_s:
        parts.append(f"compile {compile_s:.1f} s")
    parts.append(f"wall {row.get('wall_s', 0):.1f} s")
    return f"{head} " + ", ".join(parts)


# ---------------------------------------------------------------------------
# Derived columns and the report


def finalise_rows(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Memory column and ratios to both Transformer baselines at the same length."""
    out = []
    for row in rows:
        row = {column: row.get(column) for column in COLUMNS}
        train = mode in ("train", "both")
        peak = row["peak_bytes_train"] if train else row["peak_bytes_infer"]
        compiled = row["compiled_bytes_train"] if train else row["compiled_bytes_infer"]
        if peak:
            row["memory_bytes"], row["memory_source"] = peak, "peak_bytes_in_use"
        elif compiled:
            row["memory_bytes"], row["memory_source"] = compiled, "compiled"
        out.append(row)
    ok = {(r["model"], r["length"]): r for r in out if r["status"] == "ok"}
    for row in out:
        for base in BASELINES:
            ref = ok.get((base, row["length"]))
            steps = memory = infer = None
            if row["status"] == "ok" and ref is not None:
                steps = _ratio(row["train_steps_per_s"], ref["train_steps_per_s"])
                infer = _ratio(row["infer_examples_per_s"], ref["infer_examples_per_s"])
                if row["memory_source"] == ref["memory_source"]:
                    memory = _ratio(row["memory_bytes"], ref["memory_bytes"])
            row[f"steps_ratio_vs_{base}"] = steps
            row[f"memory_ratio_vs_{base}"] = memory
            row[f"infer_ratio_vs_{base}"] = infer
    order = {name: i for i, name in enumerate(dict.fromkeys(r["model"] for r in rows))}
    out.sort(key=lambda r: (order[r["model"]], r["length"]))
    return out


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def _out_of_reach(row: dict[str, Any]) -> bool:
    """The configuration failed for its size: out of memory or time, or skipped after that."""
    if row["status"] in ("oom", "timeout"):
        return True
    message = row.get("message") or ""
    return row["status"] == "skipped" and message.startswith(("not run: oom", "not run: timeout"))


def crossover(rows: list[dict[str, Any]], model: str, baseline: str) -> str:
    """The shortest length from which `model` trains faster than `baseline` at every
    longer measured length (a baseline that ran out of memory counts as slower)."""
    by_len = {}
    for r in rows:
        if r["model"] in (model, baseline):
            by_len.setdefault(r["length"], {})[r["model"]] = r
    lengths = sorted(by_len)
    base_rows = [by_len[L].get(baseline) for L in lengths if by_len[L].get(baseline)]
    if base_rows and all(b["status"] == "unsupported" for b in base_rows):
        return f"n/a ({baseline} unsupported here)"
    if not any(b["status"] in ("ok", "oom", "skipped", "timeout") for b in base_rows):
        return f"n/a ({baseline} did not run)"
    wins: list[tuple[int, bool | None, str]] = []
    for L in lengths:
        m, b = by_len[L].get(model), by_len[L].get(baseline)
        if m is None or m["status"] != "ok" or not m.get("train_steps_per_s"):
            wins.append((L, None, ""))
            continue
        if b is not None and b["status"] == "ok" and b.get("train_steps_per_s"):
            wins.append((L, m["train_steps_per_s"] > b["train_steps_per_s"], ""))
        elif b is not None and _out_of_reach(b):
            wins.append((L, True, f" ({baseline} {b['status']})"))
        else:
            wins.append((L, None, ""))
    measured = [w for w in wins if w[1] is not None]
    if not measured:
        return "no comparable lengths"
    start = None
    for L, win, _ in reversed(measured):
        if not win:
            break
        start = L
    if start is None:
        return "not within the tested lengths"
    failed = [(L, note) for L, win, note in measured if L >= start and note]
    note = f" ({failed[0][1].strip()[1:-1]} from {failed[0][0]})" if failed else ""
    if start == measured[0][0]:
        return f"faster at every tested length (from {start}){note}"
    return f"{start}{note}"


def memory_fit(rows: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """Least-squares memory_bytes ~ a + b * L over the model's ok rows."""
    points = sorted((r["length"], r["memory_bytes"]) for r in rows
                    if r["model"] == model and r["status"] == "ok" and r.get("memory_bytes"))
    if len(points) < 2:
        return None
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2, "points": len(points),
            "lengths": [p[0] for p in points]}


def growth_exponent(rows: list[dict[str, Any]], model: str, column: str) -> float | None:
    """Least-squares slope of log(column) against log(L) over the model's ok rows: about 1
    for linear growth, 2 for quadratic (fixed overheads pull it below at short lengths)."""
    points = [(math.log(r["length"]), math.log(r[column])) for r in rows
              if r["model"] == model and r["status"] == "ok" and r.get(column)]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def pytorch_comparison(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ours = {r["length"]: r for r in rows if r["model"] == "transformer_cudnn" and r["status"] == "ok"}
    xla = {r["length"]: r for r in rows if r["model"] == "transformer_xla" and r["status"] == "ok"}
    lengths = sorted({r["length"] for r in rows} & set(PYTORCH_REFERENCE))
    table = []
    for L in lengths:
        ref = PYTORCH_REFERENCE[L]
        cudnn = ours.get(L, {}).get("train_steps_per_s")
        plain = xla.get(L, {}).get("train_steps_per_s")
        table.append({
            "length": L, "pytorch_reference": ref, "transformer_cudnn": cudnn,
            "ratio_cudnn": cudnn / ref if cudnn else None,
            "transformer_xla": plain, "ratio_xla": plain / ref if plain else None,
            "meets_target": (cudnn / ref >= PYTORCH_TARGET_RATIO) if cudnn else None,
        })
    return table


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def _fmt_bytes(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


_STATUS_CELL = {"oom": "OOM", "error": "error", "unsupported": "n/a", "timeout": "timeout",
                "skipped": "skipped"}


def _pivot(rows, models, lengths, cell: Callable[[dict], str]) -> list[str]:
    lines = ["| model | " + " | ".join(str(L) for L in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    index = {(r["model"], r["length"]): r for r in rows}
    for model in models:
        cells = []
        for L in lengths:
            r = index.get((model, L))
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(_STATUS_CELL.get(r["status"], r["status"]))
            else:
                cells.append(cell(r))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(sweep: Sweep, rows: list[dict[str, Any]], plot_note: str | None) -> str:
    s, device = sweep.settings, sweep.device
    models = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    train = s["mode"] in ("train", "both")
    infer = s["mode"] in ("infer", "both")
    gpu = device["backend"] == "gpu"
    versions = device.get("versions", {})
    timed = s["repeats"] or f"about {s['timing_s']:g} s worth (3 to 50) of"
    lines = [
        f"# Efficiency: {device['device_kind']} ({device['backend']})",
        "",
        f"`{sweep.command}`",
        "",
        *([f"Rows kept from earlier runs: " + "; ".join(f"`{c}`" for c in sweep.earlier_commands),
           ""] if sweep.earlier_commands else []),
        f"- Shape: LRA byte-level text config: {s['layers']} layers, width {s['dim']}, {s['heads']} heads, "
        f"qkv {s['qkv_dim']}, MLP {s['mlp_dim']}, vocabulary {s['vocab']}, {s['classes']} classes, "
        f"{s['pooling']} pooling, batch {s['batch']}, {s['precision']} compute (fp32 parameters).",
        f"- Dropout {s['dropout']} in training steps (as LRA); attention dropout {s['attention_dropout']} "
        "for every model, because attention dropout needs the attention weights and forces "
        "`transformer` onto its explicit (materialised) path, so no fused baseline could exist.",
        "- Inputs: random bytes in 1..vocab-1 (never padding), full length; labels random.",
        "- Training step: forward, backward and AdamW update (lra.trainer.make_optimizer, the "
        "trainer's pure split/merge step under jax.jit, state donated). Inference step: forward "
        "and metrics.",
        f"- Timing: {s['warmup']} warm-up steps excluded, then the median of {timed} timed "
        "steps, each ended by jax.block_until_ready. Compile time is reported separately.",
        "- Memory: " + memory_note(rows, s["isolate"]),
        "- FLOPs: XLA's `cost_analysis()['flops']` of the compiled step. XLA does not count "
        "inside cuDNN's fused attention custom call; for rows that use it the attention matmuls "
        "are added analytically (forward 4*B*H*L^2*D per layer, training 3.5x forward: the "
        "backward is 2.5x the forward in FlashAttention's accounting) and flops_source says "
        "`xla+analytic_attention`.",
        "- MFU: training FLOPs per second / " + (
            f"{sweep.peak_flops / 1e12:g} TFLOP/s peak" if sweep.peak_flops else
            "no peak (not a GPU and no peak_tflops= given): MFU not computed") + ".",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Date: {sweep.paths.get('date', '')}",
        "",
    ]
    if train:
        lines += ["## Training steps per second", ""]
        lines += _pivot(rows, models, lengths, lambda r: _fmt(r["train_steps_per_s"]))
        for base in BASELINES:
            if any(r["model"] == base and r["status"] == "ok" for r in rows):
                lines += ["", f"### Training speed relative to {base} (x, >1 is faster)", ""]
                lines += _pivot(rows, models, lengths,
                                lambda r, b=base: _fmt(r[f"steps_ratio_vs_{b}"], 2) + "x"
                                if r[f"steps_ratio_vs_{b}"] is not None else "-")
        lines += [""]
    sources = {r["memory_source"] for r in rows if r["memory_source"]}
    memory_title = "Peak memory" if sources == {"peak_bytes_in_use"} else (
        "Compiled memory footprint" if sources == {"compiled"} else "Memory")
    lines += [f"## {memory_title} ({'training' if train else 'inference'} step)", ""]
    lines += _pivot(rows, models, lengths, lambda r: _fmt_bytes(r["memory_bytes"]))
    for base in BASELINES:
        if any(r["model"] == base and r["status"] == "ok" for r in rows):
            lines += ["", f"### Memory relative to {base} (x, <1 is less)", ""]
            lines += _pivot(rows, models, lengths,
                            lambda r, b=base: _fmt(r[f"memory_ratio_vs_{b}"], 2) + "x"
                            if r[f"memory_ratio_vs_{b}"] is not None else "-")
    lines += [""]
    if infer:
        lines += ["## Inference examples per second", ""]
        lines += _pivot(rows, models, lengths, lambda r: _fmt(r["infer_examples_per_s"]))
        lines += [""]
    lines += ["## Compile time (s, training step" + (" + inference step" if infer and train else "") + ")", ""]
    lines += _pivot(rows, models, lengths, lambda r: _fmt(
        (r["compile_train_s"] or 0) + (r["compile_infer_s"] or 0), 3))
    lines += [""]
    if train:
        lines += ["## Training TFLOP/s" + (" and MFU" if sweep.peak_flops else ""), ""]
        lines += _pivot(rows, models, lengths, lambda r: (
            _fmt(r["train_tflops_per_s"]) + (f" ({100 * r['train_mfu']:.1f}%)" if r["train_mfu"] else "")
            + ("*" if r["flops_source"] == "xla+analytic_attention" else "")))
        if any(r["flops_source"] == "xla+analytic_attention" for r in rows):
            lines += ["", "`*` attention FLOPs of the cuDNN kernel added analytically."]
        lines += [""]
        lines += ["## Where efficient models overtake exact attention (training steps/s)", "",
                  "The shortest length from which the model is faster at every longer tested "
                  "length (a baseline out of memory counts as slower).", "",
                  "| model | vs transformer_xla | vs transformer_cudnn |", "|---|---|---|"]
        for model in models:
            if model in BASELINES:
                continue
            lines.append(f"| {model} | {crossover(rows, model, 'transformer_xla')} | "
                         f"{crossover(rows, model, 'transformer_cudnn')} |")
        lines += [""]
    linear = linear_models(models)
    lines += ["## Memory against length for the linear-time models", "",
              f"Least-squares fit memory_bytes = a + b * L over the lengths that ran "
              f"({', '.join(sorted(sources)) or 'no'} bytes). R^2 near 1 means linear growth.", "",
              "| model | slope b (bytes/token) | intercept a | R^2 | points |", "|---|---:|---:|---:|---:|"]
    for model in linear:
        fit = memory_fit(rows, model)
        if fit is None:
            lines.append(f"| {model} | - | - | - | fewer than 2 |")
        else:
            trivial = " (2 points: trivially 1)" if fit["points"] == 2 else ""
            lines.append(f"| {model} | {_fmt_bytes(fit['slope'])}/token | {_fmt_bytes(fit['intercept'])} | "
                         f"{fit['r2']:.4f}{trivial} | {fit['points']} |")
    if not linear:
        lines.append("| (none of the benchmarked models) | | | | |")
    lines += ["", "## Growth with length, every model", "",
              "Slope of log(value) against log(L) over the lengths that ran: about 1 is linear "
              "growth, 2 quadratic. Fixed costs (parameters, optimizer state, the MLP) pull it "
              "below the attention's own exponent at short lengths.", "",
              "| model | memory exponent | " + ("step time exponent | " if train else "")
              + "lengths |", "|---|---:|" + ("---:|" if train else "") + "---|"]
    for model in models:
        memory = growth_exponent(rows, model, "memory_bytes")
        spans = sorted(r["length"] for r in rows if r["model"] == model and r["status"] == "ok")
        cells = [f"{memory:.2f}" if memory is not None else "-"]
        if train:
            step = growth_exponent(rows, model, "train_step_ms")
            cells.append(f"{step:.2f}" if step is not None else "-")
        span = f"{spans[0]}-{spans[-1]} ({len(spans)})" if spans else "none"
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {span} |")
    lines += [""]
    if train:
        lines += ["## Reference: plain PyTorch on the H200 (given, not measured here)", "",
                  "A plain PyTorch 2.11 implementation of the same shape (torch.compile, SDPA flash, "
                  "bf16 autocast, fused AdamW) was reported in the issue to train at "
                  + ", ".join(f"{v:g}" for v in PYTORCH_REFERENCE.values())
                  + " steps/s at " + ", ".join(f"{L // 1024}K" for L in PYTORCH_REFERENCE)
                  + ". These figures were given to us, not measured by this harness. "
                  f"Target: our fused Transformer (transformer_cudnn, bf16) >= {PYTORCH_TARGET_RATIO}x at every length.", ""]
        if not (gpu and "h200" in device["slug"] and s["precision"] == "bf16"):
            lines += [f"(This run is on {device['device_kind']} with {s['precision']}: the ratios "
                      "below are not comparable with the H200 bf16 reference.)", ""]
        table = pytorch_comparison(rows)
        if table:
            lines += ["| length | PyTorch (given) | transformer_cudnn | ratio | >= 1.1x | transformer_xla | ratio |",
                      "|---:|---:|---:|---:|---|---:|---:|"]
            for t in table:
                meets = "-" if t["meets_target"] is None else ("yes" if t["meets_target"] else "no")
                lines.append(f"| {t['length']} | {t['pytorch_reference']:g} | {_fmt(t['transformer_cudnn'])} | "
                             f"{_fmt(t['ratio_cudnn'], 2)} | {meets} | {_fmt(t['transformer_xla'])} | "
                             f"{_fmt(t['ratio_xla'], 2)} |")
        else:
            lines.append("No tested length matches the reference lengths.")
        lines += [""]
    failures = [r for r in rows if r["status"] not in ("ok",)]
    if failures:
        lines += ["## Rows that did not run", "", "| model | length | status | message |", "|---|---:|---|---|"]
        for r in failures:
            message = (r.get("message") or "").replace("|", "\\|")
            lines.append(f"| {r['model']} | {r['length']} | {r['status']} | {message} |")
        lines += [""]
    if plot_note:
        lines += [plot_note, ""]
    lines += [f"Every column, per (model, length): `{sweep.paths['csv'].name}`.", ""]
    return "\n".join(lines)


def memory_note(rows: list[dict[str, Any]], isolated: bool) -> str:
    sources = {r["memory_source"] for r in rows if r["memory_source"]}
    notes = []
    if "peak_bytes_in_use" in sources:
        notes.append("`peak_bytes_in_use` of the device (`memory_stats()`), each (model, length) in "
                     "a fresh process, so the peak is that configuration's own")
    if "compiled" in sources:
        why = ("runs were not isolated (isolate=false), so a process-wide peak would mix configurations"
               if not isolated else "this backend reports no peak (`memory_stats()` is None)")
        notes.append(f"where {why}: the compiled executable's footprint (`memory_analysis()`: "
                     "temp + arguments + outputs - donated aliases; the compiled_bytes_* columns "
                     "hold it for every row)")
    return "; ".join(notes) + "." if notes else "no configuration reported memory."


def write_plot(rows: list[dict[str, Any]], path: Path, title: str, train: bool) -> str | None:
    """steps/s and memory against length, log-log. Returns a notice if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "Plot skipped: matplotlib is not installed (pip install 'lra[plot]')."
    speed_key = "train_steps_per_s" if train else "infer_examples_per_s"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = plt.get_cmap("tab20")
    markers = "os^vD<>ph*"
    drawn = False
    for index, model in enumerate(models):
        points = sorted((r["length"], r[speed_key], r["memory_bytes"]) for r in rows
                        if r["model"] == model and r["status"] == "ok")
        if not points:
            continue
        style = dict(marker=markers[index % len(markers)], linewidth=1.4, markersize=4,
                     color=colours(index % 20))
        if model in BASELINES:
            style.update(linewidth=2.6, linestyle="--", marker="o",
                         color="black" if model.endswith("cudnn") else "grey")
        xs = [p[0] for p in points]
        axes[0].plot(xs, [p[1] for p in points], label=model, **style)
        mem = [(p[0], p[2] / 2**30) for p in points if p[2]]
        if mem:
            axes[1].plot([m[0] for m in mem], [m[1] for m in mem], label=model, **style)
        drawn = True
    if not drawn:
        plt.close(fig)
        return "Plot skipped: no configuration ran."
    axes[0].set_ylabel("training steps/s" if train else "inference examples/s")
    sources = {r["memory_source"] for r in rows if r["memory_source"]}
    axes[1].set_ylabel("peak memory (GiB)" if sources == {"peak_bytes_in_use"}
                       else "compiled footprint (GiB)" if sources == {"compiled"} else "memory (GiB)")
    lengths = sorted({r["length"] for r in rows})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths)
        ax.set_xticklabels([str(L) for L in lengths], rotation=45 if len(lengths) > 6 else 0)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("sequence length (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})
    os.replace(tmp, path)


def write_outputs(sweep: Sweep, plot: bool) -> dict[str, Any]:
    from lra.records import write_json_atomic

    rows = finalise_rows(sweep.rows, sweep.settings["mode"])
    paths = sweep.paths
    _write_csv(paths["csv"], rows)
    plot_note = None
    if plot:
        plot_note = write_plot(rows, paths["png"], f"{sweep.device['device_kind']}: "
                               f"batch {sweep.settings['batch']}, {sweep.settings['precision']}",
                               sweep.settings["mode"] in ("train", "both"))
        if plot_note is None:
            plot_note = f"Plot: `{paths['png'].name}` (log-log)."
    markdown = render_markdown(sweep, rows, plot_note)
    tmp = paths["md"].with_name(f".{paths['md'].name}.tmp-{os.getpid()}")
    tmp.write_text(markdown)
    os.replace(tmp, paths["md"])
    write_json_atomic(paths["json"], {
        "command": sweep.command, "earlier_commands": sweep.earlier_commands,
        "date": paths.get("date"), "device": sweep.device,
        "settings": {k: v for k, v in sweep.settings.items()},
        "peak_flops": sweep.peak_flops, "pytorch_reference_given": PYTORCH_REFERENCE,
        "rows": rows,
    })
    return {"rows": rows, "plot_note": plot_note}


# ---------------------------------------------------------------------------
# Entry point


def _probe_device(settings: dict[str, Any]) -> dict[str, Any]:
    if not settings["isolate"]:
        return probe()
    env = _child_env(settings, None, "unknown")
    if env.get("JAX_PLATFORMS", "").strip().lower() == "cpu":  # no need to ask a subprocess
        from lra.records import package_versions

        return {"backend": "cpu", "device_kind": "cpu", "device_count": 1, "platform": "cpu",
                "versions": package_versions()}
    with tempfile.TemporaryDirectory(prefix="lra-bench-probe-") as tmp:
        result = Path(tmp) / "probe.json"
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        try:
            proc = subprocess.run([sys.executable, "-m", "lra.bench", "--probe", str(result)],
                                  env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise LraError("the device probe did not answer within 300 s")
        if proc.returncode != 0 or not result.is_file():
            raise LraError(f"the device probe failed: {_stderr_tail(proc.stderr)}")
        return json.loads(result.read_text())


# Settings that change what a row measures: rows kept by resume=true must agree on them.
SIGNATURE = ("batch", "precision", "mode", "layers", "dim", "heads", "qkv_dim", "mlp_dim", "vocab",
             "classes", "dropout", "attention_dropout", "pooling", "seed", "memory_limit")


def load_previous(path: Path, settings: dict[str, Any],
                  device: dict[str, Any] | None = None) -> tuple[dict, list[str]]:
    """Rows of an earlier run's JSON, by (model, length), and the commands that made
    them; refused where the earlier run measured something else."""
    try:
        record = json.loads(path.read_text())
        before = record["settings"]
        rows = record["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LraError(f"cannot resume from {path}: {err}; move it away or use another out= or tag=")
    different = [k for k in SIGNATURE if before.get(k) != settings[k]]
    if device is not None and record.get("device", {}).get("slug") != device.get("slug"):
        different.append("device")
    if different:
        detail = ", ".join(f"{k}={before.get(k)} (now {settings[k]})" if k in settings else
                           f"device={record.get('device', {}).get('slug')} (now {device['slug']})"
                           for k in different)
        raise LraError(f"cannot resume from {path}: it was measured with {detail}; "
                       "use another out= or tag=, or the same settings")
    commands = [*record.get("earlier_commands", []), record.get("command", "")]
    return {(r["model"], int(r["length"])): r for r in rows if r.get("status")}, commands


def merge(settings: dict[str, Any]) -> int:
    """merge=a.json,b.json: one report of sweeps made in several calls (later files win
    for the same model and length), without measuring anything."""
    paths_in = [Path(p) for p in settings["merge"]]
    for path in paths_in:
        if not path.is_file():
            raise LraError(f"merge: no file {path}; give the efficiency-*.json files of `lra bench`")
    first = json.loads(paths_in[0].read_text())
    device, base = first["device"], first["settings"]
    for key in SIGNATURE:
        settings[key] = base.get(key)
    for key in ("lengths", "isolate", "timing_s", "repeats", "warmup"):
        settings[key] = base.get(key, settings[key])
    rows, commands = {}, []
    for path in paths_in:
        kept, made_by = load_previous(path, settings, device)
        rows.update(kept)
        commands += made_by
    out = Path(settings["out"])
    out.mkdir(parents=True, exist_ok=True)
    paths = _output_paths(out, device["slug"], settings["tag"])
    sweep = Sweep(settings, [], device, paths, commands[-1], rows, commands[:-1])
    sweep.peak_flops = first.get("peak_flops")
    write_outputs(sweep, plot=settings["plot"])
    print(f"lra bench: merged {len(rows)} row(s) of {len(paths_in)} file(s) -> {paths['md']}")
    return 0


def _output_paths(out: Path, slug: str, tag: str | None) -> dict[str, Any]:
    from lra.records import utc_now

    stem = f"{RESULT_MARK}-{slug}" + (f"-{tag}" if tag else "")
    return {"dir": out, "csv": out / f"{stem}.csv", "md": out / f"{stem}.md",
            "png": out / f"{stem}.png", "json": out / f"{stem}.json", "date": utc_now()}


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in args):
        print(usage())
        return 0
    settings = parse_args(args)
    if settings["merge"]:
        return merge(settings)
    if settings["isolate"] and "jax" not in sys.modules:
        # This process only orchestrates: keep it off the accelerator, whose memory
        # belongs to the measured subprocesses (they get the original setting back).
        _CHILD_PLATFORMS.setdefault("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS"))
        os.environ["JAX_PLATFORMS"] = "cpu"
    entries = resolve_models(settings)
    device = _probe_device(settings)
    device["slug"] = device_slug(device["device_kind"])
    out = Path(settings["out"])
    out.mkdir(parents=True, exist_ok=True)
    paths = _output_paths(out, device["slug"], settings["tag"])
    command = "lra bench " + " ".join(args)
    previous, earlier = {}, []
    if settings["resume"] and paths["json"].is_file():
        previous, earlier = load_previous(paths["json"], settings, device)
        print(f"lra bench: resume=true: {len(previous)} row(s) of {paths['json']}", flush=True)
    elif settings["resume"]:
        print(f"lra bench: resume=true, but there is no {paths['json']} yet; running everything",
              flush=True)
    sweep = Sweep(settings, entries, device, paths, command, previous, earlier)
    print(f"lra bench: {len(entries)} model(s) x {len(settings['lengths'])} length(s) on "
          f"{device['device_kind']} ({device['backend']}), {settings['precision']}, "
          f"batch {settings['batch']}, mode {settings['mode']}", flush=True)
    sweep.run()
    result = write_outputs(sweep, plot=settings["plot"])
    rows = result["rows"]
    if result["plot_note"] and not result["plot_note"].startswith("Plot:"):
        print(f"lra bench: {result['plot_note']}")
    if settings["mode"] in ("train", "both"):
        for t in pytorch_comparison(rows):
            if t["ratio_cudnn"] is not None:
                print(f"lra bench: L={t['length']}: transformer_cudnn {t['transformer_cudnn']:.3g} steps/s "
                      f"vs PyTorch reference (given) {t['pytorch_reference']:g}: "
                      f"{t['ratio_cudnn']:.2f}x ({'meets' if t['meets_target'] else 'misses'} "
                      f"the {PYTORCH_TARGET_RATIO}x target)")
    counts = {status: sum(r["status"] == status for r in rows) for status in STATUSES}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    written = [paths["csv"], paths["md"], paths["json"]]
    if settings["plot"] and paths["png"].exists() and (result["plot_note"] or "").startswith("Plot:"):
        written.append(paths["png"])
    print(f"lra bench: {summary} -> " + ", ".join(str(p) for p in written))
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
