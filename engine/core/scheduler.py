"""Deciding where and when queued runs start: `plan(snapshot)` is a pure function of what it is
given (hosts with their reservations, routes, the queue, the time), with no IO and no clock."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from engine.model import Resources, Route

UP = "up"


class GpuState(msgspec.Struct, frozen=True):
    """One GPU: its size, what NVML says is free, and what the engine has reserved on it."""

    index: int
    total_mb: float
    free_mb: float
    reserved_mb: float = 0.0

    @property
    def available_mb(self) -> float:
        # Reservations cover engine jobs that have not allocated yet; NVML's free covers
        # everything else on the GPU. The smaller of the two is what a new job can count on.
        return min(self.total_mb - self.reserved_mb, self.free_mb)


class HostCapacity(msgspec.Struct, frozen=True):
    """A host as the planner sees it: whether it takes work, what it has, what is taken."""

    name: str
    state: str  # up | unreachable | down | disabled
    max_jobs: int
    active: int = 0
    tags: tuple[str, ...] = ()
    cpus: float = 0.0
    mem_gb: float = 0.0
    reserved_cpus: float = 0.0
    reserved_mem_gb: float = 0.0
    gpus: tuple[GpuState, ...] = ()
    # A cluster places CPUs, memory and GPUs itself, and caps a sweep's job array at its
    # max_concurrent: the plan only counts its slots (our jobs pending or running there).
    cluster: bool = False
    # Whether its CPUs, memory and GPUs are known (declared, or sampled): a remote host not
    # sampled yet may have anything.
    sized: bool = True


class QueuedJob(msgspec.Struct, frozen=True):
    """A queued run as the planner sees it."""

    run_id: int
    queued_at: float
    priority: int = 0
    resources: Resources = Resources()
    requires: tuple[str, ...] = ()
    model_type: str | None = None
    tags: tuple[str, ...] = ()
    requested_host: str | None = None
    sweep: str | None = None
    max_concurrent: int | None = None
    held: bool = False
    not_before: float = 0.0  # a retry's backoff
    roomy_gpu: bool = False  # after an out-of-memory failure: the GPU with the most room


class Snapshot(msgspec.Struct, frozen=True):
    now: float
    hosts: tuple[HostCapacity, ...]  # in hosts.toml order
    queue: tuple[QueuedJob, ...]  # any order; the plan orders by priority, then run id
    routes: tuple[Route, ...] = ()
    running_per_sweep: dict[str, int] = {}
    ordered: bool = False  # the queue is in plan order already (the daemon keeps it so)


class Assignment(msgspec.Struct, frozen=True):
    run_id: int
    host: str
    gpus: tuple[int, ...]
    reason: str


class Plan(msgspec.Struct, frozen=True):
    assignments: list[Assignment]
    waiting: dict[int, str]  # run id → why it waits


class _Host:
    """A host's capacity while a plan is being made: each assignment takes from it."""

    __slots__ = ("cpus_free", "gpus", "mem_free", "slots", "spec")

    def __init__(self, spec: HostCapacity) -> None:
        self.spec = spec
        self.slots = spec.max_jobs - spec.active
        self.cpus_free = spec.cpus - spec.reserved_cpus
        self.mem_free = spec.mem_gb - spec.reserved_mem_gb
        self.gpus = {g.index: [g.total_mb, g.available_mb, g.reserved_mb] for g in spec.gpus}

    def fit(self, job: QueuedJob) -> tuple[tuple[int, ...] | None, str]:
        """The GPUs a job would get here (() for none needed), or None and why it does not fit."""
        need = job.resources
        name = self.spec.name
        if self.slots <= 0:
            return None, f"{name}: all {self.spec.max_jobs} slots busy"
        if self.spec.cluster:
            return (), ""
        if need.cpus > 0 and need.cpus > self.cpus_free + 1e-9:
            return None, f"{name}: needs {need.cpus:g} CPUs, {max(0, self.cpus_free):g} free"
        if need.mem_gb > 0 and need.mem_gb > self.mem_free + 1e-9:
            return (
                None,
                f"{name}: needs {need.mem_gb:g} GB memory, {max(0, self.mem_free):.1f} GB free",
            )
        if need.gpus == 0:
            return (), ""
        if len(self.gpus) < need.gpus:
            return None, f"{name}: needs {need.gpus} GPU(s), has {len(self.gpus)}"
        if need.gpu_mem_gb > 0:
            want = need.gpu_mem_gb * 1024
            fitting = [i for i, (_, avail, _) in self.gpus.items() if avail >= want]
            order = sorted(fitting, key=lambda i: self.gpus[i][1], reverse=job.roomy_gpu)
        else:  # no size given: the job takes whole GPUs that nothing of ours uses
            want = 0.0
            order = [i for i, (_, _, reserved) in self.gpus.items() if reserved == 0]
        if len(order) < need.gpus:
            best = max((avail for _, avail, _ in self.gpus.values()), default=0) / 1024
            what = f"with {need.gpu_mem_gb:g} GB free" if want else "to itself"
            return None, (
                f"{name}: needs {need.gpus} GPU(s) {what}; "
                + (f"the roomiest has {best:.1f} GB free" if want else "all are in use")
            )
        return tuple(sorted(order[: need.gpus])), ""

    def take(self, job: QueuedJob, gpus: tuple[int, ...]) -> None:
        self.slots -= 1
        self.cpus_free -= job.resources.cpus
        self.mem_free -= job.resources.mem_gb
        for i in gpus:
            total, avail, reserved = self.gpus[i]
            size = job.resources.gpu_mem_gb * 1024 or total
            self.gpus[i] = [total, avail - size, reserved + size]


