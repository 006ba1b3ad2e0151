"""The queue: its order with where each run would start or why it waits; priority and holds."""

from __future__ import annotations

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
    async def queue(_: web.Request) -> web.Response:
        """Queued runs, in the order the planner takes them, each with where it would start now
        and why, or why it waits."""
        why = sup.explain()
        runs = sorted((sup.runs[i] for i in sup.queue), key=lambda r: (-r.priority, r.id))
        return reply(QueueView(entries=[QueueEntry(run=r, reason=why.get(r.id, "")) for r in runs]))

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
