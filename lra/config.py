"""The one home of config composition: Hydra compose and the override checks.

Every entry point (`lra train`, `lra data`, `lra bench`, the scripts, the tests)
composes its config here, so an override means the same everywhere and a typo
gives the same one-line `LraError` everywhere, before any file is written.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lra.errors import LraError

CONFIG_MODULE = "lra.configs"
GROUPS = ("task", "model", "trainer", "experiment", "task_model")


def config_choices(group: str, config_dirs: tuple[str, ...] = ()) -> list[str]:
    """The option names of a config group: the .yaml files in configs/<group>/ and
    in <dir>/<group>/ of each extra config folder (`lra train --config-dir DIR`)."""
    folders = [resources.files(CONFIG_MODULE) / group, *(Path(d) / group for d in config_dirs)]
    return sorted({p.name[: -len(".yaml")] for folder in folders if folder.is_dir()
                   for p in folder.iterdir() if p.name.endswith(".yaml")})


def check_overrides(overrides: list[str], groups: tuple[str, ...] = GROUPS,
                    config_dirs: tuple[str, ...] = ()) -> None:
    """Syntax and group choices, so typos fail before Hydra starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        first = str(err).strip().splitlines()[0]
        raise LraError(f"cannot parse the overrides: {first}")
    for override in parsed:
        group = override.key_or_group
        if group not in groups or override.is_delete():
            continue
        valid = config_choices(group, config_dirs)
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            if value is not None and str(value) not in valid:
                raise LraError(
                    f"unknown {group} '{value}'; choose one of: {', '.join(valid)}"
                )


def compose(overrides: list[str], *, config_name: str = "train", hydra: bool = False,
            hint: str = "lra train --cfg job"):
    """The config `lra <command>` runs with (single run, no sweep): configs/train.yaml
    for train and data, configs/lra_bench.yaml for bench.

    hydra=True keeps the `hydra` node (run folder, group choices) for a caller
    that runs the job itself instead of through `hydra.main`; `hint` is where the
    error message sends the user to see the keys.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_overrides(overrides)
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides),
                                 return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0]
        raise LraError(f"bad configuration: {first} (see the keys with: {hint})")


# Top-level keys of a composed config besides train.yaml's own: the groups' packages
# and the key by which a preset names its task (lra/presets.py).
GROUP_KEYS = ("task", "model", "trainer", "encoder", "preset_task")


def check_keys(cfg) -> None:
    """A top-level key nothing reads is a typo (`+sed=1`): one line, before any file
    is written. (Unknown trainer keys: TrainerConfig; encoder keys: lra/run.py.)"""
    from omegaconf import OmegaConf

    known = set(OmegaConf.load(resources.files(CONFIG_MODULE) / "train.yaml")) - {"defaults", "hydra"}
    unknown = sorted(set(cfg.keys()) - known - set(GROUP_KEYS))
    if unknown:
        raise LraError(f"unknown key {unknown[0]}; valid: {', '.join(sorted(known | set(GROUP_KEYS)))}")
