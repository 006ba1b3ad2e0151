"""Aliases: list, get, set (or move), remove, and each one's history."""

from __future__ import annotations

import msgspec
from aiohttp import web

from engine.api.context import ApiContext, error, reply
from engine.protocol import ALIAS_MOVED, API, RunChanged
from engine.store import AliasError


class AliasRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Point an alias at a run: an id, another alias (`@champion`) or a name."""

    run: str
    note: str | None = None
    force: bool = False


def routes(ctx: ApiContext) -> web.RouteTableDef:
    sup, db = ctx.supervisor, ctx.db
    store = db.store
    routes = web.RouteTableDef()

    @routes.get(f"{API}/aliases")
    async def list_aliases(_: web.Request) -> web.Response:
        return reply(await db.read(store.aliases))

    @routes.get(API + "/aliases/{name}")
    async def get_alias(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = await db.read(store.aliases, name)
        if not found:
            return error(404, f"no alias {name!r} (engine alias list)")
        alias = found[0]
        run = await db.call(store.get_run, alias["run"])
        folder = ctx.artifact_dir(run) if run is not None else None
        alias["artifact_dir"] = str(folder) if folder is not None else None
        return reply(alias)

    @routes.get(API + "/aliases/{name}/history")
    async def history(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        moves = await db.read(store.alias_history, name)
        if not moves:
            return error(404, f"alias {name!r} was never set")
        return reply(moves)

    @routes.put(API + "/aliases/{name}")
    async def set_alias(request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read(), type=AliasRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error(400, f"bad request: {exc}")
        run = await ctx.find_ref(body.run)
        await sup.flush()  # the run's status as the store will check it
        try:
            moved = await db.call(
                store.set_alias, request.match_info["name"], run.id, body.note, body.force
            )
        except AliasError as exc:
            return error(409 if "not succeeded" in str(exc) else 400, str(exc))
        await _tell(moved["previous"], moved["run"])
        return reply(moved)

    @routes.delete(API + "/aliases/{name}")
    async def remove_alias(request: web.Request) -> web.Response:
        try:
            moved = await db.call(store.remove_alias, request.match_info["name"])
        except AliasError as exc:
            return error(404, str(exc))
        await _tell(moved["previous"])
        return reply(moved)

    async def _tell(*run_ids: int | None) -> None:
        """Clients showing these runs redraw them with their aliases."""
        for run_id in {r for r in run_ids if r is not None}:
            run = sup.runs.get(run_id) or await db.call(store.get_run, run_id)
            if run is not None:
                sup.bus.publish(RunChanged(run=run, previous=run.status, reason=ALIAS_MOVED))

    return routes
