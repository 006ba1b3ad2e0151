"""The experiment store: the only code that opens DuckDB."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from engine.store.schema import SCHEMA_VERSION
from engine.store.store import (
    IllegalTransition,
    LogPosition,
    MetricBatch,
    Store,
    StoreError,
    Transition,
)

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "SCHEMA_VERSION",
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

    def close(self) -> None:
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)


class TransitionWriter:
    """Writes status transitions to the store in batches: each within `delay` seconds of
    happening, many in one transaction. `flush()` returns once everything added before it is
    committed; readers call it first, so they never see the store behind the daemon."""

    def __init__(self, db: StoreThread, delay: float = 0.02) -> None:
        self.db = db
        self.delay = delay
        self.pending: list[Transition] = []
        self._lock = asyncio.Lock()
        self._scheduled: asyncio.Task[None] | None = None

    def add(self, changes: list[Transition]) -> None:
        self.pending.extend(changes)
        if self._scheduled is None or self._scheduled.done():
            self._scheduled = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.delay)
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    await self.db.call(self.db.store.apply_transitions, batch)
                except StoreError as exc:  # the daemon checked them first: this is a bug, say so
                    print(
                        f"engine: the store refused {len(batch)} transitions: {exc}",
                        file=sys.stderr,
                    )