def plan(snapshot: Snapshot, until_full: bool = False, first: int | None = None) -> Plan:
    """Assign queued jobs, highest priority first and oldest first within a priority, to hosts
    where they fit, following the routes; say for every other job why it waits. With
    `until_full`, stop once no host has a free slot: what follows waits for one, unexplained
    (dispatch needs only what starts). With `first`, plan only the first that many jobs: what
    a job gets depends only on the jobs before it, so they get what the whole plan gives them
    (a page of the queue explained without planning all of it)."""
    hosts = {h.name: _Host(h) for h in snapshot.hosts}
    states = {h.name: h.state for h in snapshot.hosts}
    everywhere = tuple(states)
    running = dict(snapshot.running_per_sweep)
    assignments: list[Assignment] = []
    waiting: dict[int, str] = {}
    # A job shape that found no host in this plan finds none later in it either: nothing is
    # freed while planning. This keeps a plan over a long queue of similar jobs cheap.
    no_room: dict[tuple, str] = {}
    queue = snapshot.queue
    if not snapshot.ordered:
        queue = tuple(sorted(queue, key=lambda j: (-j.priority, j.run_id)))
    open_hosts = _open(hosts)  # (kept current as jobs are placed)
    if first is not None:
        queue = queue[:first]
    for job in queue:
        if until_full:
            if not open_hosts:
                break
            if job.requested_host is not None and job.requested_host not in open_hosts:
                continue  # pinned to a host that is full, down or disabled: it waits, unexplained
        if job.held:
            waiting[job.run_id] = "held"
            continue
        if job.not_before > snapshot.now:
            waiting[job.run_id] = (
                f"retry backoff: may start in {job.not_before - snapshot.now:.0f}s"
            )
            continue
        candidates, why_route = _candidates(job, snapshot, states, everywhere)
        if (
            job.sweep is not None
            and job.max_concurrent is not None
            and running.get(job.sweep, 0) >= job.max_concurrent
        ):
            # only a cluster takes more: its job array runs at most max_concurrent at once
            candidates = tuple(c for c in candidates if hosts[c].spec.cluster)
            if not candidates:
                waiting[job.run_id] = (
                    f"sweep {job.sweep} runs its max_concurrent={job.max_concurrent}"
                )
                continue
        shape = (job.resources, job.requires, job.roomy_gpu, candidates)
        if shape in no_room:
            waiting[job.run_id] = no_room[shape]
            continue
        placed = None
        reasons = []
        for name in candidates:
            host = hosts[name]
            if host.spec.state != UP:
                reasons.append(f"{name}: {host.spec.state}")
                continue
            missing = [t for t in job.requires if t not in host.spec.tags]
            if missing:
                reasons.append(f"{name}: lacks tags {', '.join(missing)}")
                continue
            gpus, why = host.fit(job)
            if gpus is None:
                reasons.append(why)
                continue
            placed = (name, gpus)
            break
        if placed is None:
            why = "; ".join(reasons) or "no host can take it"
            no_room[shape] = waiting[job.run_id] = f"waits: {why}" + (
                f" ({why_route})" if why_route else ""
            )
            continue
        name, gpus = placed
        hosts[name].take(job, gpus)
        if hosts[name].slots <= 0:
            open_hosts.discard(name)
        if job.sweep is not None:
            running[job.sweep] = running.get(job.sweep, 0) + 1
        where = f"GPU {','.join(map(str, gpus))} on {name}" if gpus else name
        assignments.append(
            Assignment(
                job.run_id, name, gpus, f"{where}" + (f" ({why_route})" if why_route else "")
            )
        )
    return Plan(assignments=assignments, waiting=waiting)


