"""Deciding where and when queued runs start: a pure function of a snapshot, no IO, no clock."""

from __future__ import annotations

import msgspec


class HostSlots(msgspec.Struct, frozen=True):
    """A host as the planner sees it: whether it can take work and how many runs it has."""

    name: str
    usable: bool
    max_jobs: int
    active: int


class QueuedJob(msgspec.Struct, frozen=True):
    run_id: int
    requested_host: str | None


class Snapshot(msgspec.Struct, frozen=True):
    hosts: tuple[HostSlots, ...]  # in hosts.toml order
    queue: tuple[QueuedJob, ...]  # in submission order


class Assignment(msgspec.Struct, frozen=True):
    run_id: int
    host: str
    reason: str


def plan(snapshot: Snapshot) -> list[Assignment]:
    """Assign queued jobs, oldest first, to hosts with free slots. A job pinned to a host waits
    for that host; others take the first usable host in hosts.toml order that has a free slot."""
    free = {h.name: max(0, h.max_jobs - h.active) for h in snapshot.hosts if h.usable}
    assignments = []
    for job in snapshot.queue:
        if job.requested_host is not None:
            candidates = [job.requested_host] if free.get(job.requested_host, 0) > 0 else []
        else:
            candidates = [name for name, n in free.items() if n > 0]
        if not candidates:
            if not any(free.values()):
                break
            continue
        host = candidates[0]
        free[host] -= 1
        why = "requested host" if job.requested_host else "first host with a free slot"
        assignments.append(Assignment(run_id=job.run_id, host=host, reason=f"{host}: {why}"))
    return assignments
