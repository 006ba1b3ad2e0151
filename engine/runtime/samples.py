"""Host telemetry as the daemon keeps it: the recent samples of each host in memory (for the
planner and the host panes), and one mean sample per host per flush in the store."""

from __future__ import annotations

import collections

import msgspec

from engine.model import HostSample
from engine.protocol import SampleTaken
from engine.runtime.bus import EventBus
from engine.store import StoreThread

RECENT_SAMPLES = 600
FLUSH_S = 10.0  # how often the samples so far are stored, as one mean sample per host


class HostSamples:
    """Every host's samples: the last few hundred kept, the rest stored as means."""

    def __init__(self, hosts: list[str], db: StoreThread, bus: EventBus) -> None:
        self.db = db
        self.bus = bus
        self.recent: dict[str, collections.deque[HostSample]] = {
            name: collections.deque(maxlen=RECENT_SAMPLES) for name in hosts
        }
        self.unsaved: list[HostSample] = []  # samples not yet in the store

    def latest(self, host: str) -> HostSample | None:
        recent = self.recent.get(host)
        return recent[-1] if recent else None

    def know(self, sample: HostSample) -> None:
        """Take a sample into the live view only: what a host has, known before the daemon
        serves (the history starts with the samples clients can see)."""
        self.recent[sample.host].append(sample)

    def add(self, sample: HostSample) -> None:
        """Take one host sample (from this machine's sampler or a remote host's probe): into
        the live view and the event stream now, into the store with the next flush."""
        self.recent[sample.host].append(sample)
        self.unsaved.append(sample)
        self.bus.publish(SampleTaken(sample=sample))

    async def flush(self) -> None:
        """Store what was sampled since the last flush, one mean sample per host (the live view
        keeps every sample; the history needs no more than this)."""
        if not self.unsaved:
            return
        batch, self.unsaved = self.unsaved, []
        by_host: dict[str, list[HostSample]] = {}
        for sample in batch:
            by_host.setdefault(sample.host, []).append(sample)
        means = [mean_sample(samples) for samples in by_host.values()]
        await self.db.call(self.db.store.append_host_samples, means)


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
