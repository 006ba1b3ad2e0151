"""Hosts: their state, capacity and telemetry, step-by-step checks, enable and disable, utilisation."""

from __future__ import annotations

from aiohttp import web

from engine.api.context import ApiContext, error, reply
from engine.protocol import (
    API,
    GpuCapacity,
    HostList,
    HostState,
)
from engine.runtime.live import Refused


def routes(ctx: ApiContext) -> web.RouteTableDef:
    sup, db = ctx.supervisor, ctx.db
    store = db.store
    routes = web.RouteTableDef()

    @routes.get(f"{API}/hosts")
    async def hosts(_: web.Request) -> web.Response:
        states = []
        holders: dict[tuple[str | None, int], list[int]] = {}
        for active in sup.active.values():
            if active.exited:
                continue  # its GPUs are free while its end is recorded
            for index in active.run.gpus:
                holders.setdefault((active.run.host, index), []).append(active.run.id)
        for h in sup.snapshot().hosts:
            spec = ctx.config.hosts[h.name]
            states.append(
                HostState(
                    name=h.name,
                    kind=spec.kind,
                    state=h.state,
                    reason=sup.hosts.state[h.name][1],
                    max_jobs=h.max_jobs,
                    active=h.active,
                    tags=h.tags,
                    sample=ctx.samples.latest(h.name),
                    gpus=tuple(
                        GpuCapacity(
                            g.index,
                            g.total_mb,
                            g.free_mb,
                            g.reserved_mb,
                            tuple(sorted(holders.get((h.name, g.index), ()))),
                        )
                        for g in h.gpus
                    ),
                    since=sup.hosts.since.get(h.name),
                )
            )
        return reply(HostList(hosts=states))

    @routes.get(API + "/hosts/{name}/check")
    async def host_check(request: web.Request) -> web.Response:
        """Diagnose a host step by step: DNS, TCP, SSH, workdir, Python, setsid, GPU."""
        name = request.match_info["name"]
        executor = sup.hosts.executors.get(name)
        if executor is None:
            return error(404, f"unknown host {name!r}; hosts.toml has {sorted(ctx.config.hosts)}")
        steps = await executor.diagnose()
        return reply({"host": name, "steps": [list(step) for step in steps]})

    @routes.post(API + "/hosts/{name}/{action:enable|disable}")
    async def host_state(request: web.Request) -> web.Response:
        name, enable = request.match_info["name"], request.match_info["action"] == "enable"
        reason = request.query.get("reason") or "disabled by user"
        try:
            sup.set_host_state(name, enable, reason)
        except Refused as exc:
            return error(409, str(exc))
        state, why = sup.hosts.state[name]
        await db.call(store.upsert_hosts, [sup.hosts.record(name)])
        return reply({"host": name, "state": state, "reason": why})

    @routes.get(f"{API}/util")
    async def util(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "3600"))
            buckets = int(request.query.get("buckets", "12"))
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        await ctx.samples.flush()
        return reply(await db.call(store.utilisation, since, max(1, min(buckets, 120))))

    return routes
