"""Text (IMDb bytes) and Image (CIFAR-10 grayscale): every source format, errors, shared data."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from lra import data as lra_data
from lra.errors import LraError
from lra.tasks import image as image_task
from lra.tasks.base import check_split, get_task

from conftest import compose_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# --------------------------------------------------------------------------- text

REVIEWS = {  # (label, text): multi-byte UTF-8, whitespace to strip, a TAB, a long review
    "train": [
        (0, "  Bad film.\n"),
        (1, "Caf\u00e9 \u2605 great\tfun"),
        (0, "x" * 40),
        (1, "ok"),
    ],
    "test": [(1, "Fine <br /> movie"), (0, "\t meh \r\n")],
}


def text_cfg(path, source="jsonl", seq_len=16, **data):
    return OmegaConf.create({
        "name": "text", "seq_len": seq_len,
        "data": {"source": source, "path": str(path) if path else None, "val": "test",
                 "val_fraction": 0.1, "seed": 0, **data},
    })


def expected_row(text: str, seq_len: int) -> list[int]:
    ids = (np.frombuffer(text.encode().strip(), np.uint8).astype(int) + 1)[:seq_len].tolist()
    return ids + [0] * (seq_len - len(ids))


def write_jsonl(folder: Path, gz: bool = True, reviews=REVIEWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in reviews.items():
        lines = "".join(json.dumps({"id": i, "label": lab, "text": t}) + "\n" for i, (lab, t) in enumerate(rows))
        if gz:
            with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as handle:
                handle.write(lines)
        else:
            (folder / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return folder


def write_aclimdb(root: Path, reviews=REVIEWS) -> Path:
    folder = root / "aclImdb"
    for split, rows in reviews.items():
        counters = {0: 0, 1: 0}
        for label, text in rows:
            d = folder / split / ("pos" if label else "neg")
            d.mkdir(parents=True, exist_ok=True)
            counters[label] += 1
            (d / f"{counters[label] * 5}_{7 if label else 2}.txt").write_bytes(text.encode())
    return folder


def sorted_like_aclimdb(rows):
    """aclImdb order: neg before pos, each in file-id order (= the order written above)."""
    return [r for r in rows if r[0] == 0] + [r for r in rows if r[0] == 1]


def test_text_jsonl_gz_bytes_truncation_padding(tmp_path):
    built = get_task("text").build(text_cfg(write_jsonl(tmp_path / "imdb")))
    train, val, test = (built.splits[s] for s in ("train", "val", "test"))
    assert train["inputs"].shape == (4, 16) and train["inputs"].dtype == np.uint16
    assert train["labels"].dtype == np.int32 and train["labels"].tolist() == [0, 1, 0, 1]
    for row, (_, text) in zip(train["inputs"], REVIEWS["train"]):
        assert row.tolist() == expected_row(text, 16)
    assert train["inputs"][0, 0] == ord("B") + 1  # leading whitespace stripped
    assert train["inputs"][1, 3:5].tolist() == [0xC3 + 1, 0xA9 + 1]  # é is two bytes
    assert train["inputs"][2].tolist() == [ord("x") + 1] * 16  # truncated to seq_len
    assert train["inputs"][3].tolist()[2:] == [0] * 14  # right padding
    assert test["inputs"][1].tolist() == expected_row("meh", 16)  # \t ... \r\n stripped
    assert np.array_equal(val["inputs"], test["inputs"]) and np.array_equal(val["labels"], test["labels"])
    assert built.meta["val"] == "test" and built.meta["truncated_reviews"] == {"train": 2, "test": 1}
    assert built.val_is_test  # flagged for the record and the leaderboard
    assert set(built.meta["files_sha256"]) == {"train.jsonl.gz", "test.jsonl.gz"}
    for split, arrays in built.splits.items():
        check_split(get_task("text"), split, arrays, 16)


def test_text_plain_jsonl_and_aclimdb_agree(tmp_path):
    plain = get_task("text").build(text_cfg(write_jsonl(tmp_path / "plain", gz=False), seq_len=24))
    acl_root = write_aclimdb(tmp_path / "acl")
    for path in (acl_root, acl_root.parent):  # the aclImdb folder or the one holding it
        acl = get_task("text").build(text_cfg(path, source="aclimdb", seq_len=24))
        for split in ("train", "test"):
            rows = sorted_like_aclimdb(REVIEWS[split])
            assert acl.splits[split]["labels"].tolist() == [r[0] for r in rows]
            assert acl.splits[split]["inputs"].tolist() == [expected_row(t, 24) for _, t in rows]
    # same reviews, same bytes: jsonl keeps file order, aclimdb sorts neg before pos
    order = [0, 2, 1, 3]
    assert np.array_equal(plain.splits["train"]["inputs"][order], acl.splits["train"]["inputs"])


def test_aclimdb_sorts_by_numeric_id(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for name in ("neg", "pos"):
            (root / split / name).mkdir(parents=True)
    for i in (10, 2, 1):
        (root / "train" / "pos" / f"{i}_8.txt").write_text(f"r{i}")
    (root / "train" / "neg" / "0_1.txt").write_text("n")
    (root / "test" / "pos" / "0_9.txt").write_text("p")
    (root / "test" / "neg" / "0_1.txt").write_text("n")
    built = get_task("text").build(text_cfg(root, source="aclimdb", seq_len=4))
    firsts = [bytes(int(t) - 1 for t in row if t).decode() for row in built.splits["train"]["inputs"]]
    assert firsts == ["n", "r1", "r2", "r10"]


def test_text_holdout_is_seeded_and_disjoint(tmp_path):
    reviews = {"train": [(i % 2, f"review number {i}") for i in range(40)], "test": [(0, "a"), (1, "b")]}
    folder = write_jsonl(tmp_path / "imdb", reviews=reviews)
    task = get_task("text")
    cfg = text_cfg(folder, seq_len=32, val="holdout", val_fraction=0.25, seed=3)
    one, two = task.build(cfg), task.build(cfg)
    other = task.build(text_cfg(folder, seq_len=32, val="holdout", val_fraction=0.25, seed=4))
    assert len(one.splits["val"]["labels"]) == 10 and len(one.splits["train"]["labels"]) == 30
    assert not one.val_is_test
    decode = lambda arr: {bytes(int(t) - 1 for t in row if t) for row in arr}  # noqa: E731
    train, val = decode(one.splits["train"]["inputs"]), decode(one.splits["val"]["inputs"])
    assert not train & val and len(train | val) == 40
    assert np.array_equal(one.splits["val"]["inputs"], two.splits["val"]["inputs"])
    assert decode(other.splits["val"]["inputs"]) != val
    assert len(one.splits["test"]["labels"]) == 2
    assert one.meta["val"] == "holdout" and one.meta["seed"] == 3 and one.meta["val_fraction"] == 0.25


def _bad_gz_file(folder: Path, payload: bytes) -> None:
    write_jsonl(folder)
    (folder / "train.jsonl.gz").write_bytes(payload)


@pytest.mark.parametrize(
    "case, expect",
    [
        ("not_gzip", "train.jsonl.gz: cannot read"),
        ("truncated_gzip", "train.jsonl.gz: cannot read"),
        ("bad_json", "train.jsonl.gz line 2: not valid JSON"),
        ("label_2", "train.jsonl.gz line 1: label must be 0 or 1, got 2"),
        ("label_str", "train.jsonl.gz line 1: label must be 0 or 1, got 'pos'"),
        ("no_text", 'train.jsonl.gz line 1: needs an object with "label" and "text"'),
        ("text_not_str", 'train.jsonl.gz line 1: "text" must be a string'),
        ("missing_test", "test.jsonl"),
        ("empty", "train.jsonl.gz holds no reviews"),
    ],
)
def test_text_jsonl_errors_name_file_and_line(tmp_path, case, expect):
    folder = tmp_path / "imdb"
    write_jsonl(folder)
    good = gzip.compress(b'{"label": 1, "text": "fine"}\n' * 3)
    payload = {
        "not_gzip": b"this is not gzip at all",
        "truncated_gzip": good[: len(good) // 2],
        "bad_json": gzip.compress(b'{"label": 1, "text": "a"}\n{"label": 1, "text": \n'),
        "label_2": gzip.compress(b'{"label": 2, "text": "a"}\n'),
        "label_str": gzip.compress(b'{"label": "pos", "text": "a"}\n'),
        "no_text": gzip.compress(b'{"label": 1}\n'),
        "text_not_str": gzip.compress(b'{"label": 1, "text": 5}\n'),
        "empty": gzip.compress(b"\n"),
    }.get(case)
    if payload is not None:
        (folder / "train.jsonl.gz").write_bytes(payload)
    if case == "missing_test":
        (folder / "test.jsonl.gz").unlink()
    with pytest.raises(LraError) as err:
        get_task("text").build(text_cfg(folder))
    message = str(err.value)
    assert expect in message and "\n" not in message
    assert str(folder) in message


def test_text_path_and_config_errors(tmp_path):
    task = get_task("text")
    with pytest.raises(LraError, match="does not exist"):
        task.build(text_cfg(tmp_path / "nowhere"))
    with pytest.raises(LraError, match="needs task.data.path"):
        task.check(text_cfg(None))
    with pytest.raises(LraError, match="source='csv' is not one of"):
        task.check(text_cfg(tmp_path, source="csv"))
    with pytest.raises(LraError, match="val='dev' is not one of"):
        task.check(text_cfg(tmp_path, val="dev"))
    with pytest.raises(LraError, match="val_fraction must lie in"):
        task.check(text_cfg(tmp_path, val="holdout", val_fraction=1.5))
    root = write_aclimdb(tmp_path / "acl")
    for f in (root / "test" / "neg").iterdir():
        f.unlink()
    (root / "test" / "neg").rmdir()
    with pytest.raises(LraError, match=r"aclImdb/test/neg is missing"):
        task.build(text_cfg(root, source="aclimdb"))


def test_tfds_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import raises ImportError
    with pytest.raises(LraError, match=r"pip install -e \.\[tfds\]"):
        get_task("text").build(text_cfg(None, source="tfds"))
    cfg = image_cfg(None, source="tfds")
    with pytest.raises(LraError, match=r"pip install -e \.\[tfds\]"):
        get_task("image").build(cfg)


class FakeTfds:
    """Stands in for tensorflow_datasets: load(name, split) -> dict of numpy arrays."""

    def __init__(self, tables):
        self.tables, self.calls = tables, []

    def load(self, name, split, batch_size, data_dir):
        self.calls.append((name, split, batch_size, data_dir))
        if (name, split) not in self.tables:
            raise RuntimeError(f"no {name}/{split} here\nsecond line")
        return self.tables[(name, split)]

    @staticmethod
    def as_numpy(tree):
        return tree


def test_text_from_tfds(monkeypatch):
    fake = FakeTfds({
        ("imdb_reviews", "train"): {"text": np.array([b"good one", b"bad"], object), "label": np.array([1, 0])},
        ("imdb_reviews", "test"): {"text": np.array([b" meh "], object), "label": np.array([0])},
    })
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    built = get_task("text").build(text_cfg("/tfds/dir", source="tfds", seq_len=8))
    assert fake.calls == [("imdb_reviews", "train", -1, "/tfds/dir"), ("imdb_reviews", "test", -1, "/tfds/dir")]
    assert built.splits["train"]["inputs"].tolist() == [expected_row("good one", 8), expected_row("bad", 8)]
    assert built.splits["val"]["inputs"].tolist() == [expected_row("meh", 8)]
    assert built.splits["train"]["labels"].tolist() == [1, 0]
    del fake.tables[("imdb_reviews", "test")]
    with pytest.raises(LraError, match=r"tfds could not load imdb_reviews/test \(RuntimeError: no imdb_reviews/test here\)"):
        get_task("text").build(text_cfg(None, source="tfds"))


def test_text_prepare_through_config(tmp_path):
    folder = write_jsonl(tmp_path / "imdb")
    cfg = compose_config("task=text", "task.data.source=jsonl", f"task.data.path={folder}", "task.seq_len=32")
    assert cfg.encoder.num_layers == 4 and cfg.trainer.warmup_steps == 8000
    path = lra_data.prepare(cfg.task, tmp_path / "data")
    manifest = lra_data.read_manifest(path)
    assert {k: v["examples"] for k, v in manifest["counts"].items()} == {"train": 4, "val": 2, "test": 2}
    assert manifest["source"]["source"] == "jsonl"
    splits = lra_data.open_prepared(path)
    assert splits["train"]["inputs"].shape == (4, 32)


def test_configs_compose_and_validate():
    from lra.run import validate

    spec, enc = validate(compose_config("task=text"))
    assert (spec.vocab_size, spec.seq_len, spec.num_classes) == (257, 1000, 2)
    assert (enc.num_layers, enc.dim, enc.num_heads, enc.mlp_dim, enc.pooling) == (4, 256, 4, 1024, "cls")
    paper = compose_config("task=text", "experiment=text_paper")
    spec, enc = validate(paper)
    assert spec.seq_len == 4000 and (enc.num_layers, enc.dim, enc.num_heads, enc.mlp_dim) == (6, 512, 8, 2048)
    assert paper.trainer.max_steps == 20000 and paper.trainer.lr == 0.05
    image = compose_config("task=image")
    spec, enc = validate(image)
    assert (spec.vocab_size, spec.seq_len, spec.num_classes) == (257, 1024, 10)
    assert (enc.num_layers, enc.dim, enc.dropout, enc.attention_dropout, enc.learned_pos_emb) == (1, 32, 0.3, 0.2, True)
    t = image.trainer
    assert (t.batch_size, t.max_steps, t.eval_every, t.warmup_steps, t.lr, t.schedule, t.weight_decay) == (
        256, 35000, 175, 175, 0.0005, "cosine", 0.0)
    paper = compose_config("task=image", "experiment=image_paper")
    spec, enc = validate(paper)
    assert (enc.num_layers, enc.dim, enc.qkv_dim, enc.mlp_dim, enc.num_heads) == (1, 128, 64, 128, 8)
    assert paper.trainer == image.trainer and (enc.dropout, enc.pooling) == (0.3, "cls")


# --------------------------------------------------------------------------- image

# TF 2.21.0 tf.image.rgb_to_grayscale on every RGB colour (r * 65536 + g * 256 + b order),
# sha256 of the 2^24 uint8 outputs; computed once with TensorFlow.
TF_GRAY_TABLE_SHA256 = "824a76d81dad2c5a2cf1fa0b2c0a5afe7d871ec2970e4fa2809b53ddbecdca93"
# colours where TF's float32 arithmetic and an exact (float64) evaluation disagree
TF_BOUNDARY = [((0, 122, 186), 93), ((3, 121, 122), 86), ((5, 171, 227), 128), ((6, 242, 244), 172)]


def gray_reference(rgb: np.ndarray) -> np.ndarray:
    """TF's formula in float64: floor((r*0.2989 + g*0.5870 + b*0.1140) / 255 * 255.5)."""
    x = rgb.astype(np.float64) / 255.0
    gray = x[..., 0] * 0.2989 + x[..., 1] * 0.5870 + x[..., 2] * 0.1140
    return np.floor(gray * 255.5).astype(np.uint8)


