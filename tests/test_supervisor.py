"""The supervisor in-process, on a real store, with a scripted executor: how an attempt's end is
classed, when it is retried, and how runs are reconciled after a restart, in milliseconds
rather than through a daemon subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.config import Config, load_config
from engine.executors import Attempt, Executor, ExitInfo, Launch, ProcessState
from engine.model import FailureClass, JobSpec, RetryPolicy, Run, RunStatus
from engine.runtime.bus import EventBus
from engine.runtime.live import Refused
from engine.runtime.supervisor import Supervisor
from engine.store import MetricBatch, StoreThread

from .conftest import wait_until


@dataclass
class Process:
    """One scripted attempt: what it printed and how it ends."""

    output: bytes
    code: int | None
    pid: int
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedHost(Executor):
    """A host whose attempts print and exit as a test says: `script(run_id, attempt)` gives
    (output, exit code) for each start; with `held`, each runs until `end` is called. It
    outlives the supervisors that use it, as a real host outlives a daemon."""

    def __init__(
        self,
        config: Config,
        script: Callable[[int, int], tuple[bytes, int | None]],
        held: bool = False,
    ) -> None:
        super().__init__(config.hosts["local"], config.state_dir)
        self.script = script
        self.held = held
        self.processes: dict[str, Process] = {}

    async def start(self, launch: Launch) -> Attempt:
        output, code = self.script(launch.run_id, launch.attempt)
        process = Process(output, code, pid=1000 + len(self.processes))
        self.processes[launch.attempt_dir] = process
        if not self.held:
            process.done.set()
        return Attempt(launch.attempt_dir, process.pid, None)

    def end(self, run_id: int, attempt: int = 1) -> None:
        self.processes[self.attempt_dir(run_id, attempt)].done.set()

    async def probe(self, attempt: Attempt) -> ProcessState:
        process = self.processes.get(attempt.attempt_dir)
        if process is None:
            return ProcessState.GONE
        return ProcessState.EXITED if process.done.is_set() else ProcessState.RUNNING

    async def wait(self, attempt: Attempt) -> ExitInfo:
        process = self.processes[attempt.attempt_dir]
        await process.done.wait()
        return ExitInfo(process.code, ended_at=time.time())

    async def read_output(self, attempt: Attempt, offset: int, max_bytes: int) -> bytes:
        process = self.processes.get(attempt.attempt_dir)
        return process.output[offset : offset + max_bytes] if process else b""

    async def output_size(self, attempt: Attempt) -> int:
        process = self.processes.get(attempt.attempt_dir)
        return len(process.output) if process else 0

    async def signal(self, attempt: Attempt, signum: int) -> bool:
        process = self.processes.get(attempt.attempt_dir)
        if process is None or process.done.is_set():
            return False
        process.code = 128 + signum
        process.done.set()
        return True

    async def reattach(self, attempt: Attempt) -> Attempt:
        process = self.processes.get(attempt.attempt_dir)
        return Attempt(attempt.attempt_dir, process.pid, None) if process else attempt

    async def attempt_exists(self, run_id: int, attempt: int) -> bool:
        return self.attempt_dir(run_id, attempt) in self.processes


POINT = b'@runyard {"step": 0, "loss": 0.5}\n'


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "hosts.toml").write_text(
        '[engine]\nstate_dir = "state"\ncancel_grace_s = 1\n[hosts.local]\nkind = "local"\n'
    )
    config = load_config(tmp_path / "hosts.toml")
    config.state_dir.mkdir()
    return config


@pytest.fixture
async def db(config: Config) -> AsyncIterator[StoreThread]:
    db = StoreThread(config.state_dir / "store.duckdb")
    yield db
    db.close()


async def _supervisor(config: Config, db: StoreThread, host: ScriptedHost) -> Supervisor:
    supervisor = Supervisor(config, db, EventBus(), executors={"local": host})
    await supervisor.start()
    return supervisor


async def _ended(supervisor: Supervisor, run_id: int) -> Run | None:
    await supervisor.flush()
    run = await supervisor.db.call(supervisor.store.get_run, run_id)
    return run if run is not None and run.status.terminal else None


async def _submit(supervisor: Supervisor, config: Config, **job: object) -> Run:
    spec = JobSpec(argv=("train",), cwd=str(config.project_dir), env={}, **job)  # type: ignore[arg-type]
    [run] = await supervisor.submit([spec])
    return run


async def test_an_oom_is_classed_and_retried_and_the_retry_is_the_record(
    config: Config, db: StoreThread
) -> None:
    def script(run_id: int, attempt: int) -> tuple[bytes, int | None]:
        if attempt == 1:
            return POINT + b"RuntimeError: CUDA out of memory. Tried to allocate 2 GiB\n", 1
        return POINT * 3, 0

    supervisor = await _supervisor(config, db, ScriptedHost(config, script))
    try:
        run = await _submit(supervisor, config, retry=RetryPolicy(attempts=2, backoff_s=0))
        ended = await wait_until(lambda: _ended(supervisor, run.id), what="the run to end")
        assert isinstance(ended, Run)
        assert (ended.status, ended.attempt, ended.failure_class) == (
            RunStatus.SUCCEEDED,
            2,
            None,
        )
        details = await supervisor.db.call(supervisor.store.run_details, run.id)
        first, second = details["attempts"]
        assert (first["failure_class"], first["exit_code"]) == ("oom", 1)
        assert first["reason"].startswith(
            "attempt 1 failed (oom: CUDA out of memory (exit code 1))"
        )
        assert second["status"] == "succeeded"
        assert [m["count"] for m in details["metrics"]] == [3]  # the retry's points alone
    finally:
        await supervisor.stop()


@pytest.mark.parametrize(
    ("output", "code", "status", "failure", "reason"),
    [
        (b"step 1\nValueError: boom\n", 3, "failed", "error", "exit code 3: ValueError: boom"),
        (b"", 127, "failed", "error", "command not found: train"),
        (b"", 128 + signal.SIGKILL, "failed", "killed", "killed by SIGKILL"),
        (b"", None, "lost", None, "the run's process is gone and left no exit code"),
    ],
)
async def test_an_attempts_end_is_classed_and_not_retried_outside_the_policy(
    config: Config,
    db: StoreThread,
    output: bytes,
    code: int | None,
    status: str,
    failure: str | None,
    reason: str,
) -> None:
    host = ScriptedHost(config, lambda _run, _attempt: (output, code))
    supervisor = await _supervisor(config, db, host)
    try:
        run = await _submit(supervisor, config, retry=RetryPolicy(attempts=3, on=("oom",)))
        ended = await wait_until(lambda: _ended(supervisor, run.id), what="the run to end")
        assert isinstance(ended, Run)
        assert (ended.status, ended.failure_class, ended.reason, ended.attempt) == (
            RunStatus(status),
            None if failure is None else FailureClass(failure),
            reason,
            1,
        )
    finally:
        await supervisor.stop()


async def test_a_restarted_supervisor_finalises_what_ended_and_loses_what_vanished(
    config: Config, db: StoreThread
) -> None:
    """Two runs are running when the supervisor stops. While none watches, one ends with
    exit 0 after printing; the other's process vanishes. The next supervisor finalises the
    first with its points and marks the second lost, each with its reason."""
    host = ScriptedHost(config, lambda _run, _attempt: (POINT * 2, 0), held=True)
    first = await _supervisor(config, db, host)
    ended_run = await _submit(first, config)
    vanished = await _submit(first, config)
    running = {ended_run.id, vanished.id}
    await wait_until(
        lambda: running <= {r for r, a in first.active.items() if a.attempt.pid},
        what="both running",
    )
    await first.stop()
    host.end(ended_run.id)
    del host.processes[host.attempt_dir(vanished.id, 1)]
    second = await _supervisor(config, db, host)
    try:
        done = await wait_until(lambda: _ended(second, ended_run.id), what="the ended run")
        assert isinstance(done, Run) and done.status is RunStatus.SUCCEEDED
        assert len(await second.db.call(second.store.metrics, ended_run.id)) == 2
        lost = await wait_until(lambda: _ended(second, vanished.id), what="the vanished run")
        assert isinstance(lost, Run) and lost.status is RunStatus.LOST
        assert lost.reason == f"process {1001} is gone and left no exit code"
    finally:
        await second.stop()


async def test_a_run_cancelled_while_it_runs_is_cancelled_not_retried(
    config: Config, db: StoreThread
) -> None:
    host = ScriptedHost(config, lambda _run, _attempt: (POINT, 0), held=True)
    supervisor = await _supervisor(config, db, host)
    try:
        run = await _submit(supervisor, config)
        await wait_until(lambda: run.id in supervisor.active, what="the run started")
        await supervisor.cancel(run)
        ended = await wait_until(lambda: _ended(supervisor, run.id), what="the run to end")
        assert isinstance(ended, Run) and ended.status is RunStatus.CANCELLED
        assert ended.reason == f"cancelled by user (exit code {128 + signal.SIGTERM})"
    finally:
        await supervisor.stop()


async def test_stop_ends_the_dispatch_loop_even_when_it_was_woken_at_that_moment(
    config: Config, db: StoreThread
) -> None:
    # A run ending wakes the loop; a stop that cancels it in the same turn must not be lost
    # (asyncio.wait_for on Python 3.11 returned the wake and dropped the cancel: stop hung).
    supervisor = await _supervisor(config, db, ScriptedHost(config, lambda _r, _a: (b"", 0)))
    await wait_until(lambda: supervisor.wake._waiters, what="the loop to wait for a wake")
    supervisor.wake.set()
    async with asyncio.timeout(10):
        await supervisor.stop()
    assert supervisor._loop_task is not None and supervisor._loop_task.cancelled()


async def test_cancelling_a_run_that_just_ended_says_it_ended(
    config: Config, db: StoreThread
) -> None:
    # A request may carry a copy read just before the run ended (the store is written in
    # batches): the daemon's own view decides, and the answer is that it ended.
    host = ScriptedHost(config, lambda _r, _a: (b"", 0), held=True)
    supervisor = await _supervisor(config, db, host)
    try:
        run = await _submit(supervisor, config)
        await wait_until(lambda: run.id in supervisor.active, what="the run running")
        running = supervisor.runs[run.id]
        host.end(run.id)
        await wait_until(lambda: _ended(supervisor, run.id), what="the run to end")
        with pytest.raises(Refused, match="already ended: succeeded"):
            await supervisor.cancel(running)
    finally:
        await supervisor.stop()


async def test_runs_that_print_at_once_are_stored_together_not_one_transaction_each(
    tmp_path: Path,
) -> None:
    """Many chatty runs cost a few transactions a second, not one per run per read: the
    host's reader stores what every run printed since its last round in one."""
    (tmp_path / "hosts.toml").write_text(
        '[engine]\nstate_dir = "state"\n[hosts.local]\nkind = "local"\nmax_jobs = 30\n'
    )
    config = load_config(tmp_path / "hosts.toml")
    config.state_dir.mkdir()
    db = StoreThread(config.state_dir / "store.duckdb")
    host = ScriptedHost(config, lambda run_id, attempt: (POINT * 3, 0), held=True)
    transactions: list[int] = []  # how many runs' batches each ingest held
    ingest = db.store.ingest

    def counted(*batches: MetricBatch) -> None:
        transactions.append(len(batches))
        ingest(*batches)

    db.store.ingest = counted  # type: ignore[method-assign]
    supervisor = await _supervisor(config, db, host)
    try:
        runs = await supervisor.submit(
            [JobSpec(argv=("train",), cwd=str(config.project_dir), env={})] * 30
        )
        await wait_until(
            lambda: len(host.processes) == 30 and sum(transactions) == 30,
            what="every run's points to be stored",
        )
        assert max(transactions) >= 10, transactions  # one per run: [1, 1, 1, …]
        for run in runs:
            host.end(run.id)
        for run in runs:
            ended = await wait_until(lambda run=run: _ended(supervisor, run.id), what="the end")
            assert isinstance(ended, Run) and ended.status is RunStatus.SUCCEEDED
        count = await db.call(
            lambda: db.store.con.execute("SELECT count(*) FROM metrics").fetchone()
        )
        assert count == (30 * 3,)  # nothing read twice when the runs ended
    finally:
        await supervisor.stop()
        db.close()


