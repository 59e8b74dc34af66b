"""Presets that fit their task: `experiment=quick` for every task, presets bound to their task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from lra.errors import LraError
from lra.presets import check_preset, preset_tasks
from lra.run import validate

ROOT = Path(__file__).resolve().parents[1]
TASK_NAMES = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
# the sources that need a path to validate; any path will do for composing
PATHS = {"text": ["task.data.source=jsonl", "task.data.path=imdb"],
         "image": ["task.data.source=npz_jpeg", "task.data.path=cifar.npz"]}


def test_listops_quick_is_the_config_of_the_committed_cpu_result():
    """results/cpu/ was measured with `task=listops experiment=quick`: the preset must
    still compose exactly that run (every key the record stored that shapes the run)."""
    record = json.loads((ROOT / "results/cpu/runs/listops-transformer-quick-s0/record.json").read_text())
    assert record["experiment"] == "quick"
    cfg = OmegaConf.to_container(compose_config("task=listops", "experiment=quick"), resolve=True)
    for key in ("task", "encoder", "trainer", "model", "seed", "progress"):
        stored = record["config"][key]
        if isinstance(stored, dict):  # keys added since must hold the value that changes nothing
            added = {k: v for k, v in cfg[key].items() if k not in stored}
            assert added == NEUTRAL_SINCE.get(key, {}), key
            cfg[key] = {k: v for k, v in cfg[key].items() if k in stored}
        assert cfg[key] == stored, key


# Keys added to the config after results/cpu/ was run, at values that leave the run as it was.
# ssm_lr null: one optimiser group; checkpointing changes no result (it is in records.RUN_LOCAL)
NEUTRAL_SINCE = {"trainer": {"ssm_lr": None, "ssm_weight_decay": 0.0, "checkpoint_every": None,
                             "keep_checkpoints": 2}}


@pytest.mark.parametrize("task", TASK_NAMES)
def test_quick_composes_a_small_config_for_every_task(task):
    cfg = compose_config(f"task={task}", "experiment=quick", *PATHS.get(task, []))
    spec, enc = validate(cfg)
    assert cfg.preset_task == task == spec.name
    full = compose_config(f"task={task}", *PATHS.get(task, []))
    assert cfg.trainer.max_steps <= 800 and cfg.trainer.max_steps < full.trainer.max_steps
    tokens = cfg.trainer.batch_size * spec.seq_len * (2 if spec.pair else 1)
    assert tokens <= 64 * 1024 or task == "pathx"  # Path-X: one 16,384-token image a step
    assert enc.num_layers <= 2 and enc.dim <= 128
    if "train_size" in cfg.task.data:  # generated tasks: a small set
        assert cfg.task.data.train_size <= 20000
    if task in ("text", "retrieval", "listops"):  # the tasks whose length can shrink
        assert spec.seq_len <= 256 < full.task.seq_len


def test_a_preset_for_another_task_is_refused_in_one_line():
    with pytest.raises(LraError) as err:
        validate(compose_config("task=listops", "experiment=text_paper"))
    assert str(err.value) == ("the experiment preset is for task=text, not task=listops; "
                              "use it with task=text (presets for listops: listops_2021, quick, s4d_listops, s5_listops)")
    with pytest.raises(LraError, match=r"^experiment=quick is for task=listops, not task=text;"):
        check_preset(compose_config("task=listops", "experiment=quick", "task.name=text"), "quick")


def test_a_task_without_a_quick_version_is_named():
    """As for a new task that has no per_task/quick_<task>.yaml (here: its entry deleted)."""
    cfg = compose_config("task=listops", "task.name=toy_first_token", "experiment=quick",
                         "~experiment/per_task@_global_")
    with pytest.raises(LraError, match=r"^experiment=quick has no version for task=toy_first_token "
                                       r"\(no preset exists for toy_first_token\)$"):
        check_preset(cfg, "quick")


def test_every_preset_declares_its_task():
    presets = preset_tasks()
    assert set(presets) == {p.stem for p in (ROOT / "configs/experiment").glob("*.yaml")}
    assert presets["quick"] == sorted(TASK_NAMES)
    for name, tasks in presets.items():
        assert tasks and set(tasks) <= set(TASK_NAMES), name
    for name in presets:
        if name != "quick":
            task = presets[name][0]
            check_preset(compose_config(f"task={task}", f"experiment={name}"))


def test_no_preset_leaves_the_task_config_alone():
    assert "preset_task" not in compose_config("task=listops")
    check_preset(compose_config("task=listops"))
