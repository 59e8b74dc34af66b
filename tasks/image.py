"""LRA "Image": CIFAR-10 (Krizhevsky 2009) as grayscale pixel sequences, 10 classes.

What LRA did (google-research/long-range-arena, lra_benchmarks/image/input_pipeline.py
`get_cifar10_datasets`): `tfds.load('cifar10', split='train[:90%]')` for training,
`'train[90%:]'` for validation and `'test'` for test; every image through
`tf.image.rgb_to_grayscale`, cast to int32 and flattened row by row into
32 * 32 = 1024 tokens (vocab 256).

Grayscale, exactly as TF computes it for uint8 images (tensorflow image_ops_impl
`rgb_to_grayscale` + `convert_image_dtype`): each channel to float32 as
`c * float32(1/255)`, `gray = (r * 0.2989 + g * 0.5870) + b * 0.1140` in float32,
then back to uint8 as `trunc(gray * 255.5)` (a cast after scaling by
`dtype.max + 0.5`, not round-to-nearest). `tf_grayscale` below equals TF 2.21's
output on all 2^24 RGB colours (checked once against TensorFlow; the test suite
holds the checksum of TF's table).

Deviation from LRA: tokens are `gray + 1` (ids 1..256, vocab 257), so 0 stays the
padding id of every task. LRA fed the raw gray value and masked `inputs > 0` as
padding, so its models ignored black pixels; here every pixel is attended to.

Sources (`task.data.source`):

* ``tfds``: `tensorflow_datasets` `cifar10`, the slices LRA used
  (`pip install -e .[tfds]`; `task.data.path` is the tfds `data_dir`).
* ``pickle``: `cifar-10-batches-py/` (`data_batch_1..5`, `test_batch`), the python
  version from the CIFAR page. Unpickled with a loader that only admits numpy arrays.
* ``binary``: `cifar-10-batches-bin/` (`data_batch_1..5.bin`, `test_batch.bin`):
  3073-byte records, a label byte then 1024 R, 1024 G, 1024 B bytes.
* ``npz_jpeg``: one .npz with the JPEG bytes of every image (`train_jpeg`,
  `train_offsets`, `y_train`, `test_jpeg`, `test_offsets`, `y_test`), decoded with
  Pillow. JPEG is lossy: a copy measured against lossless CIFAR differed by a mean
  absolute error of 5.8 levels per pixel and channel, so results on it are close
  to, not equal to, CIFAR-10's; `meta["lossy"]` records this.

The 90/10 split (`task.data.val_split`):

* ``lra``: the examples tfds puts in `train[:90%]` / `train[90%:]`. tfds stores a
  split in the order of `md5(split name + str(key))` and CIFAR-10's key is the
  image's index in `data_batch_1..5` (tfds `cifar.py`, `core/hashing.py`), so the
  last 10% of the indices sorted by `md5(b"train" + str(i))` are LRA's
  validation images. Needs the original order: tfds, pickle, binary.
* ``seeded``: a seeded random `val_fraction` of the training images
  (`task.data.seed`). For sources whose order is not CIFAR's own, such as an npz
  sorted by class.
* ``auto`` (default): ``lra`` where the source keeps the original order,
  ``seeded`` for npz_jpeg.

Within each split rows are in the original index order (the loader shuffles).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lra.errors import LraError
from lra.registry import TASKS
from lra.tasks.base import Built, Task, import_tfds, sha256_file

SOURCES = ("tfds", "pickle", "binary", "npz_jpeg")
VAL_SPLITS = ("auto", "lra", "seeded")
ORDERED_SOURCES = ("tfds", "pickle", "binary")  # keep CIFAR-10's own image order
SIDE = 32
SEQ_LEN = SIDE * SIDE
VOCAB_SIZE = 257  # 256 gray levels + padding id 0
NUM_CLASSES = 10
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
RECORD = 1 + 3 * SEQ_LEN  # CIFAR-10 binary record: label byte + planar RGB
RGB_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale
JPEG_MAE = 5.8  # PROVENANCE of the staged npz: mean |JPEG - lossless| per pixel and channel


def tf_grayscale(rgb: np.ndarray, pixels_per_step: int = 1 << 22) -> np.ndarray:
    """uint8 [..., 3] -> uint8 [...], bit-exact with tf.image.rgb_to_grayscale."""
    rgb = np.asarray(rgb, np.uint8)
    flat = rgb.reshape(-1, 3)
    out = np.empty(len(flat), np.uint8)
    scale, w = np.float32(1.0 / 255.0), RGB_WEIGHTS
    rows = max(1, int(pixels_per_step))
    for start in range(0, len(flat), rows):
        x = flat[start : start + rows].astype(np.float32) * scale
        gray = x[:, 0] * w[0] + x[:, 1] * w[1]
        gray = gray + x[:, 2] * w[2]
        out[start : start + rows] = (gray * np.float32(255.5)).astype(np.uint8)
    return out.reshape(rgb.shape[:-1])


def pixel_tokens(rgb: np.ndarray) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> uint16 [N, 1024]: grayscale row by row, + 1."""
    gray = tf_grayscale(rgb).reshape(len(rgb), -1)
    return gray.astype(np.uint16) + 1