async def test_a_queued_run_the_last_daemon_had_started_is_adopted_not_started_again(
    config: Config, db: StoreThread
) -> None:
    """The store says queued, but the host has the run's next attempt: the last daemon started
    it and stopped before recording it. A restarted supervisor, asking the host once for all
    its queued runs, follows that attempt; the other queued run starts as usual."""
    host = ScriptedHost(config, lambda _run, _attempt: (POINT, 0))
    jobs = [JobSpec(argv=("train",), cwd=str(config.project_dir), env={})] * 2
    rows = [(job, f"r{i}", i, {}) for i, job in enumerate(jobs)]
    started_unrecorded, queued = await db.call(db.store.add_runs, rows)
    unrecorded = Process(POINT * 3, 0, pid=4242)
    unrecorded.done.set()
    host.processes[host.attempt_dir(started_unrecorded.id, 1)] = unrecorded
    supervisor = await _supervisor(config, db, host)
    try:
        for run in (started_unrecorded, queued):
            ended = await wait_until(lambda run=run: _ended(supervisor, run.id), what="the end")
            assert isinstance(ended, Run) and ended.status is RunStatus.SUCCEEDED
        assert host.processes[host.attempt_dir(started_unrecorded.id, 1)] is unrecorded
        assert len(host.processes) == 2  # the adopted run was not started a second time
        details = await db.call(db.store.run_details, started_unrecorded.id)
        reasons = [event["reason"] for event in details["events"]]
        assert "attempt 1 found started on local after a restart" in reasons
        assert [m["count"] for m in details["metrics"]] == [3]  # the adopted attempt's points
    finally:
        await supervisor.stop()


