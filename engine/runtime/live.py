"""The daemon's live view of every unfinished run, and the one function that changes a run's
status: checked against the life cycle, applied, published, and queued for the store."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.core.capture import Parser
from engine.executors import Attempt, Executor, HostUnreachable
from engine.model import FailureClass, Run, RunStatus, can_transition
from engine.protocol import RunChanged
from engine.runtime.bus import EventBus
from engine.runtime.run_queue import RunQueue
from engine.store import IllegalTransition, LogPosition, StoreThread, Transition, TransitionWriter

# What a new attempt clears of the one before it: a run's end and failure are its last attempt's.
NEW_ATTEMPT: dict[str, Any] = {"failure_class": None, "exit_code": None, "ended_at": None}
_RUN_FIELDS = frozenset(Run.__struct_fields__)


class Refused(ValueError):
    """A request the engine will not carry out (a bad job, a cancel of an ended run, an
    unknown host); the message says why."""


@dataclass
class Active:
    """One attempt the daemon follows: where its output has been read to, and its task."""

    run: Run
    executor: Executor
    attempt: Attempt
    number: int
    parser: Parser
    position: LogPosition
    cancel_requested: bool = False
    # Its process has exited: its slot, CPUs, memory and GPUs are free while the rest of its
    # output and its end are recorded.
    exited: bool = False
    started: bool = True  # False while it waits in a cluster's queue
    prune_reason: str | None = None  # set when the sweep's pruner stops it
    diverged: str | None = None  # set when the watchdog stops it: why ("loss is NaN at step 3")
    printed_at: float = field(default_factory=time.time)  # when output last came (or followed)
    oom_kills: int | None = None  # the kernel's OOM-kill count when the attempt started
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # The SIGKILL due if the attempt outlasts its grace after a SIGTERM.
    killer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def stop_asked(self) -> bool:
        """Whether the user, the pruner or the watchdog has asked for the attempt to stop."""
        return bool(self.cancel_requested or self.prune_reason or self.diverged)

    @classmethod
    def of(cls, run: Run, executor: Executor, attempt: Attempt, number: int, **kw: Any) -> Active:
        """A run's attempt as first followed: its output read from the start."""
        kw.setdefault("position", LogPosition())
        return cls(run, executor, attempt, number, Parser(run.capture), **kw)

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM the attempt's process group now, and SIGKILL it after `grace_s` if it is
        still followed then (a host away then is sent SIGTERM again when it is back)."""
        if self.killer is not None:
            self.killer.cancel()
        loop = asyncio.get_running_loop()
        self.killer = loop.call_later(grace_s, lambda: loop.create_task(self._kill()))
        await self.executor.signal(self.attempt, signal.SIGTERM)

    def followed_no_more(self) -> None:
        """The attempt has ended or is let go: no SIGKILL is due."""
        if self.killer is not None:
            self.killer.cancel()
            self.killer = None

    async def _kill(self) -> None:
        self.killer = None
        with contextlib.suppress(HostUnreachable):
            await self.executor.signal(self.attempt, signal.SIGKILL)


class LiveView:
    """Every unfinished run as the daemon sees it (the store follows in batches), the queue,
    the attempts being followed, and `wake`, set whenever dispatch should look again."""

    def __init__(self, db: StoreThread, bus: EventBus) -> None:
        self.db = db
        self.store = db.store
        self.bus = bus
        self.runs: dict[int, Run] = {}
        self.envs: dict[int, dict[str, str]] = {}  # launch environment of each unfinished run
        self.queue = RunQueue()  # queued runs, in the order the planner takes them
        self.active: dict[int, Active] = {}
        self.starting: dict[int, bool] = {}  # runs being started → cancelled meanwhile
        self.on_end: list[Callable[[Run], None]] = []  # told of each run that ends
        self.writer = TransitionWriter(db)
        self.wake = asyncio.Event()

    async def flush(self) -> None:
        """Return once every transition so far is in the store (call before reading it)."""
        await self.writer.flush()

    def add(self, run: Run, env: dict[str, str], queued: bool) -> None:
        """A run the daemon takes on: new, retried, or loaded from the store at start."""
        self.runs[run.id] = run
        self.envs[run.id] = env
        if queued:
            self.queue.add(run)

    def transition(self, changes: list[Transition]) -> list[Run]:
        """The one place a run changes status: checked against the life cycle, applied to the
        live view, published, and queued for the store (which checks it again)."""
        status: dict[int, RunStatus] = {}
        for change in changes:
            run = self.runs.get(change.run_id)
            if run is None:
                raise IllegalTransition(f"run {change.run_id} has ended or does not exist")
            old = status.get(change.run_id, run.status)
            if not can_transition(old, change.to):
                raise IllegalTransition(
                    f"run {change.run_id}: {old} → {change.to} is not allowed ({change.reason})"
                )
            status[change.run_id] = change.to
        changed = []
        for change in changes:
            old_run = self.runs[change.run_id]
            fields = {k: v for k, v in change.fields.items() if k in _RUN_FIELDS}
            if "failure_class" in fields and fields["failure_class"] is not None:
                fields["failure_class"] = FailureClass(fields["failure_class"])
            if change.to.terminal or change.to in (RunStatus.QUEUED, RunStatus.RUNNING):
                fields.setdefault("reason", change.reason)
            run = msgspec.structs.replace(old_run, status=change.to, **fields)
            if change.to.terminal:
                del self.runs[run.id]
                self.envs.pop(run.id, None)
                for tell in self.on_end:
                    tell(run)
            else:
                self.runs[run.id] = run
            if change.to is RunStatus.QUEUED:
                self.queue.add(run)
            else:
                self.queue.discard(run.id)
            changed.append(run)
            self.bus.publish(RunChanged(run=run, previous=old_run.status, reason=change.reason))
        self.writer.add(changes)
        return changed

    def fail_unexpectedly(self, run_id: int, doing: str, exc: BaseException) -> None:
        """An error of the engine's own while starting or following one run: that run fails
        with it as the reason (the traceback goes to the daemon's log), and no other run is
        held up by it."""
        print(f"run {run_id}: error while {doing}:", file=sys.stderr, flush=True)
        traceback.print_exception(exc, file=sys.stderr)
        self.active.pop(run_id, None)
        run = self.runs.get(run_id)
        if run is None:
            return
        why = f"engine error while {doing}: {type(exc).__name__}: {exc}"
        fields = {"failure_class": FailureClass.ERROR.value, "ended_at": time.time()}
        path = {
            RunStatus.QUEUED: [RunStatus.ASSIGNED, RunStatus.STARTING],
            RunStatus.ASSIGNED: [RunStatus.STARTING],
        }.get(run.status, [])
        chain = [Transition(run_id, step, why) for step in path]
        chain.append(Transition(run_id, RunStatus.FAILED, why, fields))
        try:
            self.transition(chain)
        except Exception:  # even that failed: take it out of the queue, and say so
            traceback.print_exc(file=sys.stderr)
            self.queue.discard(run_id)
