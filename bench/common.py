"""Shared set-up for benchmarks: a throwaway project with its own daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from engine.client import Client, EngineError, connect, probe
from engine.config import load_config
from engine.paths import socket_path


@contextlib.asynccontextmanager
async def scratch_engine(max_jobs: int) -> AsyncIterator[tuple[Client, Path]]:
    """A daemon on a fresh state directory, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        hosts = f'[hosts.local]\nkind = "local"\nmax_jobs = {max_jobs}\n'
        async with engine_in(Path(folder), hosts) as client:
            yield client, Path(folder)


@contextlib.asynccontextmanager
async def engine_in(root: Path, hosts: str) -> AsyncIterator[Client]:
    """A daemon for `hosts` (hosts.toml text) in `root`, whose state directory may have been
    filled already; connected to, and stopped afterwards."""
    config = root / "hosts.toml"
    config.write_text(hosts)
    daemon = subprocess.Popen(  # in a session of its own, as a client starts it
        [sys.executable, "-m", "engine", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sock = socket_path(load_config(config).state_dir)
    try:
        while await probe(sock) is None:
            if daemon.poll() is not None:
                raise RuntimeError("the daemon did not start")
            await asyncio.sleep(0.02)
        client = await connect(config, start=False)
        try:
            yield client
        finally:
            # Runs outlive their daemon by design: end the ones a benchmark left going, once
            # no more can start (queued ones go with the daemon and its state directory).
            for host in (await client.hosts()).hosts:
                await client.set_host(host.name, enabled=False, reason="benchmark over")
            for run in await client.runs(statuses=("starting", "running", "unreachable")):
                with contextlib.suppress(EngineError):
                    await client.cancel(run.id)
                    await client.wait(run.id, 30)
            await client.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0–1) of `values`, the nearest rank at or above it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def spread(name: str, seconds: list[float]) -> str:
    """A line with the median, 95th and 99th percentile of `seconds`, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return (
        f"  {name:<22} median {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 0.95):7.1f}"
        f" ms   p99 {percentile(ms, 0.99):7.1f} ms   (n={len(ms)})"
    )


def each(seconds: list[float]) -> str:
    """Each of `seconds`, as a benchmark prints the runs behind a median."""
    return ", ".join(f"{s:.2f}" for s in seconds)


def timed(argv: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start


def env() -> dict[str, str]:
    return dict(os.environ)