async def test_points_are_stored_even_when_the_pruner_cannot_reach_the_host(
    config: Config, db: StoreThread
) -> None:
    """The sweep's pruner judges each round's points, and may try to stop a run on a host that
    just went away: those points are stored all the same, and read no second time."""
    from engine.executors import HostUnreachable
    from engine.runtime.ingest import Ingest
    from engine.runtime.live import Active

    host = ScriptedHost(config, lambda _run, _attempt: (POINT * 5, None), held=True)
    [run] = await db.call(
        db.store.add_runs, [(JobSpec(argv=("train",), cwd="/", env={}), "r", 1, {})]
    )
    attempt = await host.start(Launch(run.id, 1, ("train",), "/", {}, host.attempt_dir(run.id, 1)))
    judged: list[int] = []

    async def unreachable(active: Active, points: object, ended: bool) -> None:
        judged.append(active.run.id)
        raise HostUnreachable("the link dropped while stopping it")

    failed: list[BaseException] = []
    ingest = Ingest(db, EventBus(), unreachable, lambda _active, exc: failed.append(exc))
    active = Active.of(run, host, attempt, 1)
    ingest.follow(active)
    try:
        await wait_until(lambda: judged, what="the points to be judged")
        await ingest.finish(active)
        count = "SELECT count(*), count(DISTINCT line) FROM metrics WHERE run_id = ?"
        stored = await db.call(lambda: db.store.con.execute(count, [run.id]).fetchone())
        assert stored == (5, 5) and not failed
        assert (await db.call(db.store.log_position, run.id, 1)).byte_offset == len(POINT * 5)
    finally:
        await ingest.close()


