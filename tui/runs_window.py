"""The runs table's data, apart from its drawing: what is asked of the daemon (filter, sort,
direction), the window of matching runs it answered with, where the cursor is over all of
them, and which runs are selected. Pure: the app fills it, the table draws it."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.model import Run, RunStatus
from engine.protocol import RunPage

SORTS = ("id", "status", "host", "name", "duration", "created", "family")
# What each column of the runs table sorts by (the metric column: its metric, see
# `metric_shown`); the others do not sort.
COLUMN_SORTS = {
    "id": "id",
    "name": "name",
    "status": "status",
    "time": "duration",
    "host": "host",
    "sweep": "sweep",
}


@dataclass
class RunsWindow:
    """One view of the runs: its query, its loaded rows, its cursor and selection."""

    query: str = ""  # the filter's text, as the daemon parses it
    sort: str = "id"
    descending: bool = True
    page_size: int = 120  # rows loaded around the cursor: a few screens' worth
    offset: int = 0  # of the loaded rows among all matching runs
    total: int = 0  # matching runs
    cursor: int = 0  # over every matching run, not only the loaded ones
    rows: list[Run] = field(default_factory=list)
    runs: dict[int, Run] = field(default_factory=dict)
    latest: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)  # run → key →
    sweep_metrics: dict[str, dict[str, str]] = field(default_factory=dict)
    aliases: dict[int, list[str]] = field(default_factory=dict)  # of the loaded runs
    selected: set[int] = field(default_factory=set)
    metric_choice: str | None = None  # the METRIC column's metric; None: the sweep's
    wanted: int | None = None  # the window asked for and not yet loaded

    def load(self, page: RunPage, reset: bool = False) -> None:
        """Take a new window; the cursor stays on its run where that run is still in it (or
        goes to the first row, with `reset`: a new sort or filter)."""
        keep = None if reset else self.cursor_run
        if reset:
            self.cursor = 0
        self.offset, self.total, self.wanted = page.offset, page.total, None
        self.sweep_metrics.update(page.sweep_metrics)
        self.latest = {int(k): v for k, v in page.metrics.items()}
        self.aliases = {int(k): v for k, v in page.aliases.items()}
        self.rows = list(page.runs)
        self.runs = {run.id: run for run in self.rows}
        if keep in self.runs:
            self.cursor = page.offset + self.position(keep)
        self.cursor = max(0, min(self.cursor, self.total - 1))

    def upsert(self, run: Run) -> int | None:
        """A loaded run changed: its row's index among all matching runs, or None when the run
        is not in the window."""
        if run.id not in self.runs:
            return None
        self.runs[run.id] = run
        at = self.position(run.id)
        self.rows[at] = run
        return self.offset + at

    def set_metrics(self, run_id: int, values: dict[str, tuple[int | None, float]]) -> int | None:
        """New latest values (step, value) of a run's metrics: its row's index, or None when
        the run is not in the window."""
        if run_id not in self.runs:
            return None
        summaries = self.latest.setdefault(run_id, {})
        for key, (step, value) in values.items():
            s = summaries.setdefault(key, {"count": 0, "min": value, "max": value})
            s["last"], s["step"] = value, step
            s["min"], s["max"] = min(s["min"], value), max(s["max"], value)
        return self.offset + self.position(run_id)

    def position(self, run_id: int) -> int:
        """Where a loaded run is in the window (by id: runs are compared field by field)."""
        return next(i for i, run in enumerate(self.rows) if run.id == run_id)

    def run_at(self, index: int) -> Run | None:
        i = index - self.offset
        return self.rows[i] if 0 <= i < len(self.rows) else None

    @property
    def cursor_run(self) -> int | None:
        run = self.run_at(self.cursor)
        return run.id if run else None

    def running(self) -> list[int]:
        """The indexes of the loaded rows whose runs are running (their durations go on)."""
        return [self.offset + i for i, r in enumerate(self.rows) if r.status is RunStatus.RUNNING]

    def targets(self) -> list[int]:
        """What an action acts on: the selected runs, else the one under the cursor."""
        if self.selected:
            return sorted(self.selected)
        return [self.cursor_run] if self.cursor_run is not None else []

    def toggle(self) -> bool:
        """Select or unselect the cursor's run; False when there is none."""
        run_id = self.cursor_run
        if run_id is None:
            return False
        self.selected ^= {run_id}
        return True

    def window_for(self, index: int, share: int) -> int | None:
        """The offset of the window to load so that row `index` is `page_size // share` rows
        into it, unless that window is already asked for."""
        offset = max(0, index - self.page_size // share)
        if offset == self.wanted:
            return None
        self.wanted = offset
        return offset

    def metric_names(self) -> list[str]:
        """The loaded runs' metrics: their sweeps' first, then the others by name."""
        named = [m["name"] for m in self.sweep_metrics.values() if m.get("name")]
        seen = sorted({k for summaries in self.latest.values() for k in summaries})
        return list(dict.fromkeys([*named, *seen]))

    def metric_shown(self) -> str | None:
        """The metric the METRIC column shows first and sorts by: the one chosen, else the
        first sweep's metric among the loaded runs, else the first metric any of them has."""
        if self.metric_choice is not None:
            return self.metric_choice
        return (self.metric_names() or [None])[0]

    def next_metric_column(self) -> str | None:
        """Show the next metric first in the METRIC column; after the last, each sweep's own
        again (None)."""
        names = self.metric_names()
        order = [None, *names[1:]]  # names[0] is what None shows
        at = order.index(self.metric_choice) if self.metric_choice in order else 0
        self.metric_choice = order[(at + 1) % len(order)]
        if self.sort.startswith("metric:") and (shown := self.metric_shown()) is not None:
            self.sort = f"metric:{shown}"
        return self.metric_choice

    def sort_by_column(self, column: str) -> bool:
        """Sort by a column of the table (again: the other way); False for one that does not
        sort (params, reason)."""
        key = COLUMN_SORTS.get(column)
        if column == "metrics" and (metric := self.metric_shown()) is not None:
            key = f"metric:{metric}"
        if key is None:
            return False
        if key == self.sort:
            self.descending = not self.descending
        else:
            self.sort, self.descending = key, True
        return True

    def sorted_column(self) -> str | None:
        """The table column the rows are sorted by, if it is one."""
        if self.sort.startswith("metric:"):
            return "metrics"
        return next((c for c, k in COLUMN_SORTS.items() if k == self.sort), None)

    def next_sort(self) -> None:
        """Sort by the next key: the plain columns, then each metric there is."""
        metrics = [m["name"] for m in self.sweep_metrics.values() if m.get("name")]
        metrics += sorted({k for summaries in self.latest.values() for k in summaries})
        keys = list(dict.fromkeys([*SORTS, *(f"metric:{k}" for k in metrics)]))
        self.sort = keys[(keys.index(self.sort) + 1) % len(keys)] if self.sort in keys else "id"
