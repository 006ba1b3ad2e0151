"""The daemon's HTTP+JSON API types, its event stream, and the protocol version."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.model import HostSample, JobSpec, Run, RunStatus, Sweep

PROTOCOL_VERSION = 1
API = "/v1"


class DaemonStatus(msgspec.Struct, frozen=True):
    protocol: int
    version: str
    pid: int
    state_dir: str
    config: str
    started_at: float


class SubmitRequest(msgspec.Struct, frozen=True):
    """Jobs to queue; `env` is the environment of each job that has none of its own, sent once
    rather than with each of 10,000 jobs."""

    jobs: list[JobSpec]
    env: dict[str, str] | None = None


class RunPage(msgspec.Struct, frozen=True):
    """One window of the runs table: how many runs match the query, those in the window, each
    one's metric summaries (count, last, step, min, max per key), and the metric (name and
    mode) of each sweep among them."""

    total: int
    offset: int
    runs: list[Run]
    metrics: dict[int, dict[str, dict[str, Any]]]
    sweep_metrics: dict[str, dict[str, str]]


class RunList(msgspec.Struct, frozen=True):
    runs: list[Run]


class RunDetail(msgspec.Struct, frozen=True):
    """A run with what `engine show` tells: manifest, attempts, events, metric keys, bad markers."""

    run: Run
    details: dict


class GpuCapacity(msgspec.Struct, frozen=True):
    """A GPU as the scheduler counts it: size, free memory (NVML or declared), reservations, and
    the active runs the engine placed on it."""

    index: int
    total_mb: float
    free_mb: float
    reserved_mb: float
    runs: tuple[int, ...] = ()


class HostState(msgspec.Struct, frozen=True):
    name: str
    kind: str
    state: str  # up | unreachable | disabled
    reason: str | None
    max_jobs: int
    active: int
    tags: tuple[str, ...]
    sample: HostSample | None = None
    gpus: tuple[GpuCapacity, ...] = ()
    since: float | None = None  # when an SSH host went up or unreachable


class HostList(msgspec.Struct, frozen=True):
    hosts: list[HostState]


class QueueEntry(msgspec.Struct, frozen=True):
    run: Run
    reason: str  # "would start: …" or "waits: …", "held", "retry backoff: …"


class QueueView(msgspec.Struct, frozen=True):
    entries: list[QueueEntry]  # the first `limit` queued runs, in planning order
    total: int = 0  # how many runs are queued in all


class SweepRequest(msgspec.Struct, frozen=True):
    """Launch (or, with dry_run, preview) a sweep of an experiment file."""

    file: str
    cwd: str
    overrides: dict[str, str] = {}
    env: dict[str, str] | None = None
    dry_run: bool = False


class SweepPlan(msgspec.Struct, frozen=True):
    """What a sweep submission did, or would do: its id, trial count, the first trials and
    where they go."""

    sweep: str | None
    trials: int
    first: list[JobSpec]
    where: str
    runs: list[Run]
    sees: list[str] = []  # a dry run: what each run's work directory holds
    warnings: list[str] = []  # a dry run: ignored files no run will see


class SweepList(msgspec.Struct, frozen=True):
    sweeps: list[Sweep]


class ErrorBody(msgspec.Struct, frozen=True):
    error: str


class Subscribe(msgspec.Struct, frozen=True):
    """Sent by a client on the event stream: which runs' log lines it wants (others get none)."""

    logs: list[int] = []


# --- events -------------------------------------------------------------------------------


class RunChanged(msgspec.Struct, frozen=True, tag="run"):
    run: Run
    previous: RunStatus | None
    reason: str


class MetricsAdded(msgspec.Struct, frozen=True, tag="metrics"):
    """New points of one run; `points` holds at most the newest few hundred, `count` all of them."""

    run_id: int
    count: int
    points: list[tuple[str, int | None, float, int]]  # key, step, value, line


class LogLines(msgspec.Struct, frozen=True, tag="log"):
    """New output lines of a subscribed run, read from byte `start` to `end` of its output.log;
    `skipped` lines at the front were left out to keep the event bounded."""

    run_id: int
    attempt: int
    start: int
    end: int
    lines: list[str]
    skipped: int = 0


class SampleTaken(msgspec.Struct, frozen=True, tag="sample"):
    sample: HostSample


class HostChanged(msgspec.Struct, frozen=True, tag="host"):
    """A host went up, unreachable (with why) or disabled, and since when."""

    host: str
    state: str
    reason: str | None
    since: float | None = None


class EventsDropped(msgspec.Struct, frozen=True, tag="dropped"):
    """The client read too slowly and `count` events were dropped; it should re-fetch state."""

    count: int


Event = RunChanged | MetricsAdded | LogLines | SampleTaken | HostChanged | EventsDropped
ENCODER = msgspec.json.Encoder()
