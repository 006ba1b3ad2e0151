"""The daemon's life cycle: one per state directory (a lock), a Unix socket (0600 in a 0700
folder), the supervisor and the host sampler, and a clean stop that leaves runs running."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable

import msgspec
from aiohttp import web

from engine.config import Config
from engine.errors import DaemonError
from engine.model import HostSample
from engine.paths import StateLock, prepare_state_dir, socket_path
from engine.protocol import SampleTaken
from engine.runtime.bus import EventBus
from engine.runtime.supervisor import Supervisor
from engine.store import StoreThread
from engine.telemetry import LocalSampler

SAMPLE_FLUSH_S = 10.0
STOP_S = 5.0  # the most one step of stopping may take
RECENT_SAMPLES = 600


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self.bus = EventBus()
        self.recent: dict[str, collections.deque[HostSample]] = {
            name: collections.deque(maxlen=RECENT_SAMPLES) for name in config.hosts
        }
        self.unsaved: list[HostSample] = []  # samples not yet in the store
        self.db: StoreThread | None = None
        self.supervisor: Supervisor | None = None

    async def serve(self) -> None:
        from engine.server import make_app

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
            self.supervisor = Supervisor(
                self.config, self.db, self.bus, self.latest_sample, self.add_sample
            )
            await self.supervisor.start()
            runner = web.AppRunner(
                make_app(self), handle_signals=False, access_log=None, shutdown_timeout=STOP_S
            )
            await runner.setup()
            old = os.umask(0o177)
            try:
                await web.UnixSite(runner, str(sock)).start()
            finally:
                os.umask(old)
            os.chmod(sock, 0o600)
            sampler = asyncio.create_task(self._sample(), name="sampler")
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stopping.set)
            print(
                f"engine daemon {os.getpid()} serving {state_dir} on {sock}",
                file=sys.stderr,
                flush=True,
            )
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
            if self.db:
                await self.flush_samples()
                self.db.close()
            lock.release()
        print("engine daemon stopped; runs keep going", file=sys.stderr, flush=True)

    def latest_sample(self, host: str) -> HostSample | None:
        recent = self.recent.get(host)
        return recent[-1] if recent else None

    def add_sample(self, sample: HostSample) -> None:
        """Take one host sample (from this machine's sampler or an SSH host's probe): into the
        live view and the event stream now, into the store with the next flush."""
        self.recent[sample.host].append(sample)
        self.unsaved.append(sample)
        self.bus.publish(SampleTaken(sample=sample))

    async def _sample(self) -> None:
        """Sample this machine at the configured rate for its local hosts; store every host's
        samples in batches."""
        names = [name for name, h in self.config.hosts.items() if h.kind == "local"]
        sampler = await asyncio.to_thread(LocalSampler, names[0]) if names else None
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(self.config.sample_interval_s)
            if sampler is not None:
                sample = await asyncio.to_thread(sampler.sample)
                for name in names:
                    self.add_sample(msgspec.structs.replace(sample, host=name))
            if time.monotonic() - last_flush >= SAMPLE_FLUSH_S:
                await self.flush_samples()
                last_flush = time.monotonic()

    async def flush_samples(self) -> None:
        """Store what was sampled since the last flush, one mean sample per host (the live view
        keeps every sample; the history needs no more than this)."""
        if self.unsaved and self.db:
            batch, self.unsaved = self.unsaved, []
            by_host: dict[str, list[HostSample]] = {}
            for sample in batch:
                by_host.setdefault(sample.host, []).append(sample)
            means = [mean_sample(samples) for samples in by_host.values()]
            await self.db.call(self.db.store.append_host_samples, means)


async def _bounded(step: Awaitable[None], what: str) -> None:
    try:
        async with asyncio.timeout(STOP_S):
            await step
    except TimeoutError:
        print(f"engine daemon: {what} took over {STOP_S:g}s; stopping anyway", file=sys.stderr)


def mean_sample(samples: list[HostSample]) -> HostSample:
    """One sample standing for several of one host: their means, at the time of the last."""
    n = len(samples)
    last = samples[-1]

    def avg(values: list[float]) -> float:
        return sum(values) / len(values)

    cores = [
        avg([s.cpu_per_core[i] for s in samples if i < len(s.cpu_per_core)])
        for i in range(len(last.cpu_per_core))
    ]
    gpus = tuple(
        msgspec.structs.replace(
            g,
            util_percent=avg([s.gpus[k].util_percent for s in samples if k < len(s.gpus)]),
            mem_used_mb=avg([s.gpus[k].mem_used_mb for s in samples if k < len(s.gpus)]),
        )
        for k, g in enumerate(last.gpus)
    )
    return msgspec.structs.replace(
        last,
        cpu_percent=avg([s.cpu_percent for s in samples]) if n > 1 else last.cpu_percent,
        cpu_per_core=tuple(cores),
        mem_used_mb=avg([s.mem_used_mb for s in samples]),
        gpus=gpus,
    )


def run_daemon(config: Config) -> int:
    """`engine serve`: run the daemon in the foreground until stopped."""
    try:
        asyncio.run(Daemon(config).serve())
    except DaemonError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 1
    return 0
