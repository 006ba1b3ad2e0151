"""The store's foundation: one DuckDB connection owned by one thread, schema migrations,
transactions and the query helpers every topic uses."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from engine.model import Run
from engine.store.schema import MIGRATIONS, SCHEMA_VERSION

# Bytes of an Arrow table inserted at once above which Arrow's memory pool is released.
_LARGE_INSERT = 4 * 2**20

_T = TypeVar("_T")


class StoreError(Exception):
    """The store cannot be opened or used as asked."""


class AmbiguousName(StoreError):
    """A name that several runs have; the message lists them."""


class IllegalTransition(StoreError):
    """A status change the run life cycle does not allow."""


class StoreBase:
    """One DuckDB file, opened and migrated; every topic's records extend this."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._owner = threading.get_ident()
        try:
            # DuckDB's allocator gives memory back on its own thread: without it, what a large
            # write freed stays in the daemon's RSS until some later query (90 MB after
            # accepting 10,000 runs).
            self._con = duckdb.connect(str(path), config={"allocator_background_threads": True})
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        self._migrate()
        self._sweep_metric: dict[str, dict[str, Any] | None] = {}  # by sweep id
        # A second connection and its own thread, for a read that can run while this thread
        # does another: a page's independent scans then overlap on two cores.
        self._aside = self.con.cursor()
        self._aside_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-aside")
        self._aside_ident = self._aside_thread.submit(threading.get_ident).result()
        # Ended runs' rows and metric summary rows as pages read them. Neither changes once a
        # run has ended but through a write here that forgets it (a retry, say), so a page
        # shown again, or a filter's window overlapping the last one, reads only what is new.
        self._ended: dict[int, tuple[Run, list[tuple[Any, ...]]]] = {}

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection of this thread: the thread that opened the store, or the second
        connection's (see `aside`). DuckDB refuses a call on a connection that another thread
        is using, so any other thread would fail at random."""
        ident = threading.get_ident()
        if ident == self._owner:
            return self._con
        if ident == self._aside_ident:
            return self._aside
        raise StoreError(
            f"the store {self.path} was used from a thread that did not open it; "
            "call it through StoreThread.call"
        )

    def aside(self, read: Callable[[], _T]) -> Future[_T]:
        """Run a read-only call on the second connection's thread, where it neither waits for
        nor holds up this thread's writes; it sees what they have committed."""
        return self._aside_thread.submit(read)

    def close(self) -> None:
        self._aside_thread.shutdown(wait=True)
        self._aside.close()
        self.con.close()

    def _migrate(self) -> None:
        con = self.con
        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self._one("SELECT max(version) FROM schema_version")
        current = row[0] or 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this engine's "
                f"{SCHEMA_VERSION}; upgrade runyard to open it"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            con.execute("BEGIN")
            try:
                con.execute(MIGRATIONS[version - 1])
                con.execute("INSERT INTO schema_version VALUES (?)", [version])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        return self._one("SELECT max(version) FROM schema_version")[0]

    def _forget(self, run_ids: Iterable[int]) -> None:
        """Drop runs from the ended rows kept for pages: their row or metrics are changing."""
        for run_id in run_ids:
            self._ended.pop(run_id, None)

    def _alongside(self, sql: str, params: list[Any]) -> Future[list[tuple[Any, ...]]]:
        """Start a read on the second connection; its rows come from the future. It sees what
        this connection has committed, so call it outside a transaction."""
        return self.aside(lambda: self._aside.execute(sql, params).fetchall())

    def _one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query, reading the result to its end: DuckDB refuses further work
        on a connection whose last result was left half-read."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def _insert_arrow(
        self, target: str, table: pa.Table, select: str = "*", replace: bool = False
    ) -> None:
        """One bulk insert of an Arrow table into `target` (a table, optionally with columns),
        of `select` over its columns; with `replace`, rows replace those with the same key."""
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        self.con.register("_incoming", table)
        try:
            self.con.execute(f"{verb} INTO {target} SELECT {select} FROM _incoming")
        finally:
            self.con.unregister("_incoming")
        if table.nbytes > _LARGE_INSERT:  # Arrow's allocator keeps what it freed otherwise
            pa.default_memory_pool().release_unused()

    def _transaction(self) -> _Transaction:
        return _Transaction(self.con)

    @contextlib.contextmanager
    def _full_sort(self, wanted: bool) -> Iterator[None]:
        """Sort every match rather than keep a top-N heap, when `wanted`. DuckDB's heap is two
        to six times slower than a full sort when rows arrive in ascending order of a
        descending sort, as runs do by id and by any column whose ties fall back on id."""
        if not wanted:
            yield
            return
        self.con.execute("SET disabled_optimizers = 'top_n'")
        try:
            yield
        finally:
            self.con.execute("RESET disabled_optimizers")


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, kind: object, *_: object) -> None:
        self.con.execute("ROLLBACK" if kind else "COMMIT")
