"""The executor interface: start, watch, read output from an offset, and kill one run attempt."""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path, PurePath
from typing import TypeVar

import msgspec

from engine.executors import layout
from engine.executors.layout import work_dir
from engine.executors.watch import OutputWatch
from engine.model import DataLink, FailureClass, HostSpec, Resources

_T = TypeVar("_T")


class HostUnreachable(Exception):
    """The host cannot be reached now; the message says why. Its runs are waited for."""


class Launch(msgspec.Struct, frozen=True):
    """Everything needed to start one attempt of a run on a host. With a `snapshot` (a code
    snapshot's folder on this machine) the attempt runs in its own work directory made from it,
    `cwd` is relative to that, and `data` is linked in; without, it runs in `cwd` itself."""

    run_id: int
    attempt: int
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    attempt_dir: str
    snapshot: str | None = None
    data: tuple[DataLink, ...] = ()
    resources: Resources = Resources()  # what a cluster is asked for
    max_concurrent: int | None = None  # the sweep's cap, for a cluster's job array


def wrapper_args(
    attempt_dir: str,
    cwd: str,
    snapshot: str | None = None,
    links: Sequence[tuple[str, str]] = (),
    forward: str | None = None,
) -> list[str]:
    """The wrapper's arguments before `--` and the command: copy `snapshot` into the attempt's
    work directory, link each (source, place) into it, start in `cwd` (relative to the work
    directory when there is a snapshot), and pass the signal `forward` on to the command."""
    args = [attempt_dir] + (["--forward", forward] if forward else [])
    if snapshot is None:
        return [*args, "--cd", cwd, "--"]
    work = work_dir(attempt_dir)
    args += ["--copy", snapshot, work]
    for source, place in links:
        args += ["--link", source, place]
    start = f"{work}/{cwd}" if cwd not in ("", ".") else work
    return [*args, "--cd", start, "--"]


class Attempt(msgspec.Struct, frozen=True):
    """A started attempt: its wrapper's pid (also its process group) and that process's start
    time; on a cluster, its batch job ("123", or "123_4" for an array task), and pid 0 until
    the job runs."""

    attempt_dir: str
    pid: int
    start_time: float | None
    batch_job: str | None = None


class ExitInfo(msgspec.Struct, frozen=True):
    """How an attempt ended: the command's exit code from the `exit_code` file, or, when the
    wrapper itself died before writing it, the signal that killed the wrapper (if known); and
    when the file was written, by the host's clock (the end, however late it is read)."""

    exit_code: int | None
    wrapper_signal: int | None = None
    ended_at: float | None = None
    # What the host says ended it, when that was its doing (a cluster's time limit, node
    # failure, preemption): the failure class, or None for a run lost, and why.
    cause: tuple[FailureClass | None, str] | None = None


class ProcessState(enum.StrEnum):
    RUNNING = "running"
    EXITED = "exited"
    GONE = "gone"


