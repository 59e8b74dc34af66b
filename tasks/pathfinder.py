"""Pathfinder (32 x 32, 1024 tokens) and Path-X (128 x 128, 16,384 tokens), as in LRA.

Are the two markers joined by one dashed path? Each grey-scale image is flattened
row by row into a sequence of pixels, one token per pixel.

Tokens are pixel + 1 (vocabulary 257, 0 = padding, never present here). LRA fed
raw pixel values and its encoder's padding mask is `inputs > 0`, so every black
pixel (most of an image) was treated as padding: masked out of attention. We
shift instead, so that black is an ordinary token and nothing is masked; this is
a deliberate deviation, recorded in every cache's manifest (`tokens`).

Sources (`task.data.source`):
- `generate`: our re-implementation of the generator (`pathfinder_gen.generate`),
  balanced labels. Sizes `train_size/val_size/test_size` default to 160,000 /
  20,000 / 20,000: LRA's 200,000 images per difficulty with the 80/10/10 split of
  S4/S5 (and LRA's `get_pathfinder_base_datasets`, `[:80%]`, `[80%:90%]`, `[90%:]`).
  Each split is an independent stream of the seed (a different train_size does
  not change the validation and test images).
- `lra`: LRA's released images under `task.data.path`:
  `<path>/pathfinder<res>/<difficulty folder>/metadata/<n>.npy` (plain text
  despite the name; one image per line, fields split on whitespace: 0 and 1 give
  `imgs/<k>` and `sample_<i>.png`, field 3 the label) and the images
  `<path>/pathfinder<res>/<difficulty folder>/imgs/<k>/sample_<i>.png`. As S4/S5:
  metadata files in numeric order, zero-byte images skipped (LRA's
  `tf.strings.length(image) > 0` filter; S4's blacklist holds the one such file,
  pathfinder32/curv_baseline/imgs/0/sample_172.png), all images shuffled with seed
  42 and split 80/10/10 (val and test int(0.1 N) each, train the rest).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lra.errors import LraError
from lra.registry import TASKS
from lra.tasks.base import Built, Task

VOCAB = 257  # 256 pixel values + padding
SOURCES = ("generate", "lra")
# difficulty -> LRA's folder (and TFDS split) name
DIFFICULTY_FOLDERS = {
    "easy": "curv_baseline",
    "intermediate": "curv_contour_length_9",
    "hard": "curv_contour_length_14",
}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # S4/S5 PathFinder val_split = test_split = 0.1


def to_tokens(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W] -> int16 tokens [N, H * W], pixel + 1."""
    return images.reshape(len(images), -1).astype(np.int16) + 1


def split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
    """S4/S5's split of n examples: shuffle with `seed`, then train / val / test.

    Same lengths and order of parts as S4's `random_split` (val and test int(0.1 n),
    train first); the permutation is numpy's, not torch's, so the exact membership
    differs from S4's.
    """
    val = test = int(SPLIT_FRACTIONS[1] * n)
    order = np.random.default_rng(seed).permutation(n)
    train = n - val - test
    return {"train": order[:train], "val": order[train:train + val], "test": order[train + val:]}


# --------------------------------------------------------------------------- LRA files


def _difficulty_dir(root: Path, resolution: int, difficulty: str) -> Path:
    if not root.is_dir():
        raise LraError(
            f"task.data.path={root} is not a folder; point it at the folder of LRA's "
            f"lra_release that holds pathfinder{resolution}/"
        )
    res_dir = root / f"pathfinder{resolution}"
    if not res_dir.is_dir():
        raise LraError(
            f"{res_dir} is missing; task.data.path must be the folder of LRA's lra_release "
            f"that holds pathfinder{resolution}/"
        )
    folder = res_dir / DIFFICULTY_FOLDERS[difficulty]
    if not folder.is_dir():
        raise LraError(
            f"{folder} is missing (difficulty '{difficulty}'); unpack LRA's "
            f"pathfinder{resolution} completely or choose another task.data.difficulty"
        )
    return folder


def read_metadata(folder: Path) -> list[tuple[str, int, str]]:
    """(image path relative to `folder`, label, 'file line n') for every metadata line."""
    meta_dir = folder / "metadata"
    if not meta_dir.is_dir():
        raise LraError(f"{meta_dir} is missing; unpack LRA's pathfinder data completely")
    files = []
    for file in meta_dir.glob("*.npy"):
        try:
            files.append((int(file.stem), file))
        except ValueError:
            raise LraError(
                f"{file}: metadata files are named <number>.npy; remove or rename this one"
            ) from None
    if not files:
        raise LraError(f"{meta_dir} holds no <n>.npy metadata files; unpack LRA's data again")
    entries = []
    for _, file in sorted(files):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise LraError(f"{file} cannot be read as text ({err}); unpack LRA's data again")
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{file} line {number}"
            if len(fields) < 4:
                raise LraError(
                    f"{where}: {len(fields)} fields, expected at least 4 "
                    "(folder, image name, _, label); unpack LRA's data again"
                )
            if fields[3] not in ("0", "1"):
                raise LraError(f"{where}: label {fields[3]!r} is not 0 or 1")
            relative = f"{fields[0]}/{fields[1]}"
            if relative.startswith("/") or ".." in Path(relative).parts:
                raise LraError(f"{where}: image path {relative!r} leaves the dataset folder")
            entries.append((relative, int(fields[3]), where))
    return entries


