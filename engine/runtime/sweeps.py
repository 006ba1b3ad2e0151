"""Sweeps: an experiment expanded into trials and queued as runs, and the adaptive ones (TPE
sampling, pruning) driven as their runs report and end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from engine import repro, workspace
from engine.config import (
    Config,
    ConfigError,
    Experiment,
    experiment_from_json,
    experiment_json,
    load_experiment,
)
from engine.core.points import Points
from engine.executors import HostUnreachable, ProcessState
from engine.model import DataLink, JobSpec, Run
from engine.protocol import HostEstimate, SweepPlan
from engine.runtime.dispatch import Dispatcher
from engine.runtime.evaluations import Evaluations
from engine.runtime.hosts import Hosts
from engine.runtime.live import Active, LiveView, Refused
from engine.runtime.submit import SubmitError, Submitter
from engine.sweep import (
    AdaptiveSweep,
    SweepError,
    Trial,
    is_adaptive,
    smoke_trials,
    total_runs,
)
from engine.sweep import trials as sweep_trials


@dataclass
class Adaptive:
    """An adaptive sweep the daemon drives: its Optuna side, and what its later trials are
    queued with (the code snapshot's directory, environment and manifest of its first run)."""

    study: AdaptiveSweep
    snapshot: str | None
    launch: tuple[str, dict[str, str], dict[str, Any], tuple[DataLink, ...]] | None = None
    env: dict[str, str] | None = None  # the submitter's, secrets in clear (never stored)


class Sweeps:
    """Queues sweeps, and drives each adaptive one: asks its study for more trials as runs
    end, reports runs' values to its pruner, and stops a run the pruner gives up on."""

    def __init__(
        self,
        config: Config,
        live: LiveView,
        hosts: Hosts,
        submitter: Submitter,
        dispatcher: Dispatcher,
        terminate: Callable[[Active], Awaitable[None]],
    ) -> None:
        self.config = config
        self.live = live
        self.db = live.db
        self.hosts = hosts
        self.submitter = submitter
        self.dispatcher = dispatcher
        self.terminate = terminate
        self.adaptive: dict[str, Adaptive] = {}  # sweeps sampled or pruned as they run
        live.on_end.append(self._finish)  # before the evaluations look whether it is sampling
        self.evaluations = Evaluations(live, submitter, self.sampling)

    async def submit(
        self,
        file: str,
        overrides: dict[str, str],
        cwd: str,
        env: dict[str, str],
        dry_run: bool,
        smoke: bool = False,
        wait_for_host: bool = False,
    ) -> SweepPlan:
        """Expand an experiment into trials, snapshot the project's code, and queue every trial
        as a run of a new sweep (or, with `dry_run`, only say what would happen). With
        `smoke`, its smoke test instead: one trial per model with the `[smoke]` values, on the
        host the sweep would send that model to, as a sweep marked smoke."""
        try:
            # Read and planned off the event loop: a large file or sweep holds up no one.
            experiment, study, planned = await asyncio.to_thread(self._plan, file, overrides, smoke)
        except (ConfigError, SweepError) as exc:
            raise SubmitError(str(exc)) from None
        project = self.config.project_dir
        total = len(planned) if smoke else total_runs(experiment)
        try:
            links = workspace.resolve_data(experiment.data, project, str(experiment.path))
        except workspace.DataError as exc:
            raise SubmitError(str(exc)) from None
        next_id = await self.db.call(self.db.store.next_sweep_id, experiment.name, smoke)
        jobs = [
            msgspec.structs.replace(
                _trial_job(experiment, t, cwd, env, links, next_id), wait_for_host=wait_for_host
            )
            for t in planned
        ]
        routed = self._routed(experiment, jobs, planned, every=not smoke)
        where = _where(experiment, routed)
        if smoke:  # each model's smoke run on the host its trials would go to
            jobs = [
                msgspec.structs.replace(
                    job, host=routed[t.model][0] or job.host, tags=(*job.tags, "smoke")
                )
                for t, job in zip(planned, jobs, strict=True)
            ]
        shared = await self.submitter.manifest(jobs[0]) if jobs else None
        git = (shared or {}).get("git") or {}
        uncommitted = [f" M {p}" for p in git.get("changed", [])]
        uncommitted += [f"?? {p}" for p in git.get("untracked", [])]
        if dry_run:
            sees, warnings = await asyncio.to_thread(
                workspace.what_runs_see, project, Path(cwd), links, (self.config.state_dir,)
            )
            return SweepPlan(
                sweep=None,
                trials=total,
                first=_shown(jobs),
                where=where,
                runs=[],
                sees=sees,
                warnings=warnings,
                uncommitted=uncommitted,
                commit=git.get("commit"),
                estimate=[] if smoke else await self._estimate(experiment, routed),
                metric=experiment.metric.name if experiment.metric else None,
                shape="" if smoke else _shape(experiment, planned),
            )
        snapshot, jobs = await self.submitter.into_snapshot(jobs)
        sweep_id = await self.db.call(
            self.db.store.add_sweep,
            experiment.name,
            str(experiment.path),
            experiment.method,
            total,
            snapshot,
            msgspec.to_builtins(experiment.metric) if experiment.metric else None,
            experiment_json(experiment) if study else None,
            experiment.sampler_seed if experiment.method != "grid" else None,
            smoke,
            experiment.baseline,
            [msgspec.to_builtins(step) for step in experiment.evaluate],
            sorted({p.name for m in experiment.models for p in m.params if p.log}),
        )
        self.evaluations.steps[sweep_id] = experiment.evaluate
        jobs = [
            msgspec.structs.replace(j, sweep=sweep_id, name=t.name(experiment, sweep_id))
            for j, t in zip(jobs, planned, strict=True)
        ]
        runs = await self.submitter.submit(jobs, snapshot=snapshot, shared=shared)
        if study is not None:
            self.adaptive[sweep_id] = Adaptive(study, snapshot, env=env)
        return SweepPlan(
            sweep=sweep_id,
            trials=total,
            first=_shown(jobs),
            where=where,
            runs=runs,
            uncommitted=uncommitted,
            commit=git.get("commit"),
            metric=experiment.metric.name if experiment.metric else None,
        )

    def going(self, sweep_id: str) -> bool:
        """Whether a sweep has runs unfinished, trials still to sample, or evaluations about to
        be queued."""
        if self.sampling(sweep_id) or self.evaluations.queueing(sweep_id):
            return True
        return any(r.sweep == sweep_id for r in self.live.runs.values())

    async def cancel(self, sweep: str) -> list[Run]:
        """Sample no more of a sweep; its unfinished runs, for the caller to cancel."""
        runs = [r for r in list(self.live.runs.values()) if r.sweep == sweep]
        if not runs and sweep not in self.adaptive:
            raise Refused(f"no unfinished runs in sweep {sweep!r}")
        self.adaptive.pop(sweep, None)
        await self.db.call(self.db.store.cancel_sweep, sweep)
        return runs

    async def sample_more(self) -> None:
        """Queue the next configurations of each TPE sweep as its runs end."""
        for sweep_id, adaptive in list(self.adaptive.items()):
            study = adaptive.study
            in_flight = {
                r.trial for r in self.live.runs.values() if r.sweep == sweep_id and r.trial
            }
            if not study.remaining():
                if not in_flight:
                    del self.adaptive[sweep_id]  # sampled and finished: nothing more to judge
                continue
            wanted = self._configs_in_flight(study.experiment) - len(in_flight)
            if wanted <= 0:
                continue
            if adaptive.launch is None:
                adaptive.launch = await self.db.call(self.db.store.sweep_launch, sweep_id)
            if adaptive.launch is None:
                continue
            cwd, env, manifest, data = adaptive.launch
            env = adaptive.env if adaptive.env is not None else repro.unmask_env(env, os.environ)
            # The sweep was accepted when submitted: its later trials are never refused.
            jobs = [
                msgspec.structs.replace(
                    _trial_job(study.experiment, t, cwd, env, data, sweep_id),
                    sweep=sweep_id,
                    wait_for_host=True,
                )
                for t in study.ask(wanted)
            ]
            await self.submitter.submit(jobs, snapshot=adaptive.snapshot, shared=manifest)

    def attach(self, run: Run, points: list[tuple[int | None, float]] | None = None) -> None:
        """A run of an adaptive sweep has started (or was reattached with `points` so far)."""
        if run.parent is None and (adaptive := self.adaptive.get(run.sweep or "")) is not None:
            adaptive.study.attach(run)
            if points is not None:
                adaptive.study.report(run.id, points)

    async def judge(self, active: Active, points: Points) -> None:
        """Feed a run's new values of its sweep's metric to the pruner; stop it if told to."""
        adaptive = self.adaptive.get(active.run.sweep or "")
        if adaptive is None or active.run.parent is not None:
            return
        if active.stop_asked:
            return
        key = adaptive.study.key
        values = points.of_key(key)
        if values and (reason := adaptive.study.report(active.run.id, values)):
            # Output read late (after a restart) may be from an attempt that has finished
            # meanwhile: its end stands, whatever its earlier steps would have said.
            with contextlib.suppress(HostUnreachable):
                if await active.executor.probe(active.attempt) is ProcessState.EXITED:
                    return
            active.prune_reason = reason
            await self.db.call(self.db.store.request_prune, active.run.id, reason)
            await self.terminate(active)

    async def resume(self) -> dict[int, list[tuple[int | None, float]]]:
        """Rebuild each adaptive sweep still going after a restart: ended runs are fed back to
        its study as they ended; returns the metric points so far of its unfinished runs, to
        be fed when they are reattached."""
        points: dict[int, list[tuple[int | None, float]]] = {}
        store = self.db.store
        for sweep_id, text in await self.db.call(store.adaptive_sweeps):
            try:
                experiment = experiment_from_json(text)
                study = AdaptiveSweep(experiment)
            except (msgspec.ValidationError, SweepError) as exc:
                await self.db.call(store.cancel_sweep, sweep_id)
                print(f"sweep {sweep_id} cannot go on sampling: {exc}", file=sys.stderr, flush=True)
                continue
            for run, values in await self.db.call(store.sweep_history, sweep_id, study.key):
                if run.status.terminal:
                    study.replay(run, values)
                else:
                    points[run.id] = values
            snapshot = next((s.snapshot for s in await self.db.call(store.sweeps, sweep_id)), None)
            self.adaptive[sweep_id] = Adaptive(study, snapshot)
        return points

    def _finish(self, run: Run) -> None:
        if run.parent is None and (adaptive := self.adaptive.get(run.sweep or "")) is not None:
            adaptive.study.finish(run)

    def sampling(self, sweep_id: str) -> bool:
        """Whether an adaptive sweep still has trials to sample."""
        adaptive = self.adaptive.get(sweep_id)
        return adaptive is not None and adaptive.study.remaining() > 0

    def _plan(
        self, file: str, overrides: dict[str, str], smoke: bool = False
    ) -> tuple[Experiment, AdaptiveSweep | None, list[Trial]]:
        """An experiment file read, its study (for an adaptive sweep) and its first trials
        (with `smoke`, its smoke test's: nothing adaptive)."""
        experiment = load_experiment(file, overrides)
        if smoke:
            return experiment, None, smoke_trials(experiment)
        if experiment.sampler_seed is None:  # each sweep draws afresh, and records it
            experiment = msgspec.structs.replace(experiment, sampler_seed=secrets.randbelow(2**31))
        study = AdaptiveSweep(experiment) if is_adaptive(experiment) else None
        if experiment.method == "tpe":
            assert study is not None
            return experiment, study, study.ask(self._configs_in_flight(experiment))
        return experiment, study, sweep_trials(experiment)

    def _configs_in_flight(self, experiment: Experiment) -> int:
        """How many configurations a TPE sweep keeps queued or running at once: enough to fill
        its `max_concurrent` (or every host's slots), so it learns from each result early."""
        slots = experiment.max_concurrent or sum(
            spec.max_jobs for name, spec in self.config.hosts.items() if self.hosts.is_up(name)
        )
        return max(1, -(-slots // len(experiment.seeds)))

    def _routed(
        self, experiment: Experiment, jobs: list[JobSpec], planned: list[Trial], every: bool
    ) -> dict[int, tuple[str | None, str, int, JobSpec]]:
        """Per model: the host its trials would go to on idle hosts (None: nowhere), why, how
        many trials it has (in all when `every`, else those planned), and one of its jobs."""
        routed: dict[int, tuple[str | None, str, int, JobSpec]] = {}
        for trial, job in zip(planned, jobs, strict=True):
            if trial.model in routed:
                host, why, n, first = routed[trial.model]
                routed[trial.model] = (host, why, n + 1, first)
            else:
                routed[trial.model] = (*self.dispatcher.preview(job), 1, job)
        if every and experiment.method == "tpe":  # only its first trials are planned yet
            every = (experiment.trials or 0) * len(experiment.seeds)
            routed = {m: (host, why, every, job) for m, (host, why, _, job) in routed.items()}
        return routed

    async def _estimate(
        self, experiment: Experiment, routed: dict[int, tuple[str | None, str, int, JobSpec]]
    ) -> list[HostEstimate]:
        """Per host the trials go to: compute and wall time from the median duration of the
        experiment's earlier succeeded runs of each model (on that host, else anywhere), the
        trials running as many at once as the idle host takes; then their evaluation runs
        (each trial's, and the best configuration's once), from earlier evaluation runs."""
        history = await self.db.call(self.db.store.durations, experiment.name)
        per_trial = sum(len(s.splits) for s in experiment.evaluate if s.on == "each")
        once = sum(len(s.splits) for s in experiment.evaluate if s.on == "best")
        once *= len(experiment.seeds) * (experiment.folds or 1)
        per_host: dict[str, list[tuple[int, int, JobSpec]]] = {}
        for model, (host, _, n, job) in routed.items():
            if host is not None:
                per_host.setdefault(host, []).append((model, n, job))
        estimates = []
        for host, models in per_host.items():
            trials = sum(n for _, n, _ in models)
            compute = wall = 0.0
            runs, elsewhere, known = 0, False, True
            slots = 1
            for model, n, job in models:
                durations = history.get((model, host))
                if not durations:
                    durations = [d for (m, _), ds in history.items() if m == model for d in ds]
                    elsewhere = elsewhere or bool(durations)
                if not durations:
                    known = False
                    continue
                median = statistics.median(durations)
                slots = self.dispatcher.slots(job, host, min(n, 10_000), experiment.max_concurrent)
                compute += n * median
                wall += -(-n // slots) * median  # waves of `slots` trials
                runs += len(durations)
            evaluations, once = trials * per_trial + once, 0  # the best's on one host
            if evaluations:
                durations = history.get((-1, host)) or [
                    d for (m, _), ds in history.items() if m == -1 for d in ds
                ]
                if durations:
                    median = statistics.median(durations)
                    compute += evaluations * median
                    wall += -(-evaluations // slots) * median
                    runs += len(durations)
                else:
                    known = False
            estimates.append(
                HostEstimate(host, trials, slots, runs, compute, wall, elsewhere, evaluations)
                if known
                else HostEstimate(host, trials, slots, runs, evaluations=evaluations)
            )
        return estimates


def _shape(experiment: Experiment, planned: list[Trial]) -> str:
    """How a sweep's runs are made up, when more than configurations x seeds says it: its
    baseline and ablations, folds, and the evaluation steps after training."""
    parts = []
    if experiment.baseline is not None:
        n = len(experiment.ablations)
        parts.append(f"{n + 1} configurations (a baseline and {n} ablations)")
    if experiment.folds:
        if not parts:
            configs = len({(t.model, t.config) for t in planned})
            parts.append(
                f"{configs} configurations" if experiment.method != "tpe" else "each configuration"
            )
        parts.append(f"{experiment.folds} folds")
    if parts:
        parts.append(f"{len(experiment.seeds)} seeds")
    shape = " x ".join(parts)
    if experiment.evaluate:
        steps = ", ".join(
            s.name
            + (f" on {' and '.join(s.splits)}" if any(s.splits) else "")
            + (" (the best configuration's runs)" if s.on == "best" else " (each trial)")
            for s in experiment.evaluate
        )
        shape += ("; " if shape else "") + f"then evaluate: {steps}"
    return shape


def _where(experiment: Experiment, routed: dict[int, tuple[str | None, str, int, JobSpec]]) -> str:
    """Where a sweep's trials would go, e.g. "18 → gpu-box, 18 → laptop (glm: laptop; …)"."""
    if not routed:
        return "no trials"
    counts: dict[str, int] = {}
    for host, _, n, _ in routed.values():
        counts[host or "nowhere"] = counts.get(host or "nowhere", 0) + n
    summary = ", ".join(f"{n} → {host}" for host, n in counts.items())
    named = [
        (experiment.models[m].name, why)
        for m, (host, why, _, _) in routed.items()
        if why != host  # "local" says no more than "→ local"
    ]
    if not named:
        return summary
    detail = "; ".join(f"{name}: {why}" if name else why for name, why in named)
    return f"{summary} ({detail})"


def _shown(jobs: list[JobSpec]) -> list[JobSpec]:
    """The first jobs of a sweep as a client is shown them: secrets masked."""
    return [msgspec.structs.replace(j, env=repro.mask_env(j.env or {})) for j in jobs[:10]]


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
        watch=experiment.watch,
        params=trial.params,
        trial=(trial.model, trial.config),
        fold=trial.fold,
    )