def test_grayscale_matches_tensorflow_on_every_colour():
    digest = hashlib.sha256()
    for hi in range(0, 256, 32):  # 32 red values at a time
        c = np.arange(hi * 65536, (hi + 32) * 65536, dtype=np.uint32)
        rgb = np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], -1).astype(np.uint8)
        gray = image_task.tf_grayscale(rgb)
        ref = gray_reference(rgb)
        assert np.abs(gray.astype(int) - ref).max() <= 1  # float32 vs float64: at most one level
        digest.update(gray.tobytes())
    assert digest.hexdigest() == TF_GRAY_TABLE_SHA256
    for colour, tf_value in TF_BOUNDARY:
        assert image_task.tf_grayscale(np.array(colour, np.uint8)) == tf_value
        assert gray_reference(np.array(colour, np.uint8)) == tf_value - 1
    assert image_task.tf_grayscale(np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0]], np.uint8)).tolist() == [0, 255, 76]


def cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rgb[:, 0, 0] = 0  # a black pixel: token 1, not padding
    return rgb, (np.arange(n) % 10).astype(np.uint8)


def planar(rgb: np.ndarray) -> np.ndarray:
    return rgb.transpose(0, 3, 1, 2).reshape(len(rgb), -1)  # 1024 R, 1024 G, 1024 B


