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
        """Runs waiting in a cluster's queue, then queued runs in the order the planner takes
        them (the first `limit` in all), each with where it would start now and why, or why it
        waits; and how many wait in all."""
        try:
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        if limit is not None and limit < 0:
            return error(400, "limit must be 0 or more")
        # First the runs a cluster holds in its own queue, then ours in planning order.
        held = [QueueEntry(run=run, reason=why) for run, why in sup.waiting_on_hosts()]
        entries = held[:limit]
        left = None if limit is None else limit - len(entries)
        why = sup.explain(left)  # the page shown: the runs after it need no planning
        ids = list(itertools.islice(sup.queue, left))
        entries += [QueueEntry(run=sup.runs[i], reason=why.get(i, "")) for i in ids]
        return reply(QueueView(entries=entries, total=len(held) + len(sup.queue)))

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
