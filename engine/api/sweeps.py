"""Sweeps: submit, list, wait, cancel, best configurations with statistics, reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from engine.api.context import ApiContext, error, reply
from engine.protocol import (
    API,
    RunList,
    SweepList,
    SweepRequest,
)
from engine.results.report import ReportInputs
from engine.results.report import write_report as write_report_files
from engine.results.stats import against_baseline, bounds_of, with_statistics
from engine.runtime.live import Refused
from engine.runtime.samples import FLUSH_S


def routes(ctx: ApiContext) -> web.RouteTableDef:
    sup, db = ctx.supervisor, ctx.db
    store = db.store
    routes = web.RouteTableDef()

    @routes.post(f"{API}/sweeps")
    async def sweep(request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read(), type=SweepRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error(400, f"bad request: {exc}")
        try:
            result = await sup.submit_sweep(
                body.file,
                body.overrides,
                body.cwd,
                body.env or {},
                body.dry_run,
                body.smoke,
                body.wait_for_host,
            )
        except Refused as exc:
            return error(400, str(exc))
        return reply(result, 200 if body.dry_run else 201)

    @routes.get(f"{API}/sweeps")
    async def sweeps(_: web.Request) -> web.Response:
        return reply(SweepList(sweeps=await db.call(store.sweeps)))

    @routes.get(API + "/sweeps/{sweep}")
    async def one_sweep(request: web.Request) -> web.Response:
        found = await db.call(store.sweeps, request.match_info["sweep"])
        if not found:
            return error(404, f"no sweep {request.match_info['sweep']!r}")
        return reply(found[0])

    @routes.get(API + "/sweeps/{sweep}/wait")
    async def wait_sweep(request: web.Request) -> web.Response:
        """Answer when the sweep has no unfinished runs and nothing left to sample (or after
        `timeout` seconds), with its state."""
        sweep_id = request.match_info["sweep"]
        try:
            timeout = float(request.query.get("timeout", "300"))
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        if not await db.call(store.sweeps, sweep_id):
            return error(404, f"no sweep {sweep_id!r}")
        await ctx.wait_while(lambda: sup.sweep_going(sweep_id), timeout)
        await sup.flush()
        found = await db.call(store.sweeps, sweep_id)
        return reply(msgspec.structs.replace(found[0], going=sup.sweep_going(sweep_id)))

    @routes.post(API + "/sweeps/{sweep}/cancel")
    async def cancel_sweep(request: web.Request) -> web.Response:
        try:
            runs = await sup.cancel_sweep(request.match_info["sweep"])
        except Refused as exc:
            return error(404, str(exc))
        return reply(RunList(runs=runs))

    @routes.get(API + "/sweeps/{sweep}/best")
    async def best(request: web.Request) -> web.Response:
        sweep_id = request.match_info["sweep"]
        exists, metric = await db.read(store.sweep_metric, sweep_id)
        if not exists:
            return error(404, f"no sweep {sweep_id!r}")
        metric = metric or {}
        key = request.query.get("by") or metric.get("name")
        if not key:
            return error(400, f"sweep {sweep_id} names no metric; say which with ?by=KEY")
        mode = request.query.get("mode") or metric.get("mode", "max")
        if mode not in ("min", "max"):
            return error(400, f"mode must be min or max, got {mode!r}")
        with_runs = request.query.get("runs", "0") != "0"
        same = key == metric.get("name")  # the sweep's own metric: its summary and bounds
        summary = request.query.get("summary") or (metric.get("summary") if same else None)
        summary = summary or "last"
        if summary not in ("last", "best"):
            return error(400, f"summary must be last or best, got {summary!r}")
        chosen = None  # a configuration the client names as the baseline: some of its params
        if "baseline" in request.query:
            try:
                chosen = json.loads(request.query["baseline"])
            except ValueError:
                chosen = None
            if not isinstance(chosen, dict) or not chosen:
                return error(400, "baseline must be a JSON object of params")
        baseline = chosen or await db.read(store.sweep_baseline, sweep_id)
        # Two scans of the sweep's runs, one on each of the store's connections, at once.
        found, results = await asyncio.gather(
            db.call(store.sweeps, sweep_id),
            db.read(store.sweep_results, sweep_id, key, mode, with_runs or bool(baseline), summary),
        )
        bounds = bounds_of(key, metric.get("bounds") if same else None)
        counts = found[0].counts if found else {}
        statistics = with_statistics(results, mode, bounds)
        if chosen:
            matching = [
                c
                for c in results
                if all(k in c["params"] and c["params"][k] == v for k, v in chosen.items())
            ]
            said = " ".join(f"{k}={v}" for k, v in chosen.items())
            if not matching:
                return error(400, f"no configuration of sweep {sweep_id} has {said}")
            if len(matching) > 1:
                return error(
                    400,
                    f"{len(matching)} configurations of sweep {sweep_id} have {said};"
                    " name more of the baseline's params",
                )
            baseline = matching[0]["params"]
        if baseline:
            against_baseline(statistics["configs"], baseline)
        return reply(
            {
                "sweep": sweep_id,
                "metric": key,
                "mode": mode,
                "summary": summary,
                "bounds": bounds,
                "counts": counts,
                "baseline": baseline,
                **statistics,
            }
        )

    @routes.post(API + "/sweeps/{sweep}/report")
    async def write_report(request: web.Request) -> web.Response:
        """Write a sweep's report (exports, plots, index.md) into `out` on this machine: for
        clients that draw rather than compute, like the TUI."""
        sweep_id = request.match_info["sweep"]
        out = request.query.get("out")
        found = await db.call(store.sweeps, sweep_id)
        if not found or not out:
            return error(
                404 if not found else 400,
                f"no sweep {sweep_id!r}" if not found else "give ?out=DIR",
            )
        metric = found[0].metric or {}
        if not metric.get("name"):
            return error(400, f"sweep {sweep_id} names no metric")
        mode = metric.get("mode", "max")
        summary = metric.get("summary", "last")
        configs = await db.call(store.sweep_results, sweep_id, metric["name"], mode, True, summary)
        if not configs:
            return error(409, f"sweep {sweep_id}: no succeeded run reported {metric['name']}")
        bounds = bounds_of(metric["name"], metric.get("bounds"))
        baseline = await db.read(store.sweep_baseline, sweep_id)
        best = {
            "sweep": sweep_id,
            "metric": metric["name"],
            "mode": mode,
            "summary": summary,
            "baseline": baseline,
            **with_statistics(configs, mode, bounds),
        }
        if baseline:
            against_baseline(best["configs"], baseline)
        key = metric["name"]
        left_out = await db.call(store.sweep_left_out, sweep_id, key)
        curves = {
            run_id: await db.call(store.metrics, run_id, key)
            for run_id in [r for c in configs for r in c["runs"]] + [r["id"] for r in left_out]
        }
        predictions = {}
        for c in configs:
            run = await db.call(store.get_run, c["best_run"])
            folder = ctx.artifact_dir(run) if run is not None else None
            if folder is not None and (folder / "predictions.npz").exists():
                predictions[run.id] = folder / "predictions.npz"
        facts = await db.call(store.sweep_run_facts, sweep_id)
        timed = [r for r in facts if r["started_at"] is not None and r["ended_at"] is not None]
        samples = []
        if timed:
            start = min(r["started_at"] for r in timed)
            end = max(r["ended_at"] for r in timed)
            await ctx.samples.flush()  # a stored sample stands for the FLUSH_S before it
            samples = await db.call(store.host_samples_between, start, end + FLUSH_S)
        given = ReportInputs(
            best=best,
            curves=curves,
            predictions=predictions,
            faded=left_out,
            runs=facts,
            samples=samples,
            slots=_slots(ctx, facts),
            log_params=await db.call(store.sweep_log_params, sweep_id),
        )
        plots = request.query.get("plots", "1") != "0"
        pdf = request.query.get("pdf", "0") != "0"
        made = await asyncio.to_thread(write_report_files, Path(out), given, plots, pdf)
        return reply({"out": out, "files": made})

    return routes


def _slots(ctx: ApiContext, facts: list[dict[str, Any]]) -> int:
    """How many of a sweep's runs could run at once: the slots of the hosts it ran on, at
    most its `max_concurrent`."""
    hosts = {r["host"] for r in facts if r["host"]}
    slots = sum(ctx.config.hosts[h].max_jobs for h in hosts if h in ctx.config.hosts)
    most = [r["max_concurrent"] for r in facts if r["max_concurrent"]]
    return max(1, min([slots or 1, *most]))
