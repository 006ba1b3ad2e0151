"""Dispatch: what the planner is shown (hosts' capacity and reservations, the queue), and the
start of each attempt it assigns."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine import repro
from engine.config import Config
from engine.core import template
from engine.core.failures import oom_kills
from engine.core.scheduler import Assignment, GpuState, HostCapacity, QueuedJob, Snapshot, plan
from engine.executors import Attempt, Executor, HostUnreachable, Launch, layout
from engine.model import FailureClass, JobSpec, Run, RunStatus
from engine.runtime.follow import Follower
from engine.runtime.hosts import Hosts
from engine.runtime.live import NEW_ATTEMPT, Active, LiveView
from engine.store import Transition


class Dispatcher:
    """Plans the queue onto the hosts and starts what the plan assigns; `on_start` is told of
    each attempt that has started (an adaptive sweep follows its trials so)."""

    def __init__(
        self,
        config: Config,
        live: LiveView,
        hosts: Hosts,
        follower: Follower,
        on_start: Callable[[Run], None],
    ) -> None:
        self.config = config
        self.live = live
        self.hosts = hosts
        self.follower = follower
        self.on_start = on_start

    async def dispatch(self) -> None:
        """Start every queued run the planner can place now; note why the others wait. A
        cluster gets its share of the plan in one submission."""
        live = self.live
        if not live.queue:
            return
        # Only what starts is wanted here (`explain` says why the rest wait): the plan stops
        # when every host is full, so a tick costs the same with 10 or 10,000 queued.
        result = plan(self.snapshot(), until_full=True)
        together: dict[str, list[Assignment]] = {}
        for assignment in result.assignments:
            if not self.hosts.executors[assignment.host].starts_at_once:
                together.setdefault(assignment.host, []).append(assignment)
                continue
            try:
                await self._start([assignment])
            except Exception as exc:  # a bug or surprise with this run: the others go on
                live.fail_unexpectedly(assignment.run_id, "starting it", exc)
        for assignments in together.values():
            try:
                await self._start(assignments)
            except Exception as exc:
                for assignment in assignments:
                    live.fail_unexpectedly(assignment.run_id, "starting it", exc)

    def explain(self, first: int | None = None) -> dict[int, str]:
        """For every queued run (or the `first` that many): where it would start now and why,
        or why it waits."""
        result = plan(self.snapshot(), first=first)
        out = dict(result.waiting)
        for a in result.assignments:
            out[a.run_id] = f"would start: {a.reason}"
        return out

    def preview(self, job: JobSpec) -> tuple[str | None, str]:
        """The host a job would go to on idle hosts (None if none could take it), and why."""
        result = plan(msgspec.structs.replace(self._idle(), queue=(_queued(job, 0),)))
        if result.assignments:
            return result.assignments[0].host, result.assignments[0].reason
        return None, result.waiting.get(0, "nowhere")

    def slots(self, job: JobSpec, host: str, most: int, max_concurrent: int | None) -> int:
        """How many runs like `job` (at most `most`, and `max_concurrent` of one sweep) idle
        `host` would run at once: the planner's own packing of CPUs, memory and GPUs."""
        pinned = msgspec.structs.replace(job, host=host)
        queue = tuple(
            msgspec.structs.replace(
                _queued(pinned, i), sweep="(estimate)", max_concurrent=max_concurrent
            )
            for i in range(most)
        )
        result = plan(msgspec.structs.replace(self._idle(), queue=queue), until_full=True)
        return max(1, sum(a.host == host for a in result.assignments))

    def _idle(self) -> Snapshot:
        """The planner's view with every host idle."""
        current = self.snapshot()
        idle = tuple(
            msgspec.structs.replace(
                h,
                active=0,
                reserved_cpus=0.0,
                reserved_mem_gb=0.0,
                gpus=tuple(
                    msgspec.structs.replace(g, reserved_mb=0.0, free_mb=g.total_mb) for g in h.gpus
                ),
            )
            for h in current.hosts
        )
        return msgspec.structs.replace(current, hosts=idle, running_per_sweep={})

    def snapshot(self, now: float | None = None) -> Snapshot:
        """What the planner needs: each host's capacity and reservations, the queue, the time."""
        reserved: dict[str, dict[str, Any]] = {}
        sweeps: dict[str, int] = {}
        for active in self.live.active.values():
            if active.exited:
                continue
            run = active.run
            held = reserved.setdefault(run.host or "", _nothing_held())
            held["active"] += 1
            held["cpus"] += run.resources.cpus
            held["mem"] += run.resources.mem_gb
            for index in run.gpus:
                held["gpu_mb"][index] = held["gpu_mb"].get(index, 0.0) + self._gpu_claim(run, index)
            if run.sweep is not None:
                sweeps[run.sweep] = sweeps.get(run.sweep, 0) + 1
        hosts = []
        for name, spec in self.config.hosts.items():
            cpus, mem_gb, gpus = self.hosts.inventory(name)
            held = reserved.get(name) or _nothing_held()
            hosts.append(
                HostCapacity(
                    name=name,
                    state=self.hosts.state[name][0],
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
                    cluster=spec.kind == "slurm",
                    sized=self.hosts.sized(name),
                )
            )
        return Snapshot(
            now=time.time() if now is None else now,
            hosts=tuple(hosts),
            queue=tuple(self.live.queue.jobs),
            ordered=True,
            routes=self.config.routes,
            running_per_sweep=sweeps,
        )

    def _gpu_claim(self, run: Run, index: int) -> float:
        """The MB a run holds on one GPU: its declared size, or the whole GPU."""
        if run.resources.gpu_mem_gb > 0:
            return run.resources.gpu_mem_gb * 1024
        gpus = {i: total for i, total, _ in self.hosts.inventory(run.host or "")[2]}
        return gpus.get(index, float("inf"))

    async def _start(self, assignments: list[Assignment]) -> None:
        """Start attempts on one host (together, where it takes them so)."""
        host = assignments[0].host
        executor = self.hosts.executors[host]
        launches = []
        for assignment in assignments:
            run = self.live.runs[assignment.run_id]
            number = run.attempt + 1
            run_dir = executor.run_dir(run.id)
            run = self.live.transition(
                [
                    Transition(
                        run.id,
                        RunStatus.ASSIGNED,
                        assignment.reason,
                        {"host": host, "gpus": assignment.gpus},
                    ),
                    Transition(
                        run.id,
                        RunStatus.STARTING,
                        f"starting attempt {number} on {host}",
                        {
                            "attempt": number,
                            "host": host,
                            "run_dir": run_dir,
                            "gpus": assignment.gpus,
                        }
                        | NEW_ATTEMPT,
                    ),
                ]
            )[-1]
            self.live.starting[run.id] = False  # True once cancelled while it starts
            launches.append(self._launch(run, executor, number, run_dir))
        cancelled = []
        try:
            results = await executor.start_many(launches)
            for launch, result in zip(launches, results, strict=True):
                run = self.live.runs[launch.run_id]
                try:
                    active = self._started(run, executor, launch.attempt, host, result)
                except Exception as exc:  # this run's alone
                    self.live.fail_unexpectedly(run.id, "starting it", exc)
                    continue
                if active is not None and active.cancel_requested:
                    cancelled.append(active)
        finally:
            for launch in launches:
                self.live.starting.pop(launch.run_id, None)
        # Cancelled while they started: stopped together (a cluster ends them in one command).
        await asyncio.gather(*(self.follower.terminate(active) for active in cancelled))
        jobs = [
            (launch.run_id, launch.attempt, result.batch_job, None)
            for launch, result in zip(launches, results, strict=True)
            if isinstance(result, Attempt) and result.batch_job is not None
        ]
        if jobs:  # recorded with the attempts, whose rows are written with their start
            await self.live.flush()
            await self.live.db.call(self.live.store.note_batch_jobs, jobs)

    def _launch(self, run: Run, executor: Executor, number: int, run_dir: str) -> Launch:
        """What the executor needs to start attempt `number` of a run."""
        attempt_dir = executor.attempt_dir(run.id, number)
        snapshot = repro.in_snapshot(run.cwd, self.config.state_dir / "snapshots")
        argv = run.argv
        if run.templated:
            project = layout.work_dir(attempt_dir) if snapshot else str(self.config.project_dir)
            argv = fill_runtime(run, number, run_dir, project)
        return Launch(
            run_id=run.id,
            attempt=number,
            argv=argv,
            cwd=snapshot[1] if snapshot else run.cwd,
            env=run_env(self.live.envs[run.id], run, number, run_dir),
            attempt_dir=attempt_dir,
            snapshot=snapshot[0] if snapshot else None,
            data=run.data,
            resources=run.resources,
            max_concurrent=run.max_concurrent,
        )

    def _started(
        self, run: Run, executor: Executor, number: int, host: str, result: Attempt | Exception
    ) -> Active | None:
        """Follow an attempt its executor started (as running, unless it waits in a cluster's
        queue), or record why it did not start; the attempt followed, if any."""
        if isinstance(result, HostUnreachable):
            # It may or may not have started: its files will tell once the host is back.
            unknown = executor.attempt(run.id, number)
            cancelled = self.live.starting.get(run.id, False)
            active = Active.of(run, executor, unknown, number, cancel_requested=cancelled)
            self.follower.spawn(active, unreachable=str(result))
            return None  # stopped, if cancelled, once its host is back
        if isinstance(result, OSError):
            fields = {"failure_class": FailureClass.ERROR.value, "ended_at": time.time()}
            why = f"could not start: {result}"
            self.live.transition([Transition(run.id, RunStatus.FAILED, why, fields)])
            return None
        if isinstance(result, Exception):
            raise result
        attempt = result
        cancelled = self.live.starting.get(run.id, False)
        active = Active.of(
            run, executor, attempt, number, oom_kills=oom_kills(), cancel_requested=cancelled
        )
        self.live.active[run.id] = active
        self.on_start(run)
        if executor.starts_at_once:
            started = {
                "pid": attempt.pid,
                "pid_start_time": attempt.start_time,
                "started_at": time.time(),
            }
            why = f"started on {host} as {executor.describe(attempt)}"
            active.run = self.live.transition(
                [Transition(run.id, RunStatus.RUNNING, why, started)]
            )[0]
        else:
            active.started = False  # the follower sees it start
        self.follower.spawn(active)
        return active


