"""Experiment presets are written for one task; applied to another they are refused.

Each configs/experiment/<name>.yaml declares `preset_task`, the task whose numbers
it changes. A preset with a version per task (`quick`) leaves it missing (`???`)
and its per-task file, configs/experiment/per_task/<name>_<task>.yaml, which
train.yaml's defaults list picks for the chosen task, sets it. Without the check,
`task=listops experiment=text_paper` silently builds a 4,000-token ListOps cache.
"""

from __future__ import annotations

from importlib import resources

from omegaconf import DictConfig, OmegaConf

from lra.errors import LraError

CONFIG_MODULE = "lra.configs"


def preset_tasks() -> dict[str, list[str]]:
    """Each experiment preset and the tasks it can be used with."""
    folder = resources.files(CONFIG_MODULE) / "experiment"
    per_task = folder / "per_task"
    found: dict[str, list[str]] = {}
    for file in sorted(folder.iterdir(), key=lambda f: f.name):
        if not file.name.endswith(".yaml"):
            continue
        name = file.name[: -len(".yaml")]
        preset = OmegaConf.create(file.read_text())
        if OmegaConf.is_missing(preset, "preset_task"):
            prefix = f"{name}_"
            found[name] = sorted(f.name[len(prefix): -len(".yaml")] for f in per_task.iterdir()
                                 if f.name.startswith(prefix) and f.name.endswith(".yaml"))
        else:
            found[name] = [str(preset.get("preset_task"))]
    return found


def check_preset(cfg: DictConfig, experiment: str | None = None) -> None:
    """Refuse a preset composed with a task it was not written for (one line)."""
    if "preset_task" not in cfg.keys():  # `in cfg` is False for a missing (???) value
        return
    task = cfg.task.name
    name = f"experiment={experiment}" if experiment else "the experiment preset"
    if not OmegaConf.is_missing(cfg, "preset_task") and cfg.preset_task == task:
        return
    fitting = [preset for preset, tasks in preset_tasks().items() if task in tasks]
    others = f"presets for {task}: {', '.join(fitting)}" if fitting else f"no preset exists for {task}"
    if OmegaConf.is_missing(cfg, "preset_task"):
        raise LraError(f"{name} has no version for task={task} ({others})")
    raise LraError(f"{name} is for task={cfg.preset_task}, not task={task}; "
                   f"use it with task={cfg.preset_task} ({others})")
