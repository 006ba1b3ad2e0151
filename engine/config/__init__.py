"""Configuration: finding hosts.toml, reading it and experiment files; every error names the
file, the line, the key and what was expected. Experiment files' names load on first use:
a client reads hosts.toml to find its daemon and needs none of them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.config.discover import find_config
from engine.config.hosts import Config, Route, data_place, load_config
from engine.config.toml import setting_error
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.config.experiments import (
        MAX_TRIALS,
        EarlyStop,
        Experiment,
        Model,
        Param,
        experiment_from_json,
        experiment_json,
        load_experiment,
    )

_EXPERIMENT_NAMES = frozenset(
    {
        "MAX_TRIALS",
        "EarlyStop",
        "Experiment",
        "Model",
        "Param",
        "experiment_from_json",
        "experiment_json",
        "load_experiment",
    }
)

__all__ = [
    "MAX_TRIALS",
    "Config",
    "ConfigError",
    "EarlyStop",
    "Experiment",
    "Model",
    "Param",
    "Route",
    "data_place",
    "experiment_from_json",
    "experiment_json",
    "find_config",
    "load_config",
    "load_experiment",
    "setting_error",
]


def __getattr__(name: str) -> Any:
    if name in _EXPERIMENT_NAMES:
        return getattr(importlib.import_module("engine.config.experiments"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
