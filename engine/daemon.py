"""The daemon's life cycle: one per state directory (a lock), a Unix socket (0600 in a 0700
folder), the supervisor and the host sampler, and a clean stop that leaves runs running."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import msgspec
from aiohttp import web

from engine.config import Config, setting_error
from engine.model import HostSample
from engine.protocol import SampleTaken
from engine.store import StoreThread
from engine.supervisor import EventBus, Supervisor
from engine.telemetry import LocalSampler

SOCKET_NAME = "engine.sock"
LOCK_NAME = "daemon.lock"
MAX_SOCKET_PATH = 100  # sun_path is 104-108 bytes; leave room
SAMPLE_FLUSH_S = 10.0
STOP_S = 5.0  # the most one step of stopping may take
RECENT_SAMPLES = 600


class DaemonError(Exception):
    """The daemon cannot start or be reached; the message says why and what to do."""


def socket_path(state_dir: Path) -> Path:
    """The daemon's socket: in the state directory, or, where that path is too long for a Unix
    socket, in a folder only this user can enter (see `private_folder`), under a name hashed
    from the state directory."""
    path = state_dir / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    return private_folder() / f"{digest}.sock"


def private_folder() -> Path:
    """A folder for this user's sockets that no other user can enter or have made first:
    `$XDG_RUNTIME_DIR` where it is this user's and private, else `runyard-UID` in the temp
    dir, made 0700 and checked (owner, mode, not a link) before each use."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _private_to(Path(runtime), uid) is None:
        base = Path(runtime)
    else:
        base = Path(tempfile.gettempdir())
    folder = base / f"runyard-{uid}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    if (problem := _private_to(folder, uid)) is not None:
        raise DaemonError(
            f"{folder} is not a private folder of yours ({problem}): another user may have "
            "made it to receive what clients send; refusing to use it. Remove it, or give "
            "`engine.state_dir` a shorter path"
        )
    return folder


def _private_to(folder: Path, uid: int) -> str | None:
    """Why `folder` is not a real folder owned by `uid` that no one else can enter, or None."""
    try:
        found = os.lstat(folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        return "not a folder"
    if found.st_uid != uid:
        return f"owned by uid {found.st_uid}"
    if found.st_mode & 0o077:
        return f"mode {stat.S_IMODE(found.st_mode):o}"
    return None


def prepare_state_dir(config: Config) -> None:
    """Make the state directory, private (0700); a ConfigError naming the setting where it
    cannot be made."""
    state_dir = config.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as exc:
        raise setting_error(
            config.path, "engine.state_dir", f"cannot make {state_dir}: {exc.strerror or exc}"
        ) from None


class StateLock:
    """An exclusive lock on the state directory, held for the daemon's life; it holds the pid."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise DaemonError(
                f"another engine daemon (pid {other}) already serves {state_dir}; "
                "stop it with `engine stop` or use it"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has exited; another user's process runs too)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except ProcessLookupError:
        return False
    except OSError:
        return True  # not ours to signal, or no /proc (macOS): the kill(0) above is the test


def lock_holder(state_dir: Path) -> int | None:
    """The pid of the daemon holding the state directory's lock (answering or not), or None."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


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
                await self._flush_samples()
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
                await self._flush_samples()
                last_flush = time.monotonic()

    async def flush_samples(self) -> None:
        await self._flush_samples()

    async def _flush_samples(self) -> None:
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
        await asyncio.wait_for(step, STOP_S)
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
