"""The experiment store: the only code that opens DuckDB."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from engine.store.aliases import AliasError
from engine.store.base import AmbiguousName, IllegalTransition, StoreError
from engine.store.rows import LogPosition, MetricBatch, Transition
from engine.store.schema import SCHEMA_VERSION
from engine.store.store import Store

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "SCHEMA_VERSION",
    "AliasError",
    "AmbiguousName",
    "IllegalTransition",
    "LogPosition",
    "MetricBatch",
    "Store",
    "StoreError",
    "StoreThread",
    "Transition",
    "TransitionWriter",
]


class StoreThread:
    """Runs every store call on one dedicated thread, so the daemon's event loop never blocks on
    DuckDB and the connection is never shared between threads."""

    def __init__(self, path: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store: Store = self._pool.submit(Store, path).result()

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """A read-only store call on the store's second connection (`Store.aside`): it does
        not wait behind the writes queued here, such as many runs' points being ingested."""
        return await asyncio.wrap_future(self.store.aside(lambda: fn(*args, **kwargs)))

    def close(self) -> None:
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)


class TransitionWriter:
    """Writes status transitions to the store in batches: each within `delay` seconds of
    happening, many in one transaction. `flush()` returns once everything added before it is
    committed; readers call it first, so they never see the store behind the daemon. What a
    crash loses of a batch, the daemon restores from the run folders when it starts again."""

    def __init__(self, db: StoreThread, delay: float = 0.25) -> None:
        self.db = db
        self.delay = delay
        self.pending: list[Transition] = []
        self.added = 0  # transitions ever added
        self.committed = 0  # of those, how many are written (or refused)
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    def add(self, changes: list[Transition]) -> None:
        self.pending.extend(changes)
        self.added += len(changes)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._timed_flush)

    def _timed_flush(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        target = self.added
        async with self._lock:
            while self.committed < target:
                batch, self.pending = self.pending, []
                try:
                    await self.db.call(self.db.store.apply_transitions, batch)
                except StoreError as exc:  # the daemon checked them first: this is a bug, say so
                    print(
                        f"engine: the store refused {len(batch)} transitions: {exc}",
                        file=sys.stderr,
                    )
                self.committed += len(batch)
