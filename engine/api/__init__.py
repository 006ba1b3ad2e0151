"""The daemon's HTTP+JSON API on its Unix socket, one module of routes per topic, and the event
stream (a WebSocket)."""

from __future__ import annotations

from aiohttp import WSCloseCode, web

from engine.api import aliases, control, hosts, queue, runs, sweeps
from engine.api.context import ApiContext
from engine.protocol import API

__all__ = ["ApiContext", "make_app"]


def make_app(ctx: ApiContext) -> web.Application:
    @web.middleware
    async def consistent(request: web.Request, handler):  # type: ignore[no-untyped-def]
        """Every request but the event stream first lets the store catch up with the daemon."""
        if request.path != f"{API}/events":
            await ctx.supervisor.flush()
        return await handler(request)

    async def close_streams(app: web.Application) -> None:
        """On shutdown, end every event stream (clients reconnect to the next daemon), so
        nothing holds the daemon's stop."""
        for ws in list(app[control.STREAMS]):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon stopping")

    app = web.Application(client_max_size=64 * 2**20, middlewares=[consistent])
    app[control.STREAMS] = set()
    app.on_shutdown.append(close_streams)
    for topic in (runs, queue, sweeps, hosts, aliases, control):
        app.add_routes(topic.routes(ctx))
    return app
