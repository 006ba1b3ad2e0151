"""Metric points (key, step, value, line) as one block of output gave them: a large block of
uniform markers as whole Arrow columns made in C, so a million points cost no Python object
each on their way to the store; anything smaller as Python rows, since one Arrow call costs
more than a few hundred values do."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import pyarrow as pa

SCHEMA = pa.schema(
    [("key", pa.string()), ("step", pa.int64()), ("value", pa.float64()), ("line", pa.int64())]
)
# Lines of uniform markers from which their columns go to Arrow whole; fewer become rows.
ARROW_LINES = 512

Rows = tuple[list[str], list[int | None], list[float], list[int]]


class Points:
    """The points parsed from one block of output: `parts`, Arrow tables of SCHEMA, and
    `rows`, Python columns in the same order; together in log order, each line's points in
    the order printed."""

    __slots__ = ("_last_line", "_ordered", "_table", "parts", "rows")

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.rows: Rows = ([], [], [], [])
        self._last_line: int | None = None
        self._ordered = True  # every point added on a line at or after the last one's
        self._table: pa.Table | None = None

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts) + len(self.rows[2])

    def add(self, line: int, step: int | None, fields: dict[str, object]) -> int:
        """Add every numeric field of one parsed line; returns how many were added."""
        keys, steps, values, lines = self.rows
        added = 0
        for key, value in fields.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            keys.append(key)
            steps.append(step)
            values.append(float(value))
            lines.append(line)
            added += 1
        if added:
            self._added(line, line)
        return added

    def add_columns(
        self,
        names: Sequence[str],
        columns: Sequence[list[int | float | None]],
        steps: list[int | None] | None,
        lines: Sequence[int],
    ) -> None:
        """Add lines whose values come as columns: `columns[j]` holds key `names[j]`'s value
        on each of `lines` (ascending; None where a line has none), `steps` each line's step."""
        n, width = len(lines), len(names)
        if n == 0 or width == 0:
            return
        if n < ARROW_LINES:
            self._add_rows(names, columns, steps, lines)
        else:
            self.parts.append(_columns_table(names, columns, steps, lines))
        self._added(lines[0], lines[-1])

    def _add_rows(
        self,
        names: Sequence[str],
        columns: Sequence[list[int | float | None]],
        steps: list[int | None] | None,
        lines: Sequence[int],
    ) -> None:
        keys, step_rows, values, line_rows = self.rows
        n = len(lines)
        each_step = steps if steps is not None else [None] * n
        if len(names) == 1 and None not in columns[0]:
            keys.extend([names[0]] * n)
            step_rows.extend(each_step)
            values.extend(map(float, columns[0]))
            line_rows.extend(lines)
            return
        for r in range(n):
            for name, column in zip(names, columns, strict=True):
                if (value := column[r]) is not None:
                    keys.append(name)
                    step_rows.append(each_step[r])
                    values.append(float(value))
                    line_rows.append(lines[r])

    def _added(self, first_line: int, last_line: int) -> None:
        """Note points just added on lines `first_line` to `last_line`."""
        if self._last_line is not None and first_line < self._last_line:
            self._ordered = False
        self._last_line = last_line
        self._table = None

    def table(self) -> pa.Table:
        """All the points, as one table of SCHEMA in log order."""
        if self._table is None:
            parts = list(self.parts)
            if self.rows[2]:
                parts.append(rows_table(self.rows))
            table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
            if not self._ordered:  # a stable sort: each line's points keep their order
                table = table.take(_compute().sort_indices(table, [("line", "ascending")]))
            self._table = table
        return self._table

    def as_rows(self) -> Rows | None:
        """The points as Python columns in log order; None when some are Arrow columns or
        their rows need sorting (`table` then)."""
        return None if self.parts or not self._ordered else self.rows

    def tail(self, n: int) -> list[tuple[str, int | None, float, int]]:
        """The last `n` points as (key, step, value, line)."""
        if (rows := self.as_rows()) is not None:
            return list(zip(*(column[-n:] for column in rows), strict=True))
        table = self.table()
        last = table.slice(max(0, len(table) - n))
        return list(zip(*(c.to_pylist() for c in last.columns), strict=True))

    def of_key(self, key: str) -> list[tuple[int | None, float]]:
        """Each point of `key` as (step, value)."""
        if (rows := self.as_rows()) is not None:
            keys, steps, values, _ = rows
            return [(steps[i], values[i]) for i, k in enumerate(keys) if k == key]
        table = self.table()
        if not len(table):
            return []
        found = table.filter(_compute().equal(table.column("key"), key))
        return list(zip(found["step"].to_pylist(), found["value"].to_pylist(), strict=True))

    def first_not_finite(
        self, keys: Sequence[str] = ()
    ) -> tuple[str, int | None, float, int] | None:
        """The first point, of `keys` (empty: any key), whose value is NaN or infinite, as
        (key, step, value, line); None when every one is finite (one C pass over Arrow)."""
        if (rows := self.as_rows()) is not None:
            wanted = set(keys)
            for i, value in enumerate(rows[2]):
                if not math.isfinite(value) and (not wanted or rows[0][i] in wanted):
                    return rows[0][i], rows[1][i], value, rows[3][i]
            return None
        table = self.table()
        pc = _compute()
        bad = pc.invert(pc.is_finite(table.column("value")))
        if keys:
            bad = pc.and_(bad, pc.is_in(table.column("key"), pa.array(list(keys), pa.string())))
        found = table.filter(bad)
        if not len(found):
            return None
        key, step, value, line = (c[0].as_py() for c in found.columns)
        return key, step, value, line

    @property
    def keys(self) -> list[str]:
        return self.table()["key"].to_pylist()

    @property
    def steps(self) -> list[int | None]:
        return self.table()["step"].to_pylist()

    @property
    def values(self) -> list[float]:
        return self.table()["value"].to_pylist()

    @property
    def lines(self) -> list[int]:
        return self.table()["line"].to_pylist()


