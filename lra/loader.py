"""One input pipeline for every task.

`BatchLoader` turns a split's arrays (usually memory-mapped) into fixed-shape
batches: shuffled per epoch with a seed, sharded across JAX processes, padded
with zero-weight rows at the end of an evaluation pass, and resumable: `state()`
says where it stands and `BatchLoader(..., state=...)` carries on from there, so
a checkpoint can include it. A background thread reads ahead.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np

from lra.errors import LraError


class BatchLoader:
    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        state: dict | None = None,
        prefetch: int = 2,
    ):
        self.inputs, self.labels = arrays["inputs"], arrays["labels"]
        self.size = len(self.labels)
        if batch_size <= 0:
            raise LraError(f"batch size must be positive, got {batch_size}")
        if batch_size % process_count:
            raise LraError(
                f"batch size {batch_size} is not divisible by {process_count} processes"
            )
        if train and self.size < batch_size:
            raise LraError(
                f"the training split has {self.size} examples, fewer than one batch of "
                f"{batch_size}; lower trainer.batch_size"
            )
        self.batch_size = batch_size
        self.local_batch = batch_size // process_count
        self.process_index = process_index
        self.train = train
        self.seed = seed
        self.prefetch = prefetch
        state = state or {"epoch": 0, "batch": 0}
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    @property
    def batches_per_epoch(self) -> int:
        if self.train:  # training drops the ragged remainder, as LRA's pipeline repeats
            return self.size // self.batch_size
        return -(-self.size // self.batch_size)

    def state(self) -> dict:
        """Position after the last batch handed out."""
        return {"epoch": self.epoch, "batch": self.batch}

    def _order(self, epoch: int) -> np.ndarray:
        if not self.train:
            return np.arange(self.size)
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.size)

    def _make(self, order: np.ndarray, index: int) -> dict[str, np.ndarray]:
        rows = order[index * self.batch_size : (index + 1) * self.batch_size]
        weights = np.ones(self.batch_size, np.float32)
        if len(rows) < self.batch_size:  # last evaluation batch: pad with weight-0 rows
            weights[len(rows) :] = 0.0
            rows = np.concatenate([rows, np.zeros(self.batch_size - len(rows), rows.dtype)])
        local = slice(self.process_index * self.local_batch, (self.process_index + 1) * self.local_batch)
        rows, weights = rows[local], weights[local]
        # Reading sorted rows is kinder to memory maps; the batch order does not matter.
        perm = np.argsort(rows, kind="stable")
        rows, weights = rows[perm], weights[perm]
        return {
            "inputs": np.asarray(self.inputs[rows], np.int32),
            "labels": np.asarray(self.labels[rows], np.int32),
            "weights": weights,
        }

    def _produce(self) -> Iterator[tuple[int, int, dict]]:
        epoch, index = self.epoch, self.batch
        while True:
            if index >= self.batches_per_epoch:
                if not self.train:
                    return
                epoch, index = epoch + 1, 0
            order = self._order(epoch)
            while index < self.batches_per_epoch:
                yield epoch, index + 1, self._make(order, index)
                index += 1

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if not self.train:
            self.epoch, self.batch = 0, 0
        for epoch, position, batch in _read_ahead(self._produce(), self.prefetch):
            self.epoch, self.batch = epoch, position
            yield batch


_DONE = object()


def _read_ahead(items: Iterator, depth: int) -> Iterator:
    """Run `items` in a daemon thread, `depth` items ahead of the consumer."""
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as err:  # surfaced in the consumer
            buffer.put(err)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