def read_image(file: Path, resolution: int, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            if image.mode != "L":
                image = image.convert("L")
            pixels = np.asarray(image, np.uint8)
    except FileNotFoundError:
        raise LraError(f"{file} is missing (listed in {where}); unpack LRA's data again") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise LraError(f"{file} is not a readable PNG ({err}); unpack LRA's data again") from None
    if pixels.shape != (resolution, resolution):
        raise LraError(
            f"{file} is {pixels.shape[1]}x{pixels.shape[0]} pixels, expected "
            f"{resolution}x{resolution}; is task.data.path the right release?"
        )
    return pixels


def load_lra(root: Path, resolution: int, difficulty: str, split_seed: int):
    """LRA's released images of one resolution and difficulty, split as S4/S5."""
    folder = _difficulty_dir(root, resolution, difficulty)
    entries = read_metadata(folder)
    kept, labels, skipped = [], [], []
    for relative, label, where in entries:
        file = folder / relative
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise LraError(f"{file} is missing (listed in {where}); unpack LRA's data again") from None
        if size == 0:  # LRA and S4 drop the empty file(s)
            skipped.append(f"{folder.parent.name}/{folder.name}/{relative}")
            continue
        kept.append((file, where))
        labels.append(label)
    n = len(kept)
    if n == 0:
        raise LraError(f"{folder} holds no usable images; unpack LRA's data again")
    images = np.empty((n, resolution, resolution), np.uint8)
    for index, (file, where) in enumerate(kept):
        images[index] = read_image(file, resolution, where)
    labels_arr = np.asarray(labels, np.int32)
    splits = {
        name: {"inputs": to_tokens(images[rows]), "labels": labels_arr[rows]}
        for name, rows in split_indices(n, split_seed).items()
    }
    blank = int((images.reshape(n, -1).max(axis=1) == 0).sum())
    meta = {
        "source": "lra",
        "folder": str(folder.resolve()),
        "metadata_lines": len(entries),
        "images": n,
        "skipped_empty": len(skipped),
        "skipped_files": skipped[:20],
        "all_black_images_kept": blank,
        "split": "shuffle seed %d, 80/10/10 (S4/S5)" % split_seed,
    }
    return splits, meta


# --------------------------------------------------------------------------- the tasks


class _Pathfinder(Task):
    num_classes = 2
    version = "2"  # 2: the original's distractor contrast, collision lag and LANCZOS rendering
    auto_prepare = False  # 200K images take tens of minutes (Path-X: hours) to generate
    resolution = 0

    def vocab_size(self, cfg) -> int:
        return VOCAB

    def check(self, cfg) -> None:
        super().check(cfg)
        data = cfg.data
        res = int(data.get("resolution", self.resolution))
        if res != self.resolution:
            raise LraError(
                f"task.data.resolution={res} does not fit task '{self.name}', which is "
                f"{self.resolution} px; choose the task instead ("
                "pathfinder = 32, pathx = 128)"
            )
        if int(cfg.seq_len) != res * res:
            raise LraError(
                f"task.seq_len={cfg.seq_len} must be {res * res} (one token per pixel of "
                f"a {res}x{res} image)"
            )
        if data.get("difficulty") not in DIFFICULTY_FOLDERS:
            raise LraError(
                f"task.data.difficulty={data.get('difficulty')!r} is not one of "
                f"{', '.join(DIFFICULTY_FOLDERS)}"
            )
        source = data.get("source")
        if source not in SOURCES:
            raise LraError(f"task.data.source={source!r} is not one of {', '.join(SOURCES)}")
        if source == "generate":
            for field in ("train_size", "val_size", "test_size"):
                value = data.get(field)
                if value is None or int(value) <= 0:
                    raise LraError(f"task.data.{field} must be a positive integer, got {value}")

    def build(self, cfg) -> Built:
        self.check(cfg)
        data = cfg.data
        difficulty = str(data.difficulty)
        if data.source == "lra":
            if not data.get("path"):
                raise LraError(
                    "task.data.path is not set; download LRA's lra_release.gz, unpack it "
                    f"and pass task.data.path=<folder holding pathfinder{self.resolution}/>"
                )
            root = Path(str(data.path)).expanduser()
            splits, meta = load_lra(root, self.resolution, difficulty,
                                    int(data.get("split_seed", 42)))
        else:
            splits, meta = self._generate(data, difficulty)
        meta.update(resolution=self.resolution, difficulty=difficulty,
                    difficulty_folder=DIFFICULTY_FOLDERS[difficulty],
                    tokens="pixel + 1 (LRA: raw pixel, black masked as padding)")
        return Built(splits, meta)

    def _generate(self, data, difficulty: str):
        from lra.tasks import pathfinder_gen

        seed = int(data.get("seed", 0))
        workers = data.get("workers")
        workers = None if workers is None else int(workers)
        splits, seeds = {}, {}
        for index, split in enumerate(("train", "val", "test")):
            n = int(data[f"{split}_size"])
            # one independent stream per split, derived from the seed
            stream = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            images, labels = pathfinder_gen.generate(
                n, resolution=self.resolution, difficulty=difficulty, seed=stream,
                workers=workers,
            )
            splits[split] = {"inputs": to_tokens(images), "labels": np.asarray(labels, np.int32)}
            seeds[split] = stream
        meta = {"source": "generate", "seed": seed, "split_streams": seeds,
                "workers": workers or os.cpu_count()}
        params = getattr(pathfinder_gen, "params", None)
        if params is not None:
            meta["generator"] = params(self.resolution, difficulty).as_dict()
        return splits, meta


@TASKS.register("pathfinder")
class Pathfinder(_Pathfinder):
    name = "pathfinder"
    resolution = 32


@TASKS.register("pathx")
class PathX(_Pathfinder):
    name = "pathx"
    resolution = 128
