"""What `lra bench` measures: the constants, the options (the config group
configs/bench/, composed by lra.config as `lra train` is) and the models to run
(registered models plus the two Transformer baselines)."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from lra.errors import LraError


BASELINES = {
    "transformer_xla": ("transformer", {"implementation": "xla"}),
    "transformer_cudnn": ("transformer", {"implementation": "cudnn"}),
}
# Models whose memory should grow linearly with length (fitted in the report). A new
# linear-time mixer (an SSM, say) joins them by setting `linear_time = True` on its class.
LINEAR_MODELS = ("performer", "linear_transformer", "linformer", "local")
# The goal against the PyTorch peer (issue 11): transformer_cudnn >= 1.1x its steps/s
# at every length, both measured in the same device call (peer=).
PEER_TARGET_RATIO = 1.1
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





# Checks of the composed option values (Hydra has parsed them: 32 is an int, 2.5 a
# float, [a,b] a list, true a bool): each returns the value or raises one clear line.

def _check(valid: Callable[[Any], bool], what: str) -> Callable[[str, Any], Any]:
    def check(key: str, value):
        if not valid(value):
            raise LraError(f"{key}={_shown(value)} must be {what}")
        return value
    return check


def _shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) \
        else str(value)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_positive_int = _check(lambda v: _is_int(v) and v > 0, "a positive integer")
_nonnegative_int = _check(lambda v: _is_int(v) and v >= 0, "a non-negative integer")
_positive_float = _check(lambda v: _is_number(v) and v > 0, "a positive number")
_fraction = _check(lambda v: _is_number(v) and 0.0 <= v < 1.0, "a number in [0, 1)")
_unit_fraction = _check(lambda v: _is_number(v) and 0 < v <= 1, "a fraction in (0, 1]")
_bool = _check(lambda v: isinstance(v, bool), "true or false")


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, value) -> str:
        if value not in choices:
            raise LraError(f"{key}={_shown(value)} is not one of {', '.join(choices)}")
        return value
    return check


def _items(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _lengths(key: str, value) -> list[int]:
    items = _items(value)
    if not items:
        raise LraError(f"{key}=[] must list at least one length, e.g. {key}=[1024,2048]")
    return sorted({_positive_int(key, item) for item in items})


def _names(key: str, value) -> list[str]:
    items = [str(item) for item in _items(value) if str(item).strip()]
    if not items:
        raise LraError(f"{key}={_shown(value)} must name at least one model")
    return list(dict.fromkeys(items))


_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _paths(key: str, value) -> list[str]:
    items = [str(item) for item in _items(value)]
    if not items:
        raise LraError(f"{key}= needs at least one file, e.g. {key}=[a.json,b.json]")
    return items


def _bytes(key: str, value) -> int:
    if _is_number(value):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise LraError(f"{key}={_shown(value)} must be a size such as 2e9, 512MB or 40GiB")
        try:
            number, unit = float(match.group(1)), match.group(2).lower()
        except ValueError:
            raise LraError(f"{key}={_shown(value)} must be a size such as 2e9, 512MB or 40GiB")
    if number <= 0:
        raise LraError(f"{key}={_shown(value)} must be positive")
    return int(number * _UNITS[unit])


def _auto(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def check_or_auto(key: str, value):
        return None if value is None or str(value).lower() == "auto" else check(key, value)
    return check_or_auto


def _text(key: str, value) -> str:
    if value is None or not str(value):
        raise LraError(f"{key}= needs a value")
    return str(value)


def _slug_text(key: str, value) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", str(value)):
        raise LraError(f"{key}={_shown(value)} may only use letters, digits, '.', '_' and '-'")
    return str(value)


# key -> (check, help); the defaults live in configs/bench/default.yaml.
OPTIONS: dict[str, tuple[Callable[[str, Any], Any], str]] = {
    "model": (_auto(_names), "models to run, e.g. model=[performer,local] (null: every registered model)"),
    "lengths": (_lengths, "sequence lengths (tokens, CLS not counted)"),
    "batch": (_positive_int, "batch size"),
    "mode": (_choice(MODES), "train (steps/s), infer (examples/s) or both"),
    "precision": (_choice(PRECISIONS), "compute dtype; parameters stay fp32"),
    "out": (_text, "output folder"),
    "tag": (_auto(_slug_text), "suffix for the output file names"),
    "repeats": (_auto(_positive_int), "timed steps (auto: about timing_s seconds, 3..50 steps)"),
    "warmup": (_positive_int, "untimed steps after compilation"),
    "timing_s": (_positive_float, "target seconds of timed steps when repeats=auto"),
    "peak_tflops": (_auto(_positive_float), "peak for MFU (auto: 790 bf16 / 67 fp32 on GPU, none on CPU)"),
    "timeout": (_positive_float, "seconds one (model, length) subprocess may take"),
    "budget": (_auto(_positive_float), "seconds for the whole sweep; later configs become 'skipped'"),
    "skip_after": (_auto(_positive_float), "skip a model's longer lengths once one took more seconds than this"),
    "memory_limit": (_auto(_bytes), "mark a config 'oom' without running it if its compiled footprint exceeds this, e.g. 40GiB"),
    "mem_fraction": (_unit_fraction, "XLA_PYTHON_CLIENT_MEM_FRACTION for GPU subprocesses (unless set)"),
    "isolate": (_bool, "one fresh subprocess per (model, length); false = in-process, no peak memory"),
    "workers": (_auto(_positive_int), "concurrent subprocesses, one GPU each (auto: all GPUs; 1 on CPU)"),
    "baselines": (_bool, "always add transformer_xla and transformer_cudnn"),
    "resume": (_bool, "keep the rows of an earlier run in the same output files (same shape, "
               "batch, precision, mode) and run only the rest; 'skipped' and 'error' rows run again"),
    "merge": (_auto(_paths), "merge=[a.json,b.json]: write one report of earlier runs' efficiency-*.json "
              "(later files win), measuring nothing"),
    "plot": (_bool, "write the PNG plot (needs matplotlib: pip install 'lra[plot]')"),
    "peer": (_auto(_text), "peer=<file>: the JSON of shared/bench/peer_torch_lra.py measured in the "
             "same job; the report gives lra/peer steps/s per length"),
    "seed": (_nonnegative_int, "parameter and token seed"),
    "layers": (_positive_int, "encoder layers"),
    "dim": (_positive_int, "model width"),
    "heads": (_positive_int, "attention heads"),
    "qkv_dim": (_positive_int, "query/key/value width"),
    "mlp_dim": (_positive_int, "MLP width"),
    "vocab": (_positive_int, "vocabulary (tokens are drawn from 1..vocab-1)"),
    "classes": (_positive_int, "output classes"),
    "dropout": (_fraction, "dropout in training mode (LRA: 0.1)"),
    "attention_dropout": (_fraction, "attention dropout (0: >0 forces transformer's explicit path)"),
    "pooling": (_choice(POOLINGS), "cls or mean pooling"),
}
CONFIG_NAME = "lra_bench"  # configs/lra_bench.yaml, which takes the group configs/bench/


def usage() -> str:
    from omegaconf import OmegaConf

    from lra.config import compose

    defaults = OmegaConf.to_container(compose([], config_name=CONFIG_NAME).bench)
    lines = [
        "usage: lra bench [key=value ...] [<model>.<option>=value ...]",
        "",
        "Training steps/s, inference examples/s, peak memory, compile time, FLOPs and MFU",
        "of every model on the LRA text shape, against transformer_xla and transformer_cudnn.",
        "Writes <out>/efficiency-<device>.csv, .md, .json and .png.",
        "Defaults: configs/bench/default.yaml (lra.configs).",
        "",
        "keys:",
    ]
    for key, (_, text) in OPTIONS.items():
        default = defaults[key]
        shown = default if isinstance(default, str) else _shown(default)
        lines.append(f"  {key:<18} {text} (default: {shown})")
    lines += [
        "  <model>.<option>   a model option, e.g. linformer.k=256 performer.num_features=128",
        "",
        "examples:",
        "  lra bench",
        "  lra bench model=[performer,local] lengths=[1024,4096] mode=train",
        "  lra bench lengths=[64,128] batch=2 layers=1 dim=32 heads=2 qkv_dim=32 mlp_dim=64 precision=fp32",
    ]
    return "\n".join(lines)


def bench_overrides(args: list[str]) -> list[str]:
    """`lra bench` arguments as overrides of configs/lra_bench.yaml: key=value sets
    bench.<key>, <model>.<option>=value sets bench.model_options.<model>.<option>, and
    a,b (without brackets) is the list [a,b], not a Hydra sweep."""
    overrides, seen = [], set()
    for arg in args:
        if "=" not in arg:
            raise LraError(f"argument {arg!r} is not key=value; see `lra bench --help`")
        key, value = arg.split("=", 1)
        key = key.strip()
        if key in seen:
            raise LraError(f"{key} is given twice")
        seen.add(key)
        if "," in value and not value.lstrip().startswith(("[", "'", '"')):
            value = f"[{value}]"
        if "." in key:
            model, option = key.split(".", 1)
            if not model or not option:
                raise LraError(f"{key!r} is not <model>.<option>")
            overrides.append(f"+bench.model_options.{model}.{option}={value}")
        elif key in OPTIONS:
            overrides.append(f"bench.{key}={value}")
        else:
            raise LraError(f"unknown key {key!r}; valid keys: {', '.join(OPTIONS)} "
                           "(and <model>.<option>)")
    return overrides


def parse_args(args: list[str]) -> dict[str, Any]:
    """`lra bench` arguments -> settings, composed with configs/bench/ through lra.config
    (the compose of `lra train`) and checked; model options in settings['model_options']."""
    from omegaconf import OmegaConf

    from lra.config import compose

    cfg = compose(bench_overrides(args), config_name=CONFIG_NAME, hint="lra bench --help")
    values = OmegaConf.to_container(cfg.bench, resolve=True)
    settings = {key: check(key, values[key]) for key, (check, _) in OPTIONS.items()}
    settings["model_options"] = values["model_options"] or {}
    if settings["qkv_dim"] % settings["heads"]:
        raise LraError(f"heads={settings['heads']} does not divide qkv_dim={settings['qkv_dim']}")
    if settings["vocab"] < 2:
        raise LraError("vocab must be at least 2 (tokens are drawn from 1..vocab-1)")
    return settings


def _model_registry():
    """The registry of models; imports lra.models (not the tasks: no omegaconf needed)."""
    import lra.models  # noqa: F401 - registers the models
    from lra.registry import MODELS

    return MODELS


def config_options(name: str) -> dict[str, Any]:
    """A model's options as `lra train model=<name>` composes them (configs/model/<name>.yaml,
    the LRA defaults), without a task's per-model overrides."""
    from omegaconf import OmegaConf

    from lra.config import compose, config_choices

    if name not in config_choices("model"):
        return {}  # a registered model without a config: its class defaults apply
    options = OmegaConf.to_container(compose([f"model={name}", "~task_model"]).model, resolve=True)
    options.pop("name", None)
    return options


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
