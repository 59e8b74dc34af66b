"""The ListOps task: LRA's generated (or released) ListOps as a prepared cache.

The generator and tokenisers live in `listops_gen`, the TSV reader in
`listops_tsv`; this module holds the task's settings, their checks and `build`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lra.errors import LraError
from lra.registry import TASKS
from lra.tasks.base import SPLITS, Built, Task
from lra.tasks.listops_gen import (
    CHUNK_SIZE, DROP_CLOSE, DROP_CLOSE_WARNING, KEEP_CLOSE, TOKENIZERS, VOCAB, VOCAB_SIZE, ListOpsData,
    encode, generate_splits, max_tree_length, write_tsv,
)
from lra.tasks.listops_tsv import _INT, read_tsv

SOURCES = ("generate", "tsv")

DEFAULTS: dict[str, Any] = {
    "source": "generate",
    "path": None,
    "tokenizer": KEEP_CLOSE,
    "seed": 0,
    "train_size": 96000,
    "val_size": 2000,
    "test_size": 2000,
    "min_length": 500,
    "max_length": 2000,
    "max_depth": 10,
    "max_args": 10,
    "workers": None,
}



def _field(node, name: str):
    """A data setting from a DictConfig, a mapping or an attribute object; default if absent."""
    if node is None:
        return DEFAULTS[name]
    if isinstance(node, Mapping) or hasattr(node, "keys"):
        return node.get(name, DEFAULTS[name])
    return getattr(node, name, DEFAULTS[name])


def _settings(cfg) -> dict[str, Any]:
    data = getattr(cfg, "data", None)
    if data is None and hasattr(cfg, "get"):
        data = cfg.get("data")
    return {name: _field(data, name) for name in DEFAULTS}


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            value = int(value)
        else:
            raise LraError(f"task.data.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise LraError(f"task.data.{name} must be at least {minimum}, got {value}")
    return int(value)


@TASKS.register("listops")
class ListOps(Task):
    name = "listops"
    num_classes = 10
    version = "1"
    auto_prepare = True

    def vocab_size(self, cfg) -> int:
        return VOCAB_SIZE

    def check(self, cfg) -> None:
        super().check(cfg)
        s = _settings(cfg)
        if s["source"] not in SOURCES:
            raise LraError(f"task.data.source must be one of {', '.join(SOURCES)}, got {s['source']!r}")
        if s["tokenizer"] not in TOKENIZERS:
            renamed = _RENAMED_TOKENIZERS.get(s["tokenizer"])
            hint = f" (it is now called {renamed})" if renamed else ""
            raise LraError(
                f"task.data.tokenizer must be one of {', '.join(TOKENIZERS)}, got {s['tokenizer']!r}{hint}"
            )
        if s["source"] == "tsv":
            if not s["path"]:
                raise LraError(
                    "task.data.path must name the folder holding basic_{train,val,test}.tsv "
                    "when task.data.source=tsv"
                )
            return
        for name in ("train_size", "val_size", "test_size", "max_length", "max_depth"):
            _int(s[name], name, 1)
        _int(s["seed"], "seed", 0)
        _int(s["min_length"], "min_length", 0)
        _int(s["max_args"], "max_args", 2)
        if s["workers"] is not None:
            _int(s["workers"], "workers", 1)
        if int(s["min_length"]) >= int(s["max_length"]):
            raise LraError(
                f"task.data.min_length ({s['min_length']}) must be below task.data.max_length "
                f"({s['max_length']}); both bounds are exclusive"
            )
        longest = max_tree_length(int(s["max_depth"]), int(s["max_args"]))
        if longest <= int(s["min_length"]):
            raise LraError(
                f"task.data.max_depth={s['max_depth']} and max_args={s['max_args']} allow trees of "
                f"at most {longest} tokens, not above min_length={s['min_length']}; raise them"
            )

    def build(self, cfg) -> Built:
        self.check(cfg)
        settings = _settings(cfg)
        seq_len = int(cfg.seq_len)
        meta: dict[str, Any] = {
            "source": settings["source"],
            "tokenizer": settings["tokenizer"],
            "vocab": list(VOCAB),
        }
        start = time.perf_counter()
        if settings["source"] == "tsv":
            splits, stats = read_tsv(settings["path"], settings["tokenizer"], seq_len)
            meta["path"] = str(Path(settings["path"]).resolve())
            meta["read_seconds"] = round(time.perf_counter() - start, 2)
            meta.update(seed=None, generation_seconds=None)
        else:
            generated = _generate_configured(settings)
            meta["generation_seconds"] = round(time.perf_counter() - start, 2)
            splits, stats = {}, {}
            for split, data in generated.items():
                inputs, stats[split] = encode(data, settings["tokenizer"], seq_len)
                stats[split]["mean_tree_length"] = round(float(data.lengths().mean()), 1)
                splits[split] = {"inputs": inputs, "labels": data.labels}
            meta.update({name: int(settings[name]) for name in _TREE_SETTINGS})
            meta.update(chunk_size=CHUNK_SIZE, numpy=np.__version__)
        meta["sizes"] = {split: int(len(splits[split]["labels"])) for split in SPLITS}
        meta["stats"] = stats
        meta["build_seconds"] = round(time.perf_counter() - start, 2)
        warnings = [DROP_CLOSE_WARNING] if settings["tokenizer"] == DROP_CLOSE else []
        return Built(splits=splits, meta=meta, warnings=warnings)


# Names of the tokenisers before they were named for what they do.
_RENAMED_TOKENIZERS = {"lra": DROP_CLOSE, "s4": KEEP_CLOSE}

_TREE_SETTINGS = (
    "seed", "train_size", "val_size", "test_size", "min_length", "max_length", "max_depth", "max_args"
)


def _generate_configured(settings: dict[str, Any]) -> dict[str, ListOpsData]:
    kwargs = {name: int(settings[name]) for name in _TREE_SETTINGS}
    return generate_splits(workers=settings["workers"], **kwargs)


def export_tsv(cfg, folder: str | os.PathLike) -> list[Path]:
    """Generate the splits that `cfg` (a task config) describes and write them as LRA TSV."""
    ListOps().check(cfg)
    return write_tsv(folder, _generate_configured(_settings(cfg)))
