"""Retrieval (AAN TSV files) and Pathfinder / Path-X (generator and LRA's PNG layout)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from lra import data as lra_data
from lra.errors import LraError
from lra.tasks.base import get_task
from lra.tasks.pathfinder import split_indices, to_tokens

from conftest import compose_config

# --------------------------------------------------------------------------- retrieval

LONG = "x" * 10500 + "TAIL"  # longer than LRA's 10,000-byte cut


def write_tsv(path, rows):
    path.write_bytes(b"".join(b"\t".join(r) + b"\n" for r in rows))


def aan_rows(n, offset=0):
    rows = []
    for i in range(n):
        text1 = f"doc {offset + i} caf\u00e9".encode()
        text2 = (LONG if i == 0 else f"other {i}").encode()
        rows.append([b"1" if i % 2 else b"0.0", f"id{i}".encode(), f"jd{i}".encode(), text1, text2])
    return rows


@pytest.fixture
def aan_dir(tmp_path):
    folder = tmp_path / "tsv_data"
    folder.mkdir()
    for split, n in (("train", 6), ("eval", 3), ("test", 4)):
        write_tsv(folder / f"new_aan_pairs.{split}.tsv", aan_rows(n))
    return folder


def retrieval_cfg(path, seq_len=64, **data):
    return OmegaConf.create({"name": "retrieval", "seq_len": seq_len, "interaction": "concat",
                             "data": {"path": str(path) if path else None, "max_bytes": 10000,
                                      **data}})


def test_retrieval_builds_byte_pairs(aan_dir):
    built = get_task("retrieval").build(retrieval_cfg(aan_dir, seq_len=64))
    train = built.splits["train"]
    assert train["inputs"].shape == (6, 2, 64)
    assert built.splits["val"]["inputs"].shape == (3, 2, 64)
    assert built.splits["test"]["inputs"].shape == (4, 2, 64)
    assert train["labels"].dtype == np.int32
    assert train["labels"].tolist() == [0, 1, 0, 1, 0, 1]  # "0.0" parses as LRA's float label
    expected = np.frombuffer("doc 1 caf\u00e9".encode(), np.uint8).astype(int) + 1
    row = train["inputs"][1, 0]
    assert row[: len(expected)].tolist() == expected.tolist()  # bytes + 1, é = 2 bytes
    assert row[len(expected):].max() == 0  # right-padded with 0
    assert train["inputs"][0, 1].min() == ord("x") + 1  # a long document fills seq_len
    assert train["inputs"].max() <= 256
    assert built.meta["files"]["train"]["documents_truncated"] == 1


def test_retrieval_cuts_documents_at_10000_bytes(aan_dir):
    built = get_task("retrieval").build(retrieval_cfg(aan_dir, seq_len=12000))
    long_doc = built.splits["train"]["inputs"][0, 1]
    assert (long_doc[:10000] == ord("x") + 1).all()
    assert (long_doc[10000:] == 0).all()  # "TAIL" and the 500 x's past the cut are dropped
    short = get_task("retrieval").build(retrieval_cfg(aan_dir, seq_len=8, max_bytes=3))
    assert short.splits["train"]["inputs"][1, 0].tolist() == [ord(c) + 1 for c in "doc"] + [0] * 5


def test_retrieval_prepares_a_pair_cache(aan_dir, tmp_path):
    path = lra_data.prepare(retrieval_cfg(aan_dir, seq_len=32), tmp_path / "data")
    splits = lra_data.open_prepared(path)
    assert splits["train"]["inputs"].shape == (6, 2, 32)
    assert lra_data.read_manifest(path)["counts"]["val"]["examples"] == 3


@pytest.mark.parametrize(
    "setup, fragments",
    [
        ("no_path", ["task.data.path is not set"]),
        ("no_folder", ["nowhere", "is not a folder"]),
        ("missing_file", ["new_aan_pairs.test.tsv", "is missing"]),
        ("fields", ["new_aan_pairs.eval.tsv", "row 2", "4 tab-separated fields"]),
        ("label", ["new_aan_pairs.train.tsv", "row 3", "'yes'", "not 0 or 1"]),
        ("label2", ["new_aan_pairs.train.tsv", "row 1", "'2'"]),
        ("empty", ["new_aan_pairs.test.tsv", "no rows"]),
        ("parent", ["tsv_data", "pass task.data.path="]),
    ],
)
def test_retrieval_errors_name_file_and_row(aan_dir, tmp_path, setup, fragments):
    path = aan_dir
    if setup == "no_path":
        path = None
    elif setup == "no_folder":
        path = tmp_path / "nowhere"
    elif setup == "missing_file":
        (aan_dir / "new_aan_pairs.test.tsv").unlink()
    elif setup == "fields":
        rows = aan_rows(3)
        rows[1] = rows[1][:4]
        write_tsv(aan_dir / "new_aan_pairs.eval.tsv", rows)
    elif setup == "label":
        rows = aan_rows(4)
        rows[2][0] = b"yes"
        write_tsv(aan_dir / "new_aan_pairs.train.tsv", rows)
    elif setup == "label2":
        rows = aan_rows(2)
        rows[0][0] = b"2"
        write_tsv(aan_dir / "new_aan_pairs.train.tsv", rows)
    elif setup == "empty":
        (aan_dir / "new_aan_pairs.test.tsv").write_bytes(b"")
    elif setup == "parent":  # the lra_release folder instead of its tsv_data/
        path = aan_dir.parent
    with pytest.raises(LraError) as err:
        get_task("retrieval").build(retrieval_cfg(path))
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_retrieval_rejects_unknown_interaction(aan_dir):
    cfg = retrieval_cfg(aan_dir)
    cfg.interaction = "dot"
    with pytest.raises(LraError, match="task.interaction"):
        get_task("retrieval").check(cfg)


@pytest.mark.parametrize("interaction", ["concat", "nli"])
def test_dual_encoder_forward_on_a_retrieval_batch(aan_dir, interaction):
    from flax import nnx

    from lra.models import EncoderConfig, build_model

    built = get_task("retrieval").build(retrieval_cfg(aan_dir, seq_len=48))
    batch = np.asarray(built.splits["train"]["inputs"][:4], np.int32)
    enc = EncoderConfig(vocab_size=257, max_len=48, num_layers=1, dim=32, num_heads=2,
                        qkv_dim=32, mlp_dim=64, dropout=0.0, attention_dropout=0.0)
    model = build_model("transformer", {}, enc, 2, pair=True, interaction=interaction,
                        rngs=nnx.Rngs(0))
    forward = nnx.jit(lambda m, x: m(x))
    logits = forward(model, batch)
    assert logits.shape == (4, 2)
    assert np.isfinite(np.asarray(logits)).all()


# --------------------------------------------------------------------------- pathfinder, LRA files


def pathfinder_cfg(name="pathfinder", **data):
    res = 32 if name == "pathfinder" else 128
    base = {"source": "generate", "path": None, "resolution": res, "difficulty": "hard",
            "train_size": 40, "val_size": 10, "test_size": 10, "seed": 0, "workers": 1,
            "split_seed": 42}
    base.update(data)
    return OmegaConf.create({"name": name, "seq_len": res * res, "data": base})


def make_lra_tree(root, n=20, empty=(7,), res=32):
    """LRA's layout: metadata/<k>.npy text files and images imgs/<k>/sample_<i>.png."""
    folder = root / f"pathfinder{res}" / "curv_contour_length_14"
    (folder / "metadata").mkdir(parents=True)
    images, labels, order = [], [], []
    meta_files = {0: [], 2: [], 10: []}
    keys = [0, 2, 10]  # numeric order 0, 2, 10; text order would be 0, 10, 2
    for i in range(n):
        key = keys[i * len(keys) // n]
        (folder / "imgs" / str(key)).mkdir(parents=True, exist_ok=True)
        name = f"sample_{i}.png"
        label = i % 2
        file = folder / "imgs" / str(key) / name
        if i in empty:
            file.write_bytes(b"")
        else:
            pixels = np.zeros((res, res), np.uint8)
            pixels[i % res, :] = 10 * i + 5  # one bright row: every image distinct
            Image.fromarray(pixels, mode="L").save(file)
            images.append(pixels)
            labels.append(label)
            order.append(i)
        meta_files[key].append(f"imgs/{key} {name} {i} {label} 14 1.5")
    for key, lines in meta_files.items():
        (folder / "metadata" / f"{key}.npy").write_text("\n".join(lines) + "\n")
    return folder, np.stack(images), np.asarray(labels, np.int32)


def test_lra_layout_split_80_10_10_seed_42_and_empty_images(tmp_path):
    folder, images, labels = make_lra_tree(tmp_path)
    built = get_task("pathfinder").build(pathfinder_cfg(source="lra", path=str(tmp_path)))
    n = len(labels)  # 19: one zero-byte image skipped
    assert built.meta["skipped_empty"] == 1
    assert built.meta["skipped_files"] == ["pathfinder32/curv_contour_length_14/imgs/2/sample_7.png"]
    assert built.meta["images"] == n == 19
    parts = split_indices(n, 42)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [17, 1, 1]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(n))
    for split, rows in parts.items():
        got = built.splits[split]
        assert got["inputs"].shape == (len(rows), 1024)
        assert np.array_equal(got["inputs"], to_tokens(images[rows]))
        assert np.array_equal(got["labels"], labels[rows])
        assert got["inputs"].min() >= 1 and got["inputs"].max() <= 256
    assert np.array_equal(split_indices(100, 42)["test"], split_indices(100, 42)["test"])
    assert [len(v) for v in split_indices(200000, 42).values()] == [160000, 20000, 20000]