def lra_val_mask(n: int, fraction: float = 0.1) -> np.ndarray:
    """Which of CIFAR-10's n training images tfds puts in train[(1-fraction):]."""
    salt = hashlib.md5(b"train")

    def key(i: int) -> bytes:
        md5 = salt.copy()
        md5.update(str(i).encode())
        return md5.digest()  # big-endian: byte order sorts like tfds's int(hexdigest, 16)

    order = sorted(range(n), key=key)
    mask = np.zeros(n, bool)
    mask[order[n - _val_count(n, fraction) :]] = True
    return mask


def seeded_val_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    mask = np.zeros(n, bool)
    mask[order[: _val_count(n, fraction)]] = True
    return mask


def _val_count(n: int, fraction: float) -> int:
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise LraError(
            f"task.data.val_fraction={fraction} leaves {n_val} of {n} training images for "
            "validation; pick a fraction that leaves both parts non-empty"
        )
    return n_val



def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    bad = np.nonzero((labels < 0) | (labels >= NUM_CLASSES))[0]
    if len(bad):
        raise LraError(
            f"{where}: image {int(bad[0])} has label {labels[bad[0]]}, outside 0..{NUM_CLASSES - 1}; "
            "the file is corrupt"
        )
    return labels.astype(np.int32)


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise LraError(f"{path} is missing; task.data.path must be {what}")
    return path


# ---------------------------------------------------------------- sources
# Each returns ({"train": (rgb, labels), "test": (rgb, labels)}, info); rgb is
# uint8 [N, 32, 32, 3] in the source's order.


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else (no code runs)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 name, no warning
        return super().find_class(module, name)


def _read_pickle_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except OSError as err:
        raise LraError(f"{file}: cannot read ({err.strerror or err})") from None
    except Exception as err:  # UnpicklingError, EOFError, ValueError, ... : not a CIFAR pickle
        raise LraError(f"{file}: not a CIFAR-10 pickle batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise LraError(f"{file}: not a CIFAR-10 pickle batch (holds {type(batch).__name__}, not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise LraError(f"{file}: not a CIFAR-10 pickle batch (no 'data' and 'labels' entries)")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SEQ_LEN:
        raise LraError(f"{file}: 'data' is {data.dtype} {data.shape}, not uint8 [N, 3072]")
    if labels.shape != (len(data),):
        raise LraError(f"{file}: {len(labels)} labels for {len(data)} images")
    rgb = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return rgb, _check_labels(labels, str(file))


def _read_pickle(path: Path) -> tuple[dict, dict]:
    what = "the cifar-10-batches-py folder (data_batch_1..5, test_batch)"
    if not path.is_dir():
        raise LraError(f"{path} is not a folder; task.data.path must be {what}")
    files = [_need_file(path / name, what) for name in (*TRAIN_BATCHES, "test_batch")]
    parts = [_read_pickle_batch(file) for file in files]
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return {"train": train, "test": parts[5]}, {"files_sha256": {f.name: sha256_file(f) for f in files}}


def _read_binary_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = np.fromfile(file, np.uint8)
    except OSError as err:
        raise LraError(f"{file}: cannot read ({err.strerror or err})") from None
    if len(raw) == 0 or len(raw) % RECORD:
        raise LraError(
            f"{file}: {len(raw)} bytes is not a whole number of {RECORD}-byte records "
            f"(record {len(raw) // RECORD} is truncated); the file is corrupt"
        )
    records = raw.reshape(-1, RECORD)
    labels = _check_labels(records[:, 0], str(file))
    rgb = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return rgb, labels


def _read_binary(path: Path) -> tuple[dict, dict]:
    what = "the cifar-10-batches-bin folder (data_batch_1..5.bin, test_batch.bin)"
    if not path.is_dir():
        raise LraError(f"{path} is not a folder; task.data.path must be {what}")
    files = [_need_file(path / f"{name}.bin", what) for name in (*TRAIN_BATCHES, "test_batch")]
    parts = [_read_binary_batch(file) for file in files]
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return {"train": train, "test": parts[5]}, {"files_sha256": {f.name: sha256_file(f) for f in files}}


_JPEG_CHUNK = 2500  # images per decoding job


def _decode_chunk(job: tuple[bytes, np.ndarray, int, str]) -> np.ndarray:
    from PIL import Image

    data, offsets, first, where = job
    out = np.empty((len(offsets) - 1, SIDE, SIDE, 3), np.uint8)
    for i in range(len(out)):
        try:
            with Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]]), formats=["JPEG"]) as image:
                pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
            raise LraError(
                f"{where}: image {first + i} is not a readable JPEG ({type(err).__name__}: {err})"
            ) from None
        if pixels.shape != (SIDE, SIDE, 3):
            raise LraError(f"{where}: image {first + i} is {pixels.shape[1]}x{pixels.shape[0]}, not 32x32")
        out[i] = pixels
    return out


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray, where: str, workers: int | None = None) -> np.ndarray:
    """Concatenated JPEG files -> uint8 [N, 32, 32, 3] (image i is blob[offsets[i]:offsets[i+1]]),
    decoded with Pillow, in parallel over chunks."""
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    jobs = []
    for lo in range(0, n, _JPEG_CHUNK):
        hi = min(n, lo + _JPEG_CHUNK)
        piece = blob[offsets[lo] : offsets[hi]].tobytes()
        jobs.append((piece, offsets[lo : hi + 1] - offsets[lo], lo, where))
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        parts = [_decode_chunk(job) for job in jobs]
    else:
        import multiprocessing as mp

        # fork is cheapest, but JAX's threads make fork unsafe once it is imported
        method = "fork" if "jax" not in sys.modules and sys.platform == "linux" else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            parts = list(pool.imap(_decode_chunk, jobs))
    return np.concatenate(parts) if parts else np.zeros((0, SIDE, SIDE, 3), np.uint8)


