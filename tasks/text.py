"""LRA "Text": byte-level IMDb review sentiment (Maas et al. 2011), 2 classes.

What LRA did (google-research/long-range-arena, lra_benchmarks/text_classification/
input_pipeline.py): `tfds.load('imdb_reviews')`, the `test` split serving as both
validation and test ("IMDb doesn't have val set"), every review encoded with
`tfds.deprecated.text.ByteTextEncoder` (UTF-8 bytes + 1, so ids 1..256 and 0 is
padding; vocab 257), cut to `max_length` tokens and right-padded with 0.

Here the same arrays come from one of three sources (`task.data.source`):

* ``tfds``: `tensorflow_datasets` `imdb_reviews` exactly as LRA loaded it
  (`pip install -e .[tfds]`; `task.data.path` is the tfds `data_dir`, null for
  tfds's default). Imported only when chosen.
* ``aclimdb``: the unpacked Large Movie Review Dataset, a folder `aclImdb/` with
  `train/{neg,pos}/*.txt` and `test/{neg,pos}/*.txt` (`task.data.path` names that
  folder or the one holding it). Files are read as bytes, as tfds's builder does.
* ``jsonl``: a folder with `train.jsonl` / `train.jsonl.gz` and `test.jsonl` /
  `test.jsonl.gz`, one object per line with `"label"` (0 = neg, 1 = pos, as tfds)
  and `"text"`; other keys are ignored.

Every review is stripped of leading and trailing ASCII whitespace
(`bytes.strip()`), as tfds's `imdb_reviews` builder does (`f.read().strip()`), so
the three sources give the same bytes. Rows keep the source's order (aclimdb:
neg before pos, by numeric file id); training shuffles anyway.

Validation (`task.data.val`): ``test`` (LRA's choice, the default: validation
numbers are test numbers) or ``holdout``: a seeded random `val_fraction` of the
training reviews, taken out of train, so the test split stays unseen.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lra.errors import LraError
from lra.registry import TASKS
from lra.tasks.base import Built, Task, import_tfds, sha256_file

SOURCES = ("tfds", "aclimdb", "jsonl")
VAL_MODES = ("test", "holdout")
LABELS = ("neg", "pos")  # tfds imdb_reviews ClassLabel order: neg = 0, pos = 1
VOCAB_SIZE = 257  # 256 byte values + padding id 0 (ByteTextEncoder.vocab_size)


def byte_tokens(texts: list[bytes], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings -> uint16 [N, seq_len] of byte + 1, right-padded with 0 (and the
    original lengths, before truncation)."""
    lengths = np.fromiter((len(t) for t in texts), np.int64, len(texts))
    kept = np.minimum(lengths, seq_len)
    flat = np.frombuffer(b"".join(t[:seq_len] for t in texts), np.uint8)
    tokens = np.zeros((len(texts), seq_len), np.uint16)
    tokens[np.arange(seq_len)[None, :] < kept[:, None]] = flat.astype(np.uint16) + 1
    return tokens, lengths



# ---------------------------------------------------------------- sources


def _read_tfds(path: str | None) -> tuple[dict, dict]:
    tfds = import_tfds("task.data.source=aclimdb or jsonl and task.data.path=DIR")
    splits = {}
    for split in ("train", "test"):
        try:
            data = tfds.as_numpy(
                tfds.load("imdb_reviews", split=split, batch_size=-1, data_dir=path)
            )
        except Exception as err:  # tfds/TF raise many types; all mean "cannot load"
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise LraError(
                f"tfds could not load imdb_reviews/{split} ({type(err).__name__}: {first}); "
                "check the network or task.data.path (the tfds data_dir), or use "
                "task.data.source=aclimdb|jsonl with a local copy"
            ) from None
        texts = [bytes(t).strip() for t in data["text"]]
        splits[split] = (texts, np.asarray(data["label"], np.int32), f"tfds imdb_reviews/{split}")
    return splits, {"tfds_data_dir": path}


_ID = re.compile(r"^(\d+)")


def _review_order(file: Path) -> tuple[int, str]:
    match = _ID.match(file.name)
    return (int(match.group(1)) if match else 1 << 62, file.name)


def _aclimdb_root(path: Path) -> Path:
    if not path.is_dir():
        raise LraError(f"{path} is not a folder; task.data.path must name the aclImdb folder")
    if not (path / "train").is_dir() and (path / "aclImdb" / "train").is_dir():
        return path / "aclImdb"
    return path


def _read_aclimdb(path: Path) -> tuple[dict, dict]:
    root = _aclimdb_root(path)
    splits = {}
    for split in ("train", "test"):
        texts: list[bytes] = []
        labels: list[int] = []
        for label, name in enumerate(LABELS):
            folder = root / split / name
            if not folder.is_dir():
                raise LraError(
                    f"{folder} is missing; task.data.path must be an aclImdb folder with "
                    "train/{neg,pos} and test/{neg,pos}"
                )
            files = sorted(folder.glob("*.txt"), key=_review_order)
            if not files:
                raise LraError(f"{folder} holds no .txt reviews")
            for file in files:
                try:
                    texts.append(file.read_bytes().strip())
                except OSError as err:
                    raise LraError(f"{file}: cannot read ({err.strerror or err})") from None
            labels += [label] * len(files)
        splits[split] = (texts, np.asarray(labels, np.int32), str(root / split))
    return splits, {"root": str(root.resolve())}


