"""The DuckDB experiment store: one class, `Store`, made of one part per topic.

The contract every caller relies on:

- **One thread.** A `Store` is used only by the thread that opened it (the daemon's store
  thread, `engine.store.StoreThread`); a call from another thread raises `StoreError`. Only
  the daemon opens the file: DuckDB allows one read-write process per file.
- **Each write is one transaction.** `add_runs`, `apply_transitions`, `ingest` (points and
  the log offset they were read to), `add_sweep` and the rest either happen whole or not at
  all, so a crash between two calls loses no half of one.
- **The life cycle is checked here too.** `apply_transitions` refuses a change the run life
  cycle does not allow with `IllegalTransition`, whatever the daemon believed.
- **Names.** `find_run` takes an id, an alias (`@champion`) or a name and raises
  `AmbiguousName` for a name several runs have.
- **Schema.** The file carries its schema version; an older file is migrated when opened,
  a newer one refused with `StoreError`.
- **Results are a final attempt's.** Metrics, summaries and sweep results describe each
  run's last attempt unless an attempt is named.
"""

from __future__ import annotations

from engine.store.aliases import AliasRecords
from engine.store.hosts import HostRecords
from engine.store.metrics import MetricRecords
from engine.store.pages import RunPages
from engine.store.runs import RunRecords
from engine.store.sql import ReadOnlySql
from engine.store.sweeps import SweepRecords


class Store(
    RunRecords, SweepRecords, MetricRecords, RunPages, HostRecords, AliasRecords, ReadOnlySql
):
    """The experiment store on one DuckDB file (see the module's contract)."""
