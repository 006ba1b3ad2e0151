"""Following an attempt to its end: polling its output, riding out its host's absence (or
giving it up after `lost_after_s`), classing how it ended, and retrying it under the run's
policy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from engine.config import Config
from engine.core.failures import classify, oom_kills
from engine.executors import ExitInfo, HostUnreachable, ProcessState
from engine.model import FailureClass, Run, RunStatus
from engine.runtime.hosts import Hosts
from engine.runtime.ingest import Ingest
from engine.runtime.live import Active, LiveView
from engine.store import Transition


class Follower:
    """Follows every attempt the daemon has started or reattached, each in its own task."""

    def __init__(self, config: Config, live: LiveView, hosts: Hosts, ingest: Ingest) -> None:
        self.config = config
        self.live = live
        self.hosts = hosts
        self.ingest = ingest

    def spawn(self, active: Active, unreachable: str | None = None) -> None:
        """Follow an attempt in its own task (`unreachable`: its host was lost, says why)."""
        self.live.active[active.run.id] = active
        active.task = asyncio.create_task(
            self.follow(active, unreachable), name=f"run-{active.run.id}"
        )

    async def terminate(self, active: Active) -> None:
        """Stop an attempt (SIGTERM, SIGKILL after the grace period); sent when the host is
        back if it is away now."""
        with contextlib.suppress(HostUnreachable):
            await active.terminate(self.config.cancel_grace_s)

    async def follow(self, active: Active, unreachable: str | None = None) -> None:
        """Follow an attempt to its end; while its host is unreachable, wait for it to return
        (or give the attempt up after the host's `lost_after_s`)."""
        try:
            while True:
                if unreachable is not None:
                    if not await self._ride_out(active, unreachable):
                        return
                    unreachable = None
                try:
                    await self._watch(active)
                    return
                except HostUnreachable as exc:
                    unreachable = str(exc)
        except Exception as exc:  # a bug or surprise with this run: the others go on
            self.live.fail_unexpectedly(active.run.id, "following it", exc)
        finally:
            active.followed_no_more()
            self.live.active.pop(active.run.id, None)
            self.live.wake.set()

    def not_started(self, run: Run, number: int, why: str) -> None:
        """An attempt that never started still counts: queued again after the backoff while
        the retry policy has attempts left, else the run fails."""
        if not self._queue_next(run, number, why, {}):
            fields = {"failure_class": FailureClass.HOST_LOST.value, "ended_at": time.time()}
            why = f"{why}; gave up after {number} attempts"
            self.live.transition([Transition(run.id, RunStatus.FAILED, why, fields)])

    async def _watch(self, active: Active) -> None:
        if not active.started:
            await self._until_started(active)
        self.ingest.follow(active)
        try:
            ended = await active.executor.wait(active.attempt)
        finally:
            self.ingest.unfollow(active)
        active.exited = True
        self.live.wake.set()  # its slot is free: the next run need not wait for its record
        await self.ingest.finish(active)
        await self._finish(active, ended)

    async def _until_started(self, active: Active) -> None:
        """An attempt waiting in a cluster's queue: running once its job runs (it may end in
        the queue instead, cancelled or failed, which `wait` then tells)."""
        executor = active.executor
        started = await executor.until_started(active.attempt)
        active.started = True
        if started is None:
            return
        active.attempt = started
        if active.run.status is RunStatus.STARTING:
            why = f"started on {active.run.host} as {executor.describe(started)}"
            fields = {"pid": started.pid, "started_at": time.time()}
            active.run = self.live.transition(
                [Transition(active.run.id, RunStatus.RUNNING, why, fields)]
            )[0]
        await self._note_batch_job(active)

    async def _note_batch_job(self, active: Active) -> None:
        """Record the attempt's batch job and the node that runs it with the attempt."""
        if active.attempt.batch_job is None:
            return
        await self.live.flush()  # its attempt row is written with its start
        node = active.executor.node_of(active.attempt)
        place = (active.run.id, active.number, active.attempt.batch_job, node)
        await self.live.db.call(self.live.store.note_batch_jobs, [place])

    def failed_reading(self, active: Active, exc: BaseException) -> None:
        """The attempt's output could not be ingested: the run fails with why, and is no longer
        followed (its process is left alone, as for any engine error)."""
        self.live.fail_unexpectedly(active.run.id, "reading its output", exc)
        if active.task is not None:
            active.task.cancel()

    async def _ride_out(self, active: Active, why: str) -> bool:
        """Mark a run unreachable and wait for its host. True when the host is back and the
        attempt should be followed again; False when the run has ended or was given up."""
        transition = self.live.transition
        run = self.live.runs[active.run.id]
        host = run.host or ""
        if run.status is not RunStatus.UNREACHABLE:
            run = transition(
                [Transition(run.id, RunStatus.UNREACHABLE, f"host {host} unreachable: {why}")]
            )[0]
        executor = active.executor
        while True:
            since = self.hosts.since.get(host) or time.time()
            left = since + self.config.hosts[host].lost_after_s - time.time()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    await executor.until_up()
            except TimeoutError:
                away = time.time() - since
                self._give_up(active, f"host {host} unreachable for over {away:.0f}s: {why}")
                return False
            try:
                if active.attempt.pid == 0:  # the link dropped during the start
                    if not await executor.attempt_exists(run.id, active.number):
                        why = f"host {host} dropped before attempt {active.number} started"
                        if active.cancel_requested:
                            why = f"cancelled by user while starting; {why}"
                            ended = {"ended_at": time.time()}
                            transition([Transition(run.id, RunStatus.CANCELLED, why, ended)])
                        else:
                            self.not_started(run, active.number, why)
                        return False
                    active.attempt = await executor.reattach(active.attempt)
                state = await executor.probe(active.attempt)
            except HostUnreachable as exc:
                why = str(exc)
                await asyncio.sleep(0.2)  # the link is back but failing: let it settle
                continue
            if state is ProcessState.GONE:
                gone = f"host {host} is back, but its process is gone and left no exit code"
                transition([Transition(run.id, RunStatus.LOST, gone, {"ended_at": time.time()})])
                return False
            what = "still running" if state is ProcessState.RUNNING else "it ended meanwhile"
            back = f"host {host} is back: {what}"
            pid = {"pid": active.attempt.pid or None}
            active.run = transition([Transition(run.id, RunStatus.RUNNING, back, pid)])[0]
            if state is ProcessState.RUNNING and active.stop_asked:
                await self.terminate(active)
            return True

    def _give_up(self, active: Active, why: str) -> None:
        """The host stayed away too long: end this attempt as host_lost (retried elsewhere
        under the retry policy, unless it was cancelled) and kill its copy if the host ever
        returns."""
        run = self.live.runs[active.run.id]
        self.hosts.abandon(run.host or "", run.id, active.number)
        fields: dict[str, Any] = {
            "failure_class": FailureClass.HOST_LOST.value,
            "ended_at": time.time(),
        }
        if active.cancel_requested:  # never retried: its copy is killed on the host's return
            why = f"cancelled by user; {why}; killed when it returns"
            self.live.transition([Transition(run.id, RunStatus.CANCELLED, why, fields)])
            return
        self._end_attempt(run, active.number, RunStatus.FAILED, FailureClass.HOST_LOST, why, fields)

    async def _finish(self, active: Active, ended: ExitInfo) -> None:
        tail = b""
        if ended.exit_code != 0 or active.cancel_requested:  # only failures are read for why
            tail = await active.executor.read_output(
                active.attempt, max(0, active.position.byte_offset - 4096), 4096
            )
        status, failure, reason = classify(
            ended.exit_code,
            ended.wrapper_signal,
            tail.decode("utf-8", "replace"),
            active.run.argv,
            active.cancel_requested,
        )
        if ended.cause is not None and not active.cancel_requested:  # the host's doing
            failure, reason = ended.cause
            status = RunStatus.LOST if failure is None else RunStatus.FAILED
        if active.prune_reason and not active.cancel_requested:
            status, failure, reason = RunStatus.PRUNED, None, active.prune_reason
        elif active.diverged and not active.cancel_requested:
            status, failure = RunStatus.FAILED, FailureClass.DIVERGED
            reason = f"diverged: {active.diverged}"
        if failure is FailureClass.KILLED and oom_kills() not in (None, active.oom_kills):
            failure, reason = FailureClass.OOM, f"{reason}, by the kernel's out-of-memory killer"
        run = self.live.runs[active.run.id]
        fields: dict[str, Any] = {"exit_code": ended.exit_code, "ended_at": _end_time(run, ended)}
        if failure is not None:
            fields["failure_class"] = failure.value
        with contextlib.suppress(HostUnreachable):
            await active.executor.fetch_artifacts(run.id)
        self._end_attempt(run, active.number, status, failure, reason, fields)

    def _end_attempt(
        self,
        run: Run,
        number: int,
        status: RunStatus,
        failure: FailureClass | None,
        reason: str,
        fields: dict[str, Any],
    ) -> None:
        """End an attempt: queue the next one where the retry policy says so, else end the run."""
        if status is RunStatus.FAILED and failure is not None and failure.value in run.retry.on:
            why = f"attempt {number} failed ({failure}: {reason})"
            if self._queue_next(run, number, why, fields):
                return
            reason = f"{reason}; gave up after {number} attempts"
        self.live.transition([Transition(run.id, status, reason, fields)])

    def _queue_next(self, run: Run, number: int, why: str, fields: dict[str, Any]) -> bool:
        """Queue attempt `number + 1` after the policy's backoff, if the policy has one left."""
        policy = run.retry
        if number >= policy.attempts:
            return False
        now = time.time()
        delay = policy.delay(number)
        fields.update(not_before=now + delay, queued_at=now)
        why = f"{why}; retry {number + 1}/{policy.attempts} in {delay:g}s"
        self.live.transition([Transition(run.id, RunStatus.QUEUED, why, fields)])
        return True


def _end_time(run: Run, ended: ExitInfo) -> float:
    """When an attempt ended: when its exit_code file was written (it may be read much later,
    after an outage or a restart), kept between its start and now against clock skew."""
    now = time.time()
    if ended.ended_at is None:
        return now
    return min(now, max(run.started_at or 0.0, ended.ended_at))
