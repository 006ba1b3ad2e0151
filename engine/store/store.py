"""The DuckDB experiment store: schema migrations, transactional writes and typed queries.

Only the daemon opens it, from one thread (see `engine.store.StoreThread`) and a helper thread
that runs a read alongside; DuckDB allows one read-write process per file.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from engine.model import (
    DataLink,
    FailureClass,
    HostSample,
    JobSpec,
    Run,
    RunQuery,
    RunStatus,
    Sweep,
    can_transition,
    queued_run,
)
from engine.store.schema import MIGRATIONS, RUN_WORDS, SCHEMA_VERSION


class StoreError(Exception):
    """The store cannot be opened or used as asked."""


class AmbiguousName(StoreError):
    """A name that several runs have; the message lists them."""


class IllegalTransition(StoreError):
    """A status change the run life cycle does not allow."""


# The runs columns that make a Run, in its field order; JSON ones are decoded into it.
_RUN_FIELDS = (
    "id",
    "name",
    "status",
    "argv",
    "cwd",
    "seed",
    "capture",
    "created_at",
    "host",
    "requested_host",
    "attempt",
    "pid",
    "started_at",
    "ended_at",
    "exit_code",
    "failure_class",
    "reason",
    "run_dir",
    "priority",
    "held",
    "gpus",
    "resources",
    "model_type",
    "tags",
    "requires",
    "sweep",
    "max_concurrent",
    "retry",
    "queued_at",
    "not_before",
    "params",
    "trial",
    "data",
    "templated",
)
SQL_VIEWS = ("runs_v", "metrics_v", "params_v")  # all that `engine sql` may read
ENDED_ROWS_KEPT = 5000  # ended runs whose page rows the store keeps: about 40 pages
_JSON_FIELDS = frozenset(
    {"argv", "capture", "gpus", "resources", "tags", "requires", "retry", "params", "trial", "data"}
)
_RUN_COLUMNS = ", ".join(_RUN_FIELDS)
_EVENTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.int64()),
        ("time", pa.float64()),
        ("from_status", pa.string()),
        ("to_status", pa.string()),
        ("reason", pa.string()),
    ]
)
_ATTEMPT_START_SCHEMA = pa.schema(
    [
        ("run_id", pa.int64()),
        ("attempt", pa.int32()),
        ("host", pa.string()),
        ("run_dir", pa.string()),
        ("started_at", pa.float64()),
        ("status", pa.string()),
        ("gpus", pa.string()),
    ]
)
_ATTEMPT_END_SCHEMA = pa.schema(
    [
        ("run_id", pa.int64()),
        ("attempt", pa.int32()),
        ("status", pa.string()),
        ("ended_at", pa.float64()),
        ("exit_code", pa.int32()),
        ("failure_class", pa.string()),
        ("reason", pa.string()),
        ("abandoned", pa.bool_()),
    ]
)
_NEW_RUNS_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("status", pa.string()),
        ("argv", pa.string()),
        ("cwd", pa.string()),
        ("seed", pa.int64()),
        ("capture", pa.string()),
        ("env", pa.string()),
        ("resources", pa.string()),
        ("requested_host", pa.string()),
        ("created_at", pa.float64()),
        ("manifest", pa.string()),
        ("priority", pa.int32()),
        ("model_type", pa.string()),
        ("tags", pa.string()),
        ("requires", pa.string()),
        ("sweep", pa.string()),
        ("max_concurrent", pa.int32()),
        ("retry", pa.string()),
        ("queued_at", pa.float64()),
        ("params", pa.string()),
        ("trial", pa.string()),
        ("data", pa.string()),
        ("templated", pa.bool_()),
    ]
)
# The run columns a transition may set, with their types for bulk updates.
_RUN_FIELD_TYPES = {
    f.name: f
    for f in [
        pa.field("status", pa.string()),
        pa.field("host", pa.string()),
        pa.field("attempt", pa.int32()),
        pa.field("pid", pa.int64()),
        pa.field("pid_start_time", pa.float64()),
        pa.field("run_dir", pa.string()),
        pa.field("started_at", pa.float64()),
        pa.field("ended_at", pa.float64()),
        pa.field("exit_code", pa.int32()),
        pa.field("failure_class", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("gpus", pa.string()),  # JSON
        pa.field("queued_at", pa.float64()),
        pa.field("not_before", pa.float64()),
    ]
}
_TRANSITION_FIELDS = frozenset(_RUN_FIELD_TYPES) - {"status"}
_ATTEMPT_STATUSES = frozenset({RunStatus.STARTING, RunStatus.RUNNING, RunStatus.UNREACHABLE})
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


class Transition(msgspec.Struct, frozen=True):
    """One status change of one run, with its reason, the columns it sets, and when it happened."""

    run_id: int
    to: RunStatus
    reason: str
    fields: dict[str, Any] = {}
    time: float = msgspec.field(default_factory=time.time)


class MetricBatch(msgspec.Struct):
    """Metric points of one run attempt in columns, with the log position they were read up to."""

    run_id: int
    attempt: int
    keys: list[str]
    steps: list[int | None]
    values: list[float]
    wall_times: list[float]
    lines: list[int]
    byte_offset: int
    line_count: int
    bad_markers: int
    first: bool = False  # read from the log's start: the run's summary starts over with it

    def __len__(self) -> int:
        return len(self.values)


class LogPosition(msgspec.Struct, frozen=True):
    """How far a run attempt's output.log has been read and ingested."""

    byte_offset: int = 0
    lines: int = 0
    bad_markers: int = 0