async def test_output_printed_after_the_wrapper_writes_its_pid_is_still_read(
    config: Config, db: StoreThread
) -> None:
    """The wrapper writes `pid` into the attempt's folder once it runs, which may be after
    the folder is watched and read once: that event spends the folder's one-shot watch, and
    what the run prints after it must still be read while it runs, not only when it ends."""
    async with _followed_here(config, db) as (folder, stored):
        with open(folder / "output.log", "ab", buffering=0) as out:
            out.write(POINT)
            await wait_until(lambda: _equals(stored(), 1), what="the first point")
            (folder / "pid").write_text("4242")
            out.write(POINT)
            await wait_until(lambda: _equals(stored(), 2), what="the point after the pid")


async def test_a_run_printing_megabytes_is_read_without_the_pause_between_rounds(
    config: Config, db: StoreThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause between a host's rounds batches chatty runs' few lines; after a round that
    read a lot of one run, the next follows at once. With a pause of a minute, the second
    wait below would fail."""
    from engine.runtime import ingest as ingest_module
    from engine.runtime.ingest import LEAST_CHUNK

    monkeypatch.setattr(ingest_module, "ROUND_S", 60.0)
    burst = LEAST_CHUNK // len(POINT) + 1
    async with _followed_here(config, db, printed=POINT * burst) as (folder, stored):
        await wait_until(lambda: _equals(stored(), burst), what="the first burst")
        with open(folder / "output.log", "ab", buffering=0) as out:
            out.write(POINT * burst)
            await wait_until(lambda: _equals(stored(), 2 * burst), what="the second burst")


@contextlib.asynccontextmanager
async def _followed_here(
    config: Config, db: StoreThread, printed: bytes = b""
) -> AsyncIterator[tuple[Path, Callable[[], Awaitable[int]]]]:
    """A run's attempt folder on this machine, whose output (`printed` so far) is followed by
    a real output reader, and how many of its points are stored."""
    from engine.executors import executor_for
    from engine.runtime.ingest import Ingest
    from engine.runtime.live import Active

    executor = executor_for(config, "local", lambda: None, lambda _: None)
    [run] = await db.call(
        db.store.add_runs, [(JobSpec(argv=("train",), cwd="/", env={}), "r", 1, {})]
    )
    folder = Path(executor.attempt_dir(run.id, 1))
    folder.mkdir(parents=True)
    if printed:
        (folder / "output.log").write_bytes(printed)  # printed before it was followed
    ingest = Ingest(db, EventBus(), _no_judge, lambda _active, exc: pytest.fail(str(exc)))
    ingest.follow(Active.of(run, executor, Attempt(str(folder), 0, None), 1))
    count = "SELECT count(*) FROM metrics WHERE run_id = ?"

    async def stored() -> int:
        return (await db.call(lambda: db.store.con.execute(count, [run.id]).fetchone()))[0]

    try:
        yield folder, stored
    finally:
        await ingest.close()
        await executor.close()


async def _no_judge(_active: object, _points: object, _ended: bool) -> None:
    return None


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_a_run_whose_process_exited_frees_its_slot_before_its_end_is_recorded(
    tmp_path: Path,
) -> None:
    """A slot is a process: once a run's process has exited, the next queued run starts while
    the first's end is still being recorded (its artifacts copied back from a slow host)."""
    (tmp_path / "hosts.toml").write_text(
        '[engine]\nstate_dir = "state"\n[hosts.local]\nkind = "local"\nmax_jobs = 1\n'
    )
    config = load_config(tmp_path / "hosts.toml")
    config.state_dir.mkdir()
    db = StoreThread(config.state_dir / "store.duckdb")
    copied = asyncio.Event()

    class SlowCopy(ScriptedHost):
        async def fetch_artifacts(self, run_id: int) -> Path | None:
            await copied.wait()
            return None

    host = SlowCopy(config, lambda _run, _attempt: (POINT, 0), held=True)
    supervisor = await _supervisor(config, db, host)
    try:
        first, second = await supervisor.submit(
            [JobSpec(argv=("train",), cwd=str(config.project_dir), env={})] * 2
        )
        await wait_until(lambda: len(host.processes) == 1, what="the first run to start")
        host.end(first.id)
        await wait_until(lambda: len(host.processes) == 2, what="the second run to start")
        assert supervisor.runs[first.id].status is RunStatus.RUNNING  # its end not yet recorded
        copied.set()
        host.end(second.id)
        for run in (first, second):
            ended = await wait_until(lambda run=run: _ended(supervisor, run.id), what="the end")
            assert isinstance(ended, Run) and ended.status is RunStatus.SUCCEEDED
    finally:
        await supervisor.stop()
        db.close()


@pytest.mark.skipif(not Path("/proc/vmstat").exists(), reason="Linux's /proc/vmstat")
def test_the_oom_kill_count_is_the_kernels_each_time_it_is_read() -> None:
    """Read through a file kept open (from its start each time): the count /proc/vmstat
    shows now, on every read, never a copy of the first."""
    from engine.core.failures import oom_kills

    def shown() -> int:
        [line] = [x for x in Path("/proc/vmstat").read_text().splitlines() if "oom_kill " in x]
        return int(line.split()[1])

    for _ in range(3):
        assert oom_kills() == shown()
