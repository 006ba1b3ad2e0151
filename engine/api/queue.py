"""The queue: its order with where each run would start or why it waits; priority and holds."""

from __future__ import annotations

import itertools

from aiohttp import web

from engine.api.context import ApiContext, error, reply
from engine.protocol import (
    API,
    QueueEntry,
    QueueView,
)
from engine.runtime.live import Refused


def routes(ctx: ApiContext) -> web.RouteTableDef:
    sup = ctx.supervisor
    routes = web.RouteTableDef()

    @routes.get(f"{API}/queue")
    async def queue(request: web.Request) -> web.Response:
        """Queued runs, in the order the planner takes them (the first `limit`), each with where
        it would start now and why, or why it waits; and how many are queued in all."""
        try:
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        if limit is not None and limit < 0:
            return error(400, "limit must be 0 or more")
        why = sup.explain(limit)  # the page shown: the runs after it need no planning
        ids = list(itertools.islice(sup.queue, limit))
        entries = [QueueEntry(run=sup.runs[i], reason=why.get(i, "")) for i in ids]
        return reply(QueueView(entries=entries, total=len(sup.queue)))

    @routes.post(API + "/runs/{ref}/priority")
    async def priority(request: web.Request) -> web.Response:
        run = await ctx.find(request)
        try:
            value = int((await request.json())["priority"])
        except (ValueError, KeyError, TypeError) as exc:
            return error(400, f'bad request: expected {{"priority": N}} ({exc})')
        return await _queue_change(run, f"priority set to {value}", priority=value)

    @routes.post(API + "/runs/{ref}/hold")
    async def hold(request: web.Request) -> web.Response:
        return await _queue_change(await ctx.find(request), "held by user", held=True)

    @routes.post(API + "/runs/{ref}/release")
    async def release(request: web.Request) -> web.Response:
        return await _queue_change(await ctx.find(request), "released by user", held=False)

    async def _queue_change(run, reason: str, **fields) -> web.Response:  # type: ignore[no-untyped-def]
        try:
            return reply(await sup.set_queue_fields(run, reason, **fields))
        except Refused as exc:
            return error(409, str(exc))

    return routes