@pytest.fixture(scope="module")
def cifar():
    """20 training images (4 per batch) and 6 test images."""
    train, test = cifar_images(20, 1), cifar_images(6, 2)
    return {"train": train, "test": test}


def write_pickle_batches(folder: Path, cifar) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rgb, labels = cifar["train"]
    names = [f"data_batch_{i}" for i in range(1, 6)]
    chunks = [(rgb[i * 4:(i + 1) * 4], labels[i * 4:(i + 1) * 4]) for i in range(5)] + [cifar["test"]]
    for name, (x, y) in zip([*names, "test_batch"], chunks):
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": planar(x),
                 b"filenames": [b"f.png"] * len(y)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def write_binary_batches(folder: Path, cifar, labels_override=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rgb, labels = cifar["train"]
    chunks = [(rgb[i * 4:(i + 1) * 4], labels[i * 4:(i + 1) * 4]) for i in range(5)] + [cifar["test"]]
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, (x, y) in zip(names, chunks):
        records = np.concatenate([y[:, None].astype(np.uint8), planar(x)], axis=1)
        (folder / name).write_bytes(records.tobytes())
    return folder


def image_cfg(path, source="pickle", **data):
    return OmegaConf.create({
        "name": "image", "seq_len": 1024,
        "data": {"source": source, "path": str(path) if path else None, "val_split": "auto",
                 "val_fraction": 0.1, "seed": 0, **data},
    })


def tokens_of(rgb):
    return gray_reference(rgb).reshape(len(rgb), -1).astype(int) + 1


def assert_close_tokens(got, rgb):
    ref = tokens_of(rgb)
    assert got.shape == ref.shape
    diff = np.abs(got.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float32 boundary colours only


def test_image_pickle_and_binary_give_lra_split(tmp_path, cifar):
    task = get_task("image")
    from_pickle = task.build(image_cfg(write_pickle_batches(tmp_path / "py", cifar)))
    from_binary = task.build(image_cfg(write_binary_batches(tmp_path / "bin", cifar), source="binary"))
    rgb, labels = cifar["train"]
    # LRA's validation images: the last 10% of the indices in tfds's md5 order
    md5 = lambda i: hashlib.md5(b"train" + str(i).encode()).hexdigest()  # noqa: E731
    val_idx = sorted(sorted(range(20), key=md5)[18:])
    train_idx = [i for i in range(20) if i not in val_idx]
    for built in (from_pickle, from_binary):
        s = built.splits
        assert s["train"]["inputs"].shape == (18, 1024) and s["train"]["inputs"].dtype == np.uint16
        assert s["val"]["inputs"].shape == (2, 1024) and s["test"]["inputs"].shape == (6, 1024)
        assert s["train"]["labels"].tolist() == labels[train_idx].tolist()
        assert s["val"]["labels"].tolist() == labels[val_idx].tolist()
        assert s["test"]["labels"].tolist() == cifar["test"][1].tolist()
        assert s["train"]["labels"].dtype == np.int32
        assert_close_tokens(s["train"]["inputs"], rgb[train_idx])
        assert_close_tokens(s["val"]["inputs"], rgb[val_idx])
        assert_close_tokens(s["test"]["inputs"], cifar["test"][0])
        assert np.array_equal(s["train"]["inputs"], image_task.pixel_tokens(rgb[train_idx]))
        assert s["train"]["inputs"].min() >= 1 and s["train"]["inputs"][:, 0].tolist() == [1] * 18
        assert built.meta["val_split"] == "lra" and built.meta["lossy"] is False
        for split, arrays in s.items():
            check_split(task, split, arrays, 1024)
    for split in ("train", "val", "test"):
        assert np.array_equal(from_pickle.splits[split]["inputs"], from_binary.splits[split]["inputs"])


def fake_cifar_tfds(cifar, val_idx):
    """tfds cifar10 as LRA read it: train[:90%] / train[90%:] / test, ids 'train_NNNNN'."""
    rgb, labels = cifar["train"]
    head = [i for i in range(len(labels)) if i not in val_idx]

    def table(idx, prefix, x, y):
        idx = list(idx)[::-1]  # tfds reads in its own order, not the original one
        return {"image": x[idx], "label": y[idx].astype(np.int64),
                "id": np.array([f"{prefix}_{i:05d}".encode() for i in idx], object)}

    test_x, test_y = cifar["test"]
    return FakeTfds({
        ("cifar10", "train[:90%]"): table(head, "train", rgb, labels),
        ("cifar10", "train[90%:]"): table(val_idx, "train", rgb, labels),
        ("cifar10", "test"): table(range(len(test_y)), "test", test_x, test_y),
    })


def test_image_from_tfds_matches_pickle(tmp_path, cifar, monkeypatch):
    md5 = lambda i: hashlib.md5(b"train" + str(i).encode()).hexdigest()  # noqa: E731
    val_idx = sorted(range(20), key=md5)[18:]
    from_pickle = get_task("image").build(image_cfg(write_pickle_batches(tmp_path / "py", cifar)))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_cifar_tfds(cifar, val_idx))
    built = get_task("image").build(image_cfg(None, source="tfds"))
    assert built.meta["tfds_split_matches_md5_order"] is True and built.meta["val_split"] == "lra"
    for split in ("train", "val", "test"):
        for field in ("inputs", "labels"):
            assert np.array_equal(built.splits[split][field], from_pickle.splits[split][field])
    # should tfds ever slice differently, its own train[90%:] wins (and the manifest says so)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_cifar_tfds(cifar, [0, 1]))
    built = get_task("image").build(image_cfg(None, source="tfds"))
    assert built.meta["tfds_split_matches_md5_order"] is False
    assert built.splits["val"]["labels"].tolist() == cifar["train"][1][[0, 1]].tolist()


def test_lra_val_mask_at_cifar_size():
    mask = image_task.lra_val_mask(50000)
    assert mask.sum() == 5000
    hashes = [int(hashlib.md5(b"train" + str(i).encode()).hexdigest(), 16) for i in range(50000)]
    assert min(hashes[i] for i in np.nonzero(mask)[0]) > max(hashes[i] for i in np.nonzero(~mask)[0])


def test_image_seeded_split(tmp_path, cifar):
    cfg = image_cfg(write_pickle_batches(tmp_path / "py", cifar), val_split="seeded", seed=5, val_fraction=0.25)
    built = get_task("image").build(cfg)
    assert len(built.splits["val"]["labels"]) == 5 and len(built.splits["train"]["labels"]) == 15
    again = get_task("image").build(cfg)
    assert np.array_equal(built.splits["val"]["inputs"], again.splits["val"]["inputs"])
    assert built.meta["val_split"] == "seeded" and built.meta["seed"] == 5


def write_npz_jpeg(file: Path, cifar, corrupt_test_index=None) -> dict:
    """Like the staged npz: JPEG bytes + offsets, sorted by label. Returns the decoded RGB."""
    arrays, decoded = {}, {}
    for split in ("train", "test"):
        rgb, labels = cifar[split]
        order = np.argsort(labels, kind="stable")
        blobs = []
        for i in order:
            buf = io.BytesIO()
            Image.fromarray(rgb[i]).save(buf, format="JPEG", quality=90)
            blobs.append(buf.getvalue())
        if split == "test" and corrupt_test_index is not None:
            blobs[corrupt_test_index] = b"\xff\xd8\xff\xe0 not really a jpeg"
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        arrays[f"y_{split}"] = labels[order]
        decoded[split] = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
                                  ) if corrupt_test_index is None or split == "train" else None
    np.savez(file, **arrays)
    return {"arrays": arrays, "rgb": decoded}