def _read_npz_jpeg(path: Path) -> tuple[dict, dict]:
    file = _need_file(path, "the .npz file with train_jpeg, train_offsets, y_train, test_jpeg, ...")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise LraError(f"{file}: not a readable .npz ({type(err).__name__}: {err})") from None
    splits = {}
    with archive:
        for split in ("train", "test"):
            keys = (f"{split}_jpeg", f"{split}_offsets", f"y_{split}")
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise LraError(f"{file}: no array {missing[0]!r} (needs {', '.join(keys)} for {split})")
            try:
                blob, offsets, labels = (np.asarray(archive[k]) for k in keys)
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
                raise LraError(f"{file}: cannot read {split} arrays ({type(err).__name__}: {err})") from None
            offsets = offsets.astype(np.int64)
            if (
                blob.dtype != np.uint8 or blob.ndim != 1 or offsets.ndim != 1
                or len(offsets) != len(labels) + 1 or offsets[0] != 0
                or offsets[-1] != len(blob) or np.any(np.diff(offsets) <= 0)
            ):
                raise LraError(
                    f"{file}: {split}_offsets ({len(offsets)} values) do not delimit "
                    f"{len(labels)} images in {split}_jpeg ({len(blob)} bytes)"
                )
            labels = _check_labels(labels, f"{file} y_{split}")
            splits[split] = (decode_jpegs(blob, offsets, f"{file} {split}_jpeg"), labels)
    info = {
        "files_sha256": {file.name: sha256_file(file)},
        "lossy": True,
        "lossy_note": (
            f"JPEG copy of CIFAR-10: mean absolute error {JPEG_MAE} levels per pixel and channel "
            "against the lossless images; results are close to, not equal to, CIFAR-10's"
        ),
        "jpeg_decoder": _pillow_version(),
    }
    return splits, info


def _pillow_version() -> str:
    import PIL

    return f"Pillow {PIL.__version__}"


_LOCAL_SOURCES = "task.data.source=" + "|".join(s for s in SOURCES if s != "tfds")


def _read_tfds(path: str | None) -> tuple[dict, dict]:
    """tfds cifar10 with each image's original index (from its "train_NNNNN" id)."""
    tfds = import_tfds(f"{_LOCAL_SOURCES} and task.data.path=DIR")
    parts = {}
    for split in ("train[:90%]", "train[90%:]", "test"):
        try:
            data = tfds.as_numpy(tfds.load("cifar10", split=split, batch_size=-1, data_dir=path))
        except Exception as err:  # tfds/TF raise many types; all mean "cannot load"
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise LraError(
                f"tfds could not load cifar10/{split} ({type(err).__name__}: {first}); check the "
                f"network or task.data.path (the tfds data_dir), or use {_LOCAL_SOURCES}"
            ) from None
        index = np.array([int(bytes(i).rsplit(b"_", 1)[-1]) for i in data["id"]], np.int64)
        labels = _check_labels(data["label"], f"tfds cifar10/{split}")
        parts[split] = (np.asarray(data["image"], np.uint8), labels, index)
    head, tail = parts["train[:90%]"], parts["train[90%:]"]
    index = np.concatenate([head[2], tail[2]])
    order = np.argsort(index, kind="stable")
    train = (np.concatenate([head[0], tail[0]])[order], np.concatenate([head[1], tail[1]])[order])
    tfds_val = np.zeros(len(index), bool)
    tfds_val[len(head[2]):] = True
    test_order = np.argsort(parts["test"][2], kind="stable")
    test = (parts["test"][0][test_order], parts["test"][1][test_order])
    info = {"tfds_data_dir": path, "tfds_val_mask": tfds_val[order]}
    return {"train": train, "test": test}, info


