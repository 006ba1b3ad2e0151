"""The daemon's life cycle: one per state directory (a lock), a Unix socket (0600 in a 0700
folder), the supervisor and the host sampler, and a clean stop that leaves runs running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable

import msgspec
from aiohttp import web

from engine.api import ApiContext, make_app
from engine.config import Config
from engine.errors import DaemonError
from engine.paths import StateLock, prepare_state_dir, socket_path
from engine.runtime.bus import EventBus
from engine.runtime.samples import FLUSH_S, HostSamples
from engine.runtime.supervisor import Supervisor
from engine.store import StoreThread
from engine.telemetry import LocalSampler

STOP_S = 5.0  # the most one step of stopping may take
# How long a thread holding the GIL keeps it from one that asks (Python's default is 5 ms): the
# store's thread asks for it many times in one insert, and the event loop for each answer.
SWITCH_INTERVAL_S = 0.0005


class Daemon:
    def __init__(self, config: Config, announce: bool = False) -> None:
        self.config = config
        self.announce = announce  # say on stdout, as JSON, where it serves once it does
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self.bus = EventBus()
        self.db: StoreThread | None = None
        self.samples: HostSamples | None = None
        self.supervisor: Supervisor | None = None

    async def serve(self) -> None:
        state_dir = self.config.state_dir
        prepare_state_dir(self.config)
        lock = StateLock(state_dir)
        sock = socket_path(state_dir)
        runner: web.AppRunner | None = None
        sampler: asyncio.Task[None] | None = None
        try:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()  # we hold the lock, so any socket left here is stale
            self.db = StoreThread(state_dir / "store.duckdb")
            self.samples = samples = HostSamples(list(self.config.hosts), self.db, self.bus)
            # This machine is sampled once before anything is submitted: what its hosts have
            # (GPUs above all) is known to the first submission's checks and plan.
            local = [name for name, h in self.config.hosts.items() if h.kind == "local"]
            here = await asyncio.to_thread(LocalSampler, local[0]) if local else None
            if here is not None:
                first = await asyncio.to_thread(here.sample)
                for name in local:
                    samples.know(msgspec.structs.replace(first, host=name))
            self.supervisor = Supervisor(
                self.config, self.db, self.bus, samples.latest, samples.add
            )
            await self.supervisor.start()
            api = ApiContext(self.config, self.supervisor, samples, self.stopping, self.started_at)
            runner = web.AppRunner(
                make_app(api), handle_signals=False, access_log=None, shutdown_timeout=STOP_S
            )
            await runner.setup()
            old = os.umask(0o177)
            try:
                await web.UnixSite(runner, str(sock)).start()
            finally:
                os.umask(old)
            os.chmod(sock, 0o600)
            sampler = asyncio.create_task(self._sample(samples, here, local), name="sampler")
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stopping.set)
            print(
                f"engine daemon {os.getpid()} serving {state_dir} on {sock}",
                file=sys.stderr,
                flush=True,
            )
            if self.announce:
                ready = {"pid": os.getpid(), "state_dir": str(state_dir), "socket": str(sock)}
                print(json.dumps(ready), flush=True)
            await self.stopping.wait()
        finally:
            if sampler:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            # Each step of the stop is bounded: a daemon told to stop always does.
            if self.supervisor:
                await _bounded(self.supervisor.stop(), "stopping the supervisor")
            if runner:
                await _bounded(runner.cleanup(), "closing the API")
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            if self.samples:
                await self.samples.flush()
            if self.db:
                self.db.close()
            lock.release()
        print("engine daemon stopped; runs keep going", file=sys.stderr, flush=True)

    async def _sample(
        self, samples: HostSamples, sampler: LocalSampler | None, names: list[str]
    ) -> None:
        """Sample this machine at the configured rate for its local hosts; store every host's
        samples in batches."""
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(self.config.sample_interval_s)
            if sampler is not None:
                sample = await asyncio.to_thread(sampler.sample)
                for name in names:
                    samples.add(msgspec.structs.replace(sample, host=name))
            if time.monotonic() - last_flush >= FLUSH_S:
                await samples.flush()
                last_flush = time.monotonic()


async def _bounded(step: Awaitable[None], what: str) -> None:
    try:
        async with asyncio.timeout(STOP_S):
            await step
    except TimeoutError:
        print(f"engine daemon: {what} took over {STOP_S:g}s; stopping anyway", file=sys.stderr)


def run_daemon(config: Config, announce: bool = False) -> int:
    """`engine serve`: run the daemon in the foreground until stopped; with `announce`, print
    where it serves as one JSON line once it does."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # 5 ms made an insert beside a parse 3 times slower
    try:
        asyncio.run(Daemon(config, announce).serve())
    except DaemonError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 1
    return 0