def test_image_npz_jpeg(tmp_path, cifar):
    file = tmp_path / "cifar10_jpeg.npz"
    written = write_npz_jpeg(file, cifar)
    built = get_task("image").build(image_cfg(file, source="npz_jpeg"))
    assert built.meta["lossy"] is True and "5.8" in built.meta["lossy_note"]
    assert built.meta["val_split"] == "seeded"
    s = built.splits
    assert (len(s["train"]["labels"]), len(s["val"]["labels"]), len(s["test"]["labels"])) == (18, 2, 6)
    assert_close_tokens(s["test"]["inputs"], written["rgb"]["test"])
    assert s["test"]["labels"].tolist() == written["arrays"]["y_test"].tolist()
    # train + val together are all training images (in some order)
    got = np.concatenate([s["train"]["inputs"], s["val"]["inputs"]])
    want = image_task.pixel_tokens(written["rgb"]["train"])
    assert sorted(map(bytes, got)) == sorted(map(bytes, want))
    with pytest.raises(LraError, match="val_split=lra needs CIFAR-10's original image order"):
        get_task("image").check(image_cfg(file, source="npz_jpeg", val_split="lra"))


def test_decode_jpegs_in_parallel_matches_serial(tmp_path, cifar, monkeypatch):
    written = write_npz_jpeg(tmp_path / "c.npz", cifar)
    blob, offsets = written["arrays"]["train_jpeg"], written["arrays"]["train_offsets"]
    monkeypatch.setattr(image_task, "_JPEG_CHUNK", 7)
    serial = image_task.decode_jpegs(blob, offsets, "x", workers=1)
    parallel = image_task.decode_jpegs(blob, offsets, "x", workers=2)
    assert np.array_equal(serial, parallel) and np.array_equal(serial, written["rgb"]["train"])


