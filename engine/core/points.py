"""Metric points in Arrow columns (key, step, value, line): a block of uniform markers becomes
whole columns in C, so a million points cost no Python object each on their way to the store."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA = pa.schema(
    [("key", pa.string()), ("step", pa.int64()), ("value", pa.float64()), ("line", pa.int64())]
)


class Points:
    """The points parsed from one block of output: whole columns from uniform markers, and rows
    added one line at a time from the rest; each line's points in the order printed."""

    __slots__ = ("_parts", "_rows", "_table")

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._rows: tuple[list[str], list[int | None], list[float], list[int]] = ([], [], [], [])
        self._table: pa.Table | None = None

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts) + len(self._rows[2])

    def add(self, line: int, step: int | None, fields: dict[str, object]) -> int:
        """Add every numeric field of one parsed line; returns how many were added."""
        keys, steps, values, lines = self._rows
        added = 0
        for key, value in fields.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            keys.append(key)
            steps.append(step)
            values.append(float(value))
            lines.append(line)
            added += 1
        self._table = None
        return added

    def add_columns(
        self,
        names: Sequence[str],
        columns: Sequence[list[int | float | None]],
        steps: list[int | None] | None,
        lines: Sequence[int],
    ) -> None:
        """Add lines whose values come as columns: `columns[j]` holds key `names[j]`'s value
        on each of `lines` (None where a line has none), `steps` each line's step."""
        n, width = len(lines), len(names)
        if n == 0 or width == 0:
            return
        if isinstance(lines, range) and lines.step == 1:
            line = pc.add(
                pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), lines.start - 1
            )
        else:
            line = pa.array(lines, pa.int64())
        step = pa.nulls(n, pa.int64()) if steps is None else pa.array(steps, pa.int64())
        values = [pa.array(c, pa.float64()) for c in columns]
        if width == 1:
            part = pa.table([pa.repeat(pa.scalar(names[0]), n), step, values[0], line], SCHEMA)
        else:  # row by row, each line's keys in the order printed
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
        self._parts.append(part)
        self._table = None

    def table(self) -> pa.Table:
        """All the points, as one table of SCHEMA."""
        if self._table is None:
            parts = list(self._parts)
            if self._rows[2]:
                parts.append(pa.table(list(self._rows), SCHEMA))
            self._table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
        return self._table

    def tail(self, n: int) -> list[tuple[str, int | None, float, int]]:
        """The last `n` points as (key, step, value, line)."""
        table = self.table()
        last = table.slice(max(0, len(table) - n))
        return list(zip(*(c.to_pylist() for c in last.columns), strict=True))

    def of_key(self, key: str) -> list[tuple[int | None, float]]:
        """Each point of `key` as (step, value)."""
        table = self.table()
        if not len(table):
            return []
        found = table.filter(pc.equal(table.column("key"), key))
        return list(zip(found["step"].to_pylist(), found["value"].to_pylist(), strict=True))

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


def _interleaving(n: int, width: int) -> pa.Array:
    """The take order that turns `width` columns of `n` rows, concatenated, into rows: output
    position r·width + j takes input j·n + r."""
    i = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n * width)), 1)
    row = pc.divide(i, width)
    return pc.add(pc.multiply(pc.subtract(i, pc.multiply(row, width)), n), row)