@pytest.mark.parametrize(
    "damage, fragments",
    [
        ("corrupt_png", ["imgs/2/sample_9.png", "not a readable PNG"]),
        ("short_line", ["metadata/10.npy line 2", "3 fields"]),
        ("bad_label", ["metadata/0.npy line 1", "label '7'"]),
        ("missing_image", ["imgs/10/sample_15.png", "is missing", "metadata/10.npy line 2"]),
        ("wrong_size", ["imgs/0/sample_3.png", "16x16", "expected 32x32"]),
        ("no_metadata", ["metadata", "no <n>.npy"]),
        ("no_difficulty", ["curv_contour_length_14 is missing"]),
        ("no_resolution", ["pathfinder32 is missing"]),
    ],
)
def test_lra_layout_errors_name_the_file(tmp_path, damage, fragments):
    folder, _, _ = make_lra_tree(tmp_path)
    if damage == "corrupt_png":
        (folder / "imgs/2/sample_9.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif damage == "short_line":
        meta = folder / "metadata/10.npy"
        lines = meta.read_text().splitlines()
        lines[1] = " ".join(lines[1].split()[:3])
        meta.write_text("\n".join(lines) + "\n")
    elif damage == "bad_label":
        meta = folder / "metadata/0.npy"
        lines = meta.read_text().splitlines()
        parts = lines[0].split()
        parts[3] = "7"
        lines[0] = " ".join(parts)
        meta.write_text("\n".join(lines) + "\n")
    elif damage == "missing_image":
        (folder / "imgs/10/sample_15.png").unlink()
    elif damage == "wrong_size":
        Image.fromarray(np.ones((16, 16), np.uint8)).save(folder / "imgs/0/sample_3.png")
    elif damage == "no_metadata":
        for file in (folder / "metadata").iterdir():
            file.unlink()
    elif damage == "no_difficulty":
        folder.rename(folder.parent / "elsewhere")
    elif damage == "no_resolution":
        folder.parent.rename(tmp_path / "pf")
    with pytest.raises(LraError) as err:
        get_task("pathfinder").build(pathfinder_cfg(source="lra", path=str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------- pathfinder, generator


def test_generate_source_pathfinder_tokens_and_balance():
    built = get_task("pathfinder").build(pathfinder_cfg(train_size=40, val_size=10, test_size=10))
    train = built.splits["train"]
    assert train["inputs"].shape == (40, 1024)
    assert train["inputs"].min() >= 1 and train["inputs"].max() <= 256
    assert train["inputs"].max() == 256  # the brightest pixel (255) is token 256
    assert np.bincount(train["labels"], minlength=2).tolist() == [20, 20]
    assert built.splits["val"]["inputs"].shape == (10, 1024)
    assert built.meta["difficulty_folder"] == "curv_contour_length_14"
    # the validation images do not depend on the training size
    other = get_task("pathfinder").build(pathfinder_cfg(train_size=20, val_size=10, test_size=10))
    assert np.array_equal(other.splits["val"]["inputs"], built.splits["val"]["inputs"])
    assert not np.array_equal(built.splits["val"]["inputs"], built.splits["test"]["inputs"])


def test_generate_source_pathx_tokens():
    built = get_task("pathx").build(pathfinder_cfg("pathx", train_size=4, val_size=2, test_size=2))
    train = built.splits["train"]
    assert train["inputs"].shape == (4, 16384)
    assert train["inputs"].min() >= 1 and train["inputs"].max() <= 256
    assert np.bincount(train["labels"], minlength=2).tolist() == [2, 2]


@pytest.mark.parametrize(
    "name, change, fragment",
    [
        ("pathfinder", {"data": {"resolution": 128}}, "does not fit task 'pathfinder'"),
        ("pathx", {"seq_len": 1024}, "must be 16384"),
        ("pathfinder", {"data": {"difficulty": "medium"}}, "task.data.difficulty"),
        ("pathfinder", {"data": {"source": "tfds"}}, "task.data.source"),
        ("pathfinder", {"data": {"train_size": 0}}, "task.data.train_size"),
        ("pathfinder", {"data": {"source": "lra"}}, "task.data.path is not set"),
    ],
)
def test_pathfinder_config_errors(name, change, fragment):
    cfg = OmegaConf.merge(pathfinder_cfg(name), change)
    with pytest.raises(LraError, match=fragment):
        task = get_task(name)
        task.check(cfg)
        task.build(cfg)


def test_pathfinder_is_not_prepared_by_training(tmp_path):
    cfg = compose_config("task=pathfinder", f"data_dir={tmp_path}")
    with pytest.raises(LraError, match="lra data prepare pathfinder"):
        lra_data.load(cfg.task, tmp_path)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (["task=retrieval"], {"task.seq_len": 4000, "task.interaction": "concat",
                              "encoder.num_layers": 4, "trainer.warmup_steps": 8000}),
        (["task=retrieval", "experiment=retrieval_paper"],
         {"task.interaction": "nli", "trainer.lr": 0.5}),
        (["task=pathfinder"], {"task.seq_len": 1024, "encoder.pooling": "mean",
                               "trainer.max_steps": 62400, "trainer.batch_size": 512}),
        (["task=pathfinder", "experiment=pathfinder_paper"],
         {"encoder.num_layers": 4, "encoder.num_heads": 8, "trainer.lr": 0.01}),
        (["task=pathx"], {"task.seq_len": 16384, "encoder.learned_pos_emb": True,
                          "trainer.grad_clip": 1.0, "trainer.max_steps": 500000}),
        (["task=pathx", "experiment=pathx_paper"], {"encoder.num_layers": 4}),
    ],
)
def test_configs_compose_and_validate(overrides, expect):
    from lra.run import validate

    cfg = compose_config(*overrides)
    for key, value in expect.items():
        assert OmegaConf.select(cfg, key) == value, key
    spec, enc = validate(cfg)
    assert spec.vocab_size == 257 and spec.num_classes == 2
    assert spec.pair == (cfg.task.name == "retrieval")
