"""The supervisor: the runtime's parts wired together, the dispatch loop, and the requests
the API serves (submit, cancel, retry, queue changes, hosts)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from engine.config import Config
from engine.core.points import Points
from engine.core.scheduler import Snapshot
from engine.executors import Executor
from engine.model import HostSample, JobSpec, Run, RunStatus
from engine.protocol import RunChanged, SweepPlan
from engine.runtime.bus import EventBus
from engine.runtime.dispatch import Dispatcher
from engine.runtime.follow import Follower
from engine.runtime.hosts import Hosts
from engine.runtime.ingest import Ingest
from engine.runtime.live import Active, LiveView, Refused
from engine.runtime.notify import Notifier
from engine.runtime.reconcile import Reconciler
from engine.runtime.run_queue import RunQueue
from engine.runtime.submit import Submitter
from engine.runtime.sweeps import Sweeps
from engine.runtime.watchdog import Watchdog
from engine.store import StoreThread, Transition


class Supervisor:
    """Owns the live view and every part that acts on it; the API calls only this."""

    def __init__(
        self,
        config: Config,
        db: StoreThread,
        bus: EventBus,
        latest_sample: Callable[[str], HostSample | None] = lambda _: None,
        on_sample: Callable[[HostSample], None] = lambda _: None,
        executors: dict[str, Executor] | None = None,
    ) -> None:
        """`executors` replaces the hosts' own (tests drive the supervisor in-process so)."""
        self.config = config
        self.db = db
        self.store = db.store
        self.bus = bus
        self.live = live = LiveView(db, bus)
        self.hosts = Hosts(config, db, bus, live.wake, latest_sample, on_sample, executors)
        self.submitter = Submitter(config, live, self.hosts, lambda: self.dispatcher.snapshot())
        self.notifier = Notifier(config.notify, config.notify_timeout_s, config.project_dir)
        self.ingest = ingest = Ingest(
            db,
            bus,
            judge=self._judge,
            on_error=lambda active, exc: self.follower.failed_reading(active, exc),
        )
        self.follower = Follower(config, live, self.hosts, ingest)
        self.dispatcher = Dispatcher(
            config, live, self.hosts, self.follower, on_start=lambda run: self.sweeps.attach(run)
        )
        self.sweeps = Sweeps(
            config,
            live,
            self.hosts,
            self.submitter,
            self.dispatcher,
            self.follower.terminate,
        )
        self.reconciler = Reconciler(live, self.hosts, self.sweeps, self.follower)
        self.watchdog = Watchdog(config, live, self.follower.terminate, self.notifier)
        self._loop_task: asyncio.Task[None] | None = None

    async def _judge(self, active: Active, points: Points, ended: bool) -> None:
        """An attempt's new points: the watchdog's, then (while it runs) its sweep's pruner's."""
        await self.watchdog.judge(active, points)
        if not ended:
            await self.sweeps.judge(active, points)

    @property
    def runs(self) -> dict[int, Run]:
        """Every unfinished run, as the daemon sees it (newer than the store)."""
        return self.live.runs

    @property
    def queue(self) -> RunQueue:
        return self.live.queue

    @property
    def active(self) -> dict[int, Active]:
        return self.live.active

    @property
    def wake(self) -> asyncio.Event:
        return self.live.wake

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.notifier.listen(self.bus, lambda s: not self.sweeps.going(s), self.sweep_summary)
        await self.hosts.start()
        await self.reconciler.reconcile()
        self.watchdog.start()
        self._loop_task = asyncio.create_task(self._loop(), name="supervisor")

    async def stop(self) -> None:
        """Stop following runs (they keep running, detached) and stop dispatching."""
        tasks = [t for t in [self._loop_task, *(a.task for a in self.active.values())] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.watchdog.close()
        await self.ingest.close()
        await self.live.flush()
        await self.hosts.close()
        await self.notifier.close()

    async def flush(self) -> None:
        """Return once every transition so far is in the store (call before reading it)."""
        await self.live.flush()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.wake.wait()
            self.wake.clear()
            try:
                await self.tick()
            except Exception:  # never the end of dispatching: logged, and tried again
                traceback.print_exc(file=sys.stderr)

    async def tick(self) -> None:
        """One round: more trials for the adaptive sweeps, then dispatch."""
        if self.sweeps.adaptive:
            await self.sweeps.sample_more()
        await self.dispatcher.dispatch()

    async def sweep_summary(self, sweep_id: str) -> dict[str, Any]:
        """A sweep as a notification tells it (see `Store.sweep_summary`), once the store has
        caught up with the daemon."""
        await self.flush()
        return await self.db.call(self.store.sweep_summary, sweep_id)

    # --- requests ---------------------------------------------------------------------------

    async def submit(self, jobs: Sequence[JobSpec]) -> list[Run]:
        return await self.submitter.submit(jobs)

    async def submit_sweep(
        self,
        file: str,
        overrides: dict[str, str],
        cwd: str,
        env: dict[str, str],
        dry_run: bool,
        smoke: bool = False,
        wait_for_host: bool = False,
    ) -> SweepPlan:
        return await self.sweeps.submit(file, overrides, cwd, env, dry_run, smoke, wait_for_host)

    async def reproduce(self, run: Run, secrets: dict[str, str] | None = None) -> Run:
        return await self.submitter.reproduce(run, secrets)

    async def retry(self, run: Run) -> Run:
        return await self.submitter.retry(run)

    def sweep_going(self, sweep_id: str) -> bool:
        return self.sweeps.going(sweep_id)

    def snapshot(self) -> Snapshot:
        return self.dispatcher.snapshot()

    def waiting_on_hosts(self) -> list[tuple[Run, str]]:
        """The runs started on a host that waits to run them (a cluster's queue), oldest
        first, with why they wait."""
        waiting = []
        for run_id in sorted(self.live.active):
            active = self.live.active[run_id]
            if not active.started and not active.exited:
                why = active.executor.waiting_reason(active.attempt)
                waiting.append((active.run, why or f"submitted to {active.run.host}"))
        return waiting

    def explain(self, first: int | None = None) -> dict[int, str]:
        return self.dispatcher.explain(first)

    def set_host_state(self, host: str, enabled: bool, reason: str) -> None:
        self.hosts.set_enabled(host, enabled, reason)

    async def set_queue_fields(self, run: Run, reason: str, **fields: Any) -> Run:
        """Change a queued run's priority or hold; recorded as an event with its reason."""
        current = self.runs.get(run.id)
        active = self.live.active.get(run.id)
        if current is not None and active is not None and not active.started:
            await self._hold_on_host(active, reason, fields)  # waits in a cluster's queue
        elif current is None or current.status is not RunStatus.QUEUED:
            status = current.status if current else run.status
            raise Refused(f"run {run.id} is {status}, not queued")
        changed = msgspec.structs.replace(current, **fields)
        self.runs[run.id] = changed
        if changed.status is RunStatus.QUEUED:
            self.live.queue.add(changed)  # its place and what the planner sees change with it
        await self.flush()
        await self.db.call(self.store.set_queue_fields, run.id, reason, fields)
        self.bus.publish(RunChanged(run=changed, previous=changed.status, reason=reason))
        self.wake.set()
        return changed

    async def _hold_on_host(self, active: Active, reason: str, fields: dict[str, Any]) -> None:
        """Hold or release a run its host holds in a queue of its own (a cluster's), there."""
        run = active.run
        if set(fields) != {"held"}:
            raise Refused(
                f"run {run.id} waits in {run.host}'s own queue, which sets its priority;"
                " hold or cancel it instead"
            )
        if not await active.executor.hold(active.attempt, fields["held"]):
            verb = "hold" if fields["held"] else "release"
            raise Refused(f"run {run.id}: {run.host} would not {verb} it (it may run already)")

    async def cancel_sweep(self, sweep: str) -> list[Run]:
        """Cancel every unfinished run of a sweep, and sample no more of it."""
        # At once: a cluster ends the jobs asked for together in one command.
        return list(
            await asyncio.gather(*(self.cancel(r) for r in await self.sweeps.cancel(sweep)))
        )

    async def cancel(self, run: Run) -> Run:
        """Cancel a run: a queued one at once; a running one by SIGTERM to its process group,
        then SIGKILL after the grace period."""
        live = self.live
        current = live.runs.get(run.id)
        if current is None:  # every unfinished run is in the live view: this one has ended
            await self.flush()  # (the caller's copy may be older than its end)
            ended = await self.db.call(self.store.get_run, run.id) or run
            raise Refused(f"run {run.id} already ended: {ended.status}")
        run = current
        active = live.active.get(run.id)
        if active is not None:
            await self.db.call(self.store.request_cancel, run.id)
            active.cancel_requested = True
            await self.follower.terminate(active)
            return run
        if run.id in live.starting:
            live.starting[run.id] = True  # stopped as soon as its start returns
            await self.db.call(self.store.request_cancel, run.id)
            return run
        if run.status is RunStatus.STARTING:
            why = "cancelled by user while starting"
        elif run.status in (RunStatus.QUEUED, RunStatus.ASSIGNED):
            why = "cancelled by user while queued"
        else:
            raise Refused(f"run {run.id} is {run.status} and not followed by this daemon")
        [cancelled] = live.transition([Transition(run.id, RunStatus.CANCELLED, why)])
        await self.flush()  # no file records this one: it must be stored now
        return cancelled
