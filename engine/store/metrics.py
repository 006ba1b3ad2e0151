"""Metric points: ingested with the log offset in one transaction, summarised per run and key, read back thinned for charts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from engine.store.base import StoreBase
from engine.store.rows import LogPosition, MetricBatch, summaries_query, summary_rows

_METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.int64()),
        ("attempt", pa.int32()),
        ("key", pa.string()),
        ("step", pa.int64()),
        ("value", pa.float64()),
        ("wall_time", pa.float64()),
        ("line", pa.int64()),
    ]
)


def _metrics_rows(batches: Sequence[MetricBatch]) -> pa.Table:
    """The batches' points as rows of the metrics table, in order and in one table of one
    chunk: Python rows of consecutive batches converted together, Arrow columns as they are,
    and run, attempt and read time repeated. (DuckDB scans a table of many small chunks about
    ten times slower than the same rows in one.)"""
    tables: list[pa.Table] = []
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    run_ids, attempts, keys, steps, values, wall_times, lines = columns
    for batch in batches:
        rows = batch.points.as_rows()
        if rows is None:
            if values:
                tables.append(pa.table(list(columns), schema=_METRICS_SCHEMA))
                for column in columns:
                    column.clear()
            tables.append(_table_of(batch))
            continue
        n = len(rows[2])
        run_ids += [batch.run_id] * n
        attempts += [batch.attempt] * n
        keys += rows[0]
        steps += rows[1]
        values += rows[2]
        wall_times += [batch.wall_time] * n
        lines += rows[3]
    if values or not tables:
        tables.append(pa.table(list(columns), schema=_METRICS_SCHEMA))
    return pa.concat_tables(tables).combine_chunks()


# A point's place in its run's output, for the last of a key: later attempts, later lines.
_LOG_ORDER = "attempt * 10000000000 + line"


def _table_of(batch: MetricBatch) -> pa.Table:
    """One batch's points as rows of the metrics table, their Arrow columns as they are."""
    points = batch.points.table()
    n = len(points)
    return pa.table(
        [
            pa.repeat(pa.scalar(batch.run_id, pa.int64()), n),
            pa.repeat(pa.scalar(batch.attempt, pa.int32()), n),
            points.column("key"),
            points.column("step"),
            points.column("value"),
            pa.repeat(pa.scalar(batch.wall_time, pa.float64()), n),
            points.column("line"),
        ],
        schema=_METRICS_SCHEMA,
    )


