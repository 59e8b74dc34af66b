"""Retrieval: byte-level document matching on the ACL Anthology Network (LRA).

Two documents, one label: does one paper cite the other? Each document is encoded
on its own by one shared encoder (a two-tower model, `DualClassifier`) and the two
pooled vectors go through an MLP. The inputs are [N, 2, seq_len].

Source (LRA's released `lra_release/.../tsv_data/`): `new_aan_pairs.train.tsv`,
`new_aan_pairs.eval.tsv` (our validation split) and `new_aan_pairs.test.tsv` in
the folder `task.data.path`. As read by google-research/long-range-arena
`lra_benchmarks/matching/input_pipeline.py` (`get_tsv_dataset`): no header, tab
separated, no quoting (`use_quote_delim=False`), five fields `label, id1, id2,
text1, text2`, the label parsed as a float and cast to int32.

Tokenisation, as that pipeline's `char` tokenizer (the one `base_match_config.py`
selects): each text is cut to its first 10,000 bytes (`s.numpy()[:10000]` slices
the raw byte string), encoded by tfds' `ByteTextEncoder` (id = byte + 1, 0 is
padding, vocabulary 257), truncated to `max_length` (4000) and right-padded with 0.
With seq_len <= 10,000 the cut changes nothing; it matters only for longer
sequences, where it keeps LRA's limit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from lra.errors import LraError
from lra.registry import TASKS
from lra.tasks.base import Built, Task

FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv",
         "test": "new_aan_pairs.test.tsv"}
FIELDS = ("label", "id1", "id2", "text1", "text2")
INTERACTIONS = ("concat", "nli")
VOCAB = 257  # 256 byte values + padding


def encode(text: bytes, seq_len: int, max_bytes: int) -> np.ndarray:
    """Byte ids (byte + 1) of the first `max_bytes` bytes, truncated to `seq_len`."""
    return np.frombuffer(text[: min(max_bytes, seq_len)], np.uint8).astype(np.int16) + 1


def _parse_label(raw: bytes, file: Path, row: int) -> int:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        shown = raw.decode("utf-8", "replace")[:40]
        raise LraError(
            f"{file} row {row}: label {shown!r} is not 0 or 1; the file is corrupt, "
            "download LRA's lra_release again"
        )
    return int(value)


def read_split(file: Path, seq_len: int, max_bytes: int) -> tuple[dict[str, np.ndarray], dict]:
    """One TSV file -> inputs int16 [N, 2, seq_len] and labels int32 [N]."""
    if not file.is_file():
        raise LraError(
            f"{file} is missing; task.data.path must hold {', '.join(FILES.values())} "
            "(LRA's lra_release tsv_data folder)"
        )
    docs: list[bytes] = []  # the kept bytes only: half the memory of int16 ids
    labels: list[int] = []
    blank = truncated = 0
    with open(file, "rb") as handle:
        for row, line in enumerate(handle, start=1):
            line = line.rstrip(b"\n")
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip():
                blank += 1
                continue
            fields = line.split(b"\t")
            if len(fields) != len(FIELDS):
                raise LraError(
                    f"{file} row {row}: {len(fields)} tab-separated fields, expected "
                    f"{len(FIELDS)} ({', '.join(FIELDS)}); the file is corrupt or not an "
                    "LRA new_aan_pairs file"
                )
            labels.append(_parse_label(fields[0].strip(), file, row))
            for text in (fields[3], fields[4]):
                truncated += min(len(text), max_bytes) > seq_len
                docs.append(text[: min(max_bytes, seq_len)])
    n = len(labels)
    if n == 0:
        raise LraError(f"{file} holds no rows; download LRA's lra_release again")
    inputs = np.zeros((n, 2, seq_len), np.int16)
    flat = inputs.reshape(2 * n, seq_len)
    for index, text in enumerate(docs):
        flat[index, : len(text)] = encode(text, seq_len, max_bytes)
    info = {"file": str(file), "rows": n, "bytes": os.path.getsize(file),
            "blank_lines": blank, "documents_truncated": int(truncated)}
    return {"inputs": inputs, "labels": np.asarray(labels, np.int32)}, info


@TASKS.register("retrieval")
class Retrieval(Task):
    name = "retrieval"
    num_classes = 2
    pair = True
    version = "1"
    auto_prepare = False  # LRA's AAN files must be downloaded by hand

    def vocab_size(self, cfg) -> int:
        return VOCAB

    def check(self, cfg) -> None:
        super().check(cfg)
        interaction = cfg.get("interaction", "concat")
        if interaction not in INTERACTIONS:
            raise LraError(
                f"task.interaction={interaction!r} is not one of {', '.join(INTERACTIONS)}"
            )
        if int(cfg.data.get("max_bytes", 10000)) <= 0:
            raise LraError(f"task.data.max_bytes must be positive, got {cfg.data.max_bytes}")

    def build(self, cfg) -> Built:
        path = cfg.data.get("path")
        if not path:
            raise LraError(
                "task.data.path is not set; download LRA's lra_release.gz, unpack it and "
                "pass task.data.path=<folder holding new_aan_pairs.train.tsv>"
            )
        folder = Path(str(path)).expanduser()
        if not folder.is_dir():
            raise LraError(
                f"task.data.path={folder} is not a folder; point it at the folder holding "
                f"{', '.join(FILES.values())}"
            )
        nested = folder / "tsv_data"
        if not (folder / FILES["train"]).exists() and (nested / FILES["train"]).is_file():
            raise LraError(
                f"{folder} holds no {FILES['train']} but {nested} does; "
                f"pass task.data.path={nested}"
            )
        seq_len, max_bytes = int(cfg.seq_len), int(cfg.data.get("max_bytes", 10000))
        splits, files = {}, {}
        for split, name in FILES.items():
            splits[split], files[split] = read_split(folder / name, seq_len, max_bytes)
        meta = {"source": "lra_tsv", "path": str(folder.resolve()), "files": files,
                "tokenizer": "bytes+1", "max_bytes": max_bytes}
        return Built(splits, meta)
