"""Why an attempt ended: its status, failure class and a one-line reason, from its exit and
the tail of its log."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
from collections.abc import Sequence

from engine.model import FailureClass, RunStatus

OOM_TEXT = re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory")


def signal_name(signum: int) -> str:
    """SIGKILL for 9; "signal 64" for one without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def classify(
    exit_code: int | None,
    wrapper_signal: int | None,
    tail: str,
    argv: Sequence[str],
    cancelled: bool,
) -> tuple[RunStatus, FailureClass | None, str]:
    """A finished attempt's status, failure class and reason, from its exit and its log tail."""
    code = exit_code
    if cancelled:
        how = f" (exit code {code})" if code is not None else ""
        return RunStatus.CANCELLED, None, f"cancelled by user{how}"
    if code == 0:
        return RunStatus.SUCCEEDED, None, "exit code 0"
    if OOM_TEXT.search(tail):
        return RunStatus.FAILED, FailureClass.OOM, f"CUDA out of memory (exit code {code})"
    if code is None:
        if wrapper_signal:
            name = signal_name(wrapper_signal)
            return (
                RunStatus.FAILED,
                FailureClass.KILLED,
                f"killed by {name} before it recorded an exit code",
            )
        return RunStatus.LOST, None, "the run's process is gone and left no exit code"
    if code == 127:
        return RunStatus.FAILED, FailureClass.ERROR, f"command not found: {argv[0]}"
    if code == 126:
        return RunStatus.FAILED, FailureClass.ERROR, f"command cannot be executed: {argv[0]}"
    if code == 125 and "cannot enter working directory" in tail:
        return RunStatus.FAILED, FailureClass.ERROR, last_line(tail)
    if code > 128:
        return RunStatus.FAILED, FailureClass.KILLED, f"killed by {signal_name(code - 128)}"
    last = last_line(tail)
    return RunStatus.FAILED, FailureClass.ERROR, f"exit code {code}" + (f": {last}" if last else "")


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (Linux), else None."""
    fd = _vmstat()
    if fd is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        data = os.pread(fd, 1 << 16, 0)  # the whole file, read again from its start
        at = data.find(b"\noom_kill ") + 1
        if at:
            return int(data[at + len(b"oom_kill ") : data.index(b"\n", at)])
    return None


@functools.cache
def _vmstat() -> int | None:
    """/proc/vmstat, kept open: each start and end of an attempt reads it (a quarter of the
    cost of opening it each time)."""
    try:
        return os.open("/proc/vmstat", os.O_RDONLY)
    except OSError:
        return None


def last_line(tail: str) -> str:
    """The last line of a text that holds something, at most 200 characters."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
