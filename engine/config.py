"""Reading hosts.toml into frozen, validated specs; every error names the file, key or line, and
what was expected."""

from __future__ import annotations

import math
import os
import re
import shlex
import tomllib
import typing
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

import msgspec

from engine import template
from engine.capture import CaptureError, readers_for
from engine.errors import ConfigError
from engine.model import MAX_AMOUNT, MAX_PRIORITY, MAX_SEED, HostSpec, Resources, RetryPolicy
from engine.paths import CONFIG_ENV, CONFIG_NAME
from engine.template import RUNTIME_FIELDS

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
T = TypeVar("T")


class EngineSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state_dir: str = "runs"
    sample_interval_s: float = 1.0
    cancel_grace_s: float = 10.0


class RouteMatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model_type: str | None = None
    tags: list[str] = []


class RouteSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    match: RouteMatch
    prefer: list[str] = []
    fallback: list[str] = []
    fallback_after_s: float | None = None


class Route(msgspec.Struct, frozen=True):
    """A routing rule: jobs matching `match` go to `prefer` hosts, else to `fallback` hosts."""

    model_type: str | None
    tags: tuple[str, ...]
    prefer: tuple[str, ...]
    fallback: tuple[str, ...]
    fallback_after_s: float | None


class Config(msgspec.Struct, frozen=True):
    """A whole hosts.toml: where state lives, the hosts by name, and the routes in order."""

    path: Path
    state_dir: Path
    sample_interval_s: float
    cancel_grace_s: float
    hosts: dict[str, HostSpec]
    routes: tuple[Route, ...] = ()

    @property
    def project_dir(self) -> Path:
        return self.path.parent


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


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate one hosts.toml."""
    path, text, raw = _read_toml(path)
    return _build(path, text, raw)


MAX_FILE_BYTES = 10 * 2**20
MAX_DEPTH = 16  # tables and lists inside each other; no file of ours needs more than 5
MAX_INT = 2**63 - 1  # what the store's columns hold


def _read_toml(path: str | os.PathLike[str]) -> tuple[Path, str, dict[str, Any]]:
    """A TOML file's resolved path, text and contents; unreadable or invalid ones are a
    ConfigError naming the file (and the line and column). Values no setting takes (NaN or
    infinite numbers, integers past 64 bits, NUL bytes, deep nesting) are refused here, once
    for every file."""
    try:
        path = Path(path).resolve()
        data = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if data is None:
        raise ConfigError(f"{path}: over {MAX_FILE_BYTES // 2**20} MB; not a configuration file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_syntax_message(path, str(exc), text)) from None
    except RecursionError:
        raise ConfigError(f"{path}: tables or lists nested too deeply") from None
    _check_values(_Locator(path, text), raw, "")
    return path, text, raw


def setting_error(path: Path, key: str, expected: str) -> ConfigError:
    """An error about a setting found wrong after its file was read (a folder that cannot be
    made, say), naming the file and the setting's line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        text = ""
    return _Locator(path, text).error(key, expected)