def _nothing_held() -> dict[str, Any]:
    return {"active": 0, "cpus": 0.0, "mem": 0.0, "gpu_mb": {}}


def fill_runtime(run: Run, attempt: int, run_dir: str, project: str) -> tuple[str, ...]:
    """A templated run's argv with the attempt's own placeholders filled in."""
    values = {
        "run_id": run.id,
        "attempt": attempt,
        "run_dir": run_dir,
        "artifact_dir": layout.artifact_dir(run_dir),
        "checkpoint_dir": layout.checkpoint_dir(run_dir),
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
        RUNYARD_ARTIFACT_DIR=layout.artifact_dir(run_dir),
        RUNYARD_CHECKPOINT_DIR=layout.checkpoint_dir(run_dir),
        # Always set: empty keeps a CPU-only job off a GPU host's GPUs.
        CUDA_VISIBLE_DEVICES=",".join(str(i) for i in run.gpus),
    )
    if run.fold is not None:
        env["RUNYARD_FOLD"] = str(run.fold)
    env.setdefault("PYTHONUNBUFFERED", "1")  # live logs and metrics from Python trainers
    return env


def _queued(job: JobSpec, run_id: int) -> QueuedJob:
    """A job as the planner sees it, queued now."""
    return QueuedJob(
        run_id=run_id,
        queued_at=time.time(),
        resources=job.resources,
        requires=job.requires,
        model_type=job.model_type,
        tags=job.tags,
        requested_host=job.host,
    )