class Store:
    """The experiment store on one DuckDB file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._owner = threading.get_ident()
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        self._migrate()
        self._sweep_metric: dict[str, dict[str, str] | None] = {}
        # A second connection and its own thread, for a read that can run while this thread
        # does another: a page's independent scans then overlap on two cores.
        self._aside = self.con.cursor()
        self._aside_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-aside")
        # Ended runs' rows and metric summary rows as pages read them. Neither changes once a
        # run has ended but through a write here that forgets it (a retry, say), so a page
        # shown again, or a filter's window overlapping the last one, reads only what is new.
        self._ended: dict[int, tuple[Run, list[tuple[Any, ...]]]] = {}

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection, to the thread that opened the store only: DuckDB refuses a call on a
        connection that another thread is using, so a second thread would fail at random."""
        if threading.get_ident() != self._owner:
            raise StoreError(
                f"the store {self.path} was used from a thread that did not open it; "
                "call it through StoreThread.call"
            )
        return self._con

    def close(self) -> None:
        self._aside_thread.shutdown(wait=True)
        self._aside.close()
        self.con.close()

    # --- schema ---------------------------------------------------------------------------

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

    # --- hosts ----------------------------------------------------------------------------

    def upsert_hosts(
        self, hosts: Sequence[tuple[str, str, dict[str, Any], str, str | None]]
    ) -> None:
        """Record hosts as (name, kind, spec, state, reason), in one statement however many."""
        if not hosts:
            return
        names, kinds, specs, states, reasons = zip(*hosts, strict=True)
        table = pa.table(
            {
                "name": pa.array(names, pa.string()),
                "kind": pa.array(kinds, pa.string()),
                "spec": pa.array([json.dumps(s) for s in specs], pa.string()),
                "state": pa.array(states, pa.string()),
                "reason": pa.array(reasons, pa.string()),
                "updated_at": pa.array([time.time()] * len(hosts), pa.float64()),
            }
        )
        self.con.register("_hosts", table)
        try:
            self.con.execute("INSERT OR REPLACE INTO hosts SELECT * FROM _hosts")
        finally:
            self.con.unregister("_hosts")

    def append_host_samples(self, samples: Sequence[HostSample]) -> None:
        if not samples:
            return
        table = pa.table(
            {
                "host": [s.host for s in samples],
                "time": [s.time for s in samples],
                "cpu_percent": [s.cpu_percent for s in samples],
                "cpu_per_core": [list(s.cpu_per_core) for s in samples],
                "mem_used_mb": [s.mem_used_mb for s in samples],
                "mem_total_mb": [s.mem_total_mb for s in samples],
                "gpus": [msgspec.json.encode(s.gpus).decode() for s in samples],
            }
        )
        self._insert_arrow("host_samples", table)

    def utilisation(self, since_s: float, buckets: int) -> list[dict[str, Any]]:
        """Each host's CPU and memory, and each GPU's utilisation and memory, over the last
        `since_s` seconds: mean and peak, and the means of `buckets` equal slices of time."""
        start = time.time() - since_s
        width = since_s / buckets
        rows = self.con.execute(
            "SELECT host, time, cpu_percent, mem_used_mb, mem_total_mb, gpus FROM host_samples"
            " WHERE time >= ? ORDER BY host, time",
            [start],
        ).fetchall()
        series: dict[tuple[str, str, int | None], dict[str, Any]] = {}

        def add(key: tuple[str, str, int | None], t: float, value: float, extra: dict) -> None:
            entry = series.setdefault(
                key,
                {
                    "host": key[0],
                    "what": key[1],
                    "gpu": key[2],
                    "values": [],
                    "slices": [[] for _ in range(buckets)],
                    **extra,
                },
            )
            entry["values"].append(value)
            entry["slices"][min(buckets - 1, int((t - start) / width))].append(value)

        for host, t, cpu, mem_used, mem_total, gpus in rows:
            add((host, "cpu %", None), t, cpu, {})
            add((host, "memory GB", None), t, mem_used / 1024, {"of": mem_total / 1024})
            for g in json.loads(gpus):
                add((host, "gpu util %", g["index"]), t, g["util_percent"], {"name": g["name"]})
                add(
                    (host, "gpu memory GB", g["index"]),
                    t,
                    g["mem_used_mb"] / 1024,
                    {"name": g["name"], "of": g["mem_total_mb"] / 1024},
                )
        out = []
        for entry in series.values():
            values = entry.pop("values")
            entry["mean"] = sum(values) / len(values)
            entry["peak"] = max(values)
            entry["samples"] = len(values)
            entry["buckets"] = [sum(v) / len(v) if v else None for v in entry.pop("slices")]
            out.append(entry)
        return out

    def host_sample_count(self, host: str) -> int:
        return self._one("SELECT count(*) FROM host_samples WHERE host = ?", [host])[0]

    # --- runs -----------------------------------------------------------------------------

    def add_runs(self, jobs: Sequence[tuple[JobSpec, str, int, dict[str, Any]]]) -> list[Run]:
        """Queue jobs (each with its resolved name, seed and manifest) as new runs: one bulk
        insert of the runs and one of their events, in one transaction."""
        now = time.time()
        encode = msgspec.json.encode
        with self._transaction():
            first = self._one("SELECT coalesce(max(id), 0) + 1 FROM runs")[0]
            runs = [
                queued_run(job, first + i, name, seed, now)
                for i, (job, name, seed, _) in enumerate(jobs)
            ]
            envs: dict[int, str] = {}  # one submission's jobs usually share one environment
            columns = {
                "id": [r.id for r in runs],
                "name": [r.name for r in runs],
                "status": [RunStatus.QUEUED.value] * len(runs),
                "argv": [encode(j.argv).decode() for j, *_ in jobs],
                "cwd": [j.cwd for j, *_ in jobs],
                "seed": [r.seed for r in runs],
                "capture": [encode(j.capture).decode() for j, *_ in jobs],
                "env": [envs.setdefault(id(j.env), encode(j.env or {}).decode()) for j, *_ in jobs],
                "resources": [encode(j.resources).decode() for j, *_ in jobs],
                "requested_host": [j.host for j, *_ in jobs],
                "created_at": [now] * len(runs),
                "manifest": [encode(m).decode() for *_, m in jobs],
                "priority": [j.priority for j, *_ in jobs],
                "model_type": [j.model_type for j, *_ in jobs],
                "tags": [encode(j.tags).decode() for j, *_ in jobs],
                "requires": [encode(j.requires).decode() for j, *_ in jobs],
                "sweep": [j.sweep for j, *_ in jobs],
                "max_concurrent": [j.max_concurrent for j, *_ in jobs],
                "retry": [encode(j.retry).decode() for j, *_ in jobs],
                "queued_at": [now] * len(runs),
                "params": [encode(j.params).decode() for j, *_ in jobs],
                "trial": [encode(j.trial).decode() if j.trial else None for j, *_ in jobs],
                "data": [encode(j.data).decode() for j, *_ in jobs],
                "templated": [j.templated for j, *_ in jobs],
            }
            self._insert_arrow(
                f"runs ({', '.join(columns)}, words)",
                pa.table(columns, schema=_NEW_RUNS_SCHEMA),
                f"*, {RUN_WORDS}",
            )
            events = [(r.id, now, None, RunStatus.QUEUED.value, "submitted") for r in runs]
            self._insert_arrow(
                "events", pa.table(list(zip(*events, strict=True)), schema=_EVENTS_SCHEMA)
            )
        return runs

    def add_sweep(
        self,
        name: str,
        file: str,
        method: str,
        trials: int,
        snapshot: str | None,
        metric: dict[str, Any] | None,
        experiment: str | None = None,
        sampler_seed: int | None = None,
    ) -> str:
        """Record a new sweep; its id is the experiment's name and a number: xgb-digits-3.
        `experiment` (JSON) is the experiment as submitted, kept for adaptive sweeps."""
        with self._transaction():
            sweep_id = self.next_sweep_id(name)
            self.con.execute(
                "INSERT INTO sweeps (id, name, file, method, trials, snapshot, metric,"
                " created_at, experiment, sampler_seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    sweep_id,
                    name,
                    file,
                    method,
                    trials,
                    snapshot,
                    json.dumps(metric),
                    time.time(),
                    experiment,
                    sampler_seed,
                ],
            )
        return sweep_id

    def next_sweep_id(self, name: str) -> str:
        """The id the next sweep of an experiment gets: its name and a number, `lm-3`."""
        n = self._one("SELECT count(*) FROM sweeps WHERE name = ?", [name])[0] + 1
        while self._one("SELECT 1 FROM sweeps WHERE id = ?", [f"{name}-{n}"]):
            n += 1
        return f"{name}-{n}"

    def cancel_sweep(self, sweep_id: str) -> None:
        """Mark a sweep cancelled: an adaptive one samples no more trials."""
        self.con.execute("UPDATE sweeps SET cancelled = true WHERE id = ?", [sweep_id])

    def adaptive_sweeps(self) -> list[tuple[str, str]]:
        """(id, experiment JSON) of each adaptive sweep still going: with unfinished runs, or
        a TPE sweep with trials still to sample."""
        return self.con.execute(
            "SELECT s.id, s.experiment FROM sweeps s WHERE s.experiment IS NOT NULL"
            " AND NOT s.cancelled AND (EXISTS (SELECT 1 FROM runs r WHERE r.sweep = s.id AND"
            " r.status NOT IN ('succeeded', 'failed', 'cancelled', 'pruned', 'lost'))"
            " OR (s.method = 'tpe' AND (SELECT count(*) FROM runs r WHERE r.sweep = s.id)"
            " < s.trials)) ORDER BY s.created_at"
        ).fetchall()

    def sweep_history(
        self, sweep_id: str, key: str
    ) -> list[tuple[Run, list[tuple[int | None, float]]]]:
        """Every run of a sweep with its final attempt's (step, value) points of `key`, in the
        order printed."""
        runs = [
            _run(r)
            for r in self.con.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE sweep = ? ORDER BY id", [sweep_id]
            ).fetchall()
        ]
        points: dict[int, list[tuple[int | None, float]]] = {r.id: [] for r in runs}
        for run_id, step, value in self.con.execute(
            "SELECT m.run_id, m.step, m.value FROM metrics m"
            " JOIN runs r ON r.id = m.run_id AND m.attempt = r.attempt"
            " WHERE r.sweep = ? AND m.key = ? ORDER BY m.run_id, m.line",
            [sweep_id, key],
        ).fetchall():
            points[run_id].append((step, value))
        return [(r, points[r.id]) for r in runs]

    def sweep_launch(
        self, sweep_id: str
    ) -> tuple[str, dict[str, str], dict[str, Any], tuple[DataLink, ...]] | None:
        """The working directory, environment, manifest and data a sweep's first run was
        queued with: what its later trials are queued with too."""
        row = self._one(
            "SELECT cwd, env, manifest, data FROM runs WHERE sweep = ? ORDER BY id LIMIT 1",
            [sweep_id],
        )
        if row is None:
            return None
        data = msgspec.json.decode(row[3] or "[]", type=tuple[DataLink, ...])
        return row[0], json.loads(row[1]), json.loads(row[2]) if row[2] else {}, data

    def sweeps(self, sweep_id: str | None = None) -> list[Sweep]:
        """Sweeps, newest first (or the one asked for), each with its runs counted by status."""
        where, args = ("WHERE s.id = ?", [sweep_id]) if sweep_id else ("", [])
        rows = self.con.execute(
            "SELECT s.id, s.name, s.file, s.method, s.trials, s.snapshot, s.created_at, s.metric,"
            " s.sampler_seed, r.status, count(r.id) FROM sweeps s LEFT JOIN runs r ON r.sweep = s.id"
            f" {where} GROUP BY ALL ORDER BY s.created_at DESC",
            args,
        ).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for sid, name, file, method, trials, snap, created, metric, seed, status, count in rows:
            entry = found.setdefault(
                sid,
                {
                    "id": sid,
                    "name": name,
                    "file": file,
                    "method": method,
                    "trials": trials,
                    "snapshot": snap,
                    "created_at": created,
                    "metric": json.loads(metric) if metric else None,
                    "sampler_seed": seed,
                    "counts": {},
                },
            )
            if status is not None:
                entry["counts"][status] = count
        return [msgspec.convert(e, Sweep) for e in found.values()]

    def read_only_query(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        """Run one SELECT over the store (the views runs_v, metrics_v, params_v are made for
        it); anything that could write, or more than one statement, is refused."""
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise StoreError(f"cannot parse: {exc}") from None
        if len(statements) != 1:
            raise StoreError("give exactly one statement")
        if statements[0].type != duckdb.StatementType.SELECT:
            raise StoreError(f"only SELECT is allowed here, not {statements[0].type.name}")
        self._check_views_only(sql)
        try:
            self.con.execute("BEGIN TRANSACTION")
            try:
                result = self.con.execute(sql)
                columns = [d[0] for d in result.description or []]
                rows = [list(r) for r in result.fetchall()]
            finally:
                self.con.execute("ROLLBACK")
        except duckdb.Error as exc:
            raise StoreError(str(exc).splitlines()[0]) from None
        return columns, rows

    def _check_views_only(self, sql: str) -> None:
        """Refuse a query that reads anything but the documented views: other tables (the
        runs table holds launch environments), files, or table functions such as read_csv."""
        tree = json.loads(self._one("SELECT json_serialize_sql(?)", [sql])[0])
        if tree.get("error"):
            raise StoreError(f"cannot parse: {tree.get('error_message')}")
        tables = {
            r[0].lower()
            for r in self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        tables |= {
            r[0].lower()
            for r in self.con.execute("SELECT view_name FROM duckdb_views()").fetchall()
        }
        defined: set[str] = set()
        found: list[dict[str, Any]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("cte_map"), dict):
                    defined.update(e["key"].lower() for e in node["cte_map"].get("map", []))
                if node.get("type") in ("BASE_TABLE", "TABLE_FUNCTION"):
                    found.append(node)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(tree)
        if shadowing := defined & tables:
            raise StoreError(f"a WITH name may not be a table's name: {sorted(shadowing)[0]}")
        for ref in found:
            name = (ref.get("table_name") or "").lower()
            schema = (ref.get("schema_name") or ref.get("catalog_name") or "").lower()
            if ref["type"] == "TABLE_FUNCTION":
                raise StoreError("table functions (read_csv, …) are not allowed; query the views")
            if name in defined and not schema:
                continue
            if name not in SQL_VIEWS or schema not in ("", "main"):
                raise StoreError(
                    f"{ref.get('table_name')!r} is not one of the views {', '.join(SQL_VIEWS)}"
                )

    def sweep_metrics(self, sweep_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """The metric (name and mode) of each of these sweeps that has one. A sweep's metric
        never changes, so each is read once (every window of the runs table asks)."""
        wanted = set(sweep_ids)
        unread = list(wanted - self._sweep_metric.keys())
        if unread:
            rows = self.con.execute("SELECT id, metric FROM sweeps WHERE id = ANY(?)", [unread])
            for sid, metric in rows.fetchall():
                found = json.loads(metric) if metric else None
                self._sweep_metric[sid] = (  # the table's share: name, mode, summary
                    {k: v for k, v in found.items() if isinstance(v, str)} if found else None
                )
        return {sid: m for sid in wanted if (m := self._sweep_metric.get(sid)) is not None}

    def sweep_results(
        self, sweep_id: str, key: str, mode: str, with_runs: bool = False, summary: str = "last"
    ) -> list[dict[str, Any]]:
        """Each configuration of a sweep (runs of one model with the same params) with each
        run's `summary` value of `key` (its last, or the best it reached), summed up over seeds
        in the store: mean, standard deviation, count, best run; best configuration first.
        `with_runs` adds each run's id, seed and value."""
        best = "m.last" if summary == "last" else "m.max" if mode == "max" else "m.min"
        pick = "arg_max" if mode == "max" else "arg_min"
        lists = (
            f", list(r.id ORDER BY r.id), list(r.seed ORDER BY r.id), list({best} ORDER BY r.id)"
            if with_runs
            else ""
        )
        rows = self.con.execute(
            f"SELECT r.model_type, r.params, count(*), avg({best}), coalesce(stddev_samp({best}), 0),"
            f" {pick}(r.id, {best}) {lists} FROM runs r"
            " JOIN run_metrics m ON m.run_id = r.id AND m.key = ?"
            " WHERE r.sweep = ? AND r.status = 'succeeded' GROUP BY r.model_type, r.params"
            f" ORDER BY 4 {'DESC' if mode == 'max' else 'ASC'}, min(r.id)",
            [key, sweep_id],
        ).fetchall()
        out = []
        for model_type, params, n, mean, std, best_run, *runs in rows:
            entry = {
                "model_type": model_type,
                "params": json.loads(params),
                "mean": mean,
                "std": std,
                "n": n,
                "best_run": best_run,
            }
            if with_runs:
                entry.update(runs=runs[0], seeds=runs[1], values=runs[2])
            out.append(entry)
        return out

    def launch_env(self, run_id: int) -> dict[str, str]:
        row = self._one("SELECT env FROM runs WHERE id = ?", [run_id])
        return json.loads(row[0]) if row else {}

    def get_run(self, run_id: int) -> Run | None:
        row = self._one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", [run_id])
        return _run(row) if row else None

    def find_run(self, ref: str) -> Run | None:
        """A run by id, or by name; raises AmbiguousName when several runs have the name."""
        if ref.isdigit():
            return self.get_run(int(ref))
        rows = self.con.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = ? ORDER BY id DESC LIMIT 11", [ref]
        ).fetchall()
        if len(rows) > 1:
            runs = [_run(r) for r in rows]
            listed = ", ".join(f"{r.id} ({r.sweep or 'no sweep'}, {r.status})" for r in runs[:10])
            more = " and more" if len(runs) > 10 else ""
            count = "over 10" if len(runs) > 10 else str(len(runs))
            raise AmbiguousName(f"{count} runs are named {ref!r}: {listed}{more}; give an id")
        return _run(rows[0]) if rows else None

    def list_runs(
        self,
        statuses: Iterable[RunStatus] = (),
        limit: int | None = None,
        since_id: int = 0,
        sweep: str | None = None,
    ) -> list[Run]:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE id > ?"
        args: list[Any] = [since_id]
        if sweep is not None:
            sql += " AND sweep = ?"
            args.append(sweep)
        wanted = [s.value for s in statuses]
        if wanted:
            sql += f" AND status IN ({', '.join('?' for _ in wanted)})"
            args += wanted
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_run(r) for r in self.con.execute(sql, args).fetchall()]

    def run_details(self, run_id: int) -> dict[str, Any]:
        """What `engine show` tells beyond the run row: env, manifest, attempts, events, metric keys."""
        env, resources, manifest, pid_start, requested, cancel, status, current = self._one(
            "SELECT env, resources, manifest, pid_start_time, requested_host, cancel_requested,"
            " status, attempt FROM runs WHERE id = ?",
            [run_id],
        )
        names = (
            "attempt",
            "host",
            "run_dir",
            "started_at",
            "ended_at",
            "exit_code",
            "status",
            "failure_class",
            "reason",
            "gpus",
        )
        attempts = [
            dict(zip(names, row, strict=True))
            for row in self.con.execute(
                f"SELECT {', '.join(names)} FROM attempts WHERE run_id = ? ORDER BY attempt",
                [run_id],
            ).fetchall()
        ]
        for attempt in attempts:
            attempt["gpus"] = json.loads(attempt["gpus"] or "[]")
            if attempt["attempt"] == current and status in ("running", "unreachable"):
                attempt["status"] = status  # the attempt row is written when it starts and ends
        events = [
            {"time": t, "from": f, "to": to, "reason": r}
            for t, f, to, r in self.con.execute(
                "SELECT time, from_status, to_status, reason FROM events WHERE run_id = ?"
                " ORDER BY time, rowid",
                [run_id],
            ).fetchall()
        ]
        keys = [
            {"key": k, "count": n, "last": last, "min": lo, "max": hi}
            for k, n, last, lo, hi in self.con.execute(
                "SELECT key, count, last, min, max FROM run_metrics WHERE run_id = ? ORDER BY key",
                [run_id],
            ).fetchall()
        ]
        bad = self._one(
            "SELECT coalesce(sum(bad_markers), 0) FROM log_offsets WHERE run_id = ?", [run_id]
        )[0]
        return {
            "env": json.loads(env),
            "resources": json.loads(resources),
            "manifest": json.loads(manifest) if manifest else None,
            "pid_start_time": pid_start,
            "requested_host": requested,
            "cancel_requested": cancel,
            "attempts": attempts,
            "events": events,
            "metrics": keys,
            "bad_markers": int(bad),
        }

    def set_queue_fields(self, run_id: int, reason: str, fields: dict[str, Any]) -> None:
        """Set a queued run's priority or hold, with an event (status unchanged) saying why."""
        unknown = set(fields) - {"priority", "held"}
        if unknown:
            raise StoreError(f"cannot set {sorted(unknown)} this way")
        self._forget([run_id])
        with self._transaction():
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.con.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*fields.values(), run_id])
            self.con.execute(
                "INSERT INTO events SELECT id, ?, status, status, ? FROM runs WHERE id = ?",
                [time.time(), reason, run_id],
            )

    def request_cancel(self, run_id: int) -> None:
        self._forget([run_id])
        self.con.execute("UPDATE runs SET cancel_requested = true WHERE id = ?", [run_id])

    def request_prune(self, run_id: int, reason: str) -> None:
        """Record that a run is being stopped by its sweep's pruner, so a restarted daemon that
        finds it ended still marks it pruned."""
        self._forget([run_id])
        self.con.execute("UPDATE runs SET prune_reason = ? WHERE id = ?", [reason, run_id])

    def apply_transitions(self, changes: Sequence[Transition]) -> None:
        """Apply status changes, in order, in one transaction; each writes an events row with its
        reason. Raises IllegalTransition, changing nothing, when any change is not allowed by
        the life cycle (checked against the run's status as the changes before it left it)."""
        if not changes:
            return
        ids = sorted({c.run_id for c in changes})
        marks = ", ".join("?" for _ in ids)
        rows = self.con.execute(
            f"SELECT id, status, attempt FROM runs WHERE id IN ({marks})", ids
        ).fetchall()
        status = {i: RunStatus(s) for i, s, _ in rows}
        attempt = {i: a for i, _, a in rows}
        events: list[tuple[int, float, str, str, str]] = []
        updates: dict[int, dict[str, Any]] = {}
        starts, ends = [], []
        for change in changes:
            if change.run_id not in status:
                raise StoreError(f"no run {change.run_id}")
            old = status[change.run_id]
            if not can_transition(old, change.to):
                raise IllegalTransition(
                    f"run {change.run_id}: {old} → {change.to} is not allowed ({change.reason})"
                )
            unknown = set(change.fields) - _TRANSITION_FIELDS
            if unknown:
                raise StoreError(f"a transition cannot set {sorted(unknown)}")
            status[change.run_id] = change.to
            events.append((change.run_id, change.time, old.value, change.to.value, change.reason))
            fields = updates.setdefault(change.run_id, {})
            fields.update(change.fields)
            if "gpus" in fields and not isinstance(fields["gpus"], str):
                fields["gpus"] = json.dumps(list(fields["gpus"]))
            fields["status"] = change.to.value
            if change.to.terminal or change.to in (RunStatus.QUEUED, RunStatus.RUNNING):
                fields["reason"] = change.fields.get("reason", change.reason)
            if change.to is RunStatus.STARTING:
                attempt[change.run_id] = change.fields["attempt"]
                starts.append(
                    (
                        change.run_id,
                        change.fields["attempt"],
                        change.fields["host"],
                        change.fields["run_dir"],
                        change.time,
                        "starting",
                        json.dumps(list(change.fields.get("gpus", ()))),
                    )
                )
            elif old in _ATTEMPT_STATUSES and change.to not in (
                RunStatus.RUNNING,
                RunStatus.UNREACHABLE,
            ):
                # The attempt ended: as the run did, or, when a retry queues the run again, failed.
                ended = RunStatus.FAILED if change.to is RunStatus.QUEUED else change.to
                ends.append(
                    (
                        change.run_id,
                        attempt[change.run_id],
                        ended.value,
                        change.fields.get("ended_at"),
                        change.fields.get("exit_code"),
                        change.fields.get("failure_class"),
                        change.reason,
                        # Lost with its host: its copy may still run there, to be killed on return.
                        change.fields.get("failure_class") == FailureClass.HOST_LOST.value,
                    )
                )
        with self._transaction():
            self._insert_arrow(
                "events", pa.table(list(zip(*events, strict=True)), schema=_EVENTS_SCHEMA)
            )
            self._update_runs(updates)
            if starts:
                self._insert_arrow(
                    "attempts (run_id, attempt, host, run_dir, started_at, status, gpus)",
                    pa.table(list(zip(*starts, strict=True)), schema=_ATTEMPT_START_SCHEMA),
                )
            if ends:
                self.con.register(
                    "_ended", pa.table(list(zip(*ends, strict=True)), schema=_ATTEMPT_END_SCHEMA)
                )
                try:
                    self.con.execute(
                        "UPDATE attempts SET status = e.status, ended_at = e.ended_at,"
                        " exit_code = e.exit_code, failure_class = e.failure_class,"
                        " reason = e.reason, abandoned = e.abandoned FROM _ended e"
                        " WHERE attempts.run_id = e.run_id AND attempts.attempt = e.attempt"
                    )
                finally:
                    self.con.unregister("_ended")

    def _update_runs(self, updates: dict[int, dict[str, Any]]) -> None:
        """One UPDATE for many runs, each setting only its own columns (a flag per column)."""
        self._forget(updates)
        names = sorted({k for fields in updates.values() for k in fields})
        columns: dict[str, list[Any]] = {"id": list(updates)}
        for name in names:
            columns[name] = [fields.get(name) for fields in updates.values()]
            columns[f"{name}__set"] = [name in fields for fields in updates.values()]
        schema = pa.schema(
            [("id", pa.int64())]
            + [f for n in names for f in (_RUN_FIELD_TYPES[n], pa.field(f"{n}__set", pa.bool_()))]
        )
        sets = ", ".join(f"{n} = CASE WHEN u.{n}__set THEN u.{n} ELSE runs.{n} END" for n in names)
        self.con.register("_updates", pa.table(columns, schema=schema))
        try:
            self.con.execute(f"UPDATE runs SET {sets} FROM _updates u WHERE runs.id = u.id")
        finally:
            self.con.unregister("_updates")

    def unfinished(self) -> list[tuple[Run, dict[str, str], float | None, bool]]:
        """Every run that has not ended, oldest first, with its launch environment, the start
        time of its process, whether a cancel was asked for, and why it is being pruned."""
        rows = self.con.execute(
            f"SELECT {_RUN_COLUMNS}, env, pid_start_time, cancel_requested, prune_reason FROM runs"
            " WHERE status NOT IN ('succeeded', 'failed', 'cancelled', 'pruned', 'lost')"
            " ORDER BY id"
        ).fetchall()
        envs: dict[str, dict[str, str]] = {}  # runs of one submission share one environment
        return [
            (_run(r[:-4]), envs.setdefault(r[-4], json.loads(r[-4])), r[-3], r[-2], r[-1])
            for r in rows
        ]

    # --- output and metrics ---------------------------------------------------------------

    def attempt_host(self, run_id: int, attempt: int) -> str | None:
        """The host an attempt ran on, or None when it never started."""
        row = self._one(
            "SELECT host FROM attempts WHERE run_id = ? AND attempt = ?", [run_id, attempt]
        )
        return row[0] if row else None

    def abandoned_attempts(self) -> dict[str, list[tuple[int, int]]]:
        """Per host, the (run id, attempt) given up on while it was away and not yet stopped."""
        found: dict[str, list[tuple[int, int]]] = {}
        for host, run_id, attempt in self.con.execute(
            "SELECT host, run_id, attempt FROM attempts WHERE abandoned ORDER BY run_id, attempt"
        ).fetchall():
            found.setdefault(host, []).append((run_id, attempt))
        return found

    def settle_abandoned(self, run_id: int, attempt: int, outcome: str) -> None:
        """An abandoned attempt's copy is stopped (or found ended): say so in its reason."""
        self.con.execute(
            "UPDATE attempts SET abandoned = false, reason = concat_ws('; ', reason, ?)"
            " WHERE run_id = ? AND attempt = ?",
            [outcome, run_id, attempt],
        )

    def log_position(self, run_id: int, attempt: int) -> LogPosition:
        row = self._one(
            "SELECT byte_offset, lines, bad_markers FROM log_offsets WHERE run_id = ? AND attempt = ?",
            [run_id, attempt],
        )
        return LogPosition(*row) if row else LogPosition()

    def ingest(self, batch: MetricBatch) -> None:
        """Append a batch of points and move the log offset past them, atomically, so a re-read
        from the stored offset after any crash neither duplicates nor drops a point."""
        self._forget([batch.run_id])
        with self._transaction():
            if batch.first and batch.attempt > 1:  # a run's summary is its final attempt's
                self.con.execute("DELETE FROM run_metrics WHERE run_id = ?", [batch.run_id])
            if len(batch):
                table = pa.table(
                    [
                        pa.array([batch.run_id] * len(batch), pa.int64()),
                        pa.array([batch.attempt] * len(batch), pa.int32()),
                        pa.array(batch.keys, pa.string()),
                        pa.array(batch.steps, pa.int64()),
                        pa.array(batch.values, pa.float64()),
                        pa.array(batch.wall_times, pa.float64()),
                        pa.array(batch.lines, pa.int64()),
                    ],
                    schema=_METRICS_SCHEMA,
                )
                self._insert_arrow("metrics", table)
                self._summarise(batch.run_id, table)
            self.con.execute(
                "INSERT OR REPLACE INTO log_offsets VALUES (?, ?, ?, ?, ?)",
                [
                    batch.run_id,
                    batch.attempt,
                    batch.byte_offset,
                    batch.line_count,
                    batch.bad_markers,
                ],
            )

    def _summarise(self, run_id: int, points: pa.Table) -> None:
        """Fold a batch of one run's points into its per-key summary (count, last, min, max)."""
        summary = points.group_by("key", use_threads=False).aggregate(
            [
                ("value", "count"),
                ("value", "last"),
                ("step", "last"),
                ("value", "min"),
                ("value", "max"),
            ]
        )
        self.con.register("_summary", summary)
        try:
            self.con.execute(
                "INSERT INTO run_metrics SELECT ?, key, value_count, value_last, step_last,"
                " value_min, value_max FROM _summary ON CONFLICT (run_id, key) DO UPDATE SET"
                " count = run_metrics.count + excluded.count, last = excluded.last,"
                " last_step = excluded.last_step, min = least(run_metrics.min, excluded.min),"
                " max = greatest(run_metrics.max, excluded.max)",
                [run_id],
            )
        finally:
            self.con.unregister("_summary")

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
        return _summaries(run_ids, self.con.execute(*_summaries_query(run_ids)).fetchall())

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
        window = f" ORDER BY {order} {direction} NULLS LAST, r.id {direction} LIMIT ? OFFSET ?"
        paged = [*join_args, *sort_args, *args, query.limit, query.offset]
        # the metric sorted by, where the runs are filtered on nothing else
        alone = metric if not (query.statuses or query.equals or query.text) else None
        if any(k != metric for k, _, _ in query.metric_filters):
            alone = None
        bounds = [(_OPS[op], value) for _, op, value in query.metric_filters]
        # The window's ids first (a narrow sort), then only those rows in full. Text search is
        # a scan, so it counts in the same pass; otherwise a count of its own is cheaper than
        # a window function over every match, and it runs alongside the window.
        total, counting = None, None
        if alone is not None and bounds:
            counting = self._alongside(*_metric_rows(alone, bounds, "count(*)"))
        elif not query.text:
            counting = self._alongside(f"SELECT count(*) {base}", every)
        with self._full_sort(query.descending and query.sort in _STORED_ORDER):
            ids = None
            if alone is not None:
                ids = self._by_metric(alone, direction, query.offset, query.limit, bounds)
            if ids is None and query.text:
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
            summaries = self._alongside(*_summaries_query(missing))
            rows = self.con.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ANY(?)", [missing]
            ).fetchall()
            by_run: dict[int, list[tuple[Any, ...]]] = {run_id: [] for run_id in missing}
            for row in summaries.result():
                by_run[row[0]].append(row)
            for row in rows:
                run = _run(row)
                found[run.id] = (run, by_run[run.id])
                if run.status.terminal:
                    self._ended[run.id] = found[run.id]
            while len(self._ended) > ENDED_ROWS_KEPT:
                del self._ended[next(iter(self._ended))]  # the least recently used
        page = [found[run_id] for run_id in ids]
        return [run for run, _ in page], _summaries(ids, [row for _, rows in page for row in rows])

    def _forget(self, run_ids: Iterable[int]) -> None:
        """Drop runs from the ended rows kept for pages: their row or metrics are changing."""
        for run_id in run_ids:
            self._ended.pop(run_id, None)

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

    # --- helpers --------------------------------------------------------------------------

    def _alongside(self, sql: str, params: list[Any]) -> Future[list[tuple[Any, ...]]]:
        """Start a read on the second connection; its rows come from the future. It sees what
        this connection has committed, so call it outside a transaction."""
        return self._aside_thread.submit(lambda: self._aside.execute(sql, params).fetchall())

    def _one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query, reading the result to its end: DuckDB refuses further work
        on a connection whose last result was left half-read."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def _insert_arrow(self, target: str, table: pa.Table, select: str = "*") -> None:
        """One bulk insert of an Arrow table into `target` (a table, optionally with columns),
        of `select` over its columns."""
        self.con.register("_incoming", table)
        try:
            self.con.execute(f"INSERT INTO {target} SELECT {select} FROM _incoming")
        finally:
            self.con.unregister("_incoming")

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
}
_STORED_ORDER = frozenset(_ORDER) - {"duration"}  # plain columns, unlike computed durations


