"""Runs: submit, list, page, show, wait, cancel, retry, reproduce, metrics and logs."""

from __future__ import annotations

import msgspec
from aiohttp import web

from engine.api.context import ApiContext, error, reply
from engine.core.filters import parse_filter
from engine.executors import HostUnreachable
from engine.model import RunQuery, RunStatus
from engine.protocol import (
    API,
    RunDetail,
    RunList,
    RunPage,
    SubmitRequest,
)
from engine.repro import mask_env
from engine.runtime.live import Refused
from engine.store import StoreError

MAX_LOG_READ = 4 * 2**20  # the most of a log one request returns


def routes(ctx: ApiContext) -> web.RouteTableDef:
    sup, db = ctx.supervisor, ctx.db
    store = db.store
    routes = web.RouteTableDef()

    @routes.post(f"{API}/runs")
    async def submit(request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read(), type=SubmitRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error(400, f"bad request: {exc}")
        jobs = body.jobs
        if body.env is not None:
            jobs = [
                j if j.env is not None else msgspec.structs.replace(j, env=body.env) for j in jobs
            ]
        try:
            runs = await sup.submit(jobs)
        except Refused as exc:
            return error(400, str(exc))
        return reply(RunList(runs=runs), 201)

    @routes.get(f"{API}/runs/page")
    async def runs_page(request: web.Request) -> web.Response:
        """A window of runs filtered (`q`, see parse_filter) and sorted (`sort`, `desc`) by the
        store, with their metric summaries: what the TUI's runs table shows."""
        q = request.query
        try:
            query = RunQuery(
                **parse_filter(q.get("q", "")),
                sort=q.get("sort", "id"),
                descending=q.get("desc", "1") != "0",
                offset=max(0, int(q.get("offset", "0"))),
                limit=min(1000, max(0, int(q.get("limit", "100")))),
            )
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        await sup.flush()

        def window() -> RunPage:  # one trip to the store thread for all of it
            total, runs, metrics = store.runs_page(query)
            return RunPage(
                total=total,
                offset=query.offset,
                runs=[sup.runs.get(r.id, r) for r in runs],  # the daemon's view is the newest
                metrics=metrics,
                sweep_metrics=store.sweep_metrics({r.sweep for r in runs if r.sweep}),
                aliases=store.aliases_of([r.id for r in runs]),
            )

        return reply(await db.call(window))

    @routes.get(f"{API}/runs")
    async def list_runs(request: web.Request) -> web.Response:
        try:
            statuses = [RunStatus(s) for s in request.query.get("status", "").split(",") if s]
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        if limit is not None and limit < 0:
            return error(400, "limit must be 0 or more")
        sweep = request.query.get("sweep")
        return reply(RunList(runs=await db.read(store.list_runs, statuses, limit, 0, sweep)))

    @routes.get(API + "/runs/{ref}")
    async def show(request: web.Request) -> web.Response:
        run = await ctx.find(request)
        details = await db.read(store.run_details, run.id)
        details["env"] = mask_env(details["env"])
        active = sup.active.get(run.id)
        if active is not None and active.attempt.batch_job is not None:
            # The daemon knows the cluster's job before its record is written (after the
            # starts of a whole submission): show what `engine queue` already reports.
            for attempt in details["attempts"]:
                if attempt["attempt"] == active.number and attempt["batch_job"] is None:
                    attempt["batch_job"] = active.attempt.batch_job
        return reply(RunDetail(run=run, details=details))

    @routes.get(API + "/runs/{ref}/wait")
    async def wait(request: web.Request) -> web.Response:
        """Answer when the run has ended (or after `timeout` seconds with its current state)."""
        run = await ctx.find(request)
        try:
            timeout = float(request.query.get("timeout", "300"))
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        await ctx.wait_while(lambda: run.id in sup.runs, timeout)
        if run.id in sup.runs:
            return reply(sup.runs[run.id])
        await sup.flush()
        return reply(await db.call(store.get_run, run.id))

    @routes.post(API + "/runs/{ref}/cancel")
    async def cancel(request: web.Request) -> web.Response:
        run = await ctx.find(request)
        try:
            return reply(await sup.cancel(run))
        except (Refused, StoreError) as exc:
            return error(409, str(exc))

    @routes.post(API + "/runs/{ref}/retry")
    async def retry(request: web.Request) -> web.Response:
        run = await ctx.find(request)
        try:
            return reply(await sup.retry(run))
        except (Refused, StoreError) as exc:
            return error(409, str(exc))

    @routes.post(API + "/runs/{ref}/reproduce")
    async def reproduce(request: web.Request) -> web.Response:
        run = await ctx.find(request)
        body = await request.json() if request.can_read_body else {}
        try:
            return reply(await sup.reproduce(run, body.get("secrets")), 201)
        except Refused as exc:
            return error(400, str(exc))

    @routes.get(API + "/runs/{ref}/metrics")
    async def metrics(request: web.Request) -> web.Response:
        """A run's metric points, of its final attempt unless `attempt` names one;
        `max_points` thins each key to about that many for a chart."""
        run = await ctx.find(request)
        query = request.query
        try:
            most = int(query["max_points"]) if "max_points" in query else None
            number = int(query["attempt"]) if "attempt" in query else None
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        if most is not None and most < 2:
            return error(400, f"max_points must be at least 2, not {most}")
        points = await db.call(store.metrics, run.id, query.get("key"), most, number)
        return reply(points)

    @routes.get(API + "/runs/{ref}/log")
    async def log(request: web.Request) -> web.Response:
        """Raw bytes of one attempt's output.log from `offset`; X-Next-Offset says where to go on."""
        run = await ctx.find(request)
        try:
            number = int(request.query.get("attempt", run.attempt))
            offset = int(request.query.get("offset", "0"))
            limit = min(int(request.query.get("max_bytes", MAX_LOG_READ)), MAX_LOG_READ)
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        # An earlier attempt may have run on another host than the run's last one.
        host = (
            run.host if number == run.attempt else await db.call(store.attempt_host, run.id, number)
        )
        if number == 0 or host is None:
            return web.Response(body=b"", headers={"X-Next-Offset": "0", "X-Run-Ended": "0"})
        executor = sup.hosts.executors.get(host)
        if executor is None:
            return error(409, f"host {host!r} has no executor")
        try:
            attempt = executor.attempt(run.id, number)
            if offset < 0:  # from the end: the last -offset bytes
                offset = max(0, await executor.output_size(attempt) + offset)
            data = await executor.read_output(attempt, offset, limit)
        except HostUnreachable as exc:
            return error(503, f"host {host} is unreachable: {exc}")
        ended = run.id not in sup.runs and (await db.call(store.get_run, run.id)).status.terminal
        return web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={
                "X-Next-Offset": str(offset + len(data)),
                "X-Run-Ended": "1" if ended else "0",
            },
        )

    return routes