class Executor(abc.ABC):
    """Runs attempts on one host. Every run is detached (its own session) so it outlives the
    daemon; the executor only reads the files its wrapper leaves."""

    # Whether an attempt runs as soon as `start` returns; a cluster's waits in its queue
    # first, until `until_started`.
    starts_at_once = True

    def __init__(self, host: HostSpec, workdir: Path) -> None:
        self.host = host
        self.workdir = workdir

    @property
    def root(self) -> PurePath:
        """The host's work directory, where its runs' folders are (see `layout`)."""
        return self.workdir

    def attempt_dir(self, run_id: int, attempt: int) -> str:
        return layout.attempt_dir(self.root, run_id, attempt)

    def run_dir(self, run_id: int) -> str:
        return layout.run_dir(self.root, run_id)

    def attempt(self, run_id: int, attempt: int) -> Attempt:
        """An attempt known by its folder alone, its pid not yet read (see `reattach`)."""
        return Attempt(self.attempt_dir(run_id, attempt), 0, None)

    @abc.abstractmethod
    async def start(self, launch: Launch) -> Attempt: ...

    async def start_many(self, launches: Sequence[Launch]) -> list[Attempt | Exception]:
        """`start` for each launch (a cluster submits them together); each one's attempt, or
        the error that kept it from starting."""
        started: list[Attempt | Exception] = []
        for launch in launches:
            try:
                started.append(await self.start(launch))
            except Exception as exc:
                started.append(exc)
        return started

    async def until_started(self, attempt: Attempt) -> Attempt | None:
        """Return once the attempt runs (with its pid), or None when it ended without running
        (cancelled, or failed while queued on a cluster)."""
        return attempt

    async def hold(self, attempt: Attempt, held: bool) -> bool:
        """Hold (or release) an attempt that waits in the host's own queue; False where the
        host has none, or would not."""
        return False

    def waiting_reason(self, attempt: Attempt) -> str | None:
        """Why a started attempt does not run yet (waiting in a cluster's queue), if it waits."""
        return None

    def node_of(self, attempt: Attempt) -> str | None:
        """The node of a cluster that runs the attempt, when known."""
        return None

    def describe(self, attempt: Attempt) -> str:
        """Where the attempt runs, for its reason: its pid (a cluster's job and node)."""
        return f"pid {attempt.pid}"

    @abc.abstractmethod
    async def probe(self, attempt: Attempt) -> ProcessState:
        """Whether the attempt is still running, has exited (exit_code written), or is gone."""

    @abc.abstractmethod
    async def wait(self, attempt: Attempt) -> ExitInfo:
        """Return when the attempt has ended (its own children at once, reattached ones too)."""

    @abc.abstractmethod
    async def read_output(self, attempt: Attempt, offset: int, max_bytes: int) -> bytes: ...

    @abc.abstractmethod
    async def output_size(self, attempt: Attempt) -> int: ...

    async def output_sizes(self, attempts: Sequence[Attempt]) -> list[int]:
        """Each attempt's output.log size, asked all at once (one round of requests on a
        remote host)."""
        return await _all(self.output_size(a) for a in attempts)

    async def read_outputs(self, reads: Sequence[tuple[Attempt, int, int]]) -> list[bytes]:
        """`read_output` for each (attempt, offset, max_bytes), asked all at once."""
        return await _all(self.read_output(*read) for read in reads)

    def output_watch(self, on_change: Callable[[], None]) -> OutputWatch | None:
        """Something that calls `on_change` when followed attempts print, or None where the
        reader must poll (a remote host)."""
        return None

    @abc.abstractmethod
    async def signal(self, attempt: Attempt, signum: int) -> bool:
        """Send a signal to the attempt's process group; False when it is already gone."""

    async def reattach(self, attempt: Attempt) -> Attempt:
        """The attempt with the pid its wrapper wrote (for one whose start we did not see)."""
        try:
            pid = int((Path(attempt.attempt_dir) / layout.PID).read_text().strip())
        except (OSError, ValueError):
            return attempt
        return msgspec.structs.replace(attempt, pid=pid)

    async def attempt_exists(self, run_id: int, attempt: int) -> bool:
        """Whether the attempt's folder exists: a daemon started it, recorded or not."""
        return Path(self.attempt_dir(run_id, attempt)).is_dir()

    async def existing_attempts(self, wanted: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which of these (run id, attempt) have a folder on the host, asked all at once: what
        a restarted daemon asks of every queued run."""
        found = await _all(self.attempt_exists(run_id, n) for run_id, n in wanted)
        return {pair for pair, exists in zip(wanted, found, strict=True) if exists}

    async def fetch_artifacts(self, run_id: int) -> Path | None:
        """Bring a finished run's artifacts to this machine (where they are not already)."""
        return None

    def connect(self) -> None:  # noqa: B027 - a local host needs nothing to be reached
        """Start reaching the host in the background, for as long as the daemon runs."""

    async def first_try(self) -> None:  # noqa: B027
        """Return once the host has been tried at least once, reachable or not."""

    async def until_up(self) -> None:  # noqa: B027
        """Return when the host can be reached (at once for one that always can)."""

    async def diagnose(self) -> list[tuple[str, bool, str]]:
        """Check the host step by step, as (step, ok, what was found)."""
        return [("local", True, "this machine: runs start directly, no SSH involved")]

    async def close(self) -> None:  # noqa: B027 - a local host holds nothing to let go of
        """Let go of the host (connections, background tasks); runs keep going."""

    @property
    def state(self) -> tuple[str, str | None, float | None]:
        """The host as this executor sees it: ("up" | "unreachable", why, since when)."""
        return "up", None, None


async def _all(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """Await every call concurrently; the first error is raised once all have finished."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