_JSON = msgspec.json.Decoder()  # several times faster than json.loads for a page of runs


def _metric_rows(key: str, bounds: list[tuple[str, float]], what: str) -> tuple[str, list[Any]]:
    """A select of `what` over the runs' rows in run_metrics for `key` that have a last value
    within `bounds` (comparisons, each an operator of _OPS and a value)."""
    where = "key = ? AND last IS NOT NULL" + "".join(f" AND last {op} ?" for op, _ in bounds)
    return f"SELECT {what} FROM run_metrics WHERE {where}", [key, *(v for _, v in bounds)]


def _summaries_query(run_ids: Sequence[int]) -> tuple[str, list[Any]]:
    sql = (
        "SELECT run_id, key, count, last, last_step, min, max FROM run_metrics"
        " WHERE run_id = ANY(?) ORDER BY run_id, key"  # a list: faster than IN (?, ?, …)
    )
    return sql, [list(run_ids)]


def _summaries(
    run_ids: Sequence[int], rows: list[tuple[Any, ...]]
) -> dict[int, dict[str, dict[str, Any]]]:
    """Per run, per metric key, the summary rows of `_summaries_query` as dicts."""
    out: dict[int, dict[str, dict[str, Any]]] = {r: {} for r in run_ids}
    for run_id, key, count, last, step, low, high in rows:
        out[run_id][key] = {"count": count, "last": last, "step": step, "min": low, "max": high}
    return out


def _run(row: tuple[Any, ...]) -> Run:
    values = {
        name: (_JSON.decode(value) if name in _JSON_FIELDS else value)
        for name, value in zip(_RUN_FIELDS, row, strict=True)
        if value is not None
    }
    if values.get("retry") == {}:
        del values["retry"]
    return msgspec.convert(values, Run)
