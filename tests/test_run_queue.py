"""The daemon's queue keeps plan order (priority, then age) as runs come, go and change."""

from __future__ import annotations

import msgspec

from engine.model import Run, RunStatus
from engine.runtime.run_queue import RunQueue


def queued(run_id: int, priority: int = 0) -> Run:
    return Run(id=run_id, name=f"r{run_id}", status=RunStatus.QUEUED, argv=("x",), cwd="/",
               seed=0, capture=(), created_at=float(run_id), priority=priority)  # fmt: skip


def test_runs_are_kept_in_plan_order_as_they_come_go_and_change() -> None:
    queue = RunQueue()
    for run_id in (5, 1, 3):
        queue.add(queued(run_id))
    queue.add(queued(4, priority=2))
    assert list(queue) == [4, 1, 3, 5] == [j.run_id for j in queue.jobs]
    queue.discard(1)
    queue.discard(99)  # not queued: nothing happens
    assert list(queue) == [4, 3, 5] and 1 not in queue and 3 in queue and len(queue) == 3
    held = msgspec.structs.replace(queued(5, priority=9), held=True)
    queue.add(held)  # a changed run takes its new place and its new fields
    assert list(queue) == [5, 4, 3] and queue.jobs[0].held
