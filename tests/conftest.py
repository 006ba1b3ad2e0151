"""Fixtures: a temporary project with hosts.toml, the real daemon as a subprocess, a client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.client import Client, connect, probe
from engine.config import load_config
from engine.paths import socket_path

ROOT = Path(__file__).resolve().parent.parent


async def wait_until(
    condition: Callable[[], Awaitable[object] | object], timeout: float = 20.0, what: str = ""
) -> object:
    """Wait until `condition()` is truthy (it may be async); fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def shown_notifications(app: Any) -> list[str]:
    """Every message an app shows as a toast from now on, recorded at its public entry
    (App.notify) rather than read from Textual's private list."""
    told: list[str] = []
    notify = app.notify

    def recording(message: str, *args: Any, **kwargs: Any) -> None:
        told.append(str(message))
        notify(message, *args, **kwargs)

    app.notify = recording
    return told


def _alive(pid: int) -> bool:
    """Whether the process runs; one this process started (an app here started a daemon) is
    reaped once it has exited, so it is not waited on as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Project:
    """A temporary project folder with its own hosts.toml and state directory."""

    def __init__(self, folder: Path, hosts: str) -> None:
        self.folder = folder
        self.config_path = folder / "hosts.toml"
        self.config_path.write_text(hosts)
        self.state_dir = folder / "runs"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}  # for the daemon and CLI, e.g. another HOME

    @property
    def config(self):  # type: ignore[no-untyped-def]
        return load_config(self.config_path)

    @property
    def socket(self) -> Path:
        return socket_path(self.config.state_dir)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RUNYARD_CONFIG"] = str(self.config_path)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env | self.extra_env

    def engine(
        self, *args: str, check: bool = False, timeout: float = 60, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `engine` CLI in this project."""
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            cwd=cwd or self.folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    async def start_daemon(self) -> subprocess.Popen[bytes]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "daemon-test.log", "ab")  # noqa: SIM115 - the daemon writes it
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "engine", "--config", str(self.config_path), "serve"],
            stdout=log,
            stderr=log,
            env=self.env(),
            start_new_session=True,
        )
        log.close()
        await wait_until(lambda: probe(self.socket), what="the daemon to answer")
        return self.daemon

    def kill_daemon(self, signum: int = signal.SIGKILL) -> None:
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signum)
            self.daemon.wait(timeout=30)

    def stop_started_daemon(self) -> None:
        """Stop a daemon the CLI started in the background for this project (its pid is in the
        state dir's lock file), checking that the process really serves this project."""
        lock = self.state_dir / "daemon.lock"
        with contextlib.suppress(OSError, ValueError):
            pid = int(lock.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(self.config_path).encode() in cmdline:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)

    def run_pids(self) -> list[int]:
        pids = []
        for pid_file in self.state_dir.glob("runs/*/attempt-*/pid"):
            with contextlib.suppress(ValueError, OSError):
                pids.append(int(pid_file.read_text()))
        return pids

    def cleanup(self) -> None:
        self.kill_daemon(signal.SIGTERM)
        self.stop_started_daemon()
        log = self.folder / "daemon-test.log"
        if log.exists() and "Traceback" in (text := log.read_text(errors="replace")):
            print(f"--- the daemon's log ({log}) ---\n{text}", file=sys.stderr)
        for pid in self.run_pids():  # run process groups this test started, by their pids
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


HOSTS = """\
[engine]
state_dir = "runs"
sample_interval_s = 0.2
cancel_grace_s = 1.0

[hosts.local]
kind = "local"
max_jobs = {max_jobs}
tags = ["cpu"]
"""


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp folder with a short path, so the daemon socket fits in the state directory."""
    with tempfile.TemporaryDirectory(prefix="ry-") as folder:
        yield Path(folder)


@pytest.fixture
def project(short_tmp: Path) -> Iterator[Project]:
    project = Project(short_tmp, HOSTS.format(max_jobs=4))
    yield project
    project.cleanup()


@pytest.fixture
async def daemon(project: Project) -> AsyncIterator[Project]:
    await project.start_daemon()
    yield project


@pytest.fixture
async def client(daemon: Project) -> AsyncIterator[Client]:
    engine = await connect(daemon.config, start=False)
    yield engine
    await engine.close()


def fill_store(state_dir: Path, runs: int, steps: int = 5) -> None:
    """Put `runs` finished runs (every 7th failed) with `steps` points each of `loss` and `auc`
    into a state directory's store, through the store's own bulk paths, before a daemon
    opens it."""
    import pyarrow as pa

    from engine.model import JobSpec, RunStatus
    from engine.store import Store, Transition

    state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(state_dir / "store.duckdb")
    try:
        sweep = store.add_sweep(
            "big", "big.toml", "grid", runs, None, {"name": "auc", "mode": "max"}
        )
        jobs = [
            (
                JobSpec(argv=("train", str(i)), cwd="/", sweep=sweep, params={"lr": i % 10}),
                f"run-{i:06d}",
                i,
                {},
            )
            for i in range(runs)
        ]
        made = store.add_runs(jobs)
        changes = []
        for run in made:
            end = RunStatus.FAILED if run.id % 7 == 0 else RunStatus.SUCCEEDED
            changes += [
                Transition(run.id, RunStatus.ASSIGNED, "filled", {"host": "local"}),
                Transition(
                    run.id,
                    RunStatus.STARTING,
                    "filled",
                    {"attempt": 1, "host": "local", "run_dir": "/"},
                ),
                Transition(run.id, RunStatus.RUNNING, "filled", {"started_at": 1.0, "pid": 1}),
                Transition(
                    run.id,
                    end,
                    "filled",
                    {
                        "ended_at": 2.0 + run.id % 100,
                        "exit_code": 0 if end is RunStatus.SUCCEEDED else 1,
                    },
                ),
            ]
        for i in range(0, len(changes), 200_000):
            store.apply_transitions(changes[i : i + 200_000])
        n = runs * steps
        ids = [r.id for r in made for _ in range(steps)]
        step = [s for _ in made for s in range(steps)]
        for key, value in (
            ("loss", lambda r, s: 1.0 / (s + 1) + (r % 13) / 100),
            ("auc", lambda r, s: 0.5 + (r % 1000) / 2000 + s / 1000),
        ):
            store.import_points(
                pa.table(
                    {
                        "run_id": ids,
                        "attempt": [1] * n,
                        "key": [key] * n,
                        "step": step,
                        "value": [value(r, s) for r, s in zip(ids, step, strict=True)],
                        "wall_time": [0.0] * n,
                        "line": step,
                    }
                )
            )
    finally:
        store.close()


def metric_batch(
    run_id: int,
    attempt: int,
    keys: list[str],
    steps: list[int | None],
    values: list[float],
    lines: list[int],
    position: tuple[int, int, int],
    wall_time: float = 1.0,
    first: bool = False,
) -> Any:
    """A MetricBatch of the points given as columns (in log order), read up to `position` (byte
    offset, line count, malformed markers)."""
    from engine.core.points import Points
    from engine.store import MetricBatch

    points = Points()
    for key, step, value, line in zip(keys, steps, values, lines, strict=True):
        points.add(line, step, {key: value})
    return MetricBatch(run_id, attempt, points, wall_time, *position, first=first)
