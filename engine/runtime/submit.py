"""Taking work on: jobs checked and queued as new runs with their manifest, code snapshots,
reproductions of earlier runs, and failed runs queued again by hand."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine import repro, workspace
from engine.config import Config
from engine.core.capture import Parser
from engine.core.scheduler import QueuedJob, Snapshot, never_fits
from engine.model import DataLink, JobSpec, Run, RunStatus, job_again
from engine.protocol import RunChanged
from engine.runtime.hosts import Hosts
from engine.runtime.live import LiveView, Refused
from engine.store import Transition


class SubmitError(Refused):
    """A job the engine cannot accept; the message says why."""


class Submitter:
    """Queues new runs: from jobs, from an earlier run (reproduce), or a failed run again."""

    def __init__(
        self, config: Config, live: LiveView, hosts: Hosts, snapshot: Callable[[], Snapshot]
    ) -> None:
        self.config = config
        self.live = live
        self.db = live.db
        self.hosts = hosts
        self.snapshot = snapshot  # the planner's view: what each host has, the routes
        self.interpreters = repro.InterpreterCache(config.state_dir / "cache")

    async def submit(
        self,
        jobs: Sequence[JobSpec],
        snapshot: str | None = None,
        reproduces: int | None = None,
        shared: dict[str, Any] | None = None,
    ) -> list[Run]:
        """Validate and queue jobs as new runs; their manifest is taken now, once per submission
        (or is `shared`: the sweep's, taken by `manifest`)."""
        if not jobs:
            raise SubmitError("no jobs given")
        for job in jobs:
            if problems := job.problems():
                field, what = problems[0]
                raise SubmitError(f"job {field}: {what}")
        jobs = _sharing_envs(jobs)
        if snapshot is None and any(job.snapshot or job.data for job in jobs):
            jobs = [msgspec.structs.replace(job, data=self._resolve_data(job)) for job in jobs]
            snapshot, jobs = await self.into_snapshot(jobs)
        named = []
        checked: set[tuple[Any, ...]] = set()  # a sweep's jobs differ in params, seed and name
        asks: set[tuple[Any, ...]] = set()
        for job in jobs:
            shape = (job.argv, job.host, job.cwd, job.capture)
            if shape not in checked:
                self._check(job)
                checked.add(shape)
            needs = (job.resources, job.requires, job.host, job.model_type, job.tags)
            if needs not in asks and not job.wait_for_host:
                self._check_fits(job)
                asks.add(needs)
            seed = job.seed if job.seed is not None else secrets.randbelow(2**31)
            named.append((job, job.name or default_name(job.argv), seed))
        if shared is None:
            shared = await self.manifest(jobs[0])
        if snapshot is not None:
            shared["snapshot"] = snapshot
        if reproduces is not None:
            shared["reproduces"] = reproduces
        masked: dict[int, dict[str, str]] = {}  # by id of the (shared) environment
        for job in jobs:
            if id(job.env) not in masked:
                masked[id(job.env)] = repro.mask_env(job.env or {})
        rows = [
            (
                msgspec.structs.replace(job, env=masked[id(job.env)]),
                name,
                seed,
                repro.run_manifest(shared, job.argv, seed),
            )
            for job, name, seed in named
        ]
        runs = await self.db.call(self.db.store.add_runs, rows)
        for run, job in zip(runs, jobs, strict=True):
            self.live.add(run, job.env or {}, queued=True)
            self.live.bus.publish(RunChanged(run=run, previous=None, reason="submitted"))
        self.live.wake.set()
        return runs

    async def manifest(self, job: JobSpec) -> dict[str, Any]:
        """What the runs of a submission whose first job is `job` share: code state,
        interpreter, host, environment."""
        return await repro.submission_manifest(
            job.cwd, job.argv, dict(job.env or {}), self.config.state_dir, self.interpreters
        )

    def _check(self, job: JobSpec) -> None:
        """Refuse a job no host could start: no command, an unknown or disabled host, a
        relative working directory, a capture pattern that does not compile."""
        if not job.argv or not job.argv[0]:
            raise SubmitError("empty command: give the program to run after `--`")
        if job.host is not None:
            if job.host not in self.config.hosts:
                raise SubmitError(
                    f"unknown host {job.host!r}; hosts.toml has {sorted(self.config.hosts)}"
                )
            if job.host in self.hosts.disabled_by_user:
                why = self.hosts.disabled_by_user[job.host]
                raise SubmitError(f"host {job.host!r} is disabled: {why}")
        if not Path(job.cwd).is_absolute():
            raise SubmitError(f"working directory must be absolute, got {job.cwd!r}")
        try:
            Parser(job.capture)
        except ValueError as exc:
            raise SubmitError(str(exc)) from None

    def _check_fits(self, job: JobSpec) -> None:
        """Refuse a job that no host it may go to could ever run (more GPUs, CPUs or memory
        than any has, a tag none carries), saying why for each."""
        snapshot = self.snapshot()
        queued = QueuedJob(
            run_id=0,
            queued_at=0.0,
            resources=job.resources,
            requires=job.requires,
            model_type=job.model_type,
            tags=job.tags,
            requested_host=job.host,
        )
        if why := never_fits(queued, snapshot.hosts, snapshot.routes):
            raise SubmitError(
                f"no host can ever run this job ({why}); add a host that can, or queue it"
                " anyway to wait for one (--wait-for-host)"
            )

    def _resolve_data(self, job: JobSpec) -> tuple[DataLink, ...]:
        entries = [(link.place, link.source) for link in job.data]
        try:
            return workspace.resolve_data(entries, self.config.project_dir, "data")
        except workspace.DataError as exc:
            raise SubmitError(str(exc)) from None

    async def into_snapshot(self, jobs: Sequence[JobSpec]) -> tuple[str, list[JobSpec]]:
        """Snapshot the project's code and move the jobs into it: each starts where it was
        submitted from inside the project (or at the top), in a copy made for each attempt."""
        project = self.config.project_dir
        try:
            snapshot, folder, _ = await asyncio.to_thread(
                repro.take_snapshot,
                project,
                self.config.state_dir / "snapshots",
                (self.config.state_dir,),
            )
        except (repro.SnapshotError, OSError) as exc:
            raise SubmitError(f"cannot snapshot {project}: {exc}") from None
        places: dict[str, str] = {}  # a sweep's jobs share one cwd: resolved once
        moved = []
        for job in jobs:
            if job.cwd not in places:
                inside = Path(job.cwd).resolve()
                rel = inside.relative_to(project) if inside.is_relative_to(project) else Path()
                places[job.cwd] = str(folder / rel)
            moved.append(msgspec.structs.replace(job, cwd=places[job.cwd], snapshot=False))
        return snapshot, moved

    async def reproduce(self, run: Run, secrets: dict[str, str] | None = None) -> Run:
        """Queue a new run with the original's code snapshot (or working directory), command,
        parameters, seed and needs; its manifest names the run it reproduces. Secrets, never
        stored in clear, come from `secrets` (the caller's environment)."""
        stored = await self.db.call(self.db.store.launch_env, run.id)
        env = repro.unmask_env(stored, os.environ if secrets is None else secrets)
        manifest = (await self.db.call(self.db.store.run_details, run.id))["manifest"] or {}
        job = job_again(run, env, name=f"{run.name}-repro")
        [new] = await self.submit([job], snapshot=manifest.get("snapshot"), reproduces=run.id)
        return new

    async def retry(self, run: Run) -> Run:
        """Queue a failed or lost run again by hand: its next attempt, with the reason."""
        live = self.live
        if run.id in live.runs or run.status not in (RunStatus.FAILED, RunStatus.LOST):
            status = live.runs[run.id].status if run.id in live.runs else run.status
            raise Refused(f"run {run.id} is {status}; only failed or lost runs are retried")
        live.add(run, {}, queued=False)  # taken at once: a second retry is refused
        stored = await self.db.call(self.db.store.launch_env, run.id)
        live.envs[run.id] = repro.unmask_env(stored, os.environ)
        why = f"retried by user after attempt {run.attempt} ({run.reason or run.status})"
        fields = {"queued_at": time.time(), "not_before": 0.0}
        [queued] = live.transition([Transition(run.id, RunStatus.QUEUED, why, fields)])
        await live.flush()
        live.wake.set()
        return queued


@functools.lru_cache(maxsize=256)
def default_name(argv: tuple[str, ...]) -> str:
    """A short name from a command: the script's stem for `python x.py`, the module for `-m`."""
    first = Path(argv[0]).name
    if re.fullmatch(r"python[0-9.]*", first) and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2:
            return argv[2]
        if argv[1] == "-c":
            return f"{first}-c"
        return Path(argv[1]).stem or first
    return first


def _sharing_envs(jobs: Sequence[JobSpec]) -> list[JobSpec]:
    """The jobs with one environment object for each distinct environment: the jobs of a
    sweep carry the same one, and 10,000 queued runs need not hold 10,000 copies of it."""
    envs: dict[frozenset[tuple[str, str]], dict[str, str]] = {}
    seen: dict[int, dict[str, str]] = {}  # by id: most jobs already carry the one object
    shared = []
    for job in jobs:
        if job.env:
            env = seen.get(id(job.env))
            if env is None:
                env = seen[id(job.env)] = envs.setdefault(frozenset(job.env.items()), job.env)
            if env is not job.env:
                job = msgspec.structs.replace(job, env=env)
        shared.append(job)
    return shared
