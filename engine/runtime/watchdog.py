"""The watchdog: flags a running run whose watched metric becomes NaN or infinite (and stops it
as `diverged` where its policy says `on_nan = "stop"`), or that has printed nothing for its
`stall_after_s`. Metrics are judged as they are ingested; silence by one timer for all runs."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import traceback
from collections.abc import Awaitable, Callable

import msgspec

from engine.config import Config
from engine.core.points import Points
from engine.executors import HostUnreachable
from engine.model import format_duration
from engine.protocol import RunChanged
from engine.runtime.live import Active, LiveView
from engine.runtime.notify import Notifier, run_fields

STALL_LEAST_S = 0.25  # the watchdog's timer: a quarter of the shortest stall time, in these
STALL_MOST_S = 10.0  # bounds, so a short stall_after_s is seen soon and a long one costs nothing


class Watchdog:
    """Watches the followed runs; `judge` sees each chunk of a running run's new points."""

    def __init__(
        self,
        config: Config,
        live: LiveView,
        terminate: Callable[[Active], Awaitable[None]],
        notifier: Notifier,
    ) -> None:
        self.config = config
        self.live = live
        self.db = live.db
        self.terminate = terminate
        self.notifier = notifier
        self.silent: set[int] = set()  # runs flagged for silence: cleared when they print again
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch_silence(), name="watchdog")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def judge(self, active: Active, points: Points) -> None:
        """Flag the run at its first watched point that is NaN or infinite; stop it as diverged
        when its policy says so."""
        run = self.live.runs.get(active.run.id)
        if run is None or active.diverged or active.cancel_requested or active.prune_reason:
            return
        found = points.first_not_finite(run.watch.metrics)
        if found is None:
            return
        key, step, value, line = found
        what = "NaN" if math.isnan(value) else "infinite"
        where = f"step {step}" if step is not None else f"line {line}"
        flag = f"{key} is {what} at {where}"
        if run.flag == flag:
            return  # told already (output read again after a restart)
        self.silent.discard(run.id)
        await self._flag(run.id, flag)
        if run.watch.on_nan == "stop" and not active.exited:
            active.diverged = flag
            await self.db.call(self.db.store.request_diverged, run.id, flag)
            with contextlib.suppress(HostUnreachable):  # sent again when the host is back
                await self.terminate(active)

    async def _flag(self, run_id: int, flag: str | None) -> None:
        """Record and publish what the watchdog saw (None: the silence is over); notify."""
        run = self.live.runs.get(run_id)
        if run is None:
            return
        changed = msgspec.structs.replace(run, flag=flag)
        self.live.runs[run_id] = changed
        if (active := self.live.active.get(run_id)) is not None:
            active.run = msgspec.structs.replace(active.run, flag=flag)
        await self.live.flush()  # its events in order with its transitions
        await self.db.call(self.db.store.set_flag, run_id, flag)
        why = f"flagged: {flag}" if flag else "flag cleared: it prints again"
        self.live.bus.publish(RunChanged(run=changed, previous=changed.status, reason=why))
        if flag:
            self.notifier.send("run_flagged", run=run_fields(changed))

    def stall_after(self, active: Active) -> float | None:
        """How long the run may print nothing: its own policy's, else its host's; None: any."""
        run = active.run
        if run.watch.stall_after_s is not None:
            return run.watch.stall_after_s
        host = self.config.hosts.get(run.host or "")
        return host.stall_after_s if host is not None else None

    async def _watch_silence(self) -> None:
        while True:
            period = STALL_MOST_S
            try:
                period = await self._look_for_silence()
            except Exception:  # a bug here must not end the watch for every run
                traceback.print_exc(file=sys.stderr)
            await asyncio.sleep(period)

    async def _look_for_silence(self) -> float:
        """Flag each run silent past its stall time, clear those printing again; the time to
        the next look."""
        now = time.time()
        period = STALL_MOST_S
        for run_id, active in list(self.live.active.items()):
            limit = self.stall_after(active)
            if limit is None or not active.started or active.exited:
                continue
            period = min(period, max(STALL_LEAST_S, limit / 4))
            run = self.live.runs.get(run_id)
            if run is None:
                continue
            since = max(active.printed_at, run.started_at or 0.0)
            quiet = now - since
            if quiet >= limit and run_id not in self.silent and not run.flag:
                self.silent.add(run_id)
                await self._flag(run_id, f"silent for {format_duration(quiet)}")
            elif quiet < limit and run_id in self.silent:
                self.silent.discard(run_id)
                if run.flag and run.flag.startswith("silent for"):
                    await self._flag(run_id, None)
        self.silent &= set(self.live.active)
        return period
