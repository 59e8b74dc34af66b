"""Prepared caches: manifest, checksums, atomic writes, and `lra data`."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import compose_config
from lra import data as lra_data
from lra.errors import LraError
from lra.tasks.base import get_task

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
SMALL = ["task.data.train_size=60", "task.data.val_size=10", "task.data.test_size=10",
         "task.data.min_length=5", "task.data.max_length=40", "task.seq_len=40"]


def toy_cfg(tmp_path):
    return compose_config("task=listops", "task.name=toy_first_token", "task.seq_len=12",
                          "task.data={seed: 0}", f"data_dir={tmp_path}")


def test_prepare_writes_arrays_and_a_manifest_that_verifies(tmp_path):
    cfg = toy_cfg(tmp_path)
    path = lra_data.prepare(cfg.task, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["counts"]["train"]["examples"] == 512
    assert sum(manifest["counts"]["test"]["per_class"]) == 100
    splits = lra_data.open_prepared(path)
    assert splits["val"]["inputs"].shape == (96, 12)
    assert lra_data.verify(path) == []
    # A flipped byte is caught by the checksums.
    target = path / "train_labels.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 1
    target.write_bytes(bytes(raw))
    assert lra_data.verify(path) == [str(target)]


def test_a_failing_build_leaves_no_cache(tmp_path, monkeypatch):
    cfg = toy_cfg(tmp_path)
    task_cls = type(get_task("toy_first_token"))

    def broken(self, cfg):
        raise LraError("source is corrupt")

    monkeypatch.setattr(task_cls, "build", broken)
    with pytest.raises(LraError):
        lra_data.prepare(cfg.task, tmp_path)
    assert not any(p.is_dir() for p in (tmp_path / "toy_first_token").glob("*"))


def test_a_write_that_fails_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    """Some arrays are on disk when the write fails: neither a cache nor its temporary
    folder may be left (a cache is complete or absent)."""
    cfg = toy_cfg(tmp_path)
    real_save, saved = np.save, []

    def save_then_fail(path, array, *args, **kwargs):
        if len(saved) == 3:
            raise OSError(28, "No space left on device")
        saved.append(path)
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_then_fail)
    with pytest.raises((OSError, LraError)):
        lra_data.prepare(cfg.task, tmp_path)
    assert len(saved) == 3  # the failure came after files existed
    assert not [p for p in (tmp_path / "toy_first_token").rglob("*") if p.suffix in (".npy", ".json")]
    assert not [p for p in (tmp_path / "toy_first_token").iterdir() if p.is_dir()]


def test_cache_key_follows_the_data_config_but_not_the_worker_count(tmp_path):
    a = compose_config("task=listops", "task.data.seed=1")
    b = compose_config("task=listops", "task.data.seed=2")
    c = compose_config("task=listops", "task.data.seed=1", "task.data.workers=1")
    assert lra_data.cache_dir(a.task, tmp_path) != lra_data.cache_dir(b.task, tmp_path)
    assert lra_data.cache_dir(a.task, tmp_path) == lra_data.cache_dir(c.task, tmp_path)


def test_missing_cache_error_gives_the_prepare_command(tmp_path):
    cfg = compose_config("task=text", "task.data.source=jsonl", "task.data.path=/x/imdb")
    with pytest.raises(LraError, match="lra data prepare text task.seq_len=1000 .*task.data.source=jsonl"):
        lra_data.load(cfg.task, tmp_path)
    # A preset's shorter sequences are another cache: the command names their length.
    quick = compose_config("task=text", "experiment=quick", "task.data.source=jsonl", "task.data.path=/x")
    assert f"task.seq_len={quick.task.seq_len} " in lra_data.prepare_command(quick.task)
    assert quick.task.seq_len != cfg.task.seq_len


def lra(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lra.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_data_cli_prepare_info_verify(tmp_path):
    prepared = lra("data", "prepare", "listops", *SMALL, cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    assert "train 60" in prepared.stdout
    info = lra("data", "info", cwd=tmp_path)
    assert "listops" in info.stdout and "60/10/10" in info.stdout
    assert lra("data", "verify", cwd=tmp_path).returncode == 0
    (npy,) = [p for p in (tmp_path / "data").rglob("test_inputs.npy")]
    np.save(npy, np.zeros((10, 40), np.int8))
    bad = lra("data", "verify", cwd=tmp_path)
    assert bad.returncode == 2 and "CORRUPT" in bad.stdout
    assert len(bad.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- eval order, leakage, trust

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

from lra.datacli import main as data_main  # noqa: E402
from lra.loader import BatchLoader  # noqa: E402
from lra.registry import TASKS  # noqa: E402
from lra.tasks.base import Built, Task  # noqa: E402

BUILDS = []


@TASKS.register("toy_sorted")
class SortedLabels(Task):
    """Labels listed class by class, as CIFAR's validation images and IMDb's test reviews
    are; planted duplicates: train rows 5 and 6 are equal, test row 0 equals train row 3."""

    name = "toy_sorted"
    num_classes = 4

    def vocab_size(self, cfg) -> int:
        return 200

    def build(self, cfg) -> Built:
        BUILDS.append(cfg.data.path)
        if cfg.data.path == "/x/concurrent":
            time.sleep(0.3)  # a slow source: the other jobs arrive while this one builds
        splits = {}
        for split, n in (("train", 40), ("val", 64), ("test", 32)):
            tokens = np.zeros((n, int(cfg.seq_len)), np.int32)
            tokens[:, 0] = np.arange(n) + 1 + 50 * ("train", "val", "test").index(split)
            tokens[:, 1] = np.arange(n) % 3 + 1  # lengths 2 (token 2 is 0 below) and full
            tokens[np.arange(n) % 2 == 0, 2:] = 7
            splits[split] = {"inputs": tokens, "labels": (np.arange(n) * 4 // n).astype(np.int32)}
        splits["train"]["inputs"][6] = splits["train"]["inputs"][5]
        splits["test"]["inputs"][0] = splits["train"]["inputs"][3]
        return Built(splits, {"source": "toy"}, val_is_test=cfg.data.get("val") == "test")


def sorted_cfg(tmp_path, **data):
    fields = {"source": "files", "path": "/x/a", "val": "holdout", **data}
    return OmegaConf.create({"name": "toy_sorted", "seq_len": 6, "data": fields})


def test_evaluation_splits_are_stored_class_mixed_and_train_keeps_its_order(tmp_path):
    path = lra_data.prepare(sorted_cfg(tmp_path), tmp_path)
    splits = lra_data.open_prepared(path)
    built = SortedLabels().build(sorted_cfg(tmp_path))
    val = BatchLoader(splits["val"], 8, train=False, prefetch=0)
    first_two = np.concatenate([batch["labels"] for _, batch in zip(range(2), val)])
    assert len(np.unique(first_two)) >= 3  # the source's first 16 labels are all class 0
    # the same (input, label) pairs, each split in one fixed order; train untouched
    for split in ("val", "test"):
        got = {(row.tobytes(), int(y)) for row, y in zip(splits[split]["inputs"], splits[split]["labels"])}
        want = {(row.tobytes(), int(y)) for row, y in zip(built.splits[split]["inputs"], built.splits[split]["labels"])}
        assert got == want and not np.array_equal(splits[split]["labels"], built.splits[split]["labels"])
    assert np.array_equal(splits["train"]["labels"], built.splits["train"]["labels"])
    again = lra_data.prepare(sorted_cfg(tmp_path), tmp_path / "other")
    assert np.array_equal(lra_data.open_prepared(again)["val"]["inputs"], splits["val"]["inputs"])


def test_audit_finds_planted_duplicates_balance_lengths_and_val_is_test(tmp_path):
    report = lra_data.audit(lra_data.prepare(sorted_cfg(tmp_path), tmp_path))
    assert report["splits"]["train"]["duplicates"] == 1
    assert report["splits"]["val"]["duplicates"] == report["splits"]["test"]["duplicates"] == 0
    assert report["across"] == {"train-val": 0, "train-test": 1, "val-test": 0}
    assert report["splits"]["val"]["class_share"] == [0.25] * 4
    # even rows run to the cut (6), odd rows have 2 tokens; row 6 became a copy of row 5
    assert report["splits"]["train"]["length"] == {"min": 2, "mean": 3.9, "max": 6, "full": 19}
    assert not report["val_is_test"]
    flagged = lra_data.prepare(sorted_cfg(tmp_path, val="test"), tmp_path)
    assert lra_data.read_manifest(flagged)["val_is_test"] and lra_data.audit(flagged)["val_is_test"]


def test_verify_reports_the_audit_and_refuses_a_missing_folder(tmp_path, capsys):
    lra_data.prepare(sorted_cfg(tmp_path, val="test"), tmp_path)
    assert data_main(["verify", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 duplicate(s) within" in out and "train-test 1" in out and "val_is_test" in out
    for missing in (tmp_path / "nonexistent", tmp_path / "toy_sorted"):  # absent; no caches
        with pytest.raises(LraError) as err:
            data_main(["verify", "--data-dir", str(missing)])
        assert "\n" not in str(err.value)


def test_overwritten_bytes_are_caught_after_the_first_verified_use(tmp_path):
    path = lra_data.prepare(sorted_cfg(tmp_path), tmp_path)
    lra_data.open_prepared(path)
    assert (path / lra_data.VERIFIED).exists()
    target = path / "val_inputs.npy"
    raw = bytearray(target.read_bytes())
    raw[-5] ^= 0x40  # same size, same shape: only the checksum can tell
    target.write_bytes(bytes(raw))
    with pytest.raises(LraError, match="val_inputs.npy no longer match"):
        lra_data.open_prepared(path)


@pytest.mark.parametrize("damage", ["empty_npy", "short_npy", "truncated_manifest", "no_files"])
def test_damaged_caches_give_one_line_errors(tmp_path, damage):
    path = lra_data.prepare(sorted_cfg(tmp_path), tmp_path)
    manifest = path / "manifest.json"
    if damage == "empty_npy":
        (path / "train_labels.npy").write_bytes(b"")
    elif damage == "short_npy":
        np.save(path / "test_inputs.npy", np.zeros((3, 6), np.int32))
    elif damage == "truncated_manifest":
        manifest.write_text(manifest.read_text()[:100])
    else:
        manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "files"}))
    with pytest.raises(LraError) as err:
        lra_data.open_prepared(path)
    assert "\n" not in str(err.value) and "prepare again" in str(err.value)


def test_concurrent_first_use_builds_the_cache_once(tmp_path):
    BUILDS.clear()
    cfg = sorted_cfg(tmp_path, path="/x/concurrent")
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: lra_data.prepare(cfg, tmp_path), range(3)))
    assert len(set(paths)) == 1 and BUILDS == ["/x/concurrent"]
    assert lra_data.verify(paths[0]) == [] and not list(paths[0].parent.glob(".*tmp*"))


def test_training_finds_the_one_prepared_cache_and_lists_several(tmp_path, capsys):
    lra_data.prepare(sorted_cfg(tmp_path, path="/x/a"), tmp_path)
    plain = sorted_cfg(tmp_path, source="tfds", path=None)
    splits, manifest = lra_data.load(plain, tmp_path)
    assert manifest["data"]["path"] == "/x/a" and plain.data.path == "/x/a"
    assert "task.data.source=files task.data.path=/x/a" in capsys.readouterr().err
    with pytest.raises(LraError, match="no prepared data"):  # other shaping options: no match
        lra_data.load(sorted_cfg(tmp_path, source="tfds", path=None, val="test"), tmp_path)
    lra_data.prepare(sorted_cfg(tmp_path, path="/x/b"), tmp_path)
    with pytest.raises(LraError) as err:
        lra_data.load(sorted_cfg(tmp_path, source="tfds", path=None), tmp_path)
    assert "2 prepared caches" in str(err.value) and "task.data.path=/x/b" in str(err.value)
    assert "task.data.path=/x/a" in str(err.value) and "\n" not in str(err.value)


def test_a_reproduction_only_tokenizer_warns_in_the_manifest(tmp_path):
    cfg = compose_config("task=listops", *SMALL, "task.data.tokenizer=drop_close", "task.data.workers=1")
    manifest = lra_data.read_manifest(lra_data.prepare(cfg.task, tmp_path))
    assert len(manifest["warnings"]) == 1 and "c209b2a" in manifest["warnings"][0]
    assert manifest["val_is_test"] is False
    default = compose_config("task=listops", *SMALL, "task.data.workers=1")
    assert lra_data.read_manifest(lra_data.prepare(default.task, tmp_path))["warnings"] == []
