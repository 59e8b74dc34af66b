"""Models: every module in this package registers one token mixer under a model name.

Adding a model is one file here (a class registered with `@MODELS.register`) and
one config in `configs/model/`. Modules are imported automatically.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
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
    """The options a mixer accepts (what a model config may set): its `Options` fields."""
    return mixer_cls.Options.names()


def check_model(name: str, options: dict[str, Any], cfg: EncoderConfig) -> None:
    """Validate a model choice against an encoder shape, before anything is traced."""
    mixer_cls = MODELS.get(name)
    typed = mixer_cls.Options.parse(options, name)
    mixer_cls.check(cfg.mixer_shape(), typed)


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

    layers = itertools.count()  # the encoder builds its layers' mixers in order

    def mixer_factory(layer_rngs: nnx.Rngs) -> nnx.Module:
        layer_shape = dataclasses.replace(shape, layer=next(layers))
        return mixer_cls(layer_shape, **options, rngs=layer_rngs)

    if pair:
        if interaction not in INTERACTIONS:
            raise LraError(
                f"task.interaction={interaction!r} is not one of {', '.join(INTERACTIONS)}"
            )
        return DualClassifier(cfg, mixer_factory, num_classes, interaction, rngs=rngs)
    return Classifier(cfg, mixer_factory, num_classes, rngs=rngs)
