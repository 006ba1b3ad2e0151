"""The runs page: a filtered, sorted window of runs with their metric summaries, planned to read as little as a screen needs."""

from __future__ import annotations

from typing import Any

from engine.model import Run, RunQuery
from engine.store.base import StoreBase
from engine.store.rows import RUN_SELECT, run_from_row, summaries_query, summary_rows

ENDED_ROWS_KEPT = 5000  # ended runs whose page rows the store keeps: about 40 pages


_OPS = {">": ">", "<": "<", ">=": ">=", "<=": "<=", "=": "="}  # never the user's text


_ORDER = {
    "id": "r.id",
    "name": "r.name",
    "status": "r.status",
    "host": "r.host",
    "created": "r.created_at",
    "started": "r.started_at",
    "duration": "coalesce(r.ended_at, epoch(now())) - r.started_at",
    "sweep": "r.sweep",
    "family": "coalesce(r.parent, r.id)",  # a trained run, then its evaluation runs
}


# plain columns, unlike computed durations and families
_STORED_ORDER = frozenset(_ORDER) - {"duration", "family"}


def _metric_rows(key: str, bounds: list[tuple[str, float]], what: str) -> tuple[str, list[Any]]:
    """A select of `what` over the runs' rows in run_metrics for `key` that have a last value
    within `bounds` (comparisons, each an operator of _OPS and a value)."""
    where = "key = ? AND last IS NOT NULL" + "".join(f" AND last {op} ?" for op, _ in bounds)
    return f"SELECT {what} FROM run_metrics WHERE {where}", [key, *(v for _, v in bounds)]


