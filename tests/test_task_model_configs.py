"""configs/task_model/<task>_<model>.yaml: LRA's per-(task, model) hyperparameters.

Every file must compose with `task=<task> model=<model>`, show its values in the
composed config (so nothing later in the defaults list overrides it), change at
least one value relative to the task and model configs alone, and pass
`lra.run.validate`.
"""

from __future__ import annotations

from importlib import resources

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from lra.run import validate


def _names(group: str) -> list[str]:
    folder = resources.files("lra.configs") / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


TASKS = _names("task")
MODELS = _names("model")
FILES = _names("task_model")


def split_pair(name: str) -> tuple[str, str]:
    """'image_linear_transformer' -> ('image', 'linear_transformer'), checked against the groups."""
    pairs = [(t, name[len(t) + 1:]) for t in TASKS if name.startswith(t + "_")]
    pairs = [(t, m) for t, m in pairs if m in MODELS]
    assert len(pairs) == 1, f"{name}.yaml is not <task>_<model> for a task in {TASKS} and a model in {MODELS}"
    return pairs[0]


def leaves(node, prefix: str = "") -> dict:
    """Flatten a config to {'a.b.c': value} for its leaf values."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(leaves(value, path + "."))
        else:
            out[path] = value
    return out


def file_values(name: str) -> dict:
    path = resources.files("lra.configs") / "task_model" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# @package _global_"), f"{name}.yaml must start with '# @package _global_'"
    values = leaves(OmegaConf.to_container(OmegaConf.create(text)))
    assert values, f"{name}.yaml sets nothing"
    assert {k.split(".")[0] for k in values} <= {"model", "encoder", "trainer"}, values
    return values


def test_there_are_task_model_files():
    assert FILES, "configs/task_model is empty"


@pytest.mark.parametrize("name", FILES)
def test_task_model_file_composes_and_validates(name):
    task, model = split_pair(name)
    cfg = compose_config(f"task={task}", f"model={model}")
    assert (cfg.task.name, cfg.model.name) == (task, model)
    expected = file_values(name)
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, f"{name}.yaml: {key}"
    # Without the file, something differs: the file is not a no-op.
    base = compose_config(f"task={task}", f"model={model}", "~task_model")
    assert any(OmegaConf.select(base, k) != v for k, v in expected.items()), name
    spec, enc = validate(cfg)
    assert (spec.name, enc.num_layers, enc.dim, enc.num_heads) == (
        task, cfg.encoder.num_layers, cfg.encoder.dim, cfg.encoder.num_heads)


@pytest.mark.parametrize("name", FILES)
def test_experiments_still_override_task_model(name):
    """`experiment=` comes after the task_model entry in train.yaml, so presets win."""
    task, model = split_pair(name)
    cfg = compose_config(f"task={task}", f"model={model}", "experiment=quick")
    preset = OmegaConf.load(resources.files("lra.configs") / f"experiment/per_task/quick_{task}.yaml")
    for section in ("encoder", "trainer"):
        for key, value in preset.get(section, {}).items():
            assert cfg[section][key] == value, f"{section}.{key}"


def test_pairs_without_a_file_get_the_task_config():
    cfg = compose_config("task=retrieval", "model=performer")
    base = compose_config("task=retrieval")
    assert cfg.encoder == base.encoder and cfg.trainer == base.trainer
    validate(cfg)
