"""Prepared caches: manifest, checksums, atomic writes, and `lra data`."""

import json
import os
import subprocess
import sys

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


def test_cache_key_follows_the_data_config_but_not_the_worker_count(tmp_path):
    a = compose_config("task=listops", "task.data.seed=1")
    b = compose_config("task=listops", "task.data.seed=2")
    c = compose_config("task=listops", "task.data.seed=1", "task.data.workers=1")
    assert lra_data.cache_dir(a.task, tmp_path) != lra_data.cache_dir(b.task, tmp_path)
    assert lra_data.cache_dir(a.task, tmp_path) == lra_data.cache_dir(c.task, tmp_path)


def test_missing_cache_error_gives_the_prepare_command(tmp_path):
    cfg = compose_config("task=text", "task.data.source=jsonl", "task.data.path=/x/imdb")
    with pytest.raises(LraError, match="lra data prepare text .*task.data.source=jsonl"):
        lra_data.load(cfg.task, tmp_path)


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