def _check_values(where: _Locator, value: Any, key: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise where.error(key, f"nested more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        for k, v in value.items():
            if "\0" in k:
                raise where.error(key, "a key holds a NUL byte")
            _check_values(where, v, f"{key}.{k}" if key else k, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(where, v, f"{key}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise where.error(key, f"expected a finite number, got {value}")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise where.error(key, f"expected an integer of at most 64 bits, got {value}")
    elif isinstance(value, str) and "\0" in value:
        raise where.error(key, "holds a NUL byte, which no command line, path or name can carry")


def _toml_syntax_message(path: Path, message: str, text: str = "") -> str:
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    at_end = re.search(r"\s*\(at end of document\)", message)
    if found:
        place = f"{path}:{found.group(1)}:{found.group(2)}"
    elif at_end:
        place = f"{path}:{max(1, len(text.splitlines()))}"
        found = at_end
    else:
        place = str(path)
    text = message[: found.start()] if found else message
    twice = re.match(r"Cannot declare \((.*)\) twice", text)
    if twice:
        table = ".".join(p.strip().strip("'") for p in twice.group(1).split(","))
        return f"{place}: duplicate table [{table}]; each host and table is declared once"
    return f"{place}: not valid TOML: {text}"


def _build(path: Path, text: str, raw: dict[str, Any]) -> Config:
    where = _Locator(path, text)
    unknown = sorted(set(raw) - {"engine", "hosts", "routes"})
    if unknown:
        raise where.error(
            unknown[0], "unknown top-level key; expected one of [engine], [hosts.NAME], [[routes]]"
        )
    engine = _convert(where, "engine", raw.get("engine", {}), EngineSection)
    _seconds(where, "engine.sample_interval_s", engine.sample_interval_s, HOUR)
    _seconds(where, "engine.cancel_grace_s", engine.cancel_grace_s, DAY, zero=True)

    hosts_raw = raw.get("hosts", {})
    if not isinstance(hosts_raw, dict):
        raise where.error("hosts", "expected tables [hosts.NAME]")
    if not hosts_raw:
        raise where.error("hosts", 'expected at least one host, e.g. [hosts.local] kind = "local"')
    hosts: dict[str, HostSpec] = {}
    seen: dict[str, str] = {}
    for name, table in hosts_raw.items():
        key = f"hosts.{name}"
        if not HOST_NAME.match(name):
            raise where.error(
                key, "a host name is letters, digits, '_' or '-' (at most 63 characters)"
            )
        if name.lower() in seen:
            raise where.error(key, f"duplicate host: {seen[name.lower()]!r} is already declared")
        seen[name.lower()] = name
        if isinstance(table, dict) and "name" in table:
            raise where.error(f"{key}.name", "unknown key; a host's name is its table's name")
        hosts[name] = _check_host(where, key, _convert(where, key, table, HostSpec, name=name))

    routes_raw = raw.get("routes", [])
    if not isinstance(routes_raw, list):
        raise where.error("routes", "expected an array of tables [[routes]]")
    routes = []
    for i, table in enumerate(routes_raw):
        key = f"routes[{i}]"
        section = _convert(where, key, table, RouteSection)
        for field in ("prefer", "fallback"):
            for host in getattr(section, field):
                if host not in hosts:
                    raise where.error(
                        f"{key}.{field}",
                        f"unknown host {host!r}; expected one of {sorted(hosts)}",
                    )
        if not section.prefer and not section.fallback:
            raise where.error(key, "expected `prefer` or `fallback` hosts")
        if section.fallback_after_s is not None:
            _seconds(where, f"{key}.fallback_after_s", section.fallback_after_s, 30 * DAY)
        routes.append(
            Route(
                model_type=section.match.model_type,
                tags=tuple(section.match.tags),
                prefer=tuple(section.prefer),
                fallback=tuple(section.fallback),
                fallback_after_s=section.fallback_after_s,
            )
        )

    return Config(
        path=path,
        state_dir=_state_dir(where, engine.state_dir),
        sample_interval_s=engine.sample_interval_s,
        cancel_grace_s=engine.cancel_grace_s,
        hosts=hosts,
        routes=tuple(routes),
    )


HOUR = 3600.0
DAY = 86400.0
MAX_JOBS = 10_000


def _seconds(where: _Locator, key: str, value: float, most: float, zero: bool = False) -> None:
    """A duration setting: above 0 (or 0 too) and at most `most` seconds."""
    if not ((value >= 0 if zero else value > 0) and value <= most):
        low = "0" if zero else "above 0"
        raise where.error(key, f"expected seconds from {low} to {most:g}, got {value:g}")


def _state_dir(where: _Locator, text: str) -> Path:
    """Where the daemon keeps its state: a folder of its own (it is made private, 0700), never
    the project folder or one above it, and not a file."""
    if not text.strip():
        raise where.error("engine.state_dir", 'expected a folder such as "runs", got ""')
    state_dir = Path(os.path.expandvars(text)).expanduser()
    if not state_dir.is_absolute():
        state_dir = where.path.parent / state_dir
    state_dir = state_dir.resolve()
    project = where.path.parent
    if state_dir == project or state_dir in project.parents:
        raise where.error(
            "engine.state_dir",
            f'{state_dir} holds the project; expected a folder of its own such as "runs"',
        )
    if state_dir.exists() and not state_dir.is_dir():
        raise where.error("engine.state_dir", f"{state_dir} is a file; expected a folder")
    return state_dir


def _check_host(where: _Locator, key: str, host: HostSpec) -> HostSpec:
    for field in ("cpus", "mem_gb"):
        value = getattr(host, field)
        if value is not None and not 0 < value <= MAX_AMOUNT:
            raise where.error(
                f"{key}.{field}",
                f"expected a number above 0, at most {MAX_AMOUNT:g}, got {value:g}",
            )
    for i, gpu in enumerate(host.gpus or ()):
        if not 0 < gpu.memory_gb <= MAX_AMOUNT:
            raise where.error(
                f"{key}.gpus[{i}].memory_gb", f"expected GB above 0, got {gpu.memory_gb:g}"
            )
    if not 1 <= host.max_jobs <= MAX_JOBS:
        raise where.error(
            f"{key}.max_jobs", f"expected an integer from 1 to {MAX_JOBS:,}, got {host.max_jobs}"
        )
    for field in ("address", "user", "identity", "known_hosts", "workdir", "python"):
        value = getattr(host, field)
        if value is not None and not value.strip():
            raise where.error(f"{key}.{field}", "expected a value, got an empty string")
    if host.port is not None and not 0 < host.port < 65536:
        raise where.error(f"{key}.port", f"expected a TCP port 1-65535, got {host.port}")
    if host.kind == "ssh" and not host.address:
        raise where.error(
            f"{key}.address", "an ssh host needs `address` (a host name or ssh alias)"
        )
    if host.kind == "ssh" and host.workdir is None:
        raise where.error(
            f"{key}.workdir",
            'an ssh host needs `workdir`, the folder on it for runs, e.g. workdir = "~/runyard"',
        )
    _seconds(where, f"{key}.keepalive_s", host.keepalive_s, HOUR)
    _seconds(where, f"{key}.lost_after_s", host.lost_after_s, 30 * DAY)
    _check_data_map(where, key, host)
    if host.kind == "local":
        if host.data:
            raise where.error(f"{key}.data", "only ssh hosts map data; a local run links it")
        for field in ("address", "user", "port", "identity", "known_hosts"):
            if getattr(host, field) is not None:
                raise where.error(f"{key}.{field}", 'only ssh hosts take this key; kind is "local"')
    return host


def _convert(where: _Locator, key: str, value: Any, kind: type[T], **extra: Any) -> T:
    if not isinstance(value, dict):
        raise where.error(key, f"expected a table, got {_toml_type(value)}")
    try:
        return msgspec.convert({**value, **extra}, kind)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        sub = at.rstrip("`")
        unknown = re.search(r"unknown field `([^`]+)`", message)
        missing = re.search(r"missing required field `([^`]+)`", message)
        if unknown:
            allowed = ", ".join(_fields_at(kind, sub))
            raise where.error(
                f"{key}{sub}.{unknown.group(1)}", f"unknown key; expected one of: {allowed}"
            ) from None
        if missing:
            raise where.error(key + sub, f"missing required key `{missing.group(1)}`") from None
        if message.startswith("Invalid enum value"):
            choices = _choices_at(kind, sub)
            got = message.removeprefix("Invalid enum value ")
            raise where.error(key + sub, f"expected one of {choices}, got {got}") from None
        raise where.error(key + sub, _friendly(message)) from None


def _type_at(kind: Any, sub: str) -> Any:
    """The type found by walking a dotted path of field names through (optional) structs."""
    for name in [p for p in sub.split(".") if p and not p.startswith("[")]:
        kind = _struct_in(kind)
        if kind is None:
            return None
        field = next((f for f in msgspec.structs.fields(kind) if f.name == name), None)
        if field is None:
            return None
        kind = field.type
    return kind


def _struct_in(kind: Any) -> Any:
    """`kind` if it is a struct type, else the struct type inside an `X | None`."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind
    return next(
        (a for a in typing.get_args(kind) if isinstance(a, type) and issubclass(a, msgspec.Struct)),
        None,
    )


def _fields_at(kind: type, sub: str) -> list[str]:
    """The keys a (possibly nested) table accepts, for "expected one of" messages."""
    struct = _struct_in(_type_at(kind, sub))
    if struct is None:
        return []
    return [
        f.name
        for f in msgspec.structs.fields(struct)
        if not (struct is HostSpec and f.name == "name")
    ]


def _choices_at(kind: type, sub: str) -> str:
    return ", ".join(repr(v) for v in typing.get_args(_type_at(kind, sub)))


_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "bool": "a boolean",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
}


def _friendly(message: str) -> str:
    found = re.match(r"Expected `([^`]+)`, got `([^`]+)`(.*)", message)
    if not found:
        return message.replace("`", "")
    want, got, rest = found.groups()
    want = " or ".join(_TYPE_WORDS.get(w.strip(), w.strip()) for w in want.split("|"))
    return f"expected {want}, got {_TYPE_WORDS.get(got, got)}{rest.replace('`', '')}"


def _toml_type(value: Any) -> str:
    words = {list: "a list", str: "a string", int: "an integer", float: "a number"}
    return "a boolean" if isinstance(value, bool) else words.get(type(value), type(value).__name__)


class _Locator:
    """Finds the line a dotted key was written on, so messages can say file:line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        # Each table header's line and dotted key, quotes taken off (`[hosts."gpu-box"]`).
        self.headers: list[tuple[int, str]] = []
        for n, line in enumerate(self.lines):
            found = re.match(r"^\s*\[\[?(.+?)\]\]?\s*(#.*)?$", line)
            if found:
                parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^.\s]+)', found.group(1))
                self.headers.append((n, ".".join(a or b or c for a, b, c in parts)))

    def error(self, key: str, expected: str) -> ConfigError:
        key = key.lstrip(".")  # a top-level table's keys come with an empty prefix
        line = self.line_of(key)
        place = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{place}: {key}: {expected}")

    def line_of(self, key: str) -> int | None:
        parts = [p for p in re.split(r"\.(?![^\[]*\])", re.sub(r"\[\d+\]", "", key)) if p]
        index = re.findall(r"\[(\d+)\]", key)
        # Search for the deepest table header that is a prefix of the key, then the leaf below it.
        for cut in range(len(parts), 0, -1):
            header = ".".join(parts[:cut])
            hits = [n for n, found in self.headers if found == header]
            if hits and index and re.match(r"^\w+\[\d+\]", key):
                i = int(index[0])
                hits = hits[i : i + 1]
            if not hits:
                continue
            start = hits[0]
            if cut == len(parts):
                return start + 1
            leaf = parts[cut]
            for n in range(start + 1, len(self.lines)):
                text = self.lines[n]
                if re.match(r"^\s*\[", text):
                    break
                if re.match(rf"^\s*[\"']?{re.escape(leaf)}[\"']?\s*[.=]", text):
                    return n + 1
            return start + 1
        for n, text in enumerate(self.lines):
            if re.match(rf"^\s*{re.escape(parts[0])}\s*=", text) if parts else False:
                return n + 1
        return None


# --- experiment files ----------------------------------------------------------------------

MAX_TRIALS = 100_000  # runs in one sweep
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class MetricSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The metric a sweep is judged by: its name, which way is better, which value of each run
    counts (its `last`, the convention of Ray Tune and W&B, or its `best`), and the bounds it
    cannot leave (e.g. [0, 1] for accuracy; AUC-like names get those by default)."""

    name: str
    mode: Literal["min", "max"] = "max"
    summary: Literal["last", "best"] = "last"
    bounds: tuple[float, float] | None = None


class EarlyStop(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a sweep stops trials that fall behind: an Optuna pruner and its few settings."""

    method: Literal["asha", "hyperband", "median", "none"] = "none"
    min_steps: int | None = None  # asha/hyperband: the first rung; median: warm-up steps
    min_trials: int | None = None  # median: finished trials before anything is pruned
    reduction_factor: int | None = None  # asha/hyperband: keep 1 in this many at each rung


class SweepSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    method: Literal["grid", "random", "tpe"] = "grid"
    trials: int | None = None
    seeds: list[int] = msgspec.field(default_factory=lambda: [0])
    max_concurrent: int | None = None
    params: dict[str, Any] = {}
    early_stop: EarlyStop = EarlyStop()
    sampler_seed: int | None = None  # default: a fresh one per sweep, recorded


class ModelSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of several models an experiment launches together; unset fields come from the top."""

    name: str
    command: str
    model_type: str | None = None
    requires: list[str] | None = None
    tags: list[str] | None = None
    resources: Resources | None = None
    capture: str | list[str] | None = None
    params: dict[str, Any] = {}


class ExperimentSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    command: str | None = None
    models: list[ModelSection] = []
    model_type: str | None = None
    requires: list[str] = []
    tags: list[str] = []
    priority: int = 0
    resources: Resources = Resources()
    metric: MetricSection | None = None
    capture: str | list[str] = []
    sweep: SweepSection = SweepSection()
    retry: RetryPolicy = RetryPolicy()
    data: list[str] | dict[str, str] = []


class Param(msgspec.Struct, frozen=True):
    """One swept parameter: a list of values, or a range (`low`..`high`, optionally `log` or `step`)."""

    name: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def grid_size(self) -> int:
        """How many values a grid sweep takes, without making them."""
        if self.values is not None:
            return len(self.values)
        assert self.low is not None and self.high is not None and self.step is not None
        return int((self.high - self.low) / self.step + 1e-9) + 1

    def grid(self) -> tuple[Any, ...]:
        """Every value a grid sweep takes."""
        if self.values is not None:
            return self.values
        assert self.low is not None and self.high is not None and self.step is not None
        values = [self.low + i * self.step for i in range(self.grid_size())]
        return tuple(round(v) if self.integer else round(v, 12) for v in values)


class Model(msgspec.Struct, frozen=True):
    """What one command of an experiment runs and needs, and the parameters it sweeps."""

    name: str | None  # None for an experiment with a single command
    command: str
    argv: tuple[str, ...]  # the command split as a shell would, placeholders still in it
    model_type: str | None
    requires: tuple[str, ...]
    tags: tuple[str, ...]
    resources: Resources
    capture: tuple[str, ...]
    params: tuple[Param, ...]


class Experiment(msgspec.Struct, frozen=True):
    """An experiment file, validated: its models (one per command) and the sweep over them."""

    path: Path
    name: str
    models: tuple[Model, ...]
    priority: int
    metric: MetricSection | None
    method: str
    trials: int | None
    seeds: tuple[int, ...]
    max_concurrent: int | None
    early_stop: EarlyStop
    retry: RetryPolicy
    # Data each run sees in its work directory: (place, source) with place "" for "where the
    # source sits in the project"; resolved against the project when the sweep is submitted.
    data: tuple[tuple[str, str], ...] = ()
    sampler_seed: int | None = None


def experiment_json(experiment: Experiment) -> str:
    """An experiment as JSON, to be read back by `experiment_from_json` after a restart."""
    return msgspec.json.encode(experiment, enc_hook=str).decode()


def experiment_from_json(text: str) -> Experiment:
    return msgspec.json.decode(text, type=Experiment, dec_hook=_path_hook)


def _path_hook(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value)
    raise NotImplementedError(kind)


def load_experiment(
    path: str | os.PathLike[str], overrides: dict[str, str] | None = None
) -> Experiment:
    """Read and validate one experiment file; `overrides` (from --set KEY=VALUE) fix a parameter
    to a value or list, or set `trials`, `seeds`, `max_concurrent` or `method`."""
    path, text, raw = _read_toml(path)
    where = _Locator(path, text)
    if overrides:
        raw = _apply_overrides(path, raw, overrides)
    section = _convert(where, "", raw, ExperimentSection)
    if not EXPERIMENT_NAME.match(section.name):
        raise where.error("name", "letters, digits, '.', '_' or '-' (at most 63 characters)")
    sweep = section.sweep
    if section.command is None and not section.models:
        raise where.error("command", "expected a command, or [[models]] each with one")
    if section.command is not None and section.models:
        raise where.error("command", "give a top-level `command` or [[models]], not both")
    shared = {name: value for name, value in sweep.params.items()}
    if section.models:
        names = [m.name for m in section.models]
        for i, m in enumerate(section.models):
            if not EXPERIMENT_NAME.match(m.name) or m.name in names[:i]:
                raise where.error(
                    f"models[{i}].name", "a unique name of letters, digits, '.', '_' or '-'"
                )
        models = tuple(
            _model(where, f"models[{i}].", section, m, {**shared, **m.params}, sweep.method)
            for i, m in enumerate(section.models)
        )
    else:
        only = ModelSection(name="", command=section.command or "")
        models = (_model(where, "", section, only, shared, sweep.method),)
    if not sweep.seeds:
        raise where.error("sweep.seeds", "expected at least one seed")
    for i, seed in enumerate([*sweep.seeds, sweep.sampler_seed or 0]):
        if not 0 <= seed <= MAX_SEED:
            key = f"sweep.seeds[{i}]" if i < len(sweep.seeds) else "sweep.sampler_seed"
            raise where.error(key, f"expected a seed from 0 to {MAX_SEED}, got {seed}")
    if len(set(sweep.seeds)) < len(sweep.seeds):
        raise where.error("sweep.seeds", "a seed is listed twice")
    if sweep.max_concurrent is not None and not 1 <= sweep.max_concurrent <= MAX_PRIORITY:
        raise where.error("sweep.max_concurrent", f"expected 1 to {MAX_PRIORITY:,}")
    if sweep.trials is not None and not 1 <= sweep.trials <= MAX_TRIALS:
        raise where.error("sweep.trials", f"expected 1 to {MAX_TRIALS:,} trials")
    if sweep.method in ("random", "tpe") and sweep.trials is None:
        raise where.error("sweep.trials", f"a {sweep.method} sweep needs `trials`")
    if not -MAX_PRIORITY <= section.priority <= MAX_PRIORITY:
        raise where.error("priority", f"expected -{MAX_PRIORITY:,} to {MAX_PRIORITY:,}")
    for field, what in section.retry.problems():
        raise where.error(f"retry.{field}", what)
    if section.metric is not None and section.metric.bounds is not None:
        low, high = section.metric.bounds
        if not low < high:
            raise where.error(
                "metric.bounds", f"expected [low, high] with low < high, got {[low, high]}"
            )
    _check_early_stop(where, sweep.early_stop)
    runs = len(sweep.seeds) * sum(
        math.prod(p.grid_size() for p in m.params) if sweep.method == "grid" else sweep.trials or 0
        for m in models
    )
    if runs > MAX_TRIALS:
        raise where.error(
            "sweep.params" if sweep.method == "grid" else "sweep.trials",
            f"{runs:,} runs in one sweep; at most {MAX_TRIALS:,}",
        )
    if section.metric is None and sweep.method == "tpe":
        raise where.error("sweep.method", "tpe learns from a metric: set `metric`")
    if section.metric is None and sweep.early_stop.method != "none":
        raise where.error(
            "sweep.early_stop.method",
            f"{sweep.early_stop.method} compares a metric between trials: set `metric`",
        )
    return Experiment(
        path=path,
        name=section.name,
        models=models,
        priority=section.priority,
        metric=section.metric,
        method=sweep.method,
        trials=sweep.trials,
        seeds=tuple(sweep.seeds),
        max_concurrent=sweep.max_concurrent,
        early_stop=sweep.early_stop,
        retry=section.retry,
        data=_data(where, section.data),
        sampler_seed=sweep.sampler_seed,
    )


def _data(where: _Locator, raw: list[str] | dict[str, str]) -> tuple[tuple[str, str], ...]:
    """An experiment's `data`: a list of paths (each appears where it sits in the project), or
    a table of place = source (for data kept outside the project)."""
    pairs = [("", source) for source in raw] if isinstance(raw, list) else list(raw.items())
    out = []
    for i, (place, source) in enumerate(pairs):
        key = f"data[{i}]" if isinstance(raw, list) else f"data.{place}"
        if not source.strip():
            raise where.error(key, "expected a path, got an empty string")
        if place:
            try:
                place = data_place(place)
            except ValueError as exc:
                raise where.error(key, str(exc)) from None
        out.append((place, source))
    return tuple(out)


def data_place(text: str) -> str:
    """A data entry's place in a run's work directory, normalised (`data/corpus/` →
    `data/corpus`); raises ValueError for one that could reach outside it."""
    place = PurePosixPath(text.strip())
    if place.is_absolute() or not place.parts or ".." in place.parts or str(place) == ".":
        raise ValueError(f"expected a path inside the project such as 'data/corpus', got {text!r}")
    return str(place)


def _check_data_map(where: _Locator, key: str, host: HostSpec) -> None:
    for place, path in host.data.items():
        try:
            data_place(place)
        except ValueError as exc:
            raise where.error(f"{key}.data.{place}", str(exc)) from None
        if not path.strip():
            raise where.error(f"{key}.data.{place}", "expected the path on the host")


def _check_early_stop(where: _Locator, stop: EarlyStop) -> None:
    key = "sweep.early_stop."
    if stop.min_steps is not None and stop.min_steps < (0 if stop.method == "median" else 1):
        raise where.error(key + "min_steps", "expected 1 or more (0 or more for median)")
    if stop.min_trials is not None:
        if stop.method != "median":
            raise where.error(key + "min_trials", "applies to method = median only")
        if stop.min_trials < 0:
            raise where.error(key + "min_trials", "expected 0 or more")
    if stop.reduction_factor is not None:
        if stop.method not in ("asha", "hyperband"):
            raise where.error(key + "reduction_factor", "applies to asha and hyperband only")
        if stop.reduction_factor < 2:
            raise where.error(key + "reduction_factor", "expected 2 or more")
    if stop.method == "none" and stop.min_steps is not None:
        raise where.error(key + "min_steps", "applies only with an early-stopping method")


def _model(
    where: _Locator,
    prefix: str,
    top: ExperimentSection,
    model: ModelSection,
    raw_params: dict[str, Any],
    method: str,
) -> Model:
    """One model of an experiment, with the top-level fields it does not set itself."""
    key = f"{prefix}command"
    try:
        argv = tuple(shlex.split(model.command))
    except ValueError as exc:
        raise where.error(key, f"cannot be split into words: {exc}") from None
    if not argv:
        raise where.error(key, "expected a command, got nothing")
    in_model = set(model.params)
    params = tuple(
        _param(
            where, name, value, f"{prefix}params" if name in in_model and prefix else "sweep.params"
        )
        for name, value in raw_params.items()
    )
    known = {p.name for p in params} | {"seed", *RUNTIME_FIELDS}
    for word in argv:
        try:
            placeholders = template.fields(word)
        except template.TemplateError as exc:
            raise where.error(key, str(exc)) from None
        for name, _ in placeholders:
            if name not in known:
                raise where.error(
                    key,
                    f"unknown parameter {{{name}}}; params are {sorted(p.name for p in params)}"
                    f" (and {{seed}}, {', '.join('{' + f + '}' for f in RUNTIME_FIELDS)})",
                )
    if method == "grid":
        for p in params:
            if p.values is None and p.step is None:
                raise where.error(
                    f"sweep.params.{p.name}", "a grid needs a list, or a range with `step`"
                )
    resources = model.resources or top.resources
    for field, what in resources.problems():
        where_set = f"{prefix}resources" if model.resources is not None else "resources"
        raise where.error(f"{where_set}.{field}", what)
    capture_spec = model.capture if model.capture is not None else top.capture
    capture = (capture_spec,) if isinstance(capture_spec, str) else tuple(capture_spec)
    try:
        readers_for(capture)
    except CaptureError as exc:
        raise where.error(
            f"{prefix}capture" if model.capture is not None else "capture", str(exc)
        ) from None
    return Model(
        name=model.name or None,
        command=model.command,
        argv=argv,
        model_type=model.model_type or top.model_type,
        requires=tuple(model.requires if model.requires is not None else top.requires),
        tags=tuple(model.tags if model.tags is not None else top.tags),
        resources=resources,
        capture=capture,
        params=params,
    )


def _param(where: _Locator, name: str, value: Any, table: str = "sweep.params") -> Param:
    key = f"{table}.{name}"
    if isinstance(value, list):
        if not value:
            raise where.error(key, "empty list: give at least one value")
        return Param(name=name, values=tuple(value))
    if not isinstance(value, dict):
        return Param(name=name, values=(value,))  # one fixed value
    unknown = set(value) - {"low", "high", "log", "step"}
    if unknown:
        raise where.error(
            f"{key}.{sorted(unknown)[0]}", "unknown key; expected low, high, log, step"
        )
    for bound in ("low", "high"):
        if bound not in value:
            raise where.error(key, f"a range needs `{bound}`")
        if isinstance(value[bound], bool) or not isinstance(value[bound], int | float):
            raise where.error(
                f"{key}.{bound}", f"expected a number, got {_toml_type(value[bound])}"
            )
    low, high = value["low"], value["high"]
    if low > high:
        raise where.error(key, f"expected low ≤ high, got low = {low} and high = {high}")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise where.error(f"{key}.log", f"expected true or false, got {_toml_type(log)}")
    if log and low <= 0:
        raise where.error(key, f"a log range needs low > 0, got {low}")
    step = value.get("step")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int | float) or step <= 0
    ):
        raise where.error(f"{key}.step", "expected a number above 0")
    if step is not None and log:
        raise where.error(key, "a range takes `log` or `step`, not both")
    if step is not None and (high - low) / step >= MAX_TRIALS:
        raise where.error(
            f"{key}.step",
            f"about {(high - low) / step + 1:.3g} values; a grid takes at most {MAX_TRIALS:,}",
        )
    integer = all(isinstance(v, int) for v in (low, high)) and (
        step is None or isinstance(step, int)
    )
    return Param(name=name, low=low, high=high, log=log, step=step, integer=integer)


def _apply_overrides(path: Path, raw: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    raw = {**raw, "sweep": dict(raw.get("sweep", {}))}
    sweep = raw["sweep"]
    sweep["params"] = dict(sweep.get("params", {}))
    for key, text in overrides.items():
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word is a string
        in_models = [m for m in raw.get("models", []) if key in m.get("params", {})]
        if key in ("trials", "seeds", "max_concurrent", "method", "sampler_seed"):
            sweep[key] = value
        elif key in sweep["params"] or in_models:
            if key in sweep["params"]:
                sweep["params"][key] = value
            raw["models"] = [
                {**m, "params": {**m["params"], key: value}} if m in in_models else m
                for m in raw.get("models", [])
            ]
        else:
            raise ConfigError(
                f"{path}: --set {key}: not a parameter of this experiment; expected one of "
                f"{sorted(set(sweep['params']).union(*(m.get('params', {}) for m in raw.get('models', []))))}"
                " or trials, seeds, max_concurrent, method"
            )
    return raw