def rows_table(rows: Rows) -> pa.Table:
    """Python columns (key, step, value, line) as a table of SCHEMA."""
    return pa.table(list(rows), SCHEMA)


def _columns_table(
    names: Sequence[str],
    columns: Sequence[list[int | float | None]],
    steps: list[int | None] | None,
    lines: Sequence[int],
) -> pa.Table:
    """Whole columns as a table of SCHEMA, row by row: each line's keys in the order given, a
    missing value dropped."""
    pc = _compute()
    n, width = len(lines), len(names)
    if isinstance(lines, range) and lines.step == 1:
        line = _arange(lines.start, n)
    else:
        line = pa.array(lines, pa.int64())
    step = pa.nulls(n, pa.int64()) if steps is None else pa.array(steps, pa.int64())
    values = [pa.array(c, pa.float64()) for c in columns]
    if width == 1:
        part = pa.table([pa.repeat(pa.scalar(names[0]), n), step, values[0], line], SCHEMA)
    else:
        order = _interleaving(n, width)
        part = pa.table(
            [
                pc.take(pa.concat_arrays([pa.repeat(pa.scalar(k), n) for k in names]), order),
                pc.take(pa.concat_arrays([step] * width), order),
                pc.take(pa.concat_arrays(values), order),
                pc.take(pa.concat_arrays([line] * width), order),
            ],
            SCHEMA,
        )
    if part.column("value").null_count:
        part = part.filter(pc.is_valid(part.column("value")))
    return part


def _interleaving(n: int, width: int) -> pa.Array:
    """The take order that turns `width` columns of `n` rows, concatenated, into rows: output
    position r·width + j takes input j·n + r."""
    pc = _compute()
    i = _arange(0, n * width)
    row = pc.divide(i, width)
    return pc.add(pc.multiply(pc.subtract(i, pc.multiply(row, width)), n), row)


def _arange(start: int, n: int) -> pa.Array:
    """start, start + 1, … (n of them) as int64, made in C."""
    pc = _compute()
    return pc.add(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), start - 1)


def _compute() -> ModuleType:
    """Arrow's compute functions, loaded by the first large block of points rather than with
    the daemon: they hold 8 MB that an idle daemon does not need."""
    import pyarrow.compute

    return pyarrow.compute
