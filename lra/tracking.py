"""Where metrics go: a tracker interface with a JSON-lines backend and a no-op one.

A tracker receives one flat dict of numbers per step; other backends (TensorBoard,
W&B) only need `log` and `close`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def flush(self) -> None: ...  # on disk now: a checkpoint is about to say so

    def close(self) -> None: ...


class NoOpTracker:
    """For tests and dry runs."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlTracker:
    """One JSON object per line: {"step": n, ...metrics}, as big_vision does."""

    def __init__(self, path: Path):
        self.handle = open(path, "a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else str(value)
        self.handle.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.flush()
        self.handle.close()
