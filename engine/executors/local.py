"""The local executor: runs attempts on this machine through the detached sh wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from engine.executors import layout
from engine.executors.base import (
    Attempt,
    Executor,
    ExitInfo,
    Launch,
    ProcessState,
    wrapper_args,
)
from engine.executors.watch import OutputWatch, output_watch

WRAPPER = Path(__file__).with_name("wrapper.sh")
# How often a reattached attempt is checked where pidfd (Linux) cannot wake us on its exit.
POLL_S = 0.2


class LocalExecutor(Executor):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        # Our own children, kept so that we (not subprocess's cleanup) reap them and get the status.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    async def start(self, launch: Launch) -> Attempt:
        folder = Path(launch.attempt_dir)
        os.makedirs(folder, exist_ok=True)
        for name in layout.KEPT_ACROSS_ATTEMPTS:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder.parent / name)
        # Not an asyncio subprocess: asyncio kills a still-running child when its loop closes,
        # and a run must outlive the daemon.
        links = [(link.source, link.place) for link in launch.data]
        args = wrapper_args(str(folder), launch.cwd, launch.snapshot, links)
        proc = subprocess.Popen(
            ["sh", str(WRAPPER), *args, *launch.argv],
            env=launch.env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._children[proc.pid] = proc
        return Attempt(attempt_dir=str(folder), pid=proc.pid, start_time=_start_time(proc.pid))

    async def probe(self, attempt: Attempt) -> ProcessState:
        if _exit_code_written(attempt):
            return ProcessState.EXITED
        if not attempt.pid:
            return ProcessState.GONE
        if attempt.pid in self._children:
            running = self._children[attempt.pid].poll() is None
            return ProcessState.RUNNING if running else ProcessState.GONE
        return ProcessState.RUNNING if _alive(attempt) else ProcessState.GONE

    async def wait(self, attempt: Attempt) -> ExitInfo:
        proc = self._children.get(attempt.pid)
        wrapper_signal = None
        if proc is not None:
            await _wait_exit(attempt.pid, proc)
            code = proc.wait()  # it has exited: this only reaps it
            del self._children[attempt.pid]
            wrapper_signal = -code if code < 0 else None
        else:
            await _wait_foreign(attempt)
        try:
            ended_at: float | None = _exit_code_file(attempt).stat().st_mtime
        except OSError:
            ended_at = None
        return ExitInfo(_read_exit_code(attempt), wrapper_signal, ended_at)

    async def read_output(self, attempt: Attempt, offset: int, max_bytes: int) -> bytes:
        return await asyncio.to_thread(
            _read_bytes, Path(attempt.attempt_dir) / layout.OUTPUT, offset, max_bytes
        )

    async def output_size(self, attempt: Attempt) -> int:
        try:
            return os.stat(Path(attempt.attempt_dir) / layout.OUTPUT).st_size
        except FileNotFoundError:
            return 0

    async def output_sizes(self, attempts: Sequence[Attempt]) -> list[int]:
        return [await self.output_size(a) for a in attempts]  # a stat each: no thread needed

    async def read_outputs(self, reads: Sequence[tuple[Attempt, int, int]]) -> list[bytes]:
        paths = [(Path(a.attempt_dir) / layout.OUTPUT, offset, n) for a, offset, n in reads]
        return await asyncio.to_thread(lambda: [_read_bytes(*read) for read in paths])

    def output_watch(self, on_change: Callable[[], None]) -> OutputWatch | None:
        return output_watch(on_change)

    async def signal(self, attempt: Attempt, signum: int) -> bool:
        if attempt.pid not in self._children and not _alive(attempt):
            return False
        try:
            os.killpg(attempt.pid, signum)
        except ProcessLookupError:
            return False
        return True


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None  # already exited and reaped; its exit_code file tells the rest


def _alive(attempt: Attempt) -> bool:
    """Whether the attempt's wrapper still runs: same pid, same start time, not a zombie."""
    try:
        proc = psutil.Process(attempt.pid)
        if attempt.start_time is not None and abs(proc.create_time() - attempt.start_time) > 0.05:
            return False  # the pid was reused by another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def _wait_exit(pid: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait for our own child to exit without reaping it: on a pidfd where Linux has them, else
    on a thread."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        await asyncio.to_thread(proc.wait)
        return
    try:
        await _readable(fd)
    finally:
        os.close(fd)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(fd)


async def _wait_foreign(attempt: Attempt) -> None:
    """Wait for a process that is not our child (reattached after a daemon restart)."""
    try:
        fd = os.pidfd_open(attempt.pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None and _alive(attempt):
        try:
            await _readable(fd)
        finally:
            os.close(fd)
        return
    if fd is not None:
        os.close(fd)
    while _alive(attempt) and not _exit_code_written(attempt):
        await asyncio.sleep(POLL_S)


def _exit_code_file(attempt: Attempt) -> Path:
    return Path(attempt.attempt_dir) / layout.EXIT_CODE


def _exit_code_written(attempt: Attempt) -> bool:
    """Whether the wrapper has written the exit code (in one write: whole once not empty)."""
    try:
        return _exit_code_file(attempt).stat().st_size > 0
    except OSError:
        return False


def _read_exit_code(attempt: Attempt) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(_exit_code_file(attempt).read_text().strip())
    return None


def _read_bytes(path: Path, offset: int, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(max_bytes)
    except FileNotFoundError:
        return b""
