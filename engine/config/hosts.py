"""hosts.toml: the engine's settings, the hosts by name and the routes, read into frozen,
validated specs."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from engine.config.toml import Locator, convert, duration_s, read_toml
from engine.model import MAX_AMOUNT, HostSpec, Route

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class EngineSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state_dir: str = "runs"
    sample_interval_s: float = 1.0
    cancel_grace_s: float = 10.0
    confirm_over: str | float | None = None  # ask before launching a sweep estimated longer
    # A command of the user's run with one JSON event on stdin for what a person should hear
    # of (a run failed or was flagged, a sweep finished, a host left or came back): a string
    # split as a shell would (never run by one), or a list of words.
    notify: str | list[str] | None = None
    notify_timeout_s: float = 10.0


class RouteMatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model_type: str | None = None
    tags: list[str] = []


class RouteSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    match: RouteMatch
    prefer: list[str] = []
    fallback: list[str] = []
    fallback_after_s: float | None = None


class Config(msgspec.Struct, frozen=True):
    """A whole hosts.toml: where state lives, the hosts by name, and the routes in order."""

    path: Path
    state_dir: Path
    sample_interval_s: float
    cancel_grace_s: float
    hosts: dict[str, HostSpec]
    routes: tuple[Route, ...] = ()
    confirm_over_s: float | None = None
    notify: tuple[str, ...] = ()  # the notifier's argv; empty: none
    notify_timeout_s: float = 10.0

    @property
    def project_dir(self) -> Path:
        return self.path.parent


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate one hosts.toml."""
    path, text, raw = read_toml(path)
    return _build(path, text, raw)


def _build(path: Path, text: str, raw: dict[str, Any]) -> Config:
    where = Locator(path, text)
    unknown = sorted(set(raw) - {"engine", "hosts", "routes"})
    if unknown:
        raise where.error(
            unknown[0], "unknown top-level key; expected one of [engine], [hosts.NAME], [[routes]]"
        )
    engine = convert(where, "engine", raw.get("engine", {}), EngineSection)
    _seconds(where, "engine.sample_interval_s", engine.sample_interval_s, HOUR)
    _seconds(where, "engine.cancel_grace_s", engine.cancel_grace_s, DAY, zero=True)
    _seconds(where, "engine.notify_timeout_s", engine.notify_timeout_s, HOUR)
    notify = _notify_argv(where, engine.notify)

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
        host = convert(where, key, table, HostSpec, name=name)
        if host.kind == "slurm" and "lost_after_s" not in table:
            # A cluster's jobs run on whatever becomes of the link to it: its runs are waited
            # for while the laptop sleeps, not given up after minutes.
            host = msgspec.structs.replace(host, lost_after_s=CLUSTER_LOST_AFTER_S)
        hosts[name] = _check_host(where, key, host)

    routes_raw = raw.get("routes", [])
    if not isinstance(routes_raw, list):
        raise where.error("routes", "expected an array of tables [[routes]]")
    routes = []
    for i, table in enumerate(routes_raw):
        key = f"routes[{i}]"
        section = convert(where, key, table, RouteSection)
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
        confirm_over_s=None
        if engine.confirm_over is None
        else duration_s(where, "engine.confirm_over", engine.confirm_over),
        hosts=hosts,
        routes=tuple(routes),
        notify=notify,
        notify_timeout_s=engine.notify_timeout_s,
    )


