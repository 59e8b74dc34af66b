"""Tracker backends: JSON lines, TensorBoard event files read back, W&B through a fake module."""

from __future__ import annotations

import importlib.machinery
import json
import math
import struct
import sys
import types
from pathlib import Path

import pytest

from lra.errors import LraError
from lra.tracking import JsonlTracker, MultiTracker, logger_names, make_tracker


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bitwise: the checksum of TFRecord framing."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under `folder`, by tag, parsed from the
    TFRecord framing (length, masked CRC-32C of the length, payload, masked CRC of
    the payload) and the Event protocol buffer."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for file in files:
        data, at = file.read_bytes(), 0
        while at < len(data):
            header = data[at:at + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[at + 8:at + 12])
            assert header_crc == masked(crc32c(header))
            payload = data[at + 12:at + 12 + length]
            (payload_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
            assert payload_crc == masked(crc32c(payload))
            at += 16 + length
            event = Event.FromString(payload)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_crc32c_reference_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value


def test_tensorboard_files_read_back(tmp_path):
    tracker = make_tracker("tensorboard", tmp_path, {})
    tracker.log(1, {"train/loss": 2.5, "train/accuracy": 0.25})
    tracker.log(2, {"train/loss": 1.25})
    tracker.log(2, {"val/accuracy": 0.5})
    tracker.close()
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars == {
        "train/loss": [(1, 2.5), (2, 1.25)],
        "train/accuracy": [(1, 0.25)],
        "val/accuracy": [(2, 0.5)],
    }


def test_several_backends_at_once(tmp_path):
    tracker = make_tracker(["jsonl", "tensorboard"], tmp_path, {})
    assert isinstance(tracker, MultiTracker)
    tracker.log(3, {"train/loss": 0.75})
    tracker.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 3, "train/loss": 0.75}]
    assert read_scalars(tmp_path / "tensorboard") == {"train/loss": [(3, 0.75)]}


def test_jsonl_writes_non_finite_as_text(tmp_path):
    tracker = JsonlTracker(tmp_path / "m.jsonl")
    tracker.log(1, {"loss": math.nan, "acc": 0.5})
    tracker.close()
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"step": 1, "loss": "nan", "acc": 0.5}


class FakeRun:
    def __init__(self, calls):
        self.calls = calls

    def log(self, data, step):
        self.calls.append(("log", step, data))

    def finish(self):
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
    """wandb itself is too heavy for CI (a 20 MB wheel, a service process): a stand-in
    module in sys.modules records what the backend calls."""
    calls = []
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun(calls)

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_wandb_backend_with_a_fake_module(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    run_dir = tmp_path / "listops" / "transformer" / "20260101-s0"
    run_dir.mkdir(parents=True)
    tracker = make_tracker(["wandb"], run_dir, {"seed": 0})
    tracker.log(5, {"train/loss": 1})
    tracker.close()
    init = fake_wandb[0]
    assert init[0] == "init"
    assert init[1] == {"project": "lra", "name": "listops/transformer/20260101-s0",
                       "dir": str(run_dir), "config": {"seed": 0}}
    assert fake_wandb[1:] == [("log", 5, {"train/loss": 1.0}), ("finish",)]


@pytest.mark.parametrize("value, message", [
    ("mlflow", "unknown logger 'mlflow'; choose from: jsonl, tensorboard, wandb"),
    ([], "names no backend"),
    (["jsonl", "tb"], "unknown logger 'tb'"),
])
def test_bad_logger_names_are_one_line_errors(value, message):
    with pytest.raises(LraError, match=message) as err:
        logger_names(value)
    assert "\n" not in str(err.value)


def test_missing_package_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what Python does for a module that cannot import
    with pytest.raises(LraError, match=r"logger=wandb needs the wandb package: pip install -e '\.\[wandb\]'"):
        logger_names(["jsonl", "wandb"])


def test_duplicates_collapse_and_order_is_kept():
    assert logger_names(["tensorboard", "jsonl", "tensorboard"]) == ["tensorboard", "jsonl"]


def test_real_wandb_offline_run(tmp_path, monkeypatch):
    """Only where wandb is installed (`.[wandb]`; not in CI): offline mode leaves the run on disk."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = make_tracker("wandb", tmp_path, {"seed": 0})
    tracker.log(1, {"train/loss": 2.0})
    tracker.close()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_an_unknown_logger_is_refused_before_the_run(tmp_path, toy_overrides):
    from conftest import compose_config
    from lra.run import validate

    with pytest.raises(LraError, match="unknown logger 'mlflow'"):
        validate(compose_config(*toy_overrides, "logger=mlflow"))


def test_run_log_writes_the_file_and_the_terminal_and_detaches(tmp_path, capsys):
    import logging

    from lra.tracking import RUN_LOG, close_run_log, open_run_log

    open_run_log(tmp_path)
    logging.getLogger("lra.trainer").info("step 10: val accuracy 0.5000")
    close_run_log()
    logging.getLogger("lra.trainer").info("after the run")
    lines = (tmp_path / RUN_LOG).read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO step 10: val accuracy 0.5000")
    assert capsys.readouterr().out == "step 10: val accuracy 0.5000\n"
