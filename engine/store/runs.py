"""Runs: their creation at submission, every status change (with its event and attempt rows), queue fields, and reading them back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import pyarrow as pa

from engine.model import FailureClass, JobSpec, Run, RunStatus, can_transition, queued_run
from engine.store.base import AmbiguousName, IllegalTransition, StoreBase, StoreError
from engine.store.rows import (
    RUN_FIELD_TYPES,
    RUN_SELECT,
    TERMINAL_SQL,
    TRANSITION_FIELDS,
    Transition,
    new_runs_schema,
    run_from_row,
)
from engine.store.schema import RUN_WORDS

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


_ATTEMPT_STATUSES = frozenset({RunStatus.STARTING, RunStatus.RUNNING, RunStatus.UNREACHABLE})


class _Texts:
    """JSON text of column values, each distinct value of a column encoded once: the jobs of
    one submission mostly share their command, resources and policies."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, Any], str] = {}

    def __call__(self, column: str, value: Any) -> str:
        key = (column, value)
        try:
            text = self._seen.get(key)
        except TypeError:  # a value that cannot be a key: encoded each time
            return self.fresh(value)
        if text is None:
            text = self._seen[key] = self.fresh(value)
        return text

    @staticmethod
    def fresh(value: Any) -> str:
        return msgspec.json.encode(value).decode()


