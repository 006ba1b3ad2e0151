"""What every route is given: the supervisor, the host samples and the daemon's few facts,
and the helpers they share (JSON replies, finding a run, waiting on events)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.config import Config
from engine.executors import layout
from engine.model import Run
from engine.protocol import ENCODER, ErrorBody
from engine.runtime.bus import Subscriber
from engine.runtime.samples import HostSamples
from engine.runtime.supervisor import Supervisor
from engine.store import AmbiguousName, StoreThread


@dataclass
class ApiContext:
    """The daemon as the API sees it."""

    config: Config
    supervisor: Supervisor
    samples: HostSamples
    stopping: asyncio.Event  # set to stop the daemon
    started_at: float

    @property
    def db(self) -> StoreThread:
        return self.supervisor.db

    async def find(self, request: web.Request) -> Run:
        """The run a request's `{ref}` names (an id or a name): the daemon's view of it while
        it is unfinished, else the store's; 404 or 409 (an ambiguous name) otherwise."""
        return await self.find_ref(request.match_info["ref"])

    async def find_ref(self, ref: str) -> Run:
        """The run `ref` names: an id, an alias (`@champion`) or a name (see `find`)."""
        runs = self.supervisor.runs
        if ref.isdigit() and int(ref) in runs:
            return runs[int(ref)]
        try:
            run = await self.db.call(self.db.store.find_run, ref)
        except AmbiguousName as exc:
            raise web.HTTPConflict(body=_error_body(str(exc)), content_type=JSON) from None
        if run is None:
            missing = (
                f"no alias {ref[1:]!r} (engine alias list)" if ref[:1] == "@" else f"no run {ref!r}"
            )
            raise web.HTTPNotFound(body=_error_body(missing), content_type=JSON)
        return runs.get(run.id, run)

    def artifact_dir(self, run: Run) -> Path | None:
        """Where a run's artifacts are on this machine: its own folder where it ran here, else
        the copy fetched back from its host; None when neither exists."""
        for folder in (run.run_dir, layout.run_dir(self.config.state_dir, run.id)):
            if folder and (found := Path(layout.artifact_dir(folder))).is_dir():
                return found
        return None

    async def wait_while(self, condition: Callable[[], bool], timeout: float) -> None:
        """Return when `condition` is false, re-checked on every event, or after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sub = Subscriber()
        bus = self.supervisor.bus
        bus.subscribers.add(sub)
        try:
            # The live view changes and publishes in one step: checked after subscribing, a
            # change is either seen here or arrives as an event.
            while condition() and (left := deadline - loop.time()) > 0:
                if self.stopping.is_set():
                    return  # the client asks again, of the next daemon
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 1.0)):
                        await sub.queue.get()
        finally:
            bus.subscribers.discard(sub)


JSON = "application/json"


def reply(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=ENCODER.encode(value), status=status, content_type=JSON)


def error(status: int, message: str) -> web.Response:
    return reply(ErrorBody(error=message), status)


def _error_body(message: str) -> bytes:
    return ENCODER.encode(ErrorBody(error=message))
