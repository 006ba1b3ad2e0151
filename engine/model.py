"""Frozen value types shared by the engine, its clients and the TUI."""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

import msgspec


class RunStatus(enum.StrEnum):
    """Where a run is in its life cycle (DESIGN.md, Run life cycle)."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"
    LOST = "lost"
    UNREACHABLE = "unreachable"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.PRUNED,
        RunStatus.LOST,
    }
)
ACTIVE_STATUSES = frozenset(
    {RunStatus.ASSIGNED, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.UNREACHABLE}
)


# Bounds on numbers a user writes: beyond them a value is a mistake, and some would overflow
# the store's columns or the clock.
MAX_AMOUNT = 1e6  # CPUs, GB, GPUs a job asks for
MAX_ATTEMPTS = 100
MAX_BACKOFF_S = 7 * 86400.0
MAX_PRIORITY = 1_000_000
MAX_SEED = 2**32 - 1  # what numpy and Python's random accept alike


class FailureClass(enum.StrEnum):
    """Why a run failed, read from its exit code and log tail."""

    OOM = "oom"
    KILLED = "killed"
    HOST_LOST = "host_lost"
    ERROR = "error"
    PREEMPTED = "preempted"  # a cluster gave its place to other work (or requeued it)
    TIMEOUT = "timeout"  # a cluster ended it at its time limit
    DIVERGED = "diverged"  # the watchdog stopped it: a watched metric became NaN or infinite


FAILURE_CLASSES = [c.value for c in FailureClass]


class Resources(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one job asks of a host. Zero claims nothing (CPUs, memory); `gpus` with
    `gpu_mem_gb = 0` takes whole GPUs, with a size it shares a GPU while the sizes fit."""

    cpus: float = 0.0
    mem_gb: float = 0.0
    gpus: int = 0
    gpu_mem_gb: float = 0.0

    def problems(self) -> list[tuple[str, str]]:
        """What is out of range, as (field, what was expected); empty when all is well."""
        out = []
        for field in ("cpus", "mem_gb", "gpus", "gpu_mem_gb"):
            value = getattr(self, field)
            if not (0 <= value < MAX_AMOUNT):  # NaN fails this too
                out.append((field, f"expected a number from 0 to {MAX_AMOUNT:g}, got {value:g}"))
        return out


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which failure classes are retried, how often, and after how long (backoff_s, then
    multiplied by `factor` for each further attempt)."""

    attempts: int = 3
    backoff_s: float = 10.0
    factor: float = 2.0
    on: tuple[str, ...] = ("oom", "host_lost", "preempted")

    def delay(self, attempt: int) -> float:
        """The wait before attempt number `attempt + 1`, after `attempt` attempts."""
        return min(self.backoff_s * self.factor ** max(0, attempt - 1), MAX_BACKOFF_S)

    def problems(self) -> list[tuple[str, str]]:
        """What is out of range, as (field, what was expected); empty when all is well."""
        out = []
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            out.append(("attempts", f"expected 1 to {MAX_ATTEMPTS}, got {self.attempts}"))
        if not 0 <= self.backoff_s <= MAX_BACKOFF_S:
            out.append(
                ("backoff_s", f"expected 0 to {MAX_BACKOFF_S:g} seconds, got {self.backoff_s:g}")
            )
        if not 1 <= self.factor <= 100:
            out.append(("factor", f"expected a factor of 1 to 100, got {self.factor:g}"))
        for name in self.on:
            if name not in FAILURE_CLASSES:
                out.append(
                    ("on", f"unknown failure class {name!r}; expected some of {FAILURE_CLASSES}")
                )
        return out


class WatchPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the watchdog looks for in a running run: a watched metric that becomes NaN or
    infinite (flagged, or stopped as `diverged` with `on_nan = "stop"`), and silence for
    `stall_after_s` (flagged; None takes the host's setting)."""

    metrics: tuple[str, ...] = ()  # the metrics watched for NaN and infinity; empty: all
    on_nan: Literal["flag", "stop"] = "flag"
    stall_after_s: float | None = None

    def problems(self) -> list[tuple[str, str]]:
        """What is out of range, as (field, what was expected); empty when all is well."""
        out = []
        if self.on_nan not in ("flag", "stop"):
            out.append(("on_nan", f'expected "flag" or "stop", got {self.on_nan!r}'))
        if self.stall_after_s is not None and not 0 < self.stall_after_s <= MAX_BACKOFF_S:
            out.append(("stall_after_s", f"expected seconds above 0, at most {MAX_BACKOFF_S:g}"))
        return out


