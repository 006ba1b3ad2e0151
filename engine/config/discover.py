"""Finding the configuration file, as git finds .git."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import ConfigError
from engine.paths import CONFIG_ENV, CONFIG_NAME


def find_config(explicit: str | os.PathLike[str] | None = None, start: Path | None = None) -> Path:
    """Find hosts.toml as git finds .git: an explicit path, else $RUNYARD_CONFIG, else the nearest
    hosts.toml in the current directory or its parents."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file (given with --config)")
        return path.resolve()
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file (from ${CONFIG_ENV})")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any parent directory; "
        f"pass --config PATH, set ${CONFIG_ENV}, or run `engine init` to write one"
    )
