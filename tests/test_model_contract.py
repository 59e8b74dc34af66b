"""The contract every registered model keeps, parametrised over `MODELS.names()`:
its config (`configs/model/<name>.yaml`) states exactly its `Options` defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from lra.models import EncoderConfig, check_model
from lra.registry import MODELS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"
NAMES = MODELS.names()


def encoder(**overrides) -> EncoderConfig:
    base = dict(vocab_size=11, max_len=24, num_layers=1, dim=16, num_heads=2, qkv_dim=16,
                mlp_dim=32, dropout=0.1, attention_dropout=0.1, pooling="cls")
    return EncoderConfig(**{**base, **overrides})


@pytest.mark.parametrize("name", NAMES)
def test_config_yaml_states_the_options_defaults(name):
    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert cfg.pop("name") == name
    defaults = {
        field.name: list(field.default) if isinstance(field.default, tuple) else field.default
        for field in dataclasses.fields(MODELS.get(name).Options)
    }
    assert cfg == defaults
    check_model(name, cfg, encoder(max_len=1000))