class DeclaredGpu(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A GPU written in hosts.toml rather than found by NVML (to reserve part of a machine, or
    to test scheduling where there is no GPU)."""

    memory_gb: float
    name: str = "declared GPU"


class DataLink(msgspec.Struct, frozen=True):
    """Data a run sees at `place` (a path relative to the project root of its work directory):
    `source`, a file or folder on the submitting machine that git does not carry."""

    place: str
    source: str


class HostSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One machine from hosts.toml, or a Slurm cluster. `cpus`, `mem_gb` and `gpus` override
    what is detected."""

    name: str
    kind: Literal["local", "ssh", "slurm"]
    max_jobs: int = 2  # slurm: how many of our jobs may be pending or running at once
    tags: tuple[str, ...] = ()
    workdir: str | None = None
    address: str | None = None
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None  # ssh: the known_hosts file (default: ~/.ssh/known_hosts)
    python: str = "python3"  # ssh: the interpreter that runs the telemetry probe
    setup: str | None = None
    keepalive_s: float = 1.0  # ssh: a hung link is noticed after about 3 of these
    lost_after_s: float = 300.0  # ssh: unreachable this long, its runs are retried elsewhere
    stall_after_s: float | None = None  # a run silent this long is flagged (unless it says)
    cpus: float | None = None
    mem_gb: float | None = None
    gpus: tuple[DeclaredGpu, ...] | None = None
    # Data this host already has: a project-relative place → a path on the host, used instead
    # of uploading what a run names under that place.
    data: dict[str, str] = {}
    # slurm: the login node reached over SSH (an address or ~/.ssh/config alias, with user,
    # port, identity and known_hosts as for ssh hosts); None when the daemon runs on it.
    login: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # the default time limit, as sbatch takes it ("4:00:00")
    sbatch_args: tuple[str, ...] = ()
    limit_signal: str = "USR1"  # sent to the run this long before its time limit
    limit_signal_s: int = 120
    poll_s: float = 5.0  # how often squeue and sinfo are asked
    # A job Slurm no longer knows that left no exit_code is waited for this long (slurmctld
    # restarting, a shared file system lagging) before its run is lost.
    forgotten_after_s: float = 120.0

    @property
    def ssh_address(self) -> str | None:
        """Where SSH connects for this host: an ssh host's address, a cluster's login node."""
        return self.login if self.kind == "slurm" else self.address

    @property
    def remote(self) -> bool:
        """Whether the daemon reaches this host over SSH."""
        return self.ssh_address is not None


class JobSpec(msgspec.Struct, frozen=True):
    """What a client asks the engine to run: a command, where it runs from, how to read it."""

    argv: tuple[str, ...]
    cwd: str
    name: str | None = None
    seed: int | None = None
    capture: tuple[str, ...] = ()
    env: dict[str, str] | None = None  # None: the submitter's environment (the client fills it in)
    host: str | None = None
    resources: Resources = Resources()
    priority: int = 0
    model_type: str | None = None  # for routes
    tags: tuple[str, ...] = ()  # for routes
    requires: tuple[str, ...] = ()  # tags a host must have
    sweep: str | None = None
    max_concurrent: int | None = None  # per sweep
    retry: RetryPolicy = RetryPolicy()
    fold: int | None = None  # of a sweep with cross-validation folds: which one (RUNYARD_FOLD)
    parent: int | None = None  # an evaluation run's trained run
    split: str | None = (
        None  # what an evaluation run scores: its metrics show on the parent as split/key
    )
    params: dict[str, Any] = {}  # a sweep trial's parameters (RUNYARD_PARAMS)
    trial: tuple[int, int] | None = None  # a sweep trial's (model, configuration) numbers
    watch: WatchPolicy = WatchPolicy()
    data: tuple[DataLink, ...] = ()  # data linked into each attempt's work directory
    snapshot: bool = False  # run from a snapshot of the project's code, as sweep trials do
    templated: bool = False  # argv still holds {run_id}, {attempt}, … to fill in at start
    # Queue it even where no host could ever run it (it waits, saying why, for a host that
    # can: one added to hosts.toml, a GPU installed); otherwise such a job is refused.
    wait_for_host: bool = False

    def problems(self) -> list[tuple[str, str]]:
        """What no host could run as given, as (field, what was expected): a NUL byte in any
        text (no argv or environment can hold one), an environment name no shell takes, and
        numbers out of range. Empty when all is well."""
        out = []
        try:
            nul = _NUL in msgspec.json.encode(self)
        except UnicodeEncodeError:  # not UTF-8 text (the client refuses it): look everywhere
            nul = True
        if nul:
            out += [
                (field, "holds a NUL byte, which no command line or environment can carry")
                for field in _fields_with_nul(msgspec.to_builtins(self))
            ]
        for name in self.env or {}:
            if not name or "=" in name:
                out.append(
                    (f"env.{name}", "an environment variable's name is not empty and has no '='")
                )
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            out.append(("seed", f"expected a seed from 0 to {MAX_SEED}, got {self.seed}"))
        if not -MAX_PRIORITY <= self.priority <= MAX_PRIORITY:
            out.append(
                ("priority", f"expected -{MAX_PRIORITY:,} to {MAX_PRIORITY:,}, got {self.priority}")
            )
        if self.max_concurrent is not None and not 1 <= self.max_concurrent <= MAX_PRIORITY:
            out.append(
                ("max_concurrent", f"expected 1 to {MAX_PRIORITY:,}, got {self.max_concurrent}")
            )
        out += [(f"resources.{k}", v) for k, v in self.resources.problems()]
        out += [(f"retry.{k}", v) for k, v in self.retry.problems()]
        out += [(f"watch.{k}", v) for k, v in self.watch.problems()]
        return out


class Route(msgspec.Struct, frozen=True):
    """A routing rule: jobs matching its model type and tags go to `prefer` hosts, else to `fallback` hosts."""

    model_type: str | None
    tags: tuple[str, ...]
    prefer: tuple[str, ...]
    fallback: tuple[str, ...]
    fallback_after_s: float | None


class Run(msgspec.Struct, frozen=True):
    """A run as the store records it."""

    id: int
    name: str
    status: RunStatus
    argv: tuple[str, ...]
    cwd: str
    seed: int
    capture: tuple[str, ...]
    created_at: float
    host: str | None = None
    requested_host: str | None = None
    attempt: int = 0
    pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    failure_class: FailureClass | None = None
    reason: str | None = None
    run_dir: str | None = None
    priority: int = 0
    held: bool = False
    gpus: tuple[int, ...] = ()
    resources: Resources = Resources()
    model_type: str | None = None
    tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    sweep: str | None = None
    max_concurrent: int | None = None
    retry: RetryPolicy = RetryPolicy()
    queued_at: float | None = None
    not_before: float = 0.0
    params: dict[str, Any] = {}
    trial: tuple[int, int] | None = None
    data: tuple[DataLink, ...] = ()
    templated: bool = False
    fold: int | None = None
    parent: int | None = None
    split: str | None = None
    watch: WatchPolicy = WatchPolicy()
    flag: str | None = None  # what the watchdog saw ("loss is NaN at step 812"), if anything

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds the run has run: to its end, or to `now` while it runs."""
        if self.started_at is None:
            return None
        return (self.ended_at or (now if now is not None else time.time())) - self.started_at


class RunQuery(msgspec.Struct, frozen=True):
    """A window onto the runs, filtered and sorted by the store: what a table shows."""

    statuses: tuple[str, ...] = ()
    equals: tuple[tuple[str, str], ...] = ()  # (host | sweep | model_type, value)
    metric_filters: tuple[tuple[str, str, float], ...] = ()  # (key, > < >= <= =, value)
    text: tuple[str, ...] = ()  # in the name, command or reason
    # A filter with `or`, `not` or groups: a condition on the runs row `r` that the daemon's
    # filter compiler made (its values all in `where_args`), never a client's text.
    where: str | None = None
    where_args: tuple[Any, ...] = ()
    sort: str = "id"  # id name status host created started duration sweep family, or metric:KEY
    descending: bool = True
    offset: int = 0
    limit: int = 100


SPARK_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], scale: float) -> str:
    """One bar per value, from ▁ (0) to █ (`scale` or more); a blank for a missing value.
    The scale is fixed by the caller (100 for percentages): a scale taken from the values
    themselves would draw 3% as a full bar."""
    return "".join(
        " " if v is None else SPARK_BARS[min(7, int(max(0.0, v) / scale * 8))] for v in values
    )


DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?"
)


def seconds_of(value: Any) -> float | None:
    """A duration written "2h", "1h30m", "90m", "45s" or "1d", or as seconds (a number, or
    a number's text): in seconds; None for anything else or a duration not above 0."""
    if isinstance(value, str):
        found = DURATION.fullmatch(value.strip())
        if found and any(found.groups()):
            days, hours, minutes, seconds = (float(g or 0) for g in found.groups())
            value = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        else:
            try:
                value = float(value)
            except ValueError:
                return None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < 1e9 else None


def format_value(value: float | None, digits: int = 4) -> str:
    """A metric value to `digits` significant digits; "nan" for one JSON could not carry (a
    NaN or infinity is sent as null)."""
    return "nan" if value is None else f"{value:.{digits}g}"


def format_duration(seconds: float | None) -> str:
    """A short human duration: 4.2s, 3m07s, 2h05m; "-" for none."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"


class Sweep(msgspec.Struct, frozen=True):
    """A sweep as the store records it, with its runs counted by status."""

    id: str
    name: str
    file: str
    method: str
    trials: int
    snapshot: str | None
    created_at: float
    metric: dict[str, Any] | None = None
    counts: dict[str, int] = {}
    sampler_seed: int | None = None  # what its sampler drew from (random and tpe sweeps)
    going: bool | None = None  # in a wait's answer: runs unfinished or trials still to sample
    smoke: bool = False  # a smoke test's: one short trial per model, left out of results


class GpuProcess(msgspec.Struct, frozen=True, array_like=True):
    """A process holding GPU memory: its pid, the MB it holds, and its process group (a run's
    is its wrapper's pid, so the process is known as the run's)."""

    pid: int
    mem_mb: float
    group: int | None = None


class GpuSample(msgspec.Struct, frozen=True):
    """One GPU as NVML saw it at one moment."""

    index: int
    name: str
    mem_used_mb: float
    mem_total_mb: float
    util_percent: float
    temperature_c: float | None = None
    power_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()  # where NVML (or nvidia-smi) tells


class ClusterSample(msgspec.Struct, frozen=True):
    """A Slurm host at one moment: its partition's nodes by state, their GPUs, and our jobs."""

    nodes_idle: int = 0
    nodes_mixed: int = 0
    nodes_allocated: int = 0
    nodes_down: int = 0
    nodes_other: int = 0
    gpus_total: int = 0
    gpus_used: int = 0
    cpus_total: int = 0
    cpus_used: int = 0
    jobs_pending: int = 0  # ours
    jobs_running: int = 0
    oldest_pending_reason: str | None = None
    error: str | None = None  # why squeue or sinfo did not answer

    def nodes(self) -> str:
        """The partition's nodes by state: "3 idle, 1 mixed, 4 allocated, 1 down"."""
        counts = (
            (self.nodes_idle, "idle"),
            (self.nodes_mixed, "mixed"),
            (self.nodes_allocated, "allocated"),
            (self.nodes_down, "down"),
            (self.nodes_other, "other"),
        )
        return ", ".join(f"{n} {what}" for n, what in counts if n or what != "other")

    def ours(self) -> str:
        """Our jobs there: "2 running, 5 pending (oldest: Resources)"."""
        oldest = f" (oldest: {self.oldest_pending_reason})" if self.oldest_pending_reason else ""
        return f"{self.jobs_running} running, {self.jobs_pending} pending{oldest}"


class HostSample(msgspec.Struct, frozen=True):
    """One host's load at one moment: CPU per core, memory, and every GPU; for a cluster, its
    partition (`cluster`) instead."""

    host: str
    time: float
    cpu_percent: float
    cpu_per_core: tuple[float, ...]
    mem_used_mb: float
    mem_total_mb: float
    load_avg: tuple[float, float, float] | None = None
    gpus: tuple[GpuSample, ...] = ()
    gpu_error: str | None = None
    cluster: ClusterSample | None = None


_S = RunStatus
LEGAL_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    _S.QUEUED: frozenset({_S.ASSIGNED, _S.CANCELLED}),
    _S.ASSIGNED: frozenset({_S.STARTING, _S.QUEUED, _S.CANCELLED, _S.LOST}),
    # STARTING → QUEUED: an attempt that failed in a cluster's queue is retried.
    _S.STARTING: frozenset(
        {_S.RUNNING, _S.FAILED, _S.CANCELLED, _S.LOST, _S.UNREACHABLE, _S.QUEUED}
    ),
    # RUNNING/UNREACHABLE → QUEUED: the attempt failed and the retry policy queues another.
    _S.RUNNING: frozenset(
        {_S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.PRUNED, _S.LOST, _S.UNREACHABLE, _S.QUEUED}
    ),
    _S.UNREACHABLE: frozenset(
        {_S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.LOST, _S.QUEUED}
    ),
    # A run retried by hand is a new attempt of the same run, queued again with its reason.
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.LOST: frozenset({_S.QUEUED}),
    _S.SUCCEEDED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.PRUNED: frozenset(),
}


_NUL = b"\\u0000"  # how JSON writes a NUL: its absence from a job's JSON rules one out at once


def _fields_with_nul(value: Any, at: str = "") -> list[str]:
    """The dotted places in a JSON-like value whose text (or key) holds a NUL byte."""
    if isinstance(value, str):
        return [at or "value"] if "\0" in value else []
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            place = f"{at}.{key}" if at else str(key)
            if "\0" in str(key):
                out.append(place)
            out += _fields_with_nul(item, place)
        return out
    if isinstance(value, list | tuple):
        return [f for i, v in enumerate(value) for f in _fields_with_nul(v, f"{at}[{i}]")]
    return []


def can_transition(old: RunStatus, new: RunStatus) -> bool:
    """Whether the life cycle allows a run to go from `old` to `new`."""
    return new in LEGAL_TRANSITIONS[old]


# What a job asks for and a run keeps of it, under the same names in both. (`host` is
# not: a job's is the host it asks for, a run's the host it ran on.)
_JOB_FIELDS_IN_RUN = (frozenset(JobSpec.__struct_fields__) & frozenset(Run.__struct_fields__)) - {
    "name",
    "seed",
    "host",
}


def queued_run(job: JobSpec, run_id: int, name: str, seed: int, now: float) -> Run:
    """The run a submitted job becomes: queued now, with everything the job asked for."""
    return Run(
        id=run_id,
        name=name,
        status=RunStatus.QUEUED,
        seed=seed,
        created_at=now,
        queued_at=now,
        requested_host=job.host,
        **{f: getattr(job, f) for f in _JOB_FIELDS_IN_RUN},
    )


def job_again(run: Run, env: dict[str, str], name: str) -> JobSpec:
    """A job asking for what `run` asked for again (outside any sweep), with its seed."""
    fields = {f: getattr(run, f) for f in _JOB_FIELDS_IN_RUN} | {
        "sweep": None,
        "max_concurrent": None,
        "trial": None,
    }
    return JobSpec(name=name, seed=run.seed, env=env, host=run.requested_host, **fields)
