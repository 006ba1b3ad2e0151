"""Reading hosts.toml into frozen, validated specs; every error names the file, key or line, and
what was expected."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from engine.model import HostSpec

CONFIG_NAME = "hosts.toml"
CONFIG_ENV = "RUNYARD_CONFIG"
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and what was expected."""


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
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_syntax_message(path, str(exc))) from None
    return _build(path, text, raw)


def _toml_syntax_message(path: Path, message: str) -> str:
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    place = f"{path}:{found.group(1)}:{found.group(2)}" if found else str(path)
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
    if engine.sample_interval_s <= 0:
        raise where.error("engine.sample_interval_s", "expected a number of seconds above 0")
    if engine.cancel_grace_s < 0:
        raise where.error("engine.cancel_grace_s", "expected a number of seconds, 0 or more")

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
        routes.append(
            Route(
                model_type=section.match.model_type,
                tags=tuple(section.match.tags),
                prefer=tuple(section.prefer),
                fallback=tuple(section.fallback),
                fallback_after_s=section.fallback_after_s,
            )
        )

    state_dir = Path(os.path.expandvars(engine.state_dir)).expanduser()
    if not state_dir.is_absolute():
        state_dir = path.parent / state_dir
    return Config(
        path=path,
        state_dir=state_dir.resolve(),
        sample_interval_s=engine.sample_interval_s,
        cancel_grace_s=engine.cancel_grace_s,
        hosts=hosts,
        routes=tuple(routes),
    )


def _check_host(where: _Locator, key: str, host: HostSpec) -> HostSpec:
    for field in ("cpus", "mem_gb"):
        value = getattr(host, field)
        if value is not None and value <= 0:
            raise where.error(f"{key}.{field}", f"expected a number above 0, got {value:g}")
    for i, gpu in enumerate(host.gpus or ()):
        if gpu.memory_gb <= 0:
            raise where.error(
                f"{key}.gpus[{i}].memory_gb", f"expected GB above 0, got {gpu.memory_gb:g}"
            )
    if host.max_jobs < 1:
        raise where.error(
            f"{key}.max_jobs", f"expected an integer of 1 or more, got {host.max_jobs}"
        )
    if host.port is not None and not 0 < host.port < 65536:
        raise where.error(f"{key}.port", f"expected a TCP port 1-65535, got {host.port}")
    if host.kind == "ssh" and not host.address:
        raise where.error(
            f"{key}.address", "an ssh host needs `address` (a host name or ssh alias)"
        )
    if host.kind == "local":
        for field in ("address", "user", "port", "identity"):
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


def _fields_at(kind: type, sub: str) -> list[str]:
    """The keys a (possibly nested) table accepts, for "expected one of" messages."""
    for name in [p for p in sub.split(".") if p]:
        field = next(f for f in msgspec.structs.fields(kind) if f.name == name)
        kind = field.type
    return [
        f.name for f in msgspec.structs.fields(kind) if f.name != "name" or kind is not HostSpec
    ]


def _choices_at(kind: type, sub: str) -> str:
    name = sub.rsplit(".", 1)[-1]
    field = next(f for f in msgspec.structs.fields(kind) if f.name == name)
    return ", ".join(repr(v) for v in getattr(field.type, "__args__", ()))


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

    def error(self, key: str, expected: str) -> ConfigError:
        line = self.line_of(key)
        place = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{place}: {key}: {expected}")

    def line_of(self, key: str) -> int | None:
        parts = [p for p in re.split(r"\.(?![^\[]*\])", re.sub(r"\[\d+\]", "", key)) if p]
        index = re.findall(r"\[(\d+)\]", key)
        # Search for the deepest table header that is a prefix of the key, then the leaf below it.
        for cut in range(len(parts), 0, -1):
            header = ".".join(parts[:cut])
            hits = [
                n
                for n, text in enumerate(self.lines)
                if re.match(rf"^\s*\[\[?\s*{re.escape(header)}\s*\]\]?\s*(#.*)?$", text)
            ]
            if key.startswith("routes[") and hits and index:
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
                if re.match(rf"^\s*\"?{re.escape(leaf)}\"?\s*=", text):
                    return n + 1
            return start + 1
        for n, text in enumerate(self.lines):
            if re.match(rf"^\s*{re.escape(parts[0])}\s*=", text) if parts else False:
                return n + 1
        return None
