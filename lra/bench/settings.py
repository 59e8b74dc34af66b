"""What `lra bench` measures: the constants, the `key=value` arguments and the
models to run (registered models plus the two Transformer baselines)."""

from __future__ import annotations

import math
import re
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





def _number(convert, valid, what: str) -> Callable[[str, str], Any]:
    """A parser of `key=value` numbers: convert, then check, else one clear error."""
    def parse(key: str, text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise LraError(f"{key}={text!r} must be {what}")
        return value
    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_nonnegative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_fraction = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_unit_fraction = _number(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")


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
    "peer": (_auto(_text), None, "peer=<file>: the JSON of shared/bench/peer_torch_lra.py measured in the "
             "same job; the report gives lra/peer steps/s per length (default: none)"),
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
