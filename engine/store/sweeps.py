"""Sweeps: their records, the history an adaptive sweep resumes from, and each configuration's results."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from engine.model import DataLink, Run, Sweep
from engine.store.base import StoreBase
from engine.store.rows import RUN_FIELDS, RUN_SELECT, TERMINAL_SQL, run_from_row


class SweepRecords(StoreBase):
    """Sweep rows and the results of their runs."""

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
        smoke: bool = False,
        baseline: dict[str, Any] | None = None,
        evaluate: list[dict[str, Any]] | None = None,
        log_params: list[str] | None = None,
    ) -> str:
        """Record a new sweep; its id is the experiment's name and a number: xgb-digits-3
        (a smoke test's: xgb-digits-smoke-1). `experiment` (JSON) is the experiment as
        submitted, kept for adaptive sweeps."""
        with self._transaction():
            sweep_id = self.next_sweep_id(name, smoke)
            self.con.execute(
                "INSERT INTO sweeps (id, name, file, method, trials, snapshot, metric,"
                " created_at, experiment, sampler_seed, smoke, baseline, evaluate, log_params)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    smoke,
                    None if baseline is None else json.dumps(baseline),
                    json.dumps(evaluate) if evaluate else None,
                    json.dumps(sorted(log_params or [])),
                ],
            )
        return sweep_id

    def next_sweep_id(self, name: str, smoke: bool = False) -> str:
        """The id the next sweep of an experiment gets: its name and a number, `lm-3` (a smoke
        test's, `lm-smoke-2`)."""
        n = self._one("SELECT count(*) FROM sweeps WHERE name = ? AND smoke = ?", [name, smoke])
        prefix, n = (f"{name}-smoke" if smoke else name), n[0] + 1
        while self._one("SELECT 1 FROM sweeps WHERE id = ?", [f"{prefix}-{n}"]):
            n += 1
        return f"{prefix}-{n}"

    def cancel_sweep(self, sweep_id: str) -> None:
        """Mark a sweep cancelled: an adaptive one samples no more trials."""
        self.con.execute("UPDATE sweeps SET cancelled = true WHERE id = ?", [sweep_id])

    def adaptive_sweeps(self) -> list[tuple[str, str]]:
        """(id, experiment JSON) of each adaptive sweep still going: with unfinished runs, or
        a TPE sweep with trials still to sample."""
        return self.con.execute(
            "SELECT s.id, s.experiment FROM sweeps s WHERE s.experiment IS NOT NULL"
            " AND NOT s.cancelled AND (EXISTS (SELECT 1 FROM runs r WHERE r.sweep = s.id AND"
            f" r.status NOT IN ({TERMINAL_SQL}))"
            " OR (s.method = 'tpe' AND (SELECT count(*) FROM runs r WHERE r.sweep = s.id)"
            " < s.trials)) ORDER BY s.created_at"
        ).fetchall()

    def sweep_history(
        self, sweep_id: str, key: str
    ) -> list[tuple[Run, list[tuple[int | None, float]]]]:
        """Every run of a sweep with its final attempt's (step, value) points of `key`, in the
        order printed."""
        runs = [
            run_from_row(r)
            for r in self.con.execute(
                f"SELECT {RUN_SELECT} FROM runs WHERE sweep = ? ORDER BY id", [sweep_id]
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

    def durations(self, experiment: str) -> dict[tuple[int, str], list[float]]:
        """How long each succeeded run of earlier sweeps of an experiment took, by (model
        index, host); its evaluation runs' under model index -1."""
        rows = self.con.execute(
            "SELECT coalesce(CAST(json_extract(r.trial, '$[0]') AS INTEGER), -1), r.host,"
            " r.ended_at - r.started_at FROM runs r JOIN sweeps s ON r.sweep = s.id"
            " WHERE s.name = ? AND NOT s.smoke AND r.status = 'succeeded'"
            " AND (r.trial IS NOT NULL OR r.parent IS NOT NULL)"
            " AND r.started_at IS NOT NULL AND r.ended_at >= r.started_at",
            [experiment],
        ).fetchall()
        found: dict[tuple[int, str], list[float]] = {}
        for model, host, seconds in rows:
            found.setdefault((model, host), []).append(seconds)
        return found

    def sweeps(self, sweep_id: str | None = None) -> list[Sweep]:
        """Sweeps, newest first (or the one asked for), each with its runs counted by status."""
        # Runs are counted before the join, by sweep and status: one pass over their two
        # columns, not a grouping of every run row by all of its sweep's columns.
        where, args = ("WHERE s.id = ?", [sweep_id, sweep_id]) if sweep_id else ("", [])
        counted = "WHERE sweep = ?" if sweep_id else "WHERE sweep IS NOT NULL"
        rows = self.con.execute(
            "SELECT s.id, s.name, s.file, s.method, s.trials, s.snapshot, s.created_at, s.metric,"
            " s.sampler_seed, s.smoke, c.status, c.n FROM sweeps s LEFT JOIN ("
            f"SELECT sweep, status, count(*) AS n FROM runs {counted} GROUP BY sweep, status"
            f") c ON c.sweep = s.id {where} ORDER BY s.created_at DESC, s.id",
            args,
        ).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for (
            sid,
            name,
            file,
            method,
            trials,
            snap,
            created,
            metric,
            seed,
            smoke,
            status,
            count,
        ) in rows:
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
                    "smoke": bool(smoke),
                    "counts": {},
                },
            )
            if status is not None:
                entry["counts"][status] = count
        return [msgspec.convert(e, Sweep) for e in found.values()]

    def sweep_metrics(self, sweep_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """The metric (name, mode, summary) of each of these sweeps that has one: what the
        runs table shows, read once per sweep (every window of the table asks)."""
        found = self._sweep_metrics(sweep_ids)
        return {
            sid: {k: v for k, v in m.items() if isinstance(v, str)}
            for sid, m in found.items()
            if m is not None
        }

    def sweep_evaluate(self, sweep_id: str) -> list[dict[str, Any]]:
        """A sweep's steps of evaluation after training (none for most)."""
        row = self._one("SELECT evaluate FROM sweeps WHERE id = ?", [sweep_id])
        return json.loads(row[0]) if row and row[0] else []

    def awaiting_evaluation(self) -> list[Run]:
        """Trained runs that succeeded in sweeps with evaluation steps and have no evaluation
        run yet (the daemon stopped before it queued them, or their sweep's best is not
        known yet)."""
        rows = self.con.execute(
            f"SELECT {', '.join(f'r.{f}' for f in RUN_FIELDS)} FROM runs r JOIN sweeps s"
            " ON s.id = r.sweep"
            " WHERE s.evaluate IS NOT NULL AND r.parent IS NULL AND r.status = 'succeeded'"
            " AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.parent = r.id) ORDER BY r.id"
        ).fetchall()
        return [run_from_row(row) for row in rows]

    def evaluation_names(self, run_ids: list[int]) -> set[str]:
        """The names of the evaluation runs of these trained runs."""
        rows = self.con.execute(
            "SELECT name FROM runs WHERE parent IN (SELECT unnest(?::BIGINT[]))", [run_ids]
        ).fetchall()
        return {name for (name,) in rows}

    def unadopted_evaluations(self) -> list[tuple[int, int, str]]:
        """(run, trained run, split) of succeeded evaluation runs whose metrics are not on
        their trained run yet (the daemon stopped in between)."""
        return self.con.execute(
            "SELECT c.id, c.parent, c.split FROM runs c WHERE c.parent IS NOT NULL"
            " AND c.status = 'succeeded' AND EXISTS (SELECT 1 FROM run_metrics m"
            " WHERE m.run_id = c.id) AND NOT EXISTS (SELECT 1 FROM run_metrics m"
            " WHERE m.run_id = c.parent AND starts_with(m.key, c.split || '/'))"
        ).fetchall()

    def adopt_metrics(self, child: int, parent: int, prefix: str) -> None:
        """Show an evaluation run's metric summaries on its trained run, as PREFIX/KEY."""
        self.con.execute(
            "INSERT OR REPLACE INTO run_metrics SELECT ?, ? || '/' || key, count, last,"
            " last_step, min, max FROM run_metrics WHERE run_id = ?",
            [parent, prefix, child],
        )

    def sweep_baseline(self, sweep_id: str) -> dict[str, Any] | None:
        """The params of a sweep's baseline configuration, if it has one."""
        row = self._one("SELECT baseline FROM sweeps WHERE id = ?", [sweep_id])
        return json.loads(row[0]) if row and row[0] else None

    def sweep_metric(self, sweep_id: str) -> tuple[bool, dict[str, Any] | None]:
        """Whether the sweep exists, and its metric as declared (None: it names none)."""
        found = self._sweep_metrics([sweep_id])
        return sweep_id in found, found.get(sweep_id)

    def _sweep_metrics(self, sweep_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Each existing sweep's metric; a sweep's metric never changes, so each is read once."""
        wanted = set(sweep_ids)
        unread = list(wanted - self._sweep_metric.keys())
        if unread:
            rows = self.con.execute("SELECT id, metric FROM sweeps WHERE id = ANY(?)", [unread])
            for sid, metric in rows.fetchall():
                self._sweep_metric[sid] = json.loads(metric) if metric else None
        return {sid: self._sweep_metric[sid] for sid in wanted if sid in self._sweep_metric}

    def sweep_summary(self, sweep_id: str) -> dict[str, Any]:
        """A sweep in brief: its runs by status and its best result (the best configuration by
        the sweep's metric: its mean, count, best run and params; None without a metric)."""
        [sweep] = self.sweeps(sweep_id)
        summary: dict[str, Any] = {
            "id": sweep.id,
            "name": sweep.name,
            "smoke": sweep.smoke,
            "counts": sweep.counts,
            "best": None,
        }
        metric = sweep.metric or {}
        if metric.get("name"):
            mode, key = metric.get("mode", "max"), metric["name"]
            configs = self.sweep_results(sweep_id, key, mode, False, metric.get("summary", "last"))
            if configs:
                best = configs[0]
                summary["best"] = {
                    "metric": key,
                    "mode": mode,
                    "mean": best["mean"],
                    "n": best["n"],
                    "run": best["best_run"],
                    "model_type": best["model_type"],
                    "params": best["params"],
                }
        return summary

    def sweep_log_params(self, sweep_id: str) -> list[str]:
        """The params a sweep samples on a log scale."""
        row = self._one("SELECT log_params FROM sweeps WHERE id = ?", [sweep_id])
        return json.loads(row[0]) if row and row[0] else []

    def sweep_left_out(self, sweep_id: str, key: str) -> list[dict[str, Any]]:
        """A sweep's trained runs that were pruned or failed, which its results leave out:
        each with its params and the last value of `key` it reported (None if none)."""
        rows = self.con.execute(
            "SELECT r.id, r.status, r.model_type, r.params, m.last FROM runs r"
            " LEFT JOIN run_metrics m ON m.run_id = r.id AND m.key = ?"
            " WHERE r.sweep = ? AND r.status IN ('pruned', 'failed') AND r.parent IS NULL"
            " ORDER BY r.id",
            [key, sweep_id],
        ).fetchall()
        return [
            {"id": i, "status": s, "model_type": m, "params": json.loads(p), "value": v}
            for i, s, m, p, v in rows
        ]

    def sweep_run_facts(self, sweep_id: str) -> list[dict[str, Any]]:
        """Each run of a sweep (trained and evaluations) as a report counts its cost and
        provenance: times, host, CPUs reserved, GPUs held, seed, params and manifest (as
        stored: without the environment, which a report does not show)."""
        rows = self.con.execute(
            "SELECT id, status, model_type, params, seed, host, started_at, ended_at,"
            " resources, gpus, parent, max_concurrent, manifest FROM runs WHERE sweep = ?"
            " ORDER BY id",
            [sweep_id],
        ).fetchall()
        manifests: dict[str, Any] = {}  # the runs of one submission share one manifest
        facts = []
        for (
            rid,
            status,
            model,
            params,
            seed,
            host,
            began,
            ended,
            res,
            gpus,
            parent,
            most,
            manifest,
        ) in rows:
            facts.append(
                {
                    "id": rid,
                    "status": status,
                    "model_type": model,
                    "params": json.loads(params),
                    "seed": seed,
                    "host": host,
                    "started_at": began,
                    "ended_at": ended,
                    "cpus": json.loads(res).get("cpus", 0.0),
                    "gpus": len(json.loads(gpus or "[]")),
                    "parent": parent,
                    "max_concurrent": most,
                    "manifest": manifests.setdefault(manifest, json.loads(manifest))
                    if manifest
                    else None,
                }
            )
        return facts

    def sweep_results(
        self, sweep_id: str, key: str, mode: str, with_runs: bool = False, summary: str = "last"
    ) -> list[dict[str, Any]]:
        """Each configuration of a sweep (runs of one model with the same params) with each
        run's `summary` value of `key` (its last, or the best it reached; a run whose value is
        NaN or infinite has none), summed up over seeds
        (and cross-validation folds) in the store: mean, standard deviation, count, folds, best
        run; best configuration first. `with_runs` adds each run's id, seed, value and fold."""
        best = "m.last" if summary == "last" else "m.max" if mode == "max" else "m.min"
        pick = "arg_max" if mode == "max" else "arg_min"
        lists = (
            f", list(r.id ORDER BY r.id), list(r.seed ORDER BY r.id), list({best} ORDER BY r.id),"
            " list(r.fold ORDER BY r.id)"
            if with_runs
            else ""
        )
        rows = self.con.execute(
            f"SELECT r.model_type, r.params, count(*), avg({best}), coalesce(stddev_samp({best}), 0),"
            f" {pick}(r.id, {best}), coalesce(max(r.fold) + 1, 0) {lists} FROM runs r"
            " JOIN run_metrics m ON m.run_id = r.id AND m.key = ?"
            " WHERE r.sweep = ? AND r.status = 'succeeded' AND r.parent IS NULL"
            f" AND isfinite({best})"  # a NaN (flagged by the watchdog) is no result to average
            " GROUP BY r.model_type, r.params"
            f" ORDER BY 4 {'DESC' if mode == 'max' else 'ASC'}, min(r.id)",
            [key, sweep_id],
        ).fetchall()
        out = []
        for model_type, params, n, mean, std, best_run, folds, *runs in rows:
            entry = {
                "model_type": model_type,
                "params": json.loads(params),
                "mean": mean,
                "std": std,
                "n": n,
                "folds": folds,
                "best_run": best_run,
            }
            if with_runs:
                entry.update(runs=runs[0], seeds=runs[1], values=runs[2], fold_of_run=runs[3])
            out.append(entry)
        return out