# ---------------------------------------------------------------- task


def resolve_val_split(data) -> str:
    choice = data.get("val_split", "auto")
    if choice == "auto":
        return "lra" if data.source in ORDERED_SOURCES else "seeded"
    return choice


@TASKS.register("image")
class ImageTask(Task):
    name = "image"
    num_classes = NUM_CLASSES
    version = "1"
    auto_prepare = False

    def vocab_size(self, cfg) -> int:
        return VOCAB_SIZE

    def check(self, cfg) -> None:
        super().check(cfg)
        if int(cfg.seq_len) != SEQ_LEN:
            raise LraError(f"task.seq_len must be {SEQ_LEN} (32x32 pixels) for image, got {cfg.seq_len}")
        data = cfg.data
        if data.source not in SOURCES:
            raise LraError(f"task.data.source={data.source!r} is not one of {', '.join(SOURCES)}")
        if data.source != "tfds" and not data.get("path"):
            raise LraError(f"task.data.source={data.source} needs task.data.path")
        choice = data.get("val_split", "auto")
        if choice not in VAL_SPLITS:
            raise LraError(f"task.data.val_split={choice!r} is not one of {', '.join(VAL_SPLITS)}")
        if choice == "lra" and data.source not in ORDERED_SOURCES:
            raise LraError(
                f"task.data.val_split=lra needs CIFAR-10's original image order, which "
                f"source={data.source} does not keep; use val_split=seeded (or auto)"
            )
        if not 0.0 < float(data.get("val_fraction", 0.1)) < 1.0:
            raise LraError(f"task.data.val_fraction must lie in (0, 1), got {data.get('val_fraction')}")

    def build(self, cfg) -> Built:
        self.check(cfg)
        data = cfg.data
        source = data.source
        if source == "tfds":
            raw, info = _read_tfds(data.get("path"))
        else:
            path = Path(str(data.path)).expanduser()
            if not path.exists():
                raise LraError(f"{path} does not exist; set task.data.path to the {source} data")
            reader = {"pickle": _read_pickle, "binary": _read_binary, "npz_jpeg": _read_npz_jpeg}[source]
            raw, info = reader(path)

        fraction, seed = float(data.get("val_fraction", 0.1)), int(data.get("seed", 0))
        split_rule = resolve_val_split(data)
        n_train = len(raw["train"][1])
        tfds_val = info.pop("tfds_val_mask", None)
        if split_rule == "lra":
            val_mask = lra_val_mask(n_train, fraction)
            if tfds_val is not None:
                info["tfds_split_matches_md5_order"] = bool(np.array_equal(val_mask, tfds_val))
                if fraction == 0.1:
                    val_mask = tfds_val  # tfds's own train[90%:] is the ground truth
            split_note = "tfds train[:90%]/train[90%:] membership (md5 order of the original index)"
        else:
            val_mask = seeded_val_mask(n_train, fraction, seed)
            split_note = f"seeded random {fraction:.0%} of the training images (seed {seed})"

        rgb, labels = raw["train"]
        train_rows, val_rows = np.nonzero(~val_mask)[0], np.nonzero(val_mask)[0]
        tokens = pixel_tokens(rgb)
        splits = {
            "train": {"inputs": tokens[train_rows], "labels": labels[train_rows]},
            "val": {"inputs": tokens[val_rows], "labels": labels[val_rows]},
            "test": {"inputs": pixel_tokens(raw["test"][0]), "labels": raw["test"][1]},
        }
        meta: dict[str, Any] = {
            "source": source,
            "val_split": split_rule,
            "val_split_note": split_note,
            "val_fraction": fraction,
            "grayscale": (
                "tf.image.rgb_to_grayscale for uint8: float32, weights 0.2989/0.5870/0.1140, "
                "trunc(gray * 255.5)"
            ),
            "tokens": "gray + 1 (ids 1..256), 0 = padding; LRA fed gray and masked black pixels",
            "lossy": False,
            **info,
        }
        if split_rule == "seeded":
            meta["seed"] = seed
        return Built(splits, meta)