class MetricRecords(StoreBase):
    """Points, summaries and log positions."""

    def log_position(self, run_id: int, attempt: int) -> LogPosition:
        row = self._one(
            "SELECT byte_offset, lines, bad_markers FROM log_offsets WHERE run_id = ? AND attempt = ?",
            [run_id, attempt],
        )
        return LogPosition(*row) if row else LogPosition()

    def ingest(self, *batches: MetricBatch) -> None:
        """Append batches of points (of one run each) and move each run's log offset past them,
        atomically in one transaction, so a re-read from the stored offsets after any crash
        neither duplicates nor drops a point. Many runs' batches at once cost about what one
        does: the points go in as one table."""
        self._forget(b.run_id for b in batches)
        with self._transaction():
            restarted = [b.run_id for b in batches if b.first and b.attempt > 1]
            if restarted:  # a run's summary is its final attempt's
                marks = ", ".join("?" * len(restarted))
                self.con.execute(f"DELETE FROM run_metrics WHERE run_id IN ({marks})", restarted)
            filled = [b for b in batches if len(b)]
            if filled:
                table = _metrics_rows(filled)
                self._insert_arrow("metrics", table)
                self._summarise(table)
            ends = {(b.run_id, b.attempt): b for b in batches}.values()  # each one's last
            offsets = pa.table(
                [
                    pa.array([b.run_id for b in ends], pa.int64()),
                    pa.array([b.attempt for b in ends], pa.int32()),
                    pa.array([b.byte_offset for b in ends], pa.int64()),
                    pa.array([b.line_count for b in ends], pa.int64()),
                    pa.array([b.bad_markers for b in ends], pa.int64()),
                ],
                names=["run_id", "attempt", "byte_offset", "lines", "bad_markers"],
            )
            self._insert_arrow("log_offsets", offsets, replace=True)

    def _summarise(self, points: pa.Table) -> None:
        """Fold a table of points into each run's per-key summary (count, last, min, max), in
        DuckDB's threads: the last point is the one of the latest attempt and line."""
        self.con.register("_points", points)
        try:
            self.con.execute(
                "INSERT INTO run_metrics SELECT run_id, key, count(*),"
                f" arg_max(value, {_LOG_ORDER}), arg_max(step, {_LOG_ORDER}), min(value),"
                " max(value) FROM _points GROUP BY run_id, key ON CONFLICT (run_id, key) DO"
                " UPDATE SET count = run_metrics.count + excluded.count, last = excluded.last,"
                " last_step = excluded.last_step, min = least(run_metrics.min, excluded.min),"
                " max = greatest(run_metrics.max, excluded.max)"
            )
        finally:
            self.con.unregister("_points")

    def import_points(self, points: pa.Table) -> None:
        """Bulk-load metric points of many runs (columns as the `metrics` table: run_id,
        attempt, key, step, value, wall_time, line) and rebuild those runs' summaries, in one
        transaction: for imports and for filling large test stores."""
        self._ended.clear()
        with self._transaction():
            self._insert_arrow("metrics", points.cast(_METRICS_SCHEMA))
            self.con.register("_points", points.select(["run_id"]))
            try:
                self.con.execute(
                    "DELETE FROM run_metrics WHERE run_id IN (SELECT DISTINCT run_id FROM _points)"
                )
                self.con.execute(
                    "INSERT INTO run_metrics SELECT m.run_id, m.key, count(*),"
                    " arg_max(m.value, m.line), arg_max(m.step, m.line), min(m.value),"
                    " max(m.value) FROM metrics m JOIN runs r ON r.id = m.run_id"
                    " AND m.attempt = r.attempt"  # the final attempt's, as ingest keeps them
                    " WHERE m.run_id IN (SELECT DISTINCT run_id FROM _points)"
                    " GROUP BY m.run_id, m.key"
                )
            finally:
                self.con.unregister("_points")

    def metric_summaries(self, run_ids: Sequence[int]) -> dict[int, dict[str, dict[str, Any]]]:
        """Per run, per metric key: count, last, last_step, min and max."""
        if not run_ids:
            return {}
        return summary_rows(run_ids, self.con.execute(*summaries_query(run_ids)).fetchall())

    def metrics(
        self,
        run_id: int,
        key: str | None = None,
        max_points: int | None = None,
        attempt: int | None = None,
    ) -> list[dict[str, Any]]:
        """One attempt's points in log order: its final attempt's unless `attempt` is given.
        With `max_points`, a key with more points keeps about that many for a chart: the first
        and last, and the lowest and highest of each of max_points/2 runs of neighbours, so
        spikes and the curve's shape survive."""
        where = "run_id = ?" + (" AND key = ?" if key is not None else "")
        args: list[Any] = [run_id] + ([key] if key is not None else [])
        if attempt is None:
            where += " AND attempt = (SELECT attempt FROM runs WHERE id = ?)"
            args.append(run_id)
        else:
            where += " AND attempt = ?"
            args.append(attempt)
        names = ("attempt", "key", "step", "value", "wall_time", "line")
        if max_points is None:
            sql = (
                f"SELECT {', '.join(names)} FROM metrics WHERE {where}"
                " ORDER BY attempt, line, rowid"  # rows go in as printed: rowid is log order
            )
        else:
            sql = f"""
                WITH numbered AS (
                    SELECT *, rowid AS r,
                           row_number() OVER (PARTITION BY key ORDER BY attempt, line) - 1 AS i,
                           count(*) OVER (PARTITION BY key) AS n
                    FROM metrics WHERE {where}
                ), bucketed AS (
                    SELECT *, CASE WHEN n <= ? THEN i ELSE i * (? // 2) // n END AS bucket
                    FROM numbered
                ), ranked AS (
                    SELECT *,
                        row_number() OVER (PARTITION BY key, bucket ORDER BY value, i) AS low,
                        row_number() OVER (PARTITION BY key, bucket ORDER BY value DESC, i) AS high
                    FROM bucketed
                )
                SELECT {", ".join(names)} FROM ranked
                WHERE low = 1 OR high = 1 OR i = 0 OR i = n - 1
                ORDER BY attempt, line, r"""
            args += [max_points, max(2, max_points)]
        return [dict(zip(names, r, strict=True)) for r in self.con.execute(sql, args).fetchall()]

    def metric_count(self, run_id: int) -> int:
        return self._one("SELECT count(*) FROM metrics WHERE run_id = ?", [run_id])[0]
