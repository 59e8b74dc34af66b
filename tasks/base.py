"""What a task is: a named source of token arrays with a fixed label set.

A task turns its source (a generator, released files, tfds, a local copy) into
arrays once, in `build`; the engine stores them as a prepared cache
(`lra/data.py`) and training only ever reads that cache.

Array conventions, shared by every task and relied on by models and loader:
- `inputs`: integer tokens, shape [N, L] (or [N, 2, L] for a pair task),
  0 = padding, padding only on the right, any integer dtype that holds the vocab;
- `labels`: int32 [N], in [0, num_classes).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from lra.errors import LraError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about a task."""

    name: str
    num_classes: int
    vocab_size: int
    seq_len: int
    pair: bool = False


@dataclasses.dataclass
class Built:
    """The arrays of every split plus facts to record about where they came from."""

    splits: dict[str, dict[str, np.ndarray]]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Said in the manifest and copied into every run record that uses the cache:
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. a reproduction-only option
    val_is_test: bool = False  # the validation split is the test split (model selection on test)


class Task:
    name: str = ""
    num_classes: int = 0
    pair: bool = False
    version: str = "1"  # bump whenever `build` would give different arrays
    auto_prepare: bool = False  # cheap and offline: training may prepare it itself

    def vocab_size(self, cfg) -> int:
        raise NotImplementedError

    def spec(self, cfg) -> TaskSpec:
        return TaskSpec(
            name=self.name,
            num_classes=self.num_classes,
            vocab_size=self.vocab_size(cfg),
            seq_len=int(cfg.seq_len),
            pair=self.pair,
        )

    def build(self, cfg) -> Built:
        """Read or generate the source named by `cfg.data` into arrays."""
        raise NotImplementedError

    def check(self, cfg) -> None:
        """Reject a task config that cannot work, before any data is touched."""
        if int(cfg.seq_len) <= 0:
            raise LraError(f"task.seq_len must be positive, got {cfg.seq_len}")


def check_split(task: Task, split: str, arrays: dict[str, np.ndarray], seq_len: int) -> None:
    """Verify the array conventions above; a task's bug must not become a silent cache."""
    inputs, labels = arrays["inputs"], arrays["labels"]
    expected = (2, seq_len) if task.pair else (seq_len,)
    if inputs.shape[1:] != expected or inputs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{task.name}/{split}: inputs {inputs.shape} and labels {labels.shape} "
            f"do not match [N, {', '.join(map(str, expected))}]"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= task.num_classes):
        raise LraError(
            f"{task.name}/{split}: a label lies outside [0, {task.num_classes}); "
            "the source data is corrupt"
        )


def get_task(name: str) -> Task:
    """The registered task called `name` (tasks register their class)."""
    from lra.registry import TASKS

    return TASKS.get(name)()


def sha256_file(path: Path) -> str:
    """Checksum of a source or cache file, for manifests."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def import_tfds(local_sources: str):
    """tensorflow_datasets, or one line saying how to get it or which local source to use."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise LraError(
            f"task.data.source=tfds needs tensorflow-datasets and tensorflow ({err}); "
            f"run: pip install -e .[tfds], or use a local copy with {local_sources}"
        ) from None
    return tfds
