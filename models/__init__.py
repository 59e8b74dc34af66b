"""Models: every module in this package registers one token mixer under a model name.

Adding a model is one file here (a class registered with `@MODELS.register`) and
one config in `configs/model/`. Modules are imported automatically.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from flax import nnx

from lra.errors import LraError
from lra.registry import MODELS
from lra.models.encoder import INTERACTIONS, Classifier, DualClassifier, EncoderConfig

_INFRASTRUCTURE = {"attention", "encoder", "blocks"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def model_options(mixer_cls) -> list[str]:
    """The keyword options a mixer accepts (what a model config may set)."""
    params = inspect.signature(mixer_cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "rngs"]


def check_model(name: str, options: dict[str, Any], cfg: EncoderConfig) -> None:
    """Validate a model choice against an encoder shape, before anything is traced."""
    mixer_cls = MODELS.get(name)
    allowed = model_options(mixer_cls)
    for key in options:
        if key not in allowed:
            raise LraError(
                f"model '{name}' has no option '{key}'; its options are: "
                f"{', '.join(allowed) or 'none'}"
            )
    mixer_cls.check(cfg.mixer_shape(), options)


def build_model(
    name: str,
    options: dict[str, Any],
    cfg: EncoderConfig,
    num_classes: int,
    *,
    pair: bool = False,
    interaction: str = "concat",
    rngs: nnx.Rngs,
) -> nnx.Module:
    """A classifier whose encoder mixes tokens with the model registered as `name`."""
    check_model(name, options, cfg)
    mixer_cls = MODELS.get(name)
    shape = cfg.mixer_shape()

    def mixer_factory(layer_rngs: nnx.Rngs) -> nnx.Module:
        return mixer_cls(shape, **options, rngs=layer_rngs)

    if pair:
        if interaction not in INTERACTIONS:
            raise LraError(
                f"task.interaction={interaction!r} is not one of {', '.join(INTERACTIONS)}"
            )
        return DualClassifier(cfg, mixer_factory, num_classes, interaction, rngs=rngs)
    return Classifier(cfg, mixer_factory, num_classes, rngs=rngs)