def test_image_file_errors_name_the_file(tmp_path, cifar):
    task = get_task("image")

    def fails(cfg, *needles):
        with pytest.raises(LraError) as err:
            task.build(cfg)
        message = str(err.value)
        assert "\n" not in message
        for needle in needles:
            assert needle in message, message

    py = write_pickle_batches(tmp_path / "py", cifar)
    (py / "data_batch_3").unlink()
    fails(image_cfg(py), str(py / "data_batch_3"), "is missing")
    write_pickle_batches(py, cifar)
    (py / "data_batch_2").write_bytes(b"garbage, not a pickle")
    fails(image_cfg(py), str(py / "data_batch_2"), "not a CIFAR-10 pickle batch")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    (py / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil()}))
    fails(image_cfg(py), str(py / "data_batch_2"), "refusing to load builtins.print")
    write_pickle_batches(py, cifar)
    batch = pickle.loads((py / "test_batch").read_bytes())
    batch[b"labels"][3] = 10
    (py / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    fails(image_cfg(py), str(py / "test_batch"), "image 3 has label 10")

    binary = write_binary_batches(tmp_path / "bin", cifar)
    (binary / "data_batch_4.bin").write_bytes((binary / "data_batch_4.bin").read_bytes()[:-100])
    fails(image_cfg(binary, source="binary"), str(binary / "data_batch_4.bin"), "record 3 is truncated")
    write_binary_batches(binary, cifar)
    raw = bytearray((binary / "data_batch_1.bin").read_bytes())
    raw[2 * 3073] = 12  # the label byte of record 2
    (binary / "data_batch_1.bin").write_bytes(bytes(raw))
    fails(image_cfg(binary, source="binary"), str(binary / "data_batch_1.bin"), "image 2 has label 12")

    npz = tmp_path / "bad.npz"
    write_npz_jpeg(npz, cifar, corrupt_test_index=4)
    fails(image_cfg(npz, source="npz_jpeg"), str(npz), "test_jpeg: image 4 is not a readable JPEG")
    arrays = dict(np.load(tmp_path / "bad.npz"))
    del arrays["y_train"]
    np.savez(npz, **arrays)
    fails(image_cfg(npz, source="npz_jpeg"), str(npz), "no array 'y_train'")
    arrays["y_train"] = np.zeros(3, np.uint8)  # 3 labels, 20 images
    np.savez(npz, **arrays)
    fails(image_cfg(npz, source="npz_jpeg"), str(npz), "train_offsets")
    npz.write_bytes(b"not a zip")
    fails(image_cfg(npz, source="npz_jpeg"), str(npz), "not a readable .npz")
    fails(image_cfg(tmp_path / "absent.npz", source="npz_jpeg"), "absent.npz", "does not exist")


def test_image_config_errors(tmp_path):
    task = get_task("image")
    with pytest.raises(LraError, match="task.seq_len must be 1024"):
        task.check(OmegaConf.merge(image_cfg(tmp_path), {"seq_len": 1000}))
    with pytest.raises(LraError, match="source='png' is not one of"):
        task.check(image_cfg(tmp_path, source="png"))
    with pytest.raises(LraError, match="needs task.data.path"):
        task.check(image_cfg(None, source="binary"))
    with pytest.raises(LraError, match="val_split='first' is not one of"):
        task.check(image_cfg(tmp_path, val_split="first"))


# --------------------------------------------------------------------------- shared data

needs_imdb = pytest.mark.skipif(not (SHARED / "imdb" / "train.jsonl.gz").exists(), reason="no shared IMDb copy")
needs_cifar = pytest.mark.skipif(not (SHARED / "cifar10" / "cifar10_jpeg.npz").exists(),
                                 reason="no shared CIFAR-10 copy")


@needs_imdb
def test_shared_imdb_prepares_in_full(tmp_path):
    cfg = compose_config("task=text", "task.data.source=jsonl", f"task.data.path={SHARED / 'imdb'}")
    path = lra_data.prepare(cfg.task, tmp_path / "data")
    manifest = lra_data.read_manifest(path)
    for split in ("train", "val", "test"):
        assert manifest["counts"][split] == {"examples": 25000, "per_class": [12500, 12500]}
    assert manifest["source"]["files_sha256"]["train.jsonl.gz"].startswith("ed9be91b")
    assert manifest["source"]["train_bytes_median"] == 979  # PROVENANCE: train median 979 bytes
    splits = lra_data.open_prepared(path)
    assert splits["train"]["inputs"].shape == (25000, 1000) and splits["train"]["inputs"].max() <= 256


@pytest.mark.slow  # ~20-30 s: 60,000 Pillow JPEG decodes
@needs_cifar
def test_shared_cifar_prepares_in_full(tmp_path):
    cfg = compose_config("task=image", "task.data.source=npz_jpeg",
                         f"task.data.path={SHARED / 'cifar10' / 'cifar10_jpeg.npz'}")
    path = lra_data.prepare(cfg.task, tmp_path / "data")
    manifest = lra_data.read_manifest(path)
    counts = {k: v["examples"] for k, v in manifest["counts"].items()}
    assert counts == {"train": 45000, "val": 5000, "test": 10000}
    assert manifest["counts"]["test"]["per_class"] == [1000] * 10
    assert sum(manifest["counts"]["val"]["per_class"]) == 5000
    assert manifest["source"]["lossy"] is True and manifest["source"]["val_split"] == "seeded"
    splits = lra_data.open_prepared(path)
    assert splits["test"]["inputs"].shape == (10000, 1024)
    assert splits["test"]["inputs"].min() == 1 and splits["test"]["inputs"].max() == 256


def test_image_tfds_error_lists_every_local_source(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(LraError) as err:
        image_task._read_tfds(None)
    for source in image_task.SOURCES[1:]:
        assert source in str(err.value)
    assert "\n" not in str(err.value)