def never_fits(
    job: QueuedJob, hosts: Sequence[HostCapacity], routes: Sequence[Route]
) -> str | None:
    """Why no host the job may go to (its requested host, its route's hosts, else any) could
    ever run it, whatever they are running: a reason per host, from its tags and its totals;
    None when one could, or when one's size is not known yet."""
    by_name = {h.name: h for h in hosts}
    if job.requested_host is not None:
        names: Sequence[str] = (job.requested_host,)
    else:
        route = next((r for r in routes if _matches(r, job)), None)
        names = (*route.prefer, *route.fallback) if route is not None else tuple(by_name)
    reasons = []
    for name in names:
        if (host := by_name.get(name)) is None:
            continue
        why = _never(host, job.resources, job.requires)
        if why is None:
            return None
        reasons.append(f"{name}: {why}")
    return "; ".join(reasons) or None


def _never(host: HostCapacity, need: Resources, requires: Sequence[str]) -> str | None:
    missing = [t for t in requires if t not in host.tags]
    if missing:
        return f"lacks tags {', '.join(missing)}"
    if host.cluster or not host.sized:
        return None
    if need.cpus > host.cpus:
        return f"needs {need.cpus:g} CPUs, has {host.cpus:g}"
    if need.mem_gb > host.mem_gb:
        return f"needs {need.mem_gb:g} GB memory, has {host.mem_gb:.1f} GB"
    if need.gpus > len(host.gpus):
        return f"needs {need.gpus} GPU(s), has {len(host.gpus)}"
    big = [g for g in host.gpus if g.total_mb >= need.gpu_mem_gb * 1024]
    if need.gpus and len(big) < need.gpus:
        largest = max(g.total_mb for g in host.gpus) / 1024
        return (
            f"needs {need.gpus} GPU(s) of {need.gpu_mem_gb:g} GB, the largest has {largest:.1f} GB"
        )
    return None


def _open(hosts: dict[str, _Host]) -> set[str]:
    """The hosts that can take a job now: up, with a free slot."""
    return {name for name, h in hosts.items() if h.slots > 0 and h.spec.state == UP}


def _candidates(
    job: QueuedJob, snapshot: Snapshot, states: dict[str, str], everywhere: tuple[str, ...]
) -> tuple[tuple[str, ...], str]:
    """The hosts to try for a job, in order, and the routing reason."""
    if job.requested_host is not None:
        return (job.requested_host,) if job.requested_host in states else (), "requested host"
    route = next((r for r in snapshot.routes if _matches(r, job)), None)
    if route is None:
        return everywhere, ""
    up = [h for h in route.prefer if states.get(h) == UP]
    waited = snapshot.now - job.queued_at
    if not route.prefer:
        return route.fallback, "route has only fallback hosts"
    if not up:
        return route.prefer + route.fallback, "preferred hosts are down: fallback"
    if route.fallback_after_s is not None and waited >= route.fallback_after_s:
        return (
            route.prefer + route.fallback,
            f"waited {waited:.0f}s ≥ {route.fallback_after_s:g}s: fallback",
        )
    return route.prefer, "route: preferred hosts"


def _matches(route: Route, job: QueuedJob) -> bool:
    if route.model_type is not None and route.model_type != job.model_type:
        return False
    return all(t in job.tags for t in route.tags)
