"""Notifications that reach a person when no TUI is open: the user's `[engine] notify` command,
run with one JSON event on stdin for a run that failed, was lost or was flagged, a sweep that
finished (with its best result), a host that became unreachable or came back. The command is
run as a list of words, never by a shell; one that fails or hangs is timed out and logged, and
the daemon never waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from engine.model import Run, RunStatus
from engine.protocol import HostChanged, RunChanged
from engine.runtime.bus import EventBus, Subscriber

AT_ONCE = 4  # notifiers running at once; more events wait for one to end
MOST_WAITING = 200  # events waiting beyond those: dropped, and the drop logged
ENDING_S = 0.5  # how often sweeps some run of which ended are looked at: finished yet?
STDERR_KEPT = 2000  # bytes of a failing notifier's stderr that go to the daemon's log

# The sweep a run belonged to is finished: its best result, for the event (None: no metric).
SweepSummary = Callable[[str], Awaitable[dict[str, Any] | None]]


def run_fields(run: Run) -> dict[str, Any]:
    """What an event says of a run."""
    return {
        "id": run.id,
        "name": run.name,
        "status": str(run.status),
        "sweep": run.sweep,
        "host": run.host,
        "attempt": run.attempt,
        "exit_code": run.exit_code,
        "failure_class": None if run.failure_class is None else str(run.failure_class),
        "reason": run.reason,
        "flag": run.flag,
        "params": run.params,
    }


class Notifier:
    """Sends events to the user's notifier: `send` never blocks; `deliver` runs it once and
    says how it went (`engine notify test`)."""

    def __init__(self, argv: tuple[str, ...], timeout_s: float, cwd: Path) -> None:
        self.argv = argv
        self.timeout_s = timeout_s
        self.cwd = cwd
        self._slots = asyncio.Semaphore(AT_ONCE)
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()
        self._waiting = 0
        self._listener: asyncio.Task[None] | None = None

    def send(self, kind: str, **fields: Any) -> None:
        """Queue an event for the notifier, if there is one; returns at once."""
        if not self.argv:
            return
        if self._waiting >= MOST_WAITING:
            print(f"notify: {MOST_WAITING} events wait already; dropped {kind}", file=sys.stderr)
            return
        task = asyncio.create_task(self.deliver(event(kind, **fields)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run the notifier with `message` on stdin: its exit code, the end of its stderr, how
        long it took, whether it was timed out (then killed, with its process group)."""
        if not self.argv:
            return {"sent": False, "error": "no notifier: set [engine] notify in hosts.toml"}
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            outcome = await self._run(msgspec.json.encode(message) + b"\n")
        finally:
            self._slots.release()
        if outcome["error"]:
            print(f"notify ({message['event']}): {outcome['error']}", file=sys.stderr, flush=True)
        return outcome

    async def _run(self, data: bytes) -> dict[str, Any]:
        began = time.monotonic()
        outcome: dict[str, Any] = {"sent": False, "exit_code": None, "timed_out": False}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                start_new_session=True,  # its children are timed out with it
            )
        except OSError as exc:
            return outcome | {"error": f"cannot run {self.argv[0]!r}: {exc.strerror or exc}"}
        try:
            async with asyncio.timeout(self.timeout_s):
                _, stderr = await proc.communicate(data)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            took = time.monotonic() - began
            return outcome | {
                "timed_out": True,
                "elapsed_s": took,
                "error": f"{self.argv[0]} did not finish in {self.timeout_s:g}s: killed",
            }
        except (BrokenPipeError, ConnectionResetError):  # it exited without reading
            stderr = await proc.stderr.read() if proc.stderr else b""
            await proc.wait()
        text = stderr[-STDERR_KEPT:].decode("utf-8", "replace").strip()
        error = None
        if proc.returncode != 0:
            error = f"{self.argv[0]} exited with {proc.returncode}" + (f": {text}" if text else "")
        return outcome | {
            "sent": proc.returncode == 0,
            "exit_code": proc.returncode,
            "stderr": text,
            "elapsed_s": time.monotonic() - began,
            "error": error,
        }

    def listen(self, bus: EventBus, sweep_ended: Callable[[str], bool], best: SweepSummary) -> None:
        """Turn the daemon's own events into notifications: failed and lost runs, finished
        sweeps (`sweep_ended` says whether one is done), hosts leaving and coming back."""
        if not self.argv:
            return
        sub = Subscriber(maxsize=10_000)
        bus.subscribers.add(sub)
        self._listener = asyncio.create_task(self._listen(sub, sweep_ended, best), name="notify")

    async def _listen(
        self, sub: Subscriber, sweep_ended: Callable[[str], bool], best: SweepSummary
    ) -> None:
        hosts: dict[str, str] = {}
        told: set[str] = set()
        ending: set[str] = set()  # sweeps a run of which ended: looked at every ENDING_S
        look_at = 0.0  # when `ending` is next looked at
        while True:
            change = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ENDING_S if ending else None):
                    change = await sub.queue.get()
            try:
                if isinstance(change, HostChanged):
                    old = hosts.get(change.host)
                    hosts[change.host] = change.state
                    if change.state == "unreachable":
                        self.send("host_unreachable", host=change.host, reason=change.reason)
                    elif old == "unreachable" and change.state == "up":
                        self.send("host_back", host=change.host)
                elif isinstance(change, RunChanged) and change.previous != change.run.status:
                    run = change.run
                    if run.status in (RunStatus.FAILED, RunStatus.LOST):
                        self.send(f"run_{run.status}", run=run_fields(run))
                    if run.status.terminal and run.sweep and run.sweep not in told:
                        ending.add(run.sweep)
                if ending and time.monotonic() >= look_at:  # has any of them finished?
                    look_at = time.monotonic() + ENDING_S
                    for sweep in [s for s in ending if sweep_ended(s)]:
                        ending.discard(sweep)
                        told.add(sweep)
                        self.send("sweep_finished", sweep=await best(sweep))
            except Exception as exc:  # a notification lost, never the listener
                print(f"notify: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    async def close(self) -> None:
        """Stop listening; notifiers still running are left to their timeouts' end."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.timeout_s + 1)


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """One notification: its kind, when, and what it is about."""
    return {"event": kind, "time": time.time(), **fields}
