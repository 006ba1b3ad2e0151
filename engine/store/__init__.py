"""The experiment store: the only code that opens DuckDB."""

from __future__ import annotations

import asyncio
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
