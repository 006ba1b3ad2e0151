"""The daemon itself: status, shutdown, read-only SQL, and the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import os

import msgspec
from aiohttp import WSMsgType, web

from engine import __version__
from engine.api.context import ApiContext, error, reply
from engine.protocol import (
    API,
    ENCODER,
    PROTOCOL_VERSION,
    DaemonStatus,
    Subscribe,
)
from engine.runtime.bus import Subscriber
from engine.runtime.notify import event
from engine.store import StoreError

STREAMS = web.AppKey("streams", set)  # the open event streams, closed on shutdown


def routes(ctx: ApiContext) -> web.RouteTableDef:
    sup, db = ctx.supervisor, ctx.db
    store = db.store
    routes = web.RouteTableDef()

    @routes.get(f"{API}/status")
    async def status(_: web.Request) -> web.Response:
        return reply(
            DaemonStatus(
                protocol=PROTOCOL_VERSION,
                version=__version__,
                pid=os.getpid(),
                state_dir=str(ctx.config.state_dir),
                config=str(ctx.config.path),
                started_at=ctx.started_at,
            )
        )

    @routes.post(f"{API}/shutdown")
    async def shutdown(_: web.Request) -> web.Response:
        ctx.stopping.set()
        return reply({"stopping": True})

    @routes.post(f"{API}/notify/test")
    async def notify_test(_: web.Request) -> web.Response:
        """Send the notifier a sample event and say how it went (waits for it)."""
        sample = event(
            "test",
            message="Runyard: a test notification (engine notify test)",
            config=str(ctx.config.path),
        )
        return reply({"command": list(sup.notifier.argv), **await sup.notifier.deliver(sample)})

    @routes.post(f"{API}/sql")
    async def sql(request: web.Request) -> web.Response:
        """Read-only SQL over the documented views; anything else is refused."""
        try:
            body = msgspec.json.decode(await request.read(), type=dict[str, str])
            columns, rows = await db.call(store.read_only_query, body["sql"])
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
            return error(400, f"bad request: {exc}")
        except StoreError as exc:
            return error(400, str(exc))
        return reply({"columns": columns, "rows": rows})

    @routes.get(f"{API}/events")
    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        request.app[STREAMS].add(ws)
        sub = Subscriber()
        sup.bus.subscribers.add(sub)
        await ws.send_bytes(ENCODER.encode([]))  # subscribed: every event from now on follows

        async def pump() -> None:
            while True:
                first = await sub.queue.get()
                batch = [first]
                while not sub.queue.empty() and len(batch) < 200:
                    batch.append(sub.queue.get_nowait())
                await ws.send_bytes(ENCODER.encode(batch))

        sender = asyncio.create_task(pump())
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                        sub.logs = set(msgspec.json.decode(msg.data, type=Subscribe).logs)
        finally:
            sender.cancel()
            sup.bus.subscribers.discard(sub)
            request.app[STREAMS].discard(ws)
        return ws

    return routes
