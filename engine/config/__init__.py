"""Configuration: finding hosts.toml, reading it and experiment files; every error names the
file, the line, the key and what was expected."""

from engine.config.discover import find_config
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
from engine.config.hosts import Config, Route, data_place, load_config
from engine.config.toml import setting_error
from engine.errors import ConfigError

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
