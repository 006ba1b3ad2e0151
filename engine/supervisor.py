"""The supervisor: reconciles runs from their files, applies the scheduler's plan, starts and
stops attempts through executors, ingests their output, and persists every transition."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from engine import repro, template, workspace
from engine.capture import Parser, Points
from engine.config import (
    Config,
    ConfigError,
    Experiment,
    experiment_from_json,
    experiment_json,
    load_experiment,
)
from engine.executors import (
    Attempt,
    Executor,
    ExitInfo,
    HostUnreachable,
    Launch,
    ProcessState,
    executor_for,
)
from engine.executors.base import work_dir
from engine.executors.local import signal_name
from engine.model import (
    DataLink,
    FailureClass,
    HostSample,
    JobSpec,
    Run,
    RunStatus,
    can_transition,
    job_again,
)
from engine.protocol import (
    EventsDropped,
    HostChanged,
    LogLines,
    MetricsAdded,
    RunChanged,
    SweepPlan,
)
from engine.scheduler import Assignment, GpuState, HostState, QueuedJob, Snapshot, plan
from engine.store import (
    IllegalTransition,
    LogPosition,
    MetricBatch,
    StoreThread,
    Transition,
    TransitionWriter,
)
from engine.sweep import AdaptiveSweep, SweepError, Trial, is_adaptive, total_runs
from engine.sweep import trials as sweep_trials

LOG_POLL_S = 0.1  # how often a running attempt's output.log is checked for new bytes
READ_CHUNK = 8 * 2**20  # the most output read and ingested in one batch
EVENT_POINTS = 500  # the most metric points one event carries
# The most output one log event carries, its last whole lines: as much as a client shows of a
# tail, so a client following a run that prints 10,000 lines a second needs no re-reads.
EVENT_LOG_BYTES = 64 * 2**10
EVENT_LOG_LINES = 5000
# What a new attempt clears of the one before it: a run's end and failure are its last attempt's.
NEW_ATTEMPT: dict[str, Any] = {"failure_class": None, "exit_code": None, "ended_at": None}
OOM_TEXT = re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory")


class SubmitError(ValueError):
    """A job the engine cannot accept; the message says why."""


class Subscriber:
    """One client's event stream: a bounded queue, and the runs whose log lines it wants."""

    def __init__(self, maxsize: int = 2000) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self.logs: set[int] = set()
        self.dropped = 0

    def put(self, event: object) -> None:
        if self.dropped and self.queue.qsize() < self.queue.maxsize - 1:
            self.queue.put_nowait(EventsDropped(count=self.dropped))
            self.dropped = 0
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1


