"""After a restart: every unfinished run re-read from its files. Those that ended while no
daemon watched are finalised, those still running reattached, those the last daemon started
but did not get to record adopted, and the rest marked lost with the reason."""

from __future__ import annotations

import asyncio
import os
import time

from engine import repro
from engine.executors import Attempt, HostUnreachable, ProcessState
from engine.model import Run, RunStatus
from engine.runtime.follow import Follower
from engine.runtime.hosts import Hosts
from engine.runtime.live import NEW_ATTEMPT, Active, LiveView
from engine.runtime.sweeps import Sweeps
from engine.store import Transition


class Reconciler:
    """Loads the store's unfinished runs into the live view and settles each from its files."""

    def __init__(self, live: LiveView, hosts: Hosts, sweeps: Sweeps, follower: Follower) -> None:
        self.live = live
        self.hosts = hosts
        self.sweeps = sweeps
        self.follower = follower

    async def reconcile(self) -> None:
        live, store = self.live, self.live.store
        replayed = await self.sweeps.resume()
        unfinished = await live.db.call(store.unfinished)
        started = await self._started_attempts(
            [run for run, *_ in unfinished if run.status in (RunStatus.QUEUED, RunStatus.ASSIGNED)]
        )
        settling = []
        for run, env, pid_start, cancel, prune, diverged, batch_job in unfinished:
            # The store keeps secrets masked: a queued run takes them from this daemon's
            # environment (that of whoever started it).
            queued = run.status in (RunStatus.QUEUED, RunStatus.ASSIGNED)
            live.add(run, repro.unmask_env(env, os.environ), queued=False)
            if queued:
                adopted = self._adopt(run, started.get(run.id))
                if adopted is None:
                    continue
                run = adopted
            executor = self.hosts.executors.get(run.host or "")
            if executor is None:
                why = f"host {run.host!r} is no longer configured"
                live.transition([Transition(run.id, RunStatus.LOST, why)])
                continue
            folder = executor.attempt_dir(run.id, run.attempt)
            attempt = Attempt(folder, run.pid or 0, pid_start, batch_job=batch_job)
            position = await live.db.call(store.log_position, run.id, run.attempt)
            active = Active.of(
                run,
                executor,
                attempt,
                run.attempt,
                position=position,
                cancel_requested=cancel,
                prune_reason=prune,
                diverged=diverged,
            )
            self.sweeps.attach(run, replayed.get(run.id, []))
            settling.append(self._settle(active))
        # Together: a cluster answers every waiting attempt in one poll, not one poll each.
        await asyncio.gather(*settling)
        await live.flush()
        await self.sweeps.evaluations.missed()

    def _adopt(self, run: Run, started: tuple[str, int] | None) -> Run | None:
        """A queued or assigned run: queued again (None), or, when the last daemon `started`
        its next attempt (on that host) before the store heard of it, that attempt recorded
        as starting."""
        if started is None:
            if run.status is RunStatus.ASSIGNED:
                why = "daemon restarted before the run started"
                self.live.transition([Transition(run.id, RunStatus.QUEUED, why)])
            else:
                self.live.queue.add(run)
            return None
        host, number = started
        executor = self.hosts.executors[host]
        chain = []
        if run.status is not RunStatus.ASSIGNED:
            why = f"{host}: found started after a restart"
            chain.append(Transition(run.id, RunStatus.ASSIGNED, why, {"host": host}))
        fields = {"attempt": number, "host": host, "run_dir": executor.run_dir(run.id)}
        why = f"attempt {number} found started on {host} after a restart"
        chain.append(Transition(run.id, RunStatus.STARTING, why, fields | NEW_ATTEMPT))
        return self.live.transition(chain)[-1]

    async def _settle(self, active: Active) -> None:
        """An attempt of the last daemon's: lost, finalised, or followed again."""
        run, executor = active.run, active.executor
        try:
            await executor.first_try()
            if not active.attempt.pid or not executor.starts_at_once:
                active.attempt = await executor.reattach(active.attempt)
            state = await executor.probe(active.attempt)
        except HostUnreachable as exc:
            self.follower.spawn(active, unreachable=str(exc))
            return
        pid = active.attempt.pid
        if state is ProcessState.GONE:
            why = (
                f"process {pid} is gone and left no exit code"
                if pid
                else "the daemon stopped while starting it, before its process recorded a pid"
            )
            self.live.transition(
                [Transition(run.id, RunStatus.LOST, why, {"ended_at": time.time()})]
            )
            return
        if not executor.starts_at_once:
            active.started = False  # its follower sees whether it runs yet (a cluster's job)
        if run.status is not RunStatus.RUNNING and (
            executor.starts_at_once or run.status is not RunStatus.STARTING
        ):
            why = "reattached after daemon restart"
            reattached = Transition(run.id, RunStatus.RUNNING, why, {"pid": pid})
            active.run = self.live.transition([reattached])[0]
        if state is ProcessState.EXITED:
            self.live.active[run.id] = active
            await self.follower.follow(active)  # ended unwatched: finalised before serving
            return
        if active.stop_asked:
            await self.follower.terminate(active)
        self.follower.spawn(active)

    async def _started_attempts(self, queued: list[Run]) -> dict[int, tuple[str, int]]:
        """The queued runs whose next attempt already has its folder on a host, with that host
        and attempt: the last daemon started them and stopped before the store heard of it.
        Each host is asked once for all of them."""
        wanted = [(run.id, run.attempt + 1) for run in queued]
        found: dict[int, tuple[str, int]] = {}
        for name, executor in self.hosts.executors.items():
            if not wanted:
                break
            try:
                await executor.first_try()
                existing = await executor.existing_attempts(wanted)
            except HostUnreachable:
                continue  # a host that is away cannot tell; its folder is found on its return
            for run_id, number in existing:
                found.setdefault(run_id, (name, number))
        return found