class RunPages(StoreBase):
    """Windows of runs for the TUI and `engine runs`."""

    def runs_page(
        self, query: RunQuery
    ) -> tuple[int, list[Run], dict[int, dict[str, dict[str, Any]]]]:
        """One window of the runs table, filtered and sorted by the store: how many runs match,
        those from `query.offset` on (at most `query.limit`), and their metric summaries."""
        where, args = ["true"], []
        for field, value in query.equals:
            where.append(f"r.{field} = ?")
            args.append(value)
        if query.statuses:
            where.append(f"r.status IN ({', '.join('?' for _ in query.statuses)})")
            args += list(query.statuses)
        for text in query.text:  # as typed, never a pattern: `_` and `%` are plain characters
            where.append("(contains(r.words, lower(?)) OR contains(lower(r.reason), lower(?)))")
            args += [text, text]
        if query.where is not None:  # compiled by engine.core.filters, values as parameters
            where.append(query.where)
            args += list(query.where_args)
        joins, join_args = [], []
        for i, (key, op, value) in enumerate(query.metric_filters):
            joins.append(f"JOIN run_metrics f{i} ON f{i}.run_id = r.id AND f{i}.key = ?")
            join_args.append(key)
            where.append(f"f{i}.last {_OPS[op]} ?")
            args.append(value)
        # what matches; the count needs no more than this
        base = f"FROM runs r {' '.join(joins)} WHERE {' AND '.join(where)}"
        every = join_args + args
        order = _ORDER.get(query.sort, "r.id")
        sort_join, sort_args = "", []
        metric = query.sort.removeprefix("metric:") if query.sort.startswith("metric:") else None
        if metric is not None:
            filtered = [i for i, (k, _, _) in enumerate(query.metric_filters) if k == metric]
            if filtered:  # every match has it: order by the filter's own join
                order = f"f{filtered[0]}.last"
            else:
                sort_join = " LEFT JOIN run_metrics s ON s.run_id = r.id AND s.key = ?"
                sort_args = [metric]
                order = "s.last"
        direction = "DESC" if query.descending else "ASC"
        sorted_base = f"FROM runs r {' '.join(joins)}{sort_join} WHERE {' AND '.join(where)}"
        then = "r.parent IS NOT NULL, r.id" if query.sort == "family" else f"r.id {direction}"
        window = f" ORDER BY {order} {direction} NULLS LAST, {then} LIMIT ? OFFSET ?"
        paged = [*join_args, *sort_args, *args, query.limit, query.offset]
        # the metric sorted by, where the runs are filtered on nothing else
        alone = (
            metric if not (query.statuses or query.equals or query.text or query.where) else None
        )
        if any(k != metric for k, _, _ in query.metric_filters):
            alone = None
        bounds = [(_OPS[op], value) for _, op, value in query.metric_filters]
        # The window's ids first (a narrow sort), then only those rows in full. Text search is
        # a scan, so it counts in the same pass; otherwise a count of its own is cheaper than
        # a window function over every match, and it runs alongside the window.
        total, counting = None, None
        if alone is not None and bounds:
            counting = self._alongside(*_metric_rows(alone, bounds, "count(*)"))
        elif not query.text and query.where is None:
            counting = self._alongside(f"SELECT count(*) {base}", every)
        with self._full_sort(query.descending and query.sort in _STORED_ORDER):
            ids = None
            if alone is not None:
                ids = self._by_metric(alone, direction, query.offset, query.limit, bounds)
            if ids is None and (query.text or query.where is not None):
                found = self.con.execute(
                    f"SELECT r.id, count(*) OVER () {sorted_base}{window}", paged
                )
                rows = found.fetchall()
                ids = [run_id for run_id, _ in rows]
                total = rows[0][1] if rows else None
            elif ids is None:
                found = self.con.execute(f"SELECT r.id {sorted_base}{window}", paged)
                ids = [run_id for (run_id,) in found.fetchall()]
        if counting is not None:
            total = counting.result()[0][0]
        elif total is None:  # a text search whose window is empty: none match, or it is past them
            total = 0 if query.offset == 0 else self._one(f"SELECT count(*) {base}", every)[0]
        runs, summaries = self._page_rows(ids)
        return total, runs, summaries

    def _page_rows(self, ids: list[int]) -> tuple[list[Run], dict[int, dict[str, dict[str, Any]]]]:
        """The runs of a page's ids, in order, and their metric summaries: ended runs read
        before come from memory, the rest from the store, summaries alongside the rows."""
        found: dict[int, tuple[Run, list[tuple[Any, ...]]]] = {}
        for run_id in ids:
            if (kept := self._ended.pop(run_id, None)) is not None:
                found[run_id] = self._ended[run_id] = kept  # (now the most recently used)
        missing = [run_id for run_id in ids if run_id not in found]
        if missing:
            summaries = self._alongside(*summaries_query(missing))
            rows = self.con.execute(
                f"SELECT {RUN_SELECT} FROM runs WHERE id = ANY(?)", [missing]
            ).fetchall()
            by_run: dict[int, list[tuple[Any, ...]]] = {run_id: [] for run_id in missing}
            for row in summaries.result():
                by_run[row[0]].append(row)
            for row in rows:
                run = run_from_row(row)
                found[run.id] = (run, by_run[run.id])
                if run.status.terminal:
                    self._ended[run.id] = found[run.id]
            while len(self._ended) > ENDED_ROWS_KEPT:
                del self._ended[next(iter(self._ended))]  # the least recently used
        page = [found[run_id] for run_id in ids]
        return [run for run, _ in page], summary_rows(
            ids, [row for _, rows in page for row in rows]
        )

    def _by_metric(
        self, key: str, direction: str, offset: int, limit: int, bounds: list[tuple[str, float]]
    ) -> list[int] | None:
        """The ids of a window of runs sorted by a metric and filtered only on it (`bounds`:
        comparisons of its last value), read from run_metrics alone: about three times faster
        than joining every run to it. None when the window reaches the runs without the
        metric, which sort last and need the join."""
        sql, args = _metric_rows(key, bounds, "run_id")
        found = self.con.execute(
            f"{sql} ORDER BY last {direction}, run_id {direction} LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        ids = [run_id for (run_id,) in found]
        if bounds or len(ids) == limit:  # with bounds, the runs without the metric never match
            return ids
        return None
