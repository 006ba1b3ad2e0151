"""The daemon's HTTP+JSON API types, its event stream, and the protocol version."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.model import HostSample, JobSpec, Run, RunStatus, Sweep, format_duration

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
    aliases: dict[int, list[str]] = {}  # the aliases naming runs of the window


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
    smoke: bool = False  # its smoke test instead: one trial per model with [smoke]'s values
    wait_for_host: bool = False  # queue trials no host could ever run (they wait, saying why)


class HostEstimate(msgspec.Struct, frozen=True):
    """How long a sweep's trials on one host should take, from the median duration of earlier
    succeeded runs of the same experiment and model (there, else on any host): compute is the
    sum of the trials' durations, wall time the waves of `slots` trials at once. No estimate
    (None) without history for a model that goes there."""

    host: str
    trials: int
    slots: int
    history: int  # earlier runs it is from
    compute_s: float | None = None
    wall_s: float | None = None
    elsewhere: bool = False  # some of those runs were on other hosts
    evaluations: int = 0  # evaluation runs after training counted in (each trial's, the best's)

    def text(self) -> str:
        """E.g. "24 trials ≈ 18m00s on local with 2 slots (36m00s of compute), from 12
        earlier runs"."""
        if self.wall_s is None or self.compute_s is None:
            evaluations = f" and {self.evaluations} evaluations" if self.evaluations else ""
            return f"{self.trials} trials{evaluations} on {self.host}: no history to estimate from"
        evaluations = f" and {self.evaluations} evaluations" if self.evaluations else ""
        return (
            f"{self.trials} trials{evaluations} ≈ {format_duration(self.wall_s)} on {self.host} with"
            f" {self.slots} slot{'s' if self.slots != 1 else ''}"
            f" ({format_duration(self.compute_s)} of compute), from {self.history} earlier"
            f" run{'s' if self.history != 1 else ''}"
            + (" (some on other hosts)" if self.elsewhere else "")
        )


class SweepPlan(msgspec.Struct, frozen=True):
    """What a sweep submission did, or would do: its id, trial count, the first trials and
    where they go; the project's files not committed; a dry run's estimate per host."""

    sweep: str | None
    trials: int
    first: list[JobSpec]
    where: str
    runs: list[Run]
    sees: list[str] = []  # a dry run: what each run's work directory holds
    warnings: list[str] = []  # a dry run: ignored files no run will see
    uncommitted: list[str] = []  # git status lines: " M train.py", "?? new.py"
    commit: str | None = None  # the project's HEAD
    estimate: list[HostEstimate] = []  # a dry run: per host the trials go to
    metric: str | None = None  # the experiment's
    shape: str = ""  # e.g. "6 configurations (a baseline and 5 ablations) x 3 folds x 4 seeds"


class SmokeRun(msgspec.Struct, frozen=True):
    """One run of a smoke test, judged: it passed when it succeeded and reported the
    experiment's metric; else why not, and the end of its log."""

    run: Run
    passed: bool
    why: str
    tail: str = ""


class SmokeReport(msgspec.Struct, frozen=True):
    """A smoke test's sweep and its runs, judged; the full sweep once every run passed."""

    sweep: str
    runs: list[SmokeRun]
    full: SweepPlan | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.runs)


class SweepList(msgspec.Struct, frozen=True):
    sweeps: list[Sweep]


class ErrorBody(msgspec.Struct, frozen=True):
    error: str


class Subscribe(msgspec.Struct, frozen=True):
    """Sent by a client on the event stream: which runs' log lines it wants (others get none)."""

    logs: list[int] = []


# --- events -------------------------------------------------------------------------------


ALIAS_MOVED = "alias moved"  # a RunChanged's reason when only the run's aliases changed


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
