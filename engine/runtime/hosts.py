"""The hosts as the daemon sees them: each one's executor, whether it is up, unreachable or
disabled by the user, what it offers, and the copies of runs given up on while it was away."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

import psutil

from engine.config import Config
from engine.executors import Executor, HostUnreachable, ProcessState, executor_for
from engine.model import HostSample
from engine.protocol import HostChanged
from engine.runtime.bus import EventBus
from engine.runtime.live import Refused
from engine.store import StoreThread

Gpus = list[tuple[int, float, float]]  # (index, total MB, free MB)


class Hosts:
    """Every configured host: its executor, its state, and what it offers the planner."""

    def __init__(
        self,
        config: Config,
        db: StoreThread,
        bus: EventBus,
        wake: asyncio.Event,
        latest_sample: Callable[[str], HostSample | None],
        on_sample: Callable[[HostSample], None],
        executors: dict[str, Executor] | None = None,
    ) -> None:
        """`executors` replaces the hosts' own (tests drive the runtime in-process so)."""
        self.config = config
        # This machine's CPUs and memory (GB), read once: the planner asks every tick.
        self.here = (float(psutil.cpu_count() or 1), psutil.virtual_memory().total / 2**30)
        self.db = db
        self.bus = bus
        self.wake = wake
        self.latest_sample = latest_sample
        self.executors: dict[str, Executor] = executors or {
            name: executor_for(config, name, lambda name=name: self.changed(name), on_sample)
            for name in config.hosts
        }
        self.disabled_by_user: dict[str, str] = {}
        # Per host, the (run id, attempt) given up on while it was away: their copies are killed
        # when it comes back. Kept in the store too, so a restart in between forgets none.
        self.abandoned: dict[str, list[tuple[int, int]]] = {}
        # A host's state: up, unreachable (why, since when), or disabled by `engine host disable`.
        self.state: dict[str, tuple[str, str | None]] = {}
        self.since: dict[str, float | None] = {}
        for name in config.hosts:
            self._refresh(name)

    async def start(self) -> None:
        """Load what was given up on before a restart, start every link, record the hosts."""
        self.abandoned = await self.db.call(self.db.store.abandoned_attempts)
        for executor in self.executors.values():
            executor.connect()
        await self.db.call(self.db.store.upsert_hosts, [self.record(n) for n in self.config.hosts])

    async def close(self) -> None:
        for executor in self.executors.values():
            await executor.close()

    def is_up(self, host: str) -> bool:
        return self.state[host][0] == "up"

    def set_enabled(self, host: str, enabled: bool, reason: str) -> None:
        if host not in self.config.hosts:
            raise Refused(f"unknown host {host!r}; hosts.toml has {sorted(self.config.hosts)}")
        if enabled:
            self.disabled_by_user.pop(host, None)
        else:
            self.disabled_by_user[host] = reason
        self._refresh(host)
        self.wake.set()

    def record(self, host: str) -> tuple[str, str, dict[str, Any], str, str | None]:
        """A host as the store records it: name, kind, what it offers, state and why."""
        spec = self.config.hosts[host]
        offers = {"max_jobs": spec.max_jobs, "tags": list(spec.tags), "address": spec.ssh_address}
        return (host, spec.kind, offers, *self.state[host])

    def inventory(self, host: str) -> tuple[float, float, Gpus]:
        """A host's CPUs, memory (GB) and GPUs: what hosts.toml declares, else what its
        telemetry found (a remote host not sampled yet: its CPUs and memory unknown, so
        unlimited)."""
        spec = self.config.hosts[host]
        if spec.kind == "slurm":
            return float("inf"), float("inf"), []  # Slurm places jobs within the cluster
        sample = self.latest_sample(host)
        if spec.kind == "local":
            cpus, mem_gb = spec.cpus or self.here[0], spec.mem_gb or self.here[1]
        else:
            cpus = spec.cpus or (float(len(sample.cpu_per_core)) if sample else float("inf"))
            mem_gb = spec.mem_gb or (sample.mem_total_mb / 1024 if sample else float("inf"))
        if spec.gpus is not None:
            gpus = [(i, g.memory_gb * 1024, g.memory_gb * 1024) for i, g in enumerate(spec.gpus)]
        elif sample is not None:
            gpus = [(g.index, g.mem_total_mb, g.mem_total_mb - g.mem_used_mb) for g in sample.gpus]
        else:
            gpus = []
        return cpus, mem_gb, gpus

    def sized(self, host: str) -> bool:
        """Whether a host's CPUs, memory and GPUs are known: declared in hosts.toml, or
        sampled (a cluster sizes itself)."""
        spec = self.config.hosts[host]
        if spec.kind == "slurm":
            return True
        declared = spec.gpus is not None and (spec.kind == "local" or (spec.cpus and spec.mem_gb))
        return bool(declared) or self.latest_sample(host) is not None

    def abandon(self, host: str, run_id: int, number: int) -> None:
        """An attempt given up on while its host is away: its copy is killed on its return."""
        self.abandoned.setdefault(host, []).append((run_id, number))

    def changed(self, host: str) -> None:
        """A link went up or down: update the host, stop what was given up on it."""
        old = self.state.get(host, ("", None))[0]
        self._refresh(host)
        state, why = self.state[host]
        if state != old:
            since = self.since.get(host)
            self.bus.publish(HostChanged(host=host, state=state, reason=why, since=since))
            with contextlib.suppress(RuntimeError):  # no loop yet while constructing
                asyncio.get_running_loop().create_task(
                    self.db.call(self.db.store.upsert_hosts, [self.record(host)])
                )
        if state == "up" and self.abandoned.get(host):
            asyncio.get_running_loop().create_task(self._stop_abandoned(host))
        self.wake.set()

    def _refresh(self, host: str) -> None:
        """A host's state from the user's say and its executor's link."""
        state, why, since = self.executors[host].state
        if host in self.disabled_by_user:
            state, why, since = "disabled", self.disabled_by_user[host], None
        self.state[host] = (state, why)
        self.since[host] = since

    async def _stop_abandoned(self, host: str) -> None:
        """Kill the old copies of runs that were retried elsewhere while this host was away, so
        each run's result is kept once; the attempt's reason says what was found."""
        executor = self.executors[host]
        left = self.abandoned.pop(host, [])
        while left:
            run_id, number = left[0]
            attempt = executor.attempt(run_id, number)
            try:
                attempt = await executor.reattach(attempt)  # its pid, from its pid file
                state = await executor.probe(attempt)
                if state is ProcessState.RUNNING:
                    await executor.signal(attempt, signal.SIGKILL)
            except HostUnreachable:  # away again: tried on its next return
                self.abandoned.setdefault(host, []).extend(left)
                return
            outcome = {
                ProcessState.RUNNING: f"its copy on {host} was killed when the host came back",
                ProcessState.EXITED: f"its copy on {host} had ended when the host came back",
            }.get(state, f"its copy on {host} was gone when the host came back")
            await self.db.call(self.db.store.settle_abandoned, run_id, number, outcome)
            left.pop(0)