class EventBus:
    """Fans events out to every subscribed client; a slow client loses events, never blocks us."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def publish(self, event: object) -> None:
        for sub in self.subscribers:
            sub.put(event)

    def wants_log(self, run_id: int) -> bool:
        return any(run_id in sub.logs for sub in self.subscribers)

    def publish_log(self, event: LogLines) -> None:
        for sub in self.subscribers:
            if event.run_id in sub.logs:
                sub.put(event)


@dataclass
class Adaptive:
    """An adaptive sweep the daemon drives: its Optuna side, and what its later trials are
    queued with (the code snapshot's directory, environment and manifest of its first run)."""

    study: AdaptiveSweep
    snapshot: str | None
    launch: tuple[str, dict[str, str], dict[str, Any], tuple[DataLink, ...]] | None = None
    env: dict[str, str] | None = None  # the submitter's, secrets in clear (never stored)


@dataclass
class Active:
    """One attempt the supervisor follows: where its output has been read to, and its task."""

    run: Run
    executor: Executor
    attempt: Attempt
    number: int
    parser: Parser
    position: LogPosition
    cancel_requested: bool = False
    prune_reason: str | None = None  # set when the sweep's pruner stops it
    kill_at: float | None = None
    oom_kills: int | None = None  # the kernel's OOM-kill count when the attempt started
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(
        self,
        config: Config,
        db: StoreThread,
        bus: EventBus,
        latest_sample: Callable[[str], HostSample | None] = lambda _: None,
        on_sample: Callable[[HostSample], None] = lambda _: None,
        executors: dict[str, Executor] | None = None,
    ) -> None:
        """`executors` replaces the hosts' own (tests drive the supervisor in-process so)."""
        self.config = config
        self.db = db
        self.store = db.store
        self.bus = bus
        self.executors: dict[str, Executor] = executors or {
            name: executor_for(config, name, lambda name=name: self._host_changed(name), on_sample)
            for name in config.hosts
        }
        self.disabled_by_user: dict[str, str] = {}
        # Per host, the (run id, attempt) given up on while it was away: their copies are killed
        # when it comes back. Kept in the store too, so a restart in between forgets none.
        self.abandoned: dict[str, list[tuple[int, int]]] = {}
        # The daemon's live view of every unfinished run; the store follows it in batches.
        self.runs: dict[int, Run] = {}
        self.envs: dict[int, dict[str, str]] = {}  # launch environment of each unfinished run
        self.queue: dict[int, None] = {}  # queued run ids, oldest first
        self.active: dict[int, Active] = {}
        self.starting: dict[int, bool] = {}  # runs being started → cancelled meanwhile
        self.latest_sample = latest_sample
        # A host's state: up, unreachable (why, since when), or disabled by `engine host disable`.
        self.host_state: dict[str, tuple[str, str | None]] = {}
        self.host_since: dict[str, float | None] = {}
        for name in config.hosts:
            self._refresh_host(name)
        self.waiting: dict[int, str] = {}  # queued run → why it waits, from the last plan
        self.adaptive: dict[str, Adaptive] = {}  # sweeps sampled or pruned as they run
        self.writer = TransitionWriter(db)
        self.interpreters = repro.InterpreterCache(config.state_dir / "cache")
        self.wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.abandoned = await self.db.call(self.store.abandoned_attempts)
        for executor in self.executors.values():
            executor.connect()
        await self.db.call(
            self.store.upsert_hosts, [self.host_record(n) for n in self.config.hosts]
        )
        await self.reconcile()
        self._loop_task = asyncio.create_task(self._loop(), name="supervisor")

    async def stop(self) -> None:
        """Stop following runs (they keep running, detached) and stop dispatching."""
        tasks = [t for t in [self._loop_task, *(a.task for a in self.active.values())] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.writer.flush()
        for executor in self.executors.values():
            await executor.close()

    async def flush(self) -> None:
        """Return once every transition so far is in the store (call before reading it)."""
        await self.writer.flush()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.wake.wait()
            self.wake.clear()
            try:
                await self.tick()
            except Exception:  # never the end of dispatching: logged, and tried again
                traceback.print_exc(file=sys.stderr)

    def _fail_unexpectedly(self, run_id: int, doing: str, exc: BaseException) -> None:
        """An error of the engine's own while starting or following one run: that run fails
        with it as the reason (the traceback goes to the daemon's log), and no other run is
        held up by it."""
        print(f"run {run_id}: error while {doing}:", file=sys.stderr, flush=True)
        traceback.print_exception(exc, file=sys.stderr)
        self.active.pop(run_id, None)
        run = self.runs.get(run_id)
        if run is None:
            return
        why = f"engine error while {doing}: {type(exc).__name__}: {exc}"
        fields = {"failure_class": FailureClass.ERROR.value, "ended_at": time.time()}
        path = {
            RunStatus.QUEUED: [RunStatus.ASSIGNED, RunStatus.STARTING],
            RunStatus.ASSIGNED: [RunStatus.STARTING],
        }.get(run.status, [])
        chain = [Transition(run_id, step, why) for step in path]
        chain.append(Transition(run_id, RunStatus.FAILED, why, fields))
        try:
            self._transition(chain)
        except Exception:  # even that failed: take it out of the queue, and say so
            traceback.print_exc(file=sys.stderr)
            self.queue.pop(run_id, None)

    # --- submitting and dispatching ---------------------------------------------------------

    async def submit(
        self,
        jobs: Sequence[JobSpec],
        snapshot: str | None = None,
        reproduces: int | None = None,
        shared: dict[str, Any] | None = None,
    ) -> list[Run]:
        """Validate and queue jobs as new runs; their manifest is taken now, once per submission
        (or is `shared`, the manifest of the sweep they continue)."""
        if not jobs:
            raise SubmitError("no jobs given")
        for job in jobs:
            if problems := job.problems():
                field, what = problems[0]
                raise SubmitError(f"job {field}: {what}")
        if snapshot is None and any(job.snapshot or job.data for job in jobs):
            jobs = [msgspec.structs.replace(job, data=self._resolve_data(job)) for job in jobs]
            snapshot, jobs = await self._from_snapshot(jobs)
        named = []
        for job in jobs:
            if not job.argv or not job.argv[0]:
                raise SubmitError("empty command: give the program to run after `--`")
            if job.host is not None:
                if job.host not in self.config.hosts:
                    raise SubmitError(
                        f"unknown host {job.host!r}; hosts.toml has {sorted(self.config.hosts)}"
                    )
                if job.host in self.disabled_by_user:
                    why = self.disabled_by_user[job.host]
                    raise SubmitError(f"host {job.host!r} is disabled: {why}")
            if not Path(job.cwd).is_absolute():
                raise SubmitError(f"working directory must be absolute, got {job.cwd!r}")
            try:
                Parser(job.capture)
            except ValueError as exc:
                raise SubmitError(str(exc)) from None
            seed = job.seed if job.seed is not None else secrets.randbelow(2**31)
            named.append((job, job.name or default_name(job.argv), seed))
        first = jobs[0]
        if shared is None:
            shared = await repro.submission_manifest(
                first.cwd,
                first.argv,
                dict(first.env or {}),
                self.config.state_dir,
                self.interpreters,
            )
        if snapshot is not None:
            shared["snapshot"] = snapshot
        if reproduces is not None:
            shared["reproduces"] = reproduces
        masked: dict[int, dict[str, str]] = {}  # jobs of one submission share an environment
        rows = [
            (
                msgspec.structs.replace(
                    job, env=masked.setdefault(id(job.env), repro.mask_env(job.env or {}))
                ),
                name,
                seed,
                repro.run_manifest(shared, job.argv, seed),
            )
            for job, name, seed in named
        ]
        runs = await self.db.call(self.store.add_runs, rows)
        for run, job in zip(runs, jobs, strict=True):
            self.runs[run.id] = run
            self.envs[run.id] = job.env or {}
            self.queue[run.id] = None
            self.bus.publish(RunChanged(run=run, previous=None, reason="submitted"))
        self.wake.set()
        return runs

    def _resolve_data(self, job: JobSpec) -> tuple[DataLink, ...]:
        entries = [(link.place, link.source) for link in job.data]
        try:
            return workspace.resolve_data(entries, self.config.project_dir, "data")
        except workspace.DataError as exc:
            raise SubmitError(str(exc)) from None

    async def submit_sweep(
        self, file: str, overrides: dict[str, str], cwd: str, env: dict[str, str], dry_run: bool
    ) -> SweepPlan:
        """Expand an experiment into trials, snapshot the project's code, and queue every trial
        as a run of a new sweep (or, with `dry_run`, only say what would happen)."""
        try:
            # Read and planned off the event loop: a large file or sweep holds up no one.
            experiment, study, planned = await asyncio.to_thread(self._plan_sweep, file, overrides)
        except (ConfigError, SweepError) as exc:
            raise SubmitError(str(exc)) from None
        project = self.config.project_dir
        total = total_runs(experiment)
        try:
            links = workspace.resolve_data(experiment.data, project, str(experiment.path))
        except workspace.DataError as exc:
            raise SubmitError(str(exc)) from None
        next_id = await self.db.call(self.store.next_sweep_id, experiment.name)
        jobs = [_trial_job(experiment, t, cwd, env, links, next_id) for t in planned]
        where = self._where(experiment, planned, jobs)
        if dry_run:
            sees, warnings = await asyncio.to_thread(
                workspace.what_runs_see, project, Path(cwd), links, (self.config.state_dir,)
            )
            shown = [msgspec.structs.replace(j, env=repro.mask_env(j.env or {})) for j in jobs[:10]]
            return SweepPlan(
                sweep=None,
                trials=total,
                first=shown,
                where=where,
                runs=[],
                sees=sees,
                warnings=warnings,
            )
        snapshot, jobs = await self._from_snapshot(jobs)
        sweep_id = await self.db.call(
            self.store.add_sweep,
            experiment.name,
            str(experiment.path),
            experiment.method,
            total,
            snapshot,
            msgspec.to_builtins(experiment.metric) if experiment.metric else None,
            experiment_json(experiment) if study else None,
            experiment.sampler_seed if experiment.method != "grid" else None,
        )
        jobs = [
            msgspec.structs.replace(j, sweep=sweep_id, name=t.name(experiment, sweep_id))
            for j, t in zip(jobs, planned, strict=True)
        ]
        runs = await self.submit(jobs, snapshot=snapshot)
        if study is not None:
            self.adaptive[sweep_id] = Adaptive(study, snapshot, env=env)
        shown = [msgspec.structs.replace(j, env=repro.mask_env(j.env or {})) for j in jobs[:10]]
        return SweepPlan(sweep=sweep_id, trials=total, first=shown, where=where, runs=runs)

    def _plan_sweep(
        self, file: str, overrides: dict[str, str]
    ) -> tuple[Experiment, AdaptiveSweep | None, list[Trial]]:
        """An experiment file read, its study (for an adaptive sweep) and its first trials."""
        experiment = load_experiment(file, overrides)
        if experiment.sampler_seed is None:  # each sweep draws afresh, and records it
            experiment = msgspec.structs.replace(experiment, sampler_seed=secrets.randbelow(2**31))
        study = AdaptiveSweep(experiment) if is_adaptive(experiment) else None
        if experiment.method == "tpe":
            assert study is not None
            return experiment, study, study.ask(self._configs_in_flight(experiment))
        return experiment, study, sweep_trials(experiment)

    async def _from_snapshot(self, jobs: Sequence[JobSpec]) -> tuple[str, list[JobSpec]]:
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
        moved = []
        for job in jobs:
            inside = Path(job.cwd).resolve()
            rel = inside.relative_to(project) if inside.is_relative_to(project) else Path()
            moved.append(msgspec.structs.replace(job, cwd=str(folder / rel), snapshot=False))
        return snapshot, moved

    def _configs_in_flight(self, experiment: Experiment) -> int:
        """How many configurations a TPE sweep keeps queued or running at once: enough to fill
        its `max_concurrent` (or every host's slots), so it learns from each result early."""
        slots = experiment.max_concurrent or sum(
            spec.max_jobs
            for name, spec in self.config.hosts.items()
            if self.host_state[name][0] == "up"
        )
        return max(1, -(-slots // len(experiment.seeds)))

    async def _sample_more(self) -> None:
        """Queue the next configurations of each TPE sweep as its runs end."""
        for sweep_id, adaptive in list(self.adaptive.items()):
            study = adaptive.study
            in_flight = {r.trial for r in self.runs.values() if r.sweep == sweep_id}
            if not study.remaining():
                if not in_flight:
                    del self.adaptive[sweep_id]  # sampled and finished: nothing more to judge
                continue
            wanted = self._configs_in_flight(study.experiment) - len(in_flight)
            if wanted <= 0:
                continue
            if adaptive.launch is None:
                adaptive.launch = await self.db.call(self.store.sweep_launch, sweep_id)
            if adaptive.launch is None:
                continue
            cwd, env, manifest, data = adaptive.launch
            env = adaptive.env if adaptive.env is not None else repro.unmask_env(env, os.environ)
            jobs = [
                msgspec.structs.replace(
                    _trial_job(study.experiment, t, cwd, env, data, sweep_id), sweep=sweep_id
                )
                for t in study.ask(wanted)
            ]
            await self.submit(jobs, snapshot=adaptive.snapshot, shared=manifest)

    def sweep_going(self, sweep_id: str) -> bool:
        """Whether a sweep has runs unfinished or trials still to sample."""
        adaptive = self.adaptive.get(sweep_id)
        if adaptive is not None and adaptive.study.remaining():
            return True
        return any(r.sweep == sweep_id for r in self.runs.values())

    async def reproduce(self, run: Run, secrets: dict[str, str] | None = None) -> Run:
        """Queue a new run with the original's code snapshot (or working directory), command,
        parameters, seed and needs; its manifest names the run it reproduces. Secrets, never
        stored in clear, come from `secrets` (the caller's environment)."""
        stored = await self.db.call(self.store.launch_env, run.id)
        env = repro.unmask_env(stored, os.environ if secrets is None else secrets)
        manifest = (await self.db.call(self.store.run_details, run.id))["manifest"] or {}
        job = job_again(run, env, name=f"{run.name}-repro")
        [new] = await self.submit([job], snapshot=manifest.get("snapshot"), reproduces=run.id)
        return new

    def _where(self, experiment: Experiment, planned: list, jobs: list[JobSpec]) -> str:
        """Where a sweep's trials would go, e.g. "18 → gpu-box, 18 → laptop (glm: laptop; …)"."""
        if not jobs:
            return "no trials"
        per_model: dict[int, tuple[str | None, str]] = {}
        counts: dict[str, int] = {}
        for trial, job in zip(planned, jobs, strict=True):
            if trial.model not in per_model:
                per_model[trial.model] = self.preview(job)
            host = per_model[trial.model][0] or "nowhere"
            counts[host] = counts.get(host, 0) + 1
        summary = ", ".join(f"{n} → {host}" for host, n in counts.items())
        named = [
            (experiment.models[m].name, why)
            for m, (host, why) in per_model.items()
            if why != host  # "local" says no more than "→ local"
        ]
        if not named:
            return summary
        detail = "; ".join(f"{name}: {why}" if name else why for name, why in named)
        return f"{summary} ({detail})"

    def preview(self, job: JobSpec) -> tuple[str | None, str]:
        """The host a job would go to on idle hosts (None if none could take it), and why."""
        idle = msgspec.structs.replace(
            self.snapshot(),
            queue=(
                QueuedJob(
                    run_id=0,
                    queued_at=time.time(),
                    resources=job.resources,
                    requires=job.requires,
                    model_type=job.model_type,
                    tags=job.tags,
                    requested_host=job.host,
                ),
            ),
        )
        idle = msgspec.structs.replace(
            idle,
            hosts=tuple(
                msgspec.structs.replace(
                    h,
                    active=0,
                    reserved_cpus=0.0,
                    reserved_mem_gb=0.0,
                    gpus=tuple(
                        msgspec.structs.replace(g, reserved_mb=0.0, free_mb=g.total_mb)
                        for g in h.gpus
                    ),
                )
                for h in idle.hosts
            ),
        )
        result = plan(idle)
        if result.assignments:
            return result.assignments[0].host, result.assignments[0].reason
        return None, result.waiting.get(0, "nowhere")

    async def tick(self) -> None:
        if self.adaptive:
            await self._sample_more()
        if not self.queue:
            self.waiting = {}
            return
        result = plan(self.snapshot())
        self.waiting = result.waiting
        for assignment in result.assignments:
            try:
                await self._start(assignment)
            except Exception as exc:  # a bug or surprise with this run: the others go on
                self._fail_unexpectedly(assignment.run_id, "starting it", exc)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """What the planner needs: each host's capacity and reservations, the queue, the time."""
        reserved: dict[str, dict[str, Any]] = {
            name: {"active": 0, "cpus": 0.0, "mem": 0.0, "gpu_mb": {}} for name in self.config.hosts
        }
        sweeps: dict[str, int] = {}
        for active in self.active.values():
            run = active.run
            held = reserved.setdefault(
                run.host or "", {"active": 0, "cpus": 0.0, "mem": 0.0, "gpu_mb": {}}
            )
            held["active"] += 1
            held["cpus"] += run.resources.cpus
            held["mem"] += run.resources.mem_gb
            for index in run.gpus:
                held["gpu_mb"][index] = held["gpu_mb"].get(index, 0.0) + self._gpu_claim(run, index)
            if run.sweep is not None:
                sweeps[run.sweep] = sweeps.get(run.sweep, 0) + 1
        hosts = []
        for name, spec in self.config.hosts.items():
            cpus, mem_gb, gpus = self.inventory(name)
            held = reserved[name]
            hosts.append(
                HostState(
                    name=name,
                    state=self.host_state[name][0],
                    max_jobs=spec.max_jobs,
                    active=held["active"],
                    tags=spec.tags,
                    cpus=cpus,
                    mem_gb=mem_gb,
                    reserved_cpus=held["cpus"],
                    reserved_mem_gb=held["mem"],
                    gpus=tuple(
                        GpuState(
                            index=i,
                            total_mb=total,
                            free_mb=free,
                            reserved_mb=held["gpu_mb"].get(i, 0.0),
                        )
                        for i, total, free in gpus
                    ),
                )
            )
        queue = []
        for run_id in self.queue:
            run = self.runs[run_id]
            queue.append(
                QueuedJob(
                    run_id=run.id,
                    queued_at=run.queued_at or run.created_at,
                    priority=run.priority,
                    resources=run.resources,
                    requires=run.requires,
                    model_type=run.model_type,
                    tags=run.tags,
                    requested_host=run.requested_host,
                    sweep=run.sweep,
                    max_concurrent=run.max_concurrent,
                    held=run.held,
                    not_before=run.not_before,
                    roomy_gpu=run.failure_class is FailureClass.OOM,
                )
            )
        return Snapshot(
            now=time.time() if now is None else now,
            hosts=tuple(hosts),
            queue=tuple(queue),
            routes=self.config.routes,
            running_per_sweep=sweeps,
        )

    def inventory(self, host: str) -> tuple[float, float, list[tuple[int, float, float]]]:
        """A host's CPUs, memory (GB) and GPUs as (index, total MB, free MB): what hosts.toml
        declares, else what the host's telemetry found (an SSH host not sampled yet: its
        CPUs and memory unknown, so unlimited)."""
        spec = self.config.hosts[host]
        sample = self.latest_sample(host)
        if spec.kind == "local":
            cpus = spec.cpus or float(psutil.cpu_count() or 1)
            mem_gb = spec.mem_gb or psutil.virtual_memory().total / 2**30
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

    def _gpu_claim(self, run: Run, index: int) -> float:
        """The MB a run holds on one GPU: its declared size, or the whole GPU."""
        if run.resources.gpu_mem_gb > 0:
            return run.resources.gpu_mem_gb * 1024
        gpus = {i: total for i, total, _ in self.inventory(run.host or "")[2]}
        return gpus.get(index, float("inf"))

    async def _start(self, assignment: Assignment) -> None:
        host, gpus = assignment.host, assignment.gpus
        executor = self.executors[host]
        run = self.runs[assignment.run_id]
        number = run.attempt + 1
        run_dir = executor.run_dir(run.id)
        run = self._transition(
            [
                Transition(
                    run.id, RunStatus.ASSIGNED, assignment.reason, {"host": host, "gpus": gpus}
                ),
                Transition(
                    run.id,
                    RunStatus.STARTING,
                    f"starting attempt {number} on {host}",
                    {"attempt": number, "host": host, "run_dir": run_dir, "gpus": gpus}
                    | NEW_ATTEMPT,
                ),
            ]
        )[-1]
        self.starting[run.id] = False  # True once cancelled while it starts
        try:
            await self._launch(run, executor, number, run_dir, host)
        finally:
            self.starting.pop(run.id, None)

    async def _launch(
        self, run: Run, executor: Executor, number: int, run_dir: str, host: str
    ) -> None:
        attempt_dir = executor.attempt_dir(run.id, number)
        snapshot = repro.in_snapshot(run.cwd, self.config.state_dir / "snapshots")
        argv = run.argv
        if run.templated:
            project = work_dir(attempt_dir) if snapshot else str(self.config.project_dir)
            argv = fill_runtime(run, number, run_dir, project)
        launch = Launch(
            run_id=run.id,
            attempt=number,
            argv=argv,
            cwd=snapshot[1] if snapshot else run.cwd,
            env=run_env(self.envs[run.id], run, number, run_dir),
            attempt_dir=attempt_dir,
            snapshot=snapshot[0] if snapshot else None,
            data=run.data,
        )
        try:
            attempt = await executor.start(launch)
        except HostUnreachable as exc:
            # It may or may not have started: its files will tell once the host is back.
            active = Active(
                run=run,
                executor=executor,
                attempt=Attempt(launch.attempt_dir, 0, None),
                number=number,
                parser=Parser(run.capture),
                position=LogPosition(),
                cancel_requested=self.starting.get(run.id, False),
            )
            self.active[run.id] = active
            active.task = asyncio.create_task(
                self._follow(active, unreachable=str(exc)), name=f"run-{run.id}"
            )
            return
        except OSError as exc:
            self._transition(
                [
                    Transition(
                        run.id,
                        RunStatus.FAILED,
                        f"could not start: {exc}",
                        {"failure_class": FailureClass.ERROR.value, "ended_at": time.time()},
                    )
                ]
            )
            return
        active = Active(
            run=run,
            executor=executor,
            attempt=attempt,
            number=number,
            parser=Parser(run.capture),
            position=LogPosition(),
            oom_kills=_oom_kills(),
            cancel_requested=self.starting.get(run.id, False),
        )
        self.active[run.id] = active
        if (adaptive := self.adaptive.get(run.sweep or "")) is not None:
            adaptive.study.attach(run)
        changed = self._transition(
            [
                Transition(
                    run.id,
                    RunStatus.RUNNING,
                    f"started on {host} as pid {attempt.pid}",
                    {
                        "pid": attempt.pid,
                        "pid_start_time": attempt.start_time,
                        "started_at": time.time(),
                    },
                )
            ]
        )
        active.run = changed[0]
        if active.cancel_requested:
            with contextlib.suppress(HostUnreachable):
                await self._stop(active)
        active.task = asyncio.create_task(self._follow(active), name=f"run-{run.id}")

    # --- following an attempt ----------------------------------------------------------------

    async def _follow(self, active: Active, unreachable: str | None = None) -> None:
        """Follow an attempt to its end; while its host is unreachable, wait for it to return
        (or give the attempt up after the host's `lost_after_s`)."""
        try:
            while True:
                if unreachable is not None:
                    if not await self._ride_out(active, unreachable):
                        return
                    unreachable = None
                try:
                    await self._watch(active)
                    return
                except HostUnreachable as exc:
                    unreachable = str(exc)
        except Exception as exc:  # a bug or surprise with this run: the others go on
            self._fail_unexpectedly(active.run.id, "following it", exc)
        finally:
            self.active.pop(active.run.id, None)
            self.wake.set()

    async def _watch(self, active: Active) -> None:
        waiter = asyncio.create_task(active.executor.wait(active.attempt))
        try:
            while not waiter.done():
                await self._ingest(active, final=False)
                if active.kill_at is not None and time.time() >= active.kill_at:
                    active.kill_at = None
                    await active.executor.signal(active.attempt, signal.SIGKILL)
                await asyncio.wait({waiter}, timeout=LOG_POLL_S)
            ended = waiter.result()
            await self._ingest(active, final=True)
            await self._finish(active, ended)
        finally:
            waiter.cancel()
            waiter.add_done_callback(_retrieve)  # its error, if any, was the link's: seen above

    async def _ride_out(self, active: Active, why: str) -> bool:
        """Mark a run unreachable and wait for its host. True when the host is back and the
        attempt should be followed again; False when the run has ended or was given up."""
        run = self.runs[active.run.id]
        host = run.host or ""
        if run.status is not RunStatus.UNREACHABLE:
            run = self._transition(
                [Transition(run.id, RunStatus.UNREACHABLE, f"host {host} unreachable: {why}")]
            )[0]
        executor = active.executor
        while True:
            since = self.host_since.get(host) or time.time()
            left = since + self.config.hosts[host].lost_after_s - time.time()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    await executor.until_up()
            except TimeoutError:
                away = time.time() - since
                self._give_up(active, f"host {host} unreachable for over {away:.0f}s: {why}")
                return False
            try:
                if active.attempt.pid == 0:  # the link dropped during the start
                    if not await executor.attempt_exists(run.id, active.number):
                        why = f"host {host} dropped before attempt {active.number} started"
                        if active.cancel_requested:
                            why = f"cancelled by user while starting; {why}"
                            ended = {"ended_at": time.time()}
                            self._transition([Transition(run.id, RunStatus.CANCELLED, why, ended)])
                        else:
                            self._not_started(run, active.number, why)
                        return False
                    active.attempt = await executor.reattach(active.attempt)
                state = await executor.probe(active.attempt)
            except HostUnreachable as exc:
                why = str(exc)
                await asyncio.sleep(0.2)  # the link is back but failing: let it settle
                continue
            if state is ProcessState.GONE:
                gone = "its process is gone and left no exit code"
                self._transition(
                    [
                        Transition(
                            run.id,
                            RunStatus.LOST,
                            f"host {host} is back, but {gone}",
                            {"ended_at": time.time()},
                        )
                    ]
                )
                return False
            what = "still running" if state is ProcessState.RUNNING else "it ended meanwhile"
            active.run = self._transition(
                [
                    Transition(
                        run.id,
                        RunStatus.RUNNING,
                        f"host {host} is back: {what}",
                        {"pid": active.attempt.pid or None},
                    )
                ]
            )[0]
            if state is ProcessState.RUNNING and (active.cancel_requested or active.prune_reason):
                with contextlib.suppress(HostUnreachable):
                    await self._stop(active)
            return True

    def _not_started(self, run: Run, number: int, why: str) -> None:
        """An attempt that never started still counts: queued again after the backoff while
        the retry policy has attempts left, else the run fails."""
        if not self._queue_next(run, number, why, {}):
            fields = {"failure_class": FailureClass.HOST_LOST.value, "ended_at": time.time()}
            why = f"{why}; gave up after {number} attempts"
            self._transition([Transition(run.id, RunStatus.FAILED, why, fields)])

    def _give_up(self, active: Active, why: str) -> None:
        """The host stayed away too long: end this attempt as host_lost (retried elsewhere
        under the retry policy, unless it was cancelled) and kill its copy if the host ever
        returns."""
        run = self.runs[active.run.id]
        self.abandoned.setdefault(run.host or "", []).append((run.id, active.number))
        fields: dict[str, Any] = {
            "failure_class": FailureClass.HOST_LOST.value,
            "ended_at": time.time(),
        }
        if active.cancel_requested:  # never retried: its copy is killed on the host's return
            why = f"cancelled by user; {why}; killed when it returns"
            self._transition([Transition(run.id, RunStatus.CANCELLED, why, fields)])
            return
        self._end_attempt(run, active.number, RunStatus.FAILED, FailureClass.HOST_LOST, why, fields)

    async def _ingest(self, active: Active, final: bool) -> None:
        """Read output.log on from the stored offset, store its points and the new offset in
        one transaction per chunk, and stream the lines to subscribers. Parsing a chunk overlaps
        with storing the one before it; chunks are stored in order."""
        storing: asyncio.Task[None] | None = None
        try:
            while (chunk := await self._read_chunk(active, final)) is not None:
                block, carriage_returns = chunk
                pos = active.position
                lines = block.split(b"\n")
                if block.endswith(b"\n"):
                    lines.pop()
                points = Points()
                bad = await asyncio.to_thread(
                    active.parser.parse, lines, pos.lines, points, carriage_returns
                )
                batch = MetricBatch(
                    run_id=active.run.id,
                    attempt=active.number,
                    keys=points.keys,
                    steps=points.steps,
                    values=points.values,
                    wall_times=[time.time()] * len(points),
                    lines=points.lines,
                    byte_offset=pos.byte_offset + len(block),
                    line_count=pos.lines + len(lines),
                    bad_markers=pos.bad_markers + bad,
                    first=pos.byte_offset == 0,
                )
                active.position = LogPosition(
                    batch.byte_offset, batch.line_count, batch.bad_markers
                )
                if len(points) and not final:  # an attempt that has ended is not judged
                    await self._judge(active, points)
                if storing is not None:
                    await storing
                storing = asyncio.create_task(
                    self._store(active, batch, lines, points, pos.byte_offset)
                )
        finally:
            if storing is not None:
                await storing

    async def _read_chunk(self, active: Active, final: bool) -> tuple[bytes, bool] | None:
        """The next whole lines of output (and whether they hold a carriage return), or None."""
        executor, attempt, offset = active.executor, active.attempt, active.position.byte_offset
        if await executor.output_size(attempt) <= offset:
            return None
        data = await executor.read_output(attempt, offset, READ_CHUNK)
        if not data:
            return None
        end = data.rfind(b"\n") + 1
        if final and len(data) < READ_CHUNK:
            end = len(data)  # the run has ended: a last line without newline counts too
        elif end == 0:
            if len(data) < READ_CHUNK:
                return None  # half a line: wait for the rest
            end = len(data)  # one enormous line: take it in pieces rather than stall
        block = data[:end]
        return block, b"\r" in block

    async def _judge(self, active: Active, points: Points) -> None:
        """Feed a run's new values of its sweep's metric to the pruner; stop it if told to."""
        adaptive = self.adaptive.get(active.run.sweep or "")
        if adaptive is None or active.prune_reason or active.cancel_requested:
            return
        key = adaptive.study.key
        values = [
            (step, value)
            for k, step, value in zip(points.keys, points.steps, points.values, strict=True)
            if k == key
        ]
        if values and (reason := adaptive.study.report(active.run.id, values)):
            # Output read late (after a restart) may be from an attempt that has finished
            # meanwhile: its end stands, whatever its earlier steps would have said.
            with contextlib.suppress(HostUnreachable):
                if await active.executor.probe(active.attempt) is ProcessState.EXITED:
                    return
            await self._prune(active, reason)

    async def _prune(self, active: Active, reason: str) -> None:
        active.prune_reason = reason
        await self.db.call(self.store.request_prune, active.run.id, reason)
        with contextlib.suppress(HostUnreachable):  # sent when the host is back
            await self._stop(active)

    async def _store(
        self, active: Active, batch: MetricBatch, lines: list[bytes], points: Points, start: int
    ) -> None:
        await self.db.call(self.store.ingest, batch)
        self._publish_output(active, lines, points, start, batch.byte_offset)

    def _publish_output(
        self, active: Active, lines: list[bytes], points: Points, start: int, end: int
    ) -> None:
        if len(points):
            tail = slice(-EVENT_POINTS, None)
            self.bus.publish(
                MetricsAdded(
                    run_id=active.run.id,
                    count=len(points),
                    points=list(
                        zip(
                            points.keys[tail],
                            points.steps[tail],
                            points.values[tail],
                            points.lines[tail],
                            strict=True,
                        )
                    ),
                )
            )
        if lines and self.bus.wants_log(active.run.id):
            shown = _last_lines(lines, EVENT_LOG_BYTES, EVENT_LOG_LINES)
            self.bus.publish_log(
                LogLines(
                    run_id=active.run.id,
                    attempt=active.number,
                    start=start,
                    end=end,
                    lines=[b.decode("utf-8", "replace") for b in shown],
                    skipped=len(lines) - len(shown),
                )
            )

    async def _finish(self, active: Active, ended: ExitInfo) -> None:
        tail = b""
        if ended.exit_code != 0 or active.cancel_requested:  # only failures are read for why
            tail = await active.executor.read_output(
                active.attempt, max(0, active.position.byte_offset - 4096), 4096
            )
        status, failure, reason = classify(
            ended, tail.decode("utf-8", "replace"), active.run.argv, active.cancel_requested
        )
        if active.prune_reason and not active.cancel_requested:
            status, failure, reason = RunStatus.PRUNED, None, active.prune_reason
        if failure is FailureClass.KILLED and _oom_kills() not in (None, active.oom_kills):
            failure, reason = FailureClass.OOM, f"{reason}, by the kernel's out-of-memory killer"
        run = self.runs[active.run.id]
        fields: dict[str, Any] = {"exit_code": ended.exit_code, "ended_at": _end_time(run, ended)}
        if failure is not None:
            fields["failure_class"] = failure.value
        with contextlib.suppress(HostUnreachable):
            await active.executor.fetch_artifacts(run.id)
        self._end_attempt(run, active.number, status, failure, reason, fields)

    def _end_attempt(
        self,
        run: Run,
        number: int,
        status: RunStatus,
        failure: FailureClass | None,
        reason: str,
        fields: dict[str, Any],
    ) -> None:
        """End an attempt: queue the next one where the retry policy says so, else end the run."""
        if status is RunStatus.FAILED and failure is not None and failure.value in run.retry.on:
            why = f"attempt {number} failed ({failure}: {reason})"
            if self._queue_next(run, number, why, fields):
                return
            reason = f"{reason}; gave up after {number} attempts"
        self._transition([Transition(run.id, status, reason, fields)])

    def _queue_next(self, run: Run, number: int, why: str, fields: dict[str, Any]) -> bool:
        """Queue attempt `number + 1` after the policy's backoff, if the policy has one left."""
        policy = run.retry
        if number >= policy.attempts:
            return False
        now = time.time()
        delay = policy.delay(number)
        fields.update(not_before=now + delay, queued_at=now)
        why = f"{why}; retry {number + 1}/{policy.attempts} in {delay:g}s"
        self._transition([Transition(run.id, RunStatus.QUEUED, why, fields)])
        return True

    # --- the queue ---------------------------------------------------------------------------

    async def set_queue_fields(self, run: Run, reason: str, **fields: Any) -> Run:
        """Change a queued run's priority or hold; recorded as an event with its reason."""
        current = self.runs.get(run.id)
        if current is None or current.status is not RunStatus.QUEUED:
            status = current.status if current else run.status
            raise SubmitError(f"run {run.id} is {status}, not queued")
        changed = msgspec.structs.replace(current, **fields)
        self.runs[run.id] = changed
        await self.writer.flush()
        await self.db.call(self.store.set_queue_fields, run.id, reason, fields)
        self.bus.publish(RunChanged(run=changed, previous=changed.status, reason=reason))
        self.wake.set()
        return changed

    async def cancel_sweep(self, sweep: str) -> list[Run]:
        """Cancel every unfinished run of a sweep, and sample no more of it."""
        runs = [r for r in list(self.runs.values()) if r.sweep == sweep]
        if not runs and sweep not in self.adaptive:
            raise SubmitError(f"no unfinished runs in sweep {sweep!r}")
        self.adaptive.pop(sweep, None)
        await self.db.call(self.store.cancel_sweep, sweep)
        return [await self.cancel(r) for r in runs]

    def explain(self) -> dict[int, str]:
        """For every queued run: where it would start now and why, or why it waits."""
        result = plan(self.snapshot())
        out = dict(result.waiting)
        for a in result.assignments:
            out[a.run_id] = f"would start: {a.reason}"
        return out

    def set_host_state(self, host: str, enabled: bool, reason: str) -> None:
        if host not in self.config.hosts:
            raise SubmitError(f"unknown host {host!r}; hosts.toml has {sorted(self.config.hosts)}")
        if enabled:
            self.disabled_by_user.pop(host, None)
        else:
            self.disabled_by_user[host] = reason
        self._refresh_host(host)
        self.wake.set()

    def _refresh_host(self, host: str) -> None:
        """A host's state from the user's say and its executor's link."""
        state, why, since = self.executors[host].state
        if host in self.disabled_by_user:
            state, why, since = "disabled", self.disabled_by_user[host], None
        self.host_state[host] = (state, why)
        self.host_since[host] = since

    def host_record(self, host: str) -> tuple[str, str, dict[str, Any], str, str | None]:
        """A host as the store records it: name, kind, what it offers, state and why."""
        spec = self.config.hosts[host]
        offers = {"max_jobs": spec.max_jobs, "tags": list(spec.tags), "address": spec.address}
        return (host, spec.kind, offers, *self.host_state[host])

    def _host_changed(self, host: str) -> None:
        """An SSH link went up or down: update the host, stop what was given up on it."""
        old = self.host_state.get(host, ("", None))[0]
        self._refresh_host(host)
        state, why = self.host_state[host]
        if state != old:
            since = self.host_since.get(host)
            self.bus.publish(HostChanged(host=host, state=state, reason=why, since=since))
            with contextlib.suppress(RuntimeError):  # no loop yet while constructing
                asyncio.get_running_loop().create_task(
                    self.db.call(self.store.upsert_hosts, [self.host_record(host)])
                )
        if state == "up" and self.abandoned.get(host):
            asyncio.get_running_loop().create_task(self._stop_abandoned(host))
        self.wake.set()

    async def _stop_abandoned(self, host: str) -> None:
        """Kill the old copies of runs that were retried elsewhere while this host was away, so
        each run's result is kept once; the attempt's reason says what was found."""
        executor = self.executors[host]
        left = self.abandoned.pop(host, [])
        while left:
            run_id, number = left[0]
            attempt = Attempt(executor.attempt_dir(run_id, number), 0, None)
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
            await self.db.call(self.store.settle_abandoned, run_id, number, outcome)
            left.pop(0)

    # --- cancel ------------------------------------------------------------------------------

    async def cancel(self, run: Run) -> Run:
        """Cancel a run: a queued one at once; a running one by SIGTERM to its process group,
        then SIGKILL after the grace period."""
        run = self.runs.get(run.id, run)
        if run.status.terminal:
            raise SubmitError(f"run {run.id} already ended: {run.status}")
        active = self.active.get(run.id)
        if active is None and run.id in self.starting:
            self.starting[run.id] = True  # stopped as soon as its start returns
            await self.db.call(self.store.request_cancel, run.id)
            return run
        if active is None and run.status is RunStatus.STARTING:
            cancelled = self._transition(
                [Transition(run.id, RunStatus.CANCELLED, "cancelled by user while starting")]
            )[0]
            await self.writer.flush()
            return cancelled
        if active is None:
            if run.status in (RunStatus.QUEUED, RunStatus.ASSIGNED):
                cancelled = self._transition(
                    [Transition(run.id, RunStatus.CANCELLED, "cancelled by user while queued")]
                )[0]
                await self.writer.flush()  # no file records this one: it must be stored now
                return cancelled
            raise SubmitError(f"run {run.id} is {run.status} and not followed by this daemon")
        await self.db.call(self.store.request_cancel, run.id)
        active.cancel_requested = True
        with contextlib.suppress(HostUnreachable):  # sent when the host is back
            await self._stop(active)
        return run

    async def retry(self, run: Run) -> Run:
        """Queue a failed or lost run again by hand: its next attempt, with the reason."""
        if run.id in self.runs or run.status not in (RunStatus.FAILED, RunStatus.LOST):
            status = self.runs[run.id].status if run.id in self.runs else run.status
            raise SubmitError(f"run {run.id} is {status}; only failed or lost runs are retried")
        self.runs[run.id] = run
        stored = await self.db.call(self.store.launch_env, run.id)
        self.envs[run.id] = repro.unmask_env(stored, os.environ)
        now = time.time()
        [queued] = self._transition(
            [
                Transition(
                    run.id,
                    RunStatus.QUEUED,
                    f"retried by user after attempt {run.attempt} ({run.reason or run.status})",
                    {"queued_at": now, "not_before": 0.0},
                )
            ]
        )
        await self.writer.flush()
        self.wake.set()
        return queued

    async def _stop(self, active: Active) -> None:
        """SIGTERM the attempt's process group now, and SIGKILL it after the grace period."""
        active.kill_at = time.time() + self.config.cancel_grace_s
        await active.executor.signal(active.attempt, signal.SIGTERM)

    # --- reconciling after a restart ----------------------------------------------------------

    async def reconcile(self) -> None:
        """Load every unfinished run and re-read it from its files: finalise those that ended
        while no daemon watched, reattach those still running, adopt those the last daemon
        started but did not get to record, and mark the rest lost with the reason."""
        replayed = await self._resume_sweeps()
        for run, env, pid_start, cancel, prune in await self.db.call(self.store.unfinished):
            self.runs[run.id] = run
            # The store keeps secrets masked: a queued run takes them from this daemon's
            # environment (that of whoever started it).
            self.envs[run.id] = repro.unmask_env(env, os.environ)
            if run.status in (RunStatus.QUEUED, RunStatus.ASSIGNED):
                started = await self._started_attempt(run)
                if started is None:
                    if run.status is RunStatus.ASSIGNED:
                        self._transition(
                            [
                                Transition(
                                    run.id,
                                    RunStatus.QUEUED,
                                    "daemon restarted before the run started",
                                )
                            ]
                        )
                    self.queue[run.id] = None
                    continue
                host, number = started
                executor = self.executors[host]
                chain = (
                    []
                    if run.status is RunStatus.ASSIGNED
                    else [
                        Transition(
                            run.id,
                            RunStatus.ASSIGNED,
                            f"{host}: found started after a restart",
                            {"host": host},
                        )
                    ]
                )
                chain.append(
                    Transition(
                        run.id,
                        RunStatus.STARTING,
                        f"attempt {number} found started on {host} after a restart",
                        {"attempt": number, "host": host, "run_dir": executor.run_dir(run.id)}
                        | NEW_ATTEMPT,
                    )
                )
                run = self._transition(chain)[-1]
            executor = self.executors.get(run.host or "")
            if executor is None:
                why = f"host {run.host!r} is no longer configured"
                self._transition([Transition(run.id, RunStatus.LOST, why)])
                continue
            active = Active(
                run=run,
                executor=executor,
                attempt=Attempt(executor.attempt_dir(run.id, run.attempt), run.pid or 0, pid_start),
                number=run.attempt,
                parser=Parser(run.capture),
                position=await self.db.call(self.store.log_position, run.id, run.attempt),
                cancel_requested=cancel,
                prune_reason=prune,
            )
            if (adaptive := self.adaptive.get(run.sweep or "")) is not None:
                adaptive.study.attach(run)
                adaptive.study.report(run.id, replayed.get(run.id, []))
            try:
                await executor.first_try()
                if not active.attempt.pid:
                    active.attempt = await executor.reattach(active.attempt)
                state = await executor.probe(active.attempt)
            except HostUnreachable as exc:
                self.active[run.id] = active
                active.task = asyncio.create_task(
                    self._follow(active, unreachable=str(exc)), name=f"run-{run.id}"
                )
                continue
            pid = active.attempt.pid
            if state is ProcessState.GONE:
                why = (
                    f"process {pid} is gone and left no exit code"
                    if pid
                    else "the daemon stopped while starting it, before its process recorded a pid"
                )
                self._transition(
                    [Transition(run.id, RunStatus.LOST, why, {"ended_at": time.time()})]
                )
                continue
            if run.status is not RunStatus.RUNNING:
                reattached = Transition(
                    run.id, RunStatus.RUNNING, "reattached after daemon restart", {"pid": pid}
                )
                active.run = self._transition([reattached])[0]
            self.active[run.id] = active
            if state is ProcessState.EXITED:
                await self._follow(active)  # ended while no daemon watched: finalise before serving
                continue
            if active.cancel_requested or active.prune_reason:
                with contextlib.suppress(HostUnreachable):
                    await self._stop(active)
            active.task = asyncio.create_task(self._follow(active), name=f"run-{run.id}")
        await self.writer.flush()

    async def _resume_sweeps(self) -> dict[int, list[tuple[int | None, float]]]:
        """Rebuild each adaptive sweep still going: ended runs are fed back to its study as
        they ended; returns the metric points so far of its unfinished runs, to be fed when
        they are reattached."""
        points: dict[int, list[tuple[int | None, float]]] = {}
        for sweep_id, text in await self.db.call(self.store.adaptive_sweeps):
            try:
                experiment = experiment_from_json(text)
                study = AdaptiveSweep(experiment)
            except (msgspec.ValidationError, SweepError) as exc:
                await self.db.call(self.store.cancel_sweep, sweep_id)
                print(f"sweep {sweep_id} cannot go on sampling: {exc}", file=sys.stderr, flush=True)
                continue
            for run, values in await self.db.call(self.store.sweep_history, sweep_id, study.key):
                if run.status.terminal:
                    study.replay(run, values)
                else:
                    points[run.id] = values
            snapshot = next(
                (s.snapshot for s in await self.db.call(self.store.sweeps, sweep_id)), None
            )
            self.adaptive[sweep_id] = Adaptive(study, snapshot)
        return points

    async def _started_attempt(self, run: Run) -> tuple[str, int] | None:
        """The host on which the next attempt of a queued run already has its folder: the last
        daemon started it and stopped before the store heard of it."""
        number = run.attempt + 1
        for name, executor in self.executors.items():
            try:
                await executor.first_try()
                if await executor.attempt_exists(run.id, number):
                    return name, number
            except HostUnreachable:
                continue  # a host that is away cannot tell; its folder is found on its return
        return None

    def _transition(self, changes: list[Transition]) -> list[Run]:
        """The one place a run changes status: checked against the life cycle, applied to the
        daemon's live view, published, and queued for the store (which checks it again)."""
        status: dict[int, RunStatus] = {}
        for change in changes:
            run = self.runs.get(change.run_id)
            if run is None:
                raise IllegalTransition(f"run {change.run_id} has ended or does not exist")
            old = status.get(change.run_id, run.status)
            if not can_transition(old, change.to):
                raise IllegalTransition(
                    f"run {change.run_id}: {old} → {change.to} is not allowed ({change.reason})"
                )
            status[change.run_id] = change.to
        changed = []
        for change in changes:
            old_run = self.runs[change.run_id]
            fields = {k: v for k, v in change.fields.items() if k in _RUN_FIELDS}
            if "failure_class" in fields and fields["failure_class"] is not None:
                fields["failure_class"] = FailureClass(fields["failure_class"])
            if change.to.terminal or change.to in (RunStatus.QUEUED, RunStatus.RUNNING):
                fields.setdefault("reason", change.reason)
            run = msgspec.structs.replace(old_run, status=change.to, **fields)
            if change.to.terminal:
                del self.runs[run.id]
                self.envs.pop(run.id, None)
                if (adaptive := self.adaptive.get(run.sweep or "")) is not None:
                    adaptive.study.finish(run)
            else:
                self.runs[run.id] = run
            if change.to is RunStatus.QUEUED:
                self.queue[run.id] = None
            else:
                self.queue.pop(run.id, None)
            changed.append(run)
            self.bus.publish(RunChanged(run=run, previous=old_run.status, reason=change.reason))
        self.writer.add(changes)
        return changed


_RUN_FIELDS = frozenset(Run.__struct_fields__)


def _end_time(run: Run, ended: ExitInfo) -> float:
    """When an attempt ended: when its exit_code file was written (it may be read much later,
    after an outage or a restart), kept between its start and now against clock skew."""
    now = time.time()
    if ended.ended_at is None:
        return now
    return min(now, max(run.started_at or 0.0, ended.ended_at))


def _last_lines(lines: list[bytes], max_bytes: int, max_lines: int) -> list[bytes]:
    """The last of `lines` that fit in `max_bytes` (a newline each) and `max_lines`; at least
    the last line, however long."""
    size, keep = 0, 0
    for line in reversed(lines[-max_lines:]):
        size += len(line) + 1
        if size > max_bytes and keep:
            break
        keep += 1
    return lines[len(lines) - keep :]


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def classify(
    ended: ExitInfo, tail: str, argv: Sequence[str], cancelled: bool
) -> tuple[RunStatus, FailureClass | None, str]:
    """A finished attempt's status, failure class and reason, from its exit and its log tail."""
    code = ended.exit_code
    if cancelled:
        how = f" (exit code {code})" if code is not None else ""
        return RunStatus.CANCELLED, None, f"cancelled by user{how}"
    if code == 0:
        return RunStatus.SUCCEEDED, None, "exit code 0"
    if OOM_TEXT.search(tail):
        return RunStatus.FAILED, FailureClass.OOM, f"CUDA out of memory (exit code {code})"
    if code is None:
        if ended.wrapper_signal:
            name = signal_name(ended.wrapper_signal)
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
        return RunStatus.FAILED, FailureClass.ERROR, _last_line(tail)
    if code > 128:
        return RunStatus.FAILED, FailureClass.KILLED, f"killed by {signal_name(code - 128)}"
    last = _last_line(tail)
    return RunStatus.FAILED, FailureClass.ERROR, f"exit code {code}" + (f": {last}" if last else "")


def _oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (Linux), else None."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return None


def _last_line(tail: str) -> str:
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def fill_runtime(run: Run, attempt: int, run_dir: str, project: str) -> tuple[str, ...]:
    """A templated run's argv with the attempt's own placeholders filled in."""
    values = {
        "run_id": run.id,
        "attempt": attempt,
        "run_dir": run_dir,
        "artifact_dir": str(Path(run_dir) / "artifacts"),
        "checkpoint_dir": str(Path(run_dir) / "checkpoints"),
        "project": project,
    }
    return tuple(template.render_runtime(word, values) for word in run.argv)


def run_env(base: dict[str, str], run: Run, attempt: int, run_dir: str) -> dict[str, str]:
    """The environment a run starts with: the submitter's, plus the RUNYARD_* variables."""
    env = dict(base)
    env.update(
        RUNYARD_RUN_ID=str(run.id),
        RUNYARD_ATTEMPT=str(attempt),
        RUNYARD_SEED=str(run.seed),
        RUNYARD_PARAMS=json.dumps(run.params),
        RUNYARD_ARTIFACT_DIR=str(Path(run_dir) / "artifacts"),
        RUNYARD_CHECKPOINT_DIR=str(Path(run_dir) / "checkpoints"),
        # Always set: empty keeps a CPU-only job off a GPU host's GPUs.
        CUDA_VISIBLE_DEVICES=",".join(str(i) for i in run.gpus),
    )
    env.setdefault("PYTHONUNBUFFERED", "1")  # live logs and metrics from Python trainers
    return env


def _trial_job(
    experiment: Experiment,
    trial: Trial,
    cwd: str,
    env: dict[str, str],
    data: tuple[DataLink, ...],
    sweep_id: str,
) -> JobSpec:
    """The job one trial of a sweep runs: its model's command and needs, with its params."""
    model = experiment.models[trial.model]
    return JobSpec(
        data=data,
        templated=True,
        argv=trial.argv,
        cwd=cwd,
        name=trial.name(experiment, sweep_id),
        seed=trial.seed,
        capture=model.capture,
        env=env,
        resources=model.resources,
        priority=experiment.priority,
        model_type=model.model_type,
        tags=model.tags,
        requires=model.requires,
        max_concurrent=experiment.max_concurrent,
        retry=experiment.retry,
        params=trial.params,
        trial=(trial.model, trial.config),
    )


def default_name(argv: Sequence[str]) -> str:
    """A short name from a command: the script's stem for `python x.py`, the module for `-m`."""
    first = Path(argv[0]).name
    if re.fullmatch(r"python[0-9.]*", first) and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2:
            return argv[2]
        if argv[1] == "-c":
            return f"{first}-c"
        return Path(argv[1]).stem or first
    return first
