"""The queue: every queued run in the order the planner takes them (highest priority first,
then oldest), each with what the planner sees of it, kept in order as runs come and go so a
plan never sorts or rebuilds the whole queue."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from engine.core.scheduler import QueuedJob
from engine.model import FailureClass, Run


class RunQueue:
    """Queued run ids in plan order; `jobs` is the planner's view of them, in the same order."""

    def __init__(self) -> None:
        self._keys: list[tuple[int, int]] = []  # (-priority, run id), sorted
        self.jobs: list[QueuedJob] = []  # the same runs, same order
        self._key_of: dict[int, tuple[int, int]] = {}

    def add(self, run: Run) -> None:
        """Queue a run (again, with its fields now: a retry's backoff, a new priority)."""
        self.discard(run.id)
        key = (-run.priority, run.id)
        at = bisect.bisect_left(self._keys, key)
        self._keys.insert(at, key)
        self.jobs.insert(at, queued_job(run))
        self._key_of[run.id] = key

    def discard(self, run_id: int) -> None:
        key = self._key_of.pop(run_id, None)
        if key is None:
            return
        at = bisect.bisect_left(self._keys, key)
        del self._keys[at]
        del self.jobs[at]

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._key_of

    def __iter__(self) -> Iterator[int]:
        """Run ids in plan order."""
        return (run_id for _, run_id in self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def queued_job(run: Run) -> QueuedJob:
    """What the planner sees of a queued run."""
    return QueuedJob(
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