class RunRecords(StoreBase):
    """Run rows, their events and attempts; all status changes go through `apply_transitions`."""

    def add_runs(self, jobs: Sequence[tuple[JobSpec, str, int, dict[str, Any]]]) -> list[Run]:
        """Queue jobs (each with its resolved name, seed and manifest) as new runs: one bulk
        insert of the runs and one of their events, in one transaction."""
        now = time.time()
        encode = _Texts()
        with self._transaction():
            first = self._one("SELECT coalesce(max(id), 0) + 1 FROM runs")[0]
            runs = [
                queued_run(job, first + i, name, seed, now)
                for i, (job, name, seed, _) in enumerate(jobs)
            ]
            specs = [job for job, *_ in jobs]
            manifests = [manifest for *_, manifest in jobs]
            envs: dict[int, str] = {}  # one submission's jobs usually share one environment
            columns = {
                "id": [r.id for r in runs],
                "name": [r.name for r in runs],
                "status": [RunStatus.QUEUED.value] * len(runs),
                "argv": [encode("argv", j.argv) for j in specs],
                "cwd": [j.cwd for j in specs],
                "seed": [r.seed for r in runs],
                "capture": [encode("capture", j.capture) for j in specs],
                "env": [envs.setdefault(id(j.env), encode.fresh(j.env or {})) for j in specs],
                "resources": [encode("resources", j.resources) for j in specs],
                "requested_host": [j.host for j in specs],
                "created_at": [now] * len(runs),
                "manifest": [encode.fresh(_without_env(m)) for m in manifests],
                "priority": [j.priority for j in specs],
                "model_type": [j.model_type for j in specs],
                "tags": [encode("tags", j.tags) for j in specs],
                "requires": [encode("requires", j.requires) for j in specs],
                "sweep": [j.sweep for j in specs],
                "max_concurrent": [j.max_concurrent for j in specs],
                "retry": [encode("retry", j.retry) for j in specs],
                "queued_at": [now] * len(runs),
                "params": [encode.fresh(j.params) for j in specs],
                "trial": [encode("trial", j.trial) if j.trial else None for j in specs],
                "data": [encode("data", j.data) for j in specs],
                "templated": [j.templated for j in specs],
                "fold": [j.fold for j in specs],
                "parent": [j.parent for j in specs],
                "split": [j.split for j in specs],
                "watch": [encode("watch", j.watch) for j in specs],
            }
            self._insert_arrow(
                f"runs ({', '.join(columns)}, words)",
                pa.table(columns, schema=new_runs_schema(columns)),
                f"*, {RUN_WORDS}",
            )
            events = [(r.id, now, None, RunStatus.QUEUED.value, "submitted") for r in runs]
            self._insert_arrow(
                "events", pa.table(list(zip(*events, strict=True)), schema=_EVENTS_SCHEMA)
            )
        return runs

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
            unknown = set(change.fields) - TRANSITION_FIELDS
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
            + [f for n in names for f in (RUN_FIELD_TYPES[n], pa.field(f"{n}__set", pa.bool_()))]
        )
        sets = ", ".join(f"{n} = CASE WHEN u.{n}__set THEN u.{n} ELSE runs.{n} END" for n in names)
        self.con.register("_updates", pa.table(columns, schema=schema))
        try:
            self.con.execute(f"UPDATE runs SET {sets} FROM _updates u WHERE runs.id = u.id")
        finally:
            self.con.unregister("_updates")

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

    def set_flag(self, run_id: int, flag: str | None) -> None:
        """Record what the watchdog saw in a run (None: nothing now), with an event saying it."""
        self._forget([run_id])
        with self._transaction():
            self.con.execute("UPDATE runs SET flag = ? WHERE id = ?", [flag, run_id])
            why = f"flagged: {flag}" if flag else "flag cleared: it prints again"
            self.con.execute(
                "INSERT INTO events SELECT id, ?, status, status, ? FROM runs WHERE id = ?",
                [time.time(), why, run_id],
            )

    def request_diverged(self, run_id: int, reason: str) -> None:
        """Record that the watchdog is stopping a run as diverged, so a restarted daemon that
        finds it ended still classes it so."""
        self._forget([run_id])
        self.con.execute("UPDATE runs SET diverged = ? WHERE id = ?", [reason, run_id])

    def get_run(self, run_id: int) -> Run | None:
        row = self._one(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", [run_id])
        return run_from_row(row) if row else None

    def find_run(self, ref: str) -> Run | None:
        """A run by id, by alias (`@champion`), or by name; raises AmbiguousName when several
        runs have the name."""
        if ref.isdigit():
            return self.get_run(int(ref))
        if ref.startswith("@"):
            row = self._one("SELECT run_id FROM aliases WHERE name = ?", [ref[1:]])
            return self.get_run(row[0]) if row else None
        rows = self.con.execute(
            f"SELECT {RUN_SELECT} FROM runs WHERE name = ? ORDER BY id DESC LIMIT 11", [ref]
        ).fetchall()
        if len(rows) > 1:
            runs = [run_from_row(r) for r in rows]
            listed = ", ".join(f"{r.id} ({r.sweep or 'no sweep'}, {r.status})" for r in runs[:10])
            more = " and more" if len(runs) > 10 else ""
            count = "over 10" if len(runs) > 10 else str(len(runs))
            raise AmbiguousName(f"{count} runs are named {ref!r}: {listed}{more}; give an id")
        return run_from_row(rows[0]) if rows else None

    def list_runs(
        self,
        statuses: Iterable[RunStatus] = (),
        limit: int | None = None,
        since_id: int = 0,
        sweep: str | None = None,
    ) -> list[Run]:
        sql = f"SELECT {RUN_SELECT} FROM runs WHERE id > ?"
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
        return [run_from_row(r) for r in self.con.execute(sql, args).fetchall()]

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
            "batch_job",
            "node",
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
        evaluations = [
            {"id": i, "name": n, "status": s, "split": split}
            for i, n, s, split in self.con.execute(
                "SELECT id, name, status, split FROM runs WHERE parent = ? ORDER BY id", [run_id]
            ).fetchall()
        ]
        return {
            "env": json.loads(env),
            "resources": json.loads(resources),
            "manifest": _with_env(json.loads(manifest), env) if manifest else None,
            "pid_start_time": pid_start,
            "requested_host": requested,
            "cancel_requested": cancel,
            "aliases": [
                name
                for (name,) in self.con.execute(
                    "SELECT name FROM aliases WHERE run_id = ? ORDER BY name", [run_id]
                ).fetchall()
            ],
            "attempts": attempts,
            "events": events,
            "metrics": keys,
            "bad_markers": int(bad),
            "evaluations": evaluations,
        }

    def launch_env(self, run_id: int) -> dict[str, str]:
        row = self._one("SELECT env FROM runs WHERE id = ?", [run_id])
        return json.loads(row[0]) if row else {}

    def unfinished(
        self,
    ) -> list[tuple[Run, dict[str, str], float | None, bool, str | None, str | None, str | None]]:
        """Every run that has not ended, oldest first, with its launch environment, the start
        time of its process, whether a cancel was asked for, why it is being pruned, why the
        watchdog stops it as diverged, and its current attempt's batch job on a cluster."""
        rows = self.con.execute(
            f"SELECT {RUN_SELECT}, env, pid_start_time, cancel_requested, prune_reason, diverged,"
            " (SELECT batch_job FROM attempts a WHERE a.run_id = runs.id"
            "  AND a.attempt = runs.attempt)"
            f" FROM runs WHERE status NOT IN ({TERMINAL_SQL}) ORDER BY id"
        ).fetchall()
        envs: dict[str, dict[str, str]] = {}  # runs of one submission share one environment
        return [
            (run_from_row(r[:-6]), envs.setdefault(r[-6], json.loads(r[-6])), *r[-5:]) for r in rows
        ]

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

    def note_batch_jobs(self, places: Sequence[tuple[int, int, str, str | None]]) -> None:
        """Where a cluster runs attempts, as (run id, attempt, batch job, node or None until
        it runs), in one statement."""
        if not places:
            return
        table = pa.table(
            [pa.array(column) for column in zip(*places, strict=True)],
            schema=pa.schema(
                [
                    ("run_id", pa.int64()),
                    ("attempt", pa.int32()),
                    ("job", pa.string()),
                    ("node", pa.string()),
                ]
            ),
        )
        self.con.register("_places", table)
        try:
            self.con.execute(
                "UPDATE attempts SET batch_job = p.job, node = coalesce(p.node, attempts.node)"
                " FROM _places p WHERE attempts.run_id = p.run_id AND attempts.attempt = p.attempt"
            )
        finally:
            self.con.unregister("_places")

    def settle_abandoned(self, run_id: int, attempt: int, outcome: str) -> None:
        """An abandoned attempt's copy is stopped (or found ended): say so in its reason."""
        self.con.execute(
            "UPDATE attempts SET abandoned = false, reason = concat_ws('; ', reason, ?)"
            " WHERE run_id = ? AND attempt = ?",
            [outcome, run_id, attempt],
        )


def _without_env(manifest: dict[str, Any]) -> dict[str, Any]:
    """A run's manifest as stored: without the environment, which the run's `env` column
    holds already (stored twice, it was most of a queued run's bytes)."""
    if "env" not in manifest:
        return manifest
    return {key: value for key, value in manifest.items() if key != "env"}


def _with_env(manifest: dict[str, Any], env: str) -> dict[str, Any]:
    """A stored manifest whole again: its environment from the run's `env` column (runs
    queued before it was left out still carry their own)."""
    if "env" not in manifest:
        manifest["env"] = json.loads(env)
    return manifest