def _notify_argv(where: Locator, value: str | list[str] | None) -> tuple[str, ...]:
    """The notifier's words: a string split as a shell would split it (quotes kept together),
    or a list given word by word; never handed to a shell."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise where.error("engine.notify", f"cannot split it into words: {exc}") from None
    else:
        words = list(value)
    if not words or not words[0].strip():
        raise where.error(
            "engine.notify", 'expected a command, e.g. notify = "notify-send Runyard" or a list'
        )
    return tuple(words)


HOUR = 3600.0
DAY = 86400.0
CLUSTER_LOST_AFTER_S = 7 * DAY
MAX_JOBS = 10_000


def _seconds(where: Locator, key: str, value: float, most: float, zero: bool = False) -> None:
    """A duration setting: above 0 (or 0 too) and at most `most` seconds."""
    if not ((value >= 0 if zero else value > 0) and value <= most):
        low = "0" if zero else "above 0"
        raise where.error(key, f"expected seconds from {low} to {most:g}, got {value:g}")


def _state_dir(where: Locator, text: str) -> Path:
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


def _check_host(where: Locator, key: str, host: HostSpec) -> HostSpec:
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
    if host.stall_after_s is not None:
        _seconds(where, f"{key}.stall_after_s", host.stall_after_s, 30 * DAY)
    _check_data_map(where, key, host)
    if host.kind == "local":
        if host.data:
            raise where.error(f"{key}.data", "only ssh hosts map data; a local run links it")
        for field in ("address", "user", "port", "identity", "known_hosts"):
            if getattr(host, field) is not None:
                raise where.error(f"{key}.{field}", 'only ssh hosts take this key; kind is "local"')
    if host.kind == "slurm":
        _check_slurm(where, key, host)
    else:
        for field in SLURM_ONLY:
            if getattr(host, field) != getattr(_SLURM_DEFAULTS, field):
                raise where.error(
                    f"{key}.{field}", f'only slurm hosts take this key; kind is "{host.kind}"'
                )
    return host


SLURM_ONLY = (
    "login",
    "partition",
    "account",
    "qos",
    "time",
    "sbatch_args",
    "limit_signal",
    "limit_signal_s",
    "poll_s",
    "forgotten_after_s",
)
_SLURM_DEFAULTS = HostSpec(name="-", kind="slurm")
# sbatch's time formats: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_SLURM_TIME = re.compile(r"^(\d+-\d{1,2}(:\d{1,2}){0,2}|\d+(:\d{1,2}){0,2})$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "CONT", "QUIT", "ALRM")


def _check_slurm(where: Locator, key: str, host: HostSpec) -> None:
    """A Slurm cluster: reached over SSH to `login` (or this machine), with run folders on the
    cluster's shared file system, and sbatch's own values well-formed."""
    if host.address is not None:
        raise where.error(
            f"{key}.address", "a slurm host is reached through `login` (its login node)"
        )
    if host.login is not None and not host.login.strip():
        raise where.error(f"{key}.login", "expected the login node's address or ssh alias")
    if host.login is None:
        for field in ("user", "port", "identity", "known_hosts"):
            if getattr(host, field) is not None:
                raise where.error(
                    f"{key}.{field}",
                    "only a slurm host with `login` (reached over SSH) takes this key",
                )
    if host.workdir is None:
        raise where.error(
            f"{key}.workdir",
            "a slurm host needs `workdir`, a folder on the cluster's shared file system that its "
            'nodes see, e.g. workdir = "~/runyard" or "/scratch/me/runyard"',
        )
    for field in ("partition", "account", "qos"):
        value = getattr(host, field)
        if value is not None and not _SLURM_NAME.match(value):
            raise where.error(
                f"{key}.{field}", f"expected a Slurm name (letters, digits, _.+-), got {value!r}"
            )
    if host.time is not None and not _SLURM_TIME.match(host.time):
        raise where.error(
            f"{key}.time",
            f'expected a time limit as sbatch takes it ("90", "4:00:00", "2-00:00:00"), got {host.time!r}',
        )
    if host.limit_signal.upper().removeprefix("SIG") not in _SIGNALS:
        raise where.error(
            f"{key}.limit_signal",
            f"expected one of {', '.join(_SIGNALS)}, got {host.limit_signal!r}",
        )
    if not 0 <= host.limit_signal_s <= 65535:
        raise where.error(
            f"{key}.limit_signal_s", f"expected seconds from 0 to 65535, got {host.limit_signal_s}"
        )
    for i, arg in enumerate(host.sbatch_args):
        if not arg.startswith("-") or "\n" in arg:
            raise where.error(
                f"{key}.sbatch_args[{i}]",
                f'expected an sbatch option such as "--constraint=a100", got {arg!r}',
            )
    _seconds(where, f"{key}.poll_s", host.poll_s, HOUR)
    _seconds(where, f"{key}.forgotten_after_s", host.forgotten_after_s, 30 * DAY)
    if host.gpus is not None:
        raise where.error(f"{key}.gpus", "Slurm places GPUs on a cluster; ask for them per job")


def data_place(text: str) -> str:
    """A data entry's place in a run's work directory, normalised (`data/corpus/` →
    `data/corpus`); raises ValueError for one that could reach outside it."""
    place = PurePosixPath(text.strip())
    if place.is_absolute() or not place.parts or ".." in place.parts or str(place) == ".":
        raise ValueError(f"expected a path inside the project such as 'data/corpus', got {text!r}")
    return str(place)


def _check_data_map(where: Locator, key: str, host: HostSpec) -> None:
    for place, path in host.data.items():
        try:
            data_place(place)
        except ValueError as exc:
            raise where.error(f"{key}.data.{place}", str(exc)) from None
        if not path.strip():
            raise where.error(f"{key}.data.{place}", "expected the path on the host")
