"""How runs and points are stored: the value types the daemon writes with, the runs table's
columns (one list: a new run column is added here and in a migration), and row decoding."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec
import pyarrow as pa

from engine.core.points import Points
from engine.model import TERMINAL_STATUSES, Run, RunStatus


class Column(NamedTuple):
    """One column of the runs table: its Arrow type for bulk writes; `json` when it holds
    JSON text; `run` when it is a field of `Run` (in the struct's order); `transition` when a
    status change may set it."""

    name: str
    type: pa.DataType
    json: bool = False
    run: bool = True
    transition: bool = False


_S, _F, _I32, _I64, _B = pa.string(), pa.float64(), pa.int32(), pa.int64(), pa.bool_()
RUN_COLUMNS = (
    Column("id", _I64),
    Column("name", _S),
    Column("status", _S, transition=True),
    Column("argv", _S, json=True),
    Column("cwd", _S),
    Column("seed", _I64),
    Column("capture", _S, json=True),
    Column("created_at", _F),
    Column("host", _S, transition=True),
    Column("requested_host", _S),
    Column("attempt", _I32, transition=True),
    Column("pid", _I64, transition=True),
    Column("started_at", _F, transition=True),
    Column("ended_at", _F, transition=True),
    Column("exit_code", _I32, transition=True),
    Column("failure_class", _S, transition=True),
    Column("reason", _S, transition=True),
    Column("run_dir", _S, transition=True),
    Column("priority", _I32),
    Column("held", _B),
    Column("gpus", _S, json=True, transition=True),
    Column("resources", _S, json=True),
    Column("model_type", _S),
    Column("tags", _S, json=True),
    Column("requires", _S, json=True),
    Column("sweep", _S),
    Column("max_concurrent", _I32),
    Column("retry", _S, json=True),
    Column("queued_at", _F, transition=True),
    Column("not_before", _F, transition=True),
    Column("params", _S, json=True),
    Column("trial", _S, json=True),
    Column("data", _S, json=True),
    Column("templated", _B),
    Column("fold", _I32),
    Column("parent", _I64),
    Column("split", _S),
    Column("watch", _S, json=True),
    Column("flag", _S),
    # Kept for the daemon, not part of a Run.
    Column("env", _S, json=True, run=False),
    Column("manifest", _S, json=True, run=False),
    Column("pid_start_time", _F, run=False, transition=True),
)
_BY_NAME = {c.name: c for c in RUN_COLUMNS}
RUN_FIELDS = tuple(c.name for c in RUN_COLUMNS if c.run)  # a Run's fields, in its order
RUN_SELECT = ", ".join(RUN_FIELDS)
JSON_FIELDS = frozenset(c.name for c in RUN_COLUMNS if c.json and c.run)
RUN_FIELD_TYPES = {c.name: pa.field(c.name, c.type) for c in RUN_COLUMNS if c.transition}
TRANSITION_FIELDS = frozenset(RUN_FIELD_TYPES) - {"status"}


# The statuses a run ends in, for SQL (our enum's values, never a user's text).
TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))


def new_runs_schema(names: Iterable[str]) -> pa.Schema:
    """The Arrow schema of a bulk insert of these runs columns."""
    return pa.schema([pa.field(n, _BY_NAME[n].type) for n in names])


class Transition(msgspec.Struct, frozen=True):
    """One status change of one run, with its reason, the columns it sets, and when it happened."""

    run_id: int
    to: RunStatus
    reason: str
    fields: dict[str, Any] = {}
    time: float = msgspec.field(default_factory=time.time)


class MetricBatch(msgspec.Struct):
    """Metric points of one run attempt, read at `wall_time`, with the log position they were
    read up to."""

    run_id: int
    attempt: int
    points: Points
    wall_time: float
    byte_offset: int
    line_count: int
    bad_markers: int
    first: bool = False  # read from the log's start: the run's summary starts over with it

    def __len__(self) -> int:
        return len(self.points)


class LogPosition(msgspec.Struct, frozen=True):
    """How far a run attempt's output.log has been read and ingested."""

    byte_offset: int = 0
    lines: int = 0
    bad_markers: int = 0


JSON = msgspec.json.Decoder()  # several times faster than json.loads for a page of runs


def summaries_query(run_ids: Sequence[int]) -> tuple[str, list[Any]]:
    sql = (
        "SELECT run_id, key, count, last, last_step, min, max FROM run_metrics"
        " WHERE run_id = ANY(?) ORDER BY run_id, key"  # a list: faster than IN (?, ?, …)
    )
    return sql, [list(run_ids)]


def summary_rows(
    run_ids: Sequence[int], rows: list[tuple[Any, ...]]
) -> dict[int, dict[str, dict[str, Any]]]:
    """Per run, per metric key, the summary rows of `summaries_query` as dicts."""
    out: dict[int, dict[str, dict[str, Any]]] = {r: {} for r in run_ids}
    for run_id, key, count, last, step, low, high in rows:
        out[run_id][key] = {"count": count, "last": last, "step": step, "min": low, "max": high}
    return out


def run_from_row(row: tuple[Any, ...]) -> Run:
    values = {
        name: (JSON.decode(value) if name in JSON_FIELDS else value)
        for name, value in zip(RUN_FIELDS, row, strict=True)
        if value is not None
    }
    for default in ("retry", "watch"):
        if values.get(default) == {}:
            del values[default]
    return msgspec.convert(values, Run)