def _jsonl_file(folder: Path, split: str) -> Path:
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise LraError(
        f"{folder / (split + '.jsonl')}[.gz] is missing; task.data.path must be a folder with "
        "train.jsonl[.gz] and test.jsonl[.gz]"
    )


def read_jsonl(file: Path) -> tuple[list[bytes], np.ndarray]:
    """Reviews and labels of one JSON-lines file (gzip'd if it ends in .gz)."""
    texts: list[bytes] = []
    labels: list[int] = []
    opener = gzip.open if file.name.endswith(".gz") else open
    number = 0
    try:
        with opener(file, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
                    raise LraError(f"{file} line {number}: not valid JSON ({err})") from None
                if not isinstance(row, dict) or "text" not in row or "label" not in row:
                    raise LraError(f'{file} line {number}: needs an object with "label" and "text"')
                label, text = row["label"], row["text"]
                if type(label) is not int or label not in (0, 1):
                    raise LraError(f"{file} line {number}: label must be 0 or 1, got {label!r}")
                if not isinstance(text, str):
                    raise LraError(f'{file} line {number}: "text" must be a string')
                try:
                    texts.append(text.encode("utf-8").strip())
                except UnicodeEncodeError as err:
                    raise LraError(
                        f"{file} line {number}: text is not valid Unicode ({err.reason})"
                    ) from None
                labels.append(label)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        where = f" after line {number}" if number else ""
        raise LraError(f"{file}: cannot read{where} ({type(err).__name__}: {err})") from None
    if not texts:
        raise LraError(f"{file} holds no reviews")
    return texts, np.asarray(labels, np.int32)


def _read_jsonl_folder(path: Path) -> tuple[dict, dict]:
    if not path.is_dir():
        raise LraError(
            f"{path} is not a folder; task.data.path must hold train.jsonl[.gz] and test.jsonl[.gz]"
        )
    splits, files = {}, {}
    for split in ("train", "test"):
        file = _jsonl_file(path, split)
        texts, labels = read_jsonl(file)
        splits[split] = (texts, labels, str(file))
        files[file.name] = sha256_file(file)
    return splits, {"files_sha256": files}


# ---------------------------------------------------------------- task


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) row indices: a seeded random `fraction` of n rows is val."""
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise LraError(
            f"task.data.val_fraction={fraction} leaves {n_val} of {n} training reviews for "
            "validation; pick a fraction that leaves both parts non-empty"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@TASKS.register("text")
class TextTask(Task):
    name = "text"
    num_classes = 2
    version = "1"
    auto_prepare = False

    def vocab_size(self, cfg) -> int:
        return VOCAB_SIZE

    def check(self, cfg) -> None:
        super().check(cfg)
        data = cfg.data
        if data.source not in SOURCES:
            raise LraError(f"task.data.source={data.source!r} is not one of {', '.join(SOURCES)}")
        if data.source != "tfds" and not data.get("path"):
            raise LraError(
                f"task.data.source={data.source} needs task.data.path (the folder holding the files)"
            )
        val = data.get("val", "test")
        if val not in VAL_MODES:
            raise LraError(f"task.data.val={val!r} is not one of {', '.join(VAL_MODES)}")
        if val == "holdout" and not 0.0 < float(data.get("val_fraction", 0.1)) < 1.0:
            raise LraError(f"task.data.val_fraction must lie in (0, 1), got {data.val_fraction}")

    def build(self, cfg) -> Built:
        self.check(cfg)
        data, seq_len = cfg.data, int(cfg.seq_len)
        source = data.source
        if source == "tfds":
            raw, info = _read_tfds(data.get("path"))
        else:
            path = Path(str(data.path)).expanduser()
            if not path.exists():
                raise LraError(f"{path} does not exist; set task.data.path to the {source} folder")
            raw, info = (_read_aclimdb if source == "aclimdb" else _read_jsonl_folder)(path)

        arrays: dict[str, dict[str, np.ndarray]] = {}
        truncated: dict[str, int] = {}
        for split, (texts, labels, _) in raw.items():
            tokens, lengths = byte_tokens(texts, seq_len)
            arrays[split] = {"inputs": tokens, "labels": labels}
            truncated[split] = int((lengths > seq_len).sum())
            info[f"{split}_bytes_median"] = float(np.median(lengths))

        val_mode = data.get("val", "test")
        meta: dict[str, Any] = {
            "source": source,
            "tokens": "UTF-8 bytes + 1 (tfds ByteTextEncoder), 0 = padding",
            "strip": "bytes.strip() per review, as tfds imdb_reviews",
            "truncated_reviews": truncated,
            "val": val_mode,
            **info,
        }
        if val_mode == "test":
            splits = {"train": arrays["train"], "val": arrays["test"], "test": arrays["test"]}
            meta["val_note"] = "the test split serves as validation, as in LRA"
        else:
            fraction, seed = float(data.get("val_fraction", 0.1)), int(data.get("seed", 0))
            train_rows, val_rows = holdout_indices(len(arrays["train"]["labels"]), fraction, seed)
            full = arrays["train"]
            splits = {
                "train": {k: v[train_rows] for k, v in full.items()},
                "val": {k: v[val_rows] for k, v in full.items()},
                "test": arrays["test"],
            }
            meta.update(val_fraction=fraction, seed=seed,
                        val_note="seeded random slice of the training reviews (not LRA's choice)")
        return Built(splits, meta, val_is_test=val_mode == "test")
