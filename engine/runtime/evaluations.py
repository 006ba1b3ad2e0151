"""Evaluation after training: a sweep's `[[evaluate]]` steps queued as runs when its trained
runs end (each one that succeeded, or the best configuration's once training is over), and
their metrics put on the trained run as SPLIT/KEY when they succeed."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from engine import repro
from engine.config.experiments import EvaluateStep
from engine.core import template
from engine.executors import layout
from engine.model import DataLink, JobSpec, Run, RunStatus
from engine.runtime.live import LiveView
from engine.runtime.submit import Submitter


class Evaluations:
    """Queues evaluation runs as trained runs end; `sampling` says whether an adaptive sweep
    still has trials to sample (its training is not over then)."""

    def __init__(
        self, live: LiveView, submitter: Submitter, sampling: Callable[[str], bool]
    ) -> None:
        self.live = live
        self.db = live.db
        self.submitter = submitter
        self.sampling = sampling
        self.steps: dict[str, tuple[EvaluateStep, ...]] = {}  # each sweep's, once read
        # Each sweep's working directory, environment, manifest, data and snapshot, once read.
        self._launches: dict[str, tuple[str, dict[str, str], dict[str, Any], Any, str | None]] = {}
        self._later: dict[asyncio.Task[None], str] = {}  # work after a run's end, by sweep
        self._queueing = asyncio.Lock()  # one submission at a time: none queued twice
        live.on_end.append(self._finish)

    def queueing(self, sweep_id: str) -> bool:
        """Whether evaluations of the sweep are about to be queued (it is going till then)."""
        return sweep_id in self._later.values()

    async def missed(self) -> None:
        """After a restart: the evaluations the last daemon did not get to queue, and the
        metrics of those that ended before it could put them on their trained runs."""
        store = self.db.store
        for child, parent, split in await self.db.call(store.unadopted_evaluations):
            await self.db.call(store.adopt_metrics, child, parent, split)
        by_sweep: dict[str, list[Run]] = {}
        for run in await self.db.call(store.awaiting_evaluation):
            by_sweep.setdefault(run.sweep or "", []).append(run)
        for sweep_id, runs in by_sweep.items():
            await self._after(sweep_id, [r for r in runs if r.status is RunStatus.SUCCEEDED])

    def _finish(self, run: Run) -> None:
        if run.sweep is None:
            return
        if run.parent is None:
            self._soon(run.sweep, self._after(run.sweep, [run]))
        elif run.status is RunStatus.SUCCEEDED:  # its metrics go onto its trained run
            self._soon(run.sweep, self._adopt(run))

    def _soon(self, sweep_id: str, work: Awaitable[None]) -> None:
        """Do a sweep's evaluation work after a run's end (told synchronously)."""

        async def guarded() -> None:
            try:
                await work
            except Exception:  # a bug: logged, and the daemon goes on
                traceback.print_exc(file=sys.stderr)

        task = asyncio.get_running_loop().create_task(guarded())
        self._later[task] = sweep_id
        task.add_done_callback(lambda done: self._later.pop(done, None))

    async def _after(self, sweep_id: str, ended: list[Run]) -> None:
        """Trained runs ended: the `each` steps for those that succeeded; and once no trained
        run of the sweep is left to run or sample, the `best` steps for the best
        configuration's runs."""
        steps = await self._steps(sweep_id)
        if not steps:
            return
        succeeded = [r for r in ended if r.status is RunStatus.SUCCEEDED]
        await self._evaluate(sweep_id, succeeded, [s for s in steps if s.on == "each"])
        best = [s for s in steps if s.on == "best"]
        training = self.sampling(sweep_id) or any(
            r.sweep == sweep_id and r.parent is None for r in self.live.runs.values()
        )
        if best and not training:
            await self._evaluate(sweep_id, await self._best_runs(sweep_id), best)

    async def _steps(self, sweep_id: str) -> tuple[EvaluateStep, ...]:
        if sweep_id not in self.steps:
            found = await self.db.call(self.db.store.sweep_evaluate, sweep_id)
            self.steps[sweep_id] = tuple(msgspec.convert(s, EvaluateStep) for s in found)
        return self.steps[sweep_id]

    async def _best_runs(self, sweep_id: str) -> list[Run]:
        """The runs of the sweep's best configuration by its metric."""
        await self.live.flush()  # every trained run's end is in the store
        store = self.db.store
        _, metric = await self.db.call(store.sweep_metric, sweep_id)
        if not metric:
            return []
        mode, summary = metric.get("mode", "max"), metric.get("summary", "last")
        configs = await self.db.call(
            store.sweep_results, sweep_id, metric["name"], mode, True, summary
        )
        runs = [await self.db.call(store.get_run, i) for i in configs[0]["runs"]] if configs else []
        return [r for r in runs if r is not None]

    async def _evaluate(self, sweep_id: str, runs: list[Run], steps: list[EvaluateStep]) -> None:
        """Queue each step's run per split for each trained run not evaluated by it yet, on
        the host that holds the trained run's files, from the sweep's code snapshot."""
        if not runs or not steps:
            return
        launch = await self._launch(sweep_id)
        if launch is None:
            return
        cwd, env, manifest, data, snapshot = launch
        async with self._queueing:  # what is queued is in the store before the next looks
            done = await self.db.call(self.db.store.evaluation_names, [r.id for r in runs])
            jobs = [
                job
                for run in runs
                for step in steps
                for split in step.splits
                if (job := evaluation_job(run, step, split, cwd, env, data)).name not in done
            ]
            if jobs:
                await self.submitter.submit(jobs, snapshot=snapshot, shared=manifest)

    async def _launch(
        self, sweep_id: str
    ) -> tuple[str, dict[str, str], dict[str, Any], Any, str | None] | None:
        """What the sweep's runs were queued with (its secrets from this daemon's
        environment), read once per sweep."""
        if sweep_id not in self._launches:
            store = self.db.store
            found = await self.db.call(store.sweep_launch, sweep_id)
            if found is None:
                return None
            cwd, env, manifest, data = found
            sweeps = await self.db.call(store.sweeps, sweep_id)
            snapshot = sweeps[0].snapshot if sweeps else None
            env = repro.unmask_env(env, os.environ)
            self._launches[sweep_id] = (cwd, env, manifest, data, snapshot)
        return self._launches[sweep_id]

    async def _adopt(self, run: Run) -> None:
        await self.live.flush()
        assert run.parent is not None
        await self.db.call(self.db.store.adopt_metrics, run.id, run.parent, run.split or "eval")


def evaluation_job(
    run: Run,
    step: EvaluateStep,
    split: str,
    cwd: str,
    env: dict[str, str],
    data: tuple[DataLink, ...],
) -> JobSpec:
    """An evaluation of trained `run` by `step` on `split`: its command with the run's params,
    seed, fold and folders filled in, pinned to the run's host (where its files are)."""
    run_dir = run.run_dir or ""
    values = {
        **run.params,
        "seed": run.seed,
        "split": split,
        "parent_id": run.id,
        "parent_run_dir": run_dir,
        "parent_artifact_dir": layout.artifact_dir(run_dir),
    } | ({"fold": run.fold} if run.fold is not None else {})
    name = f"{run.name}-{step.name}" + (f"-{split}" if split else "")
    return JobSpec(
        argv=tuple(template.render_params(word, values) for word in step.argv),
        cwd=cwd,
        name=name,
        seed=run.seed,
        capture=run.capture,
        env=env,
        host=run.host,
        resources=step.resources,
        priority=run.priority,
        model_type=run.model_type,
        tags=("evaluation",),
        sweep=run.sweep,
        params=run.params,
        data=data,
        templated=True,
        fold=run.fold,
        parent=run.id,
        split=split or step.name,
    )
