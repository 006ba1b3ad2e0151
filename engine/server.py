"""The daemon's HTTP+JSON API on its Unix socket, and the event stream (a WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from engine import __version__
from engine.executors import HostUnreachable
from engine.model import RunQuery, RunStatus, parse_filter
from engine.protocol import (
    API,
    ENCODER,
    PROTOCOL_VERSION,
    DaemonStatus,
    ErrorBody,
    GpuCapacity,
    HostList,
    HostState,
    QueueEntry,
    QueueView,
    RunDetail,
    RunList,
    RunPage,
    SubmitRequest,
    Subscribe,
    SweepList,
    SweepRequest,
)
from engine.report import bounds_of, with_statistics
from engine.report import write_report as write_report_files
from engine.repro import mask_env
from engine.runtime.bus import Subscriber
from engine.runtime.live import Refused
from engine.store import AmbiguousName, StoreError

if TYPE_CHECKING:
    from engine.daemon import Daemon

MAX_LOG_READ = 4 * 2**20

STREAMS = web.AppKey("streams", set)  # the open event streams, closed on shutdown


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=ENCODER.encode(value), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(ErrorBody(error=message), status)


def make_app(daemon: Daemon) -> web.Application:
    sup = daemon.supervisor
    db = daemon.db
    assert sup is not None and db is not None
    store = db.store
    routes = web.RouteTableDef()

    async def find(request: web.Request):  # type: ignore[no-untyped-def]
        ref = request.match_info["ref"]
        if ref.isdigit() and int(ref) in sup.runs:
            return sup.runs[int(ref)]  # an unfinished run: the daemon's view is the newest
        try:
            run = await db.call(store.find_run, ref)
        except AmbiguousName as exc:
            raise web.HTTPConflict(
                body=ENCODER.encode(ErrorBody(error=str(exc))), content_type="application/json"
            ) from None
        if run is None:
            raise web.HTTPNotFound(
                body=ENCODER.encode(ErrorBody(error=f"no run {ref!r}")),
                content_type="application/json",
            )
        return run

    @routes.get(f"{API}/status")
    async def status(_: web.Request) -> web.Response:
        return _json(
            DaemonStatus(
                protocol=PROTOCOL_VERSION,
                version=__version__,
                pid=os.getpid(),
                state_dir=str(daemon.config.state_dir),
                config=str(daemon.config.path),
                started_at=daemon.started_at,
            )
        )

    @routes.post(f"{API}/runs")
    async def submit(request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read(), type=SubmitRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _error(400, f"bad request: {exc}")
        try:
            runs = await sup.submit(body.jobs)
        except Refused as exc:
            return _error(400, str(exc))
        return _json(RunList(runs=runs), 201)

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
            return _error(400, f"bad query: {exc}")
        await sup.flush()

        def window() -> RunPage:  # one trip to the store thread for all of it
            total, runs, metrics = store.runs_page(query)
            return RunPage(
                total=total,
                offset=query.offset,
                runs=[sup.runs.get(r.id, r) for r in runs],  # the daemon's view is the newest
                metrics=metrics,
                sweep_metrics=store.sweep_metrics({r.sweep for r in runs if r.sweep}),
            )

        return _json(await db.call(window))

    @routes.get(f"{API}/runs")
    async def list_runs(request: web.Request) -> web.Response:
        try:
            statuses = [RunStatus(s) for s in request.query.get("status", "").split(",") if s]
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError as exc:
            return _error(400, f"bad query: {exc}")
        if limit is not None and limit < 0:
            return _error(400, "limit must be 0 or more")
        sweep = request.query.get("sweep")
        return _json(RunList(runs=await db.call(store.list_runs, statuses, limit, 0, sweep)))

    @routes.get(API + "/runs/{ref}")
    async def show(request: web.Request) -> web.Response:
        run = await find(request)
        details = await db.call(store.run_details, run.id)
        details["env"] = mask_env(details["env"])
        return _json(RunDetail(run=run, details=details))

    @routes.get(API + "/runs/{ref}/wait")
    async def wait(request: web.Request) -> web.Response:
        """Answer when the run has ended (or after `timeout` seconds with its current state)."""
        run = await find(request)
        try:
            timeout = float(request.query.get("timeout", "300"))
        except ValueError as exc:
            return _error(400, f"bad query: {exc}")
        await wait_while(lambda: run.id in sup.runs, timeout)
        if run.id in sup.runs:
            return _json(sup.runs[run.id])
        await sup.flush()
        return _json(await db.call(store.get_run, run.id))

    @routes.post(API + "/runs/{ref}/cancel")
    async def cancel(request: web.Request) -> web.Response:
        run = await find(request)
        try:
            return _json(await sup.cancel(run))
        except (Refused, StoreError) as exc:
            return _error(409, str(exc))

    @routes.post(API + "/runs/{ref}/retry")
    async def retry(request: web.Request) -> web.Response:
        run = await find(request)
        try:
            return _json(await sup.retry(run))
        except (Refused, StoreError) as exc:
            return _error(409, str(exc))

    @routes.get(API + "/runs/{ref}/metrics")
    async def metrics(request: web.Request) -> web.Response:
        """A run's metric points, of its final attempt unless `attempt` names one;
        `max_points` thins each key to about that many for a chart."""
        run = await find(request)
        query = request.query
        try:
            most = int(query["max_points"]) if "max_points" in query else None
            number = int(query["attempt"]) if "attempt" in query else None
        except ValueError as exc:
            return _error(400, f"bad query: {exc}")
        if most is not None and most < 2:
            return _error(400, f"max_points must be at least 2, not {most}")
        points = await db.call(store.metrics, run.id, query.get("key"), most, number)
        return _json(points)

    @routes.get(API + "/runs/{ref}/log")
    async def log(request: web.Request) -> web.Response:
        """Raw bytes of one attempt's output.log from `offset`; X-Next-Offset says where to go on."""
        run = await find(request)
        try:
            number = int(request.query.get("attempt", run.attempt))
            offset = int(request.query.get("offset", "0"))
            limit = min(int(request.query.get("max_bytes", MAX_LOG_READ)), MAX_LOG_READ)
        except ValueError as exc:
            return _error(400, f"bad query: {exc}")
        # An earlier attempt may have run on another host than the run's last one.
        host = (
            run.host if number == run.attempt else await db.call(store.attempt_host, run.id, number)
        )
        if number == 0 or host is None:
            return web.Response(body=b"", headers={"X-Next-Offset": "0", "X-Run-Ended": "0"})
        executor = sup.hosts.executors.get(host)
        if executor is None:
            return _error(409, f"host {host!r} has no executor")
        try:
            attempt = executor.attempt(run.id, number)
            if offset < 0:  # from the end: the last -offset bytes
                offset = max(0, await executor.output_size(attempt) + offset)
            data = await executor.read_output(attempt, offset, limit)
        except HostUnreachable as exc:
            return _error(503, f"host {host} is unreachable: {exc}")
        ended = run.id not in sup.runs and (await db.call(store.get_run, run.id)).status.terminal
        return web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={
                "X-Next-Offset": str(offset + len(data)),
                "X-Run-Ended": "1" if ended else "0",
            },
        )

    @routes.get(f"{API}/hosts")
    async def hosts(_: web.Request) -> web.Response:
        states = []
        holders: dict[tuple[str | None, int], list[int]] = {}
        for active in sup.active.values():
            for index in active.run.gpus:
                holders.setdefault((active.run.host, index), []).append(active.run.id)
        for h in sup.snapshot().hosts:
            spec = daemon.config.hosts[h.name]
            states.append(
                HostState(
                    name=h.name,
                    kind=spec.kind,
                    state=h.state,
                    reason=sup.hosts.state[h.name][1],
                    max_jobs=h.max_jobs,
                    active=h.active,
                    tags=h.tags,
                    sample=daemon.latest_sample(h.name),
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
        return _json(HostList(hosts=states))

    @routes.post(f"{API}/sweeps")
    async def sweep(request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read(), type=SweepRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _error(400, f"bad request: {exc}")
        try:
            result = await sup.submit_sweep(
                body.file, body.overrides, body.cwd, body.env or {}, body.dry_run
            )
        except Refused as exc:
            return _error(400, str(exc))
        return _json(result, 200 if body.dry_run else 201)

    @routes.get(f"{API}/sweeps")
    async def sweeps(_: web.Request) -> web.Response:
        return _json(SweepList(sweeps=await db.call(store.sweeps)))

    @routes.get(API + "/sweeps/{sweep}")
    async def one_sweep(request: web.Request) -> web.Response:
        found = await db.call(store.sweeps, request.match_info["sweep"])
        if not found:
            return _error(404, f"no sweep {request.match_info['sweep']!r}")
        return _json(found[0])

    @routes.get(API + "/sweeps/{sweep}/wait")
    async def wait_sweep(request: web.Request) -> web.Response:
        """Answer when the sweep has no unfinished runs and nothing left to sample (or after
        `timeout` seconds), with its state."""
        sweep_id = request.match_info["sweep"]
        try:
            timeout = float(request.query.get("timeout", "300"))
        except ValueError as exc:
            return _error(400, f"bad query: {exc}")
        if not await db.call(store.sweeps, sweep_id):
            return _error(404, f"no sweep {sweep_id!r}")
        await wait_while(lambda: sup.sweep_going(sweep_id), timeout)
        await sup.flush()
        found = await db.call(store.sweeps, sweep_id)
        return _json(msgspec.structs.replace(found[0], going=sup.sweep_going(sweep_id)))

    async def wait_while(condition: Callable[[], bool], timeout: float) -> None:
        """Return when `condition` is false, re-checked on every event, or after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sub = Subscriber()
        daemon.bus.subscribers.add(sub)
        try:
            # The live view changes and publishes in one step: checked after subscribing, a
            # change is either seen here or arrives as an event.
            while condition() and (left := deadline - loop.time()) > 0:
                if daemon.stopping.is_set():
                    return  # the client asks again, of the next daemon
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 1.0)):
                        await sub.queue.get()
        finally:
            daemon.bus.subscribers.discard(sub)

    @routes.get(API + "/sweeps/{sweep}/best")
    async def best(request: web.Request) -> web.Response:
        sweep_id = request.match_info["sweep"]
        found = await db.call(store.sweeps, sweep_id)
        if not found:
            return _error(404, f"no sweep {sweep_id!r}")
        metric = found[0].metric or {}
        key = request.query.get("by") or metric.get("name")
        if not key:
            return _error(400, f"sweep {sweep_id} names no metric; say which with ?by=KEY")
        mode = request.query.get("mode") or metric.get("mode", "max")
        if mode not in ("min", "max"):
            return _error(400, f"mode must be min or max, got {mode!r}")
        with_runs = request.query.get("runs", "0") != "0"
        same = key == metric.get("name")  # the sweep's own metric: its summary and bounds
        summary = request.query.get("summary") or (metric.get("summary") if same else None)
        summary = summary or "last"
        if summary not in ("last", "best"):
            return _error(400, f"summary must be last or best, got {summary!r}")
        results = await db.call(store.sweep_results, sweep_id, key, mode, with_runs, summary)
        bounds = bounds_of(key, metric.get("bounds") if same else None)
        counts = found[0].counts
        return _json(
            {
                "sweep": sweep_id,
                "metric": key,
                "mode": mode,
                "summary": summary,
                "bounds": bounds,
                "counts": counts,
                **with_statistics(results, mode, bounds),
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
            return _error(
                404 if not found else 400,
                f"no sweep {sweep_id!r}" if not found else "give ?out=DIR",
            )
        metric = found[0].metric or {}
        if not metric.get("name"):
            return _error(400, f"sweep {sweep_id} names no metric")
        mode = metric.get("mode", "max")
        summary = metric.get("summary", "last")
        configs = await db.call(store.sweep_results, sweep_id, metric["name"], mode, True, summary)
        if not configs:
            return _error(409, f"sweep {sweep_id}: no succeeded run reported {metric['name']}")
        bounds = bounds_of(metric["name"], metric.get("bounds"))
        best = {
            "sweep": sweep_id,
            "metric": metric["name"],
            "mode": mode,
            "summary": summary,
            **with_statistics(configs, mode, bounds),
        }
        curves = {
            run_id: await db.call(store.metrics, run_id, metric["name"])
            for c in configs
            for run_id in c["runs"]
        }
        predictions = {}
        for c in configs:
            run = await db.call(store.get_run, c["best_run"])
            for folder in (
                Path(run.run_dir or "/nonexistent"),
                daemon.config.state_dir / "runs" / str(run.id),
            ):
                if (folder / "artifacts" / "predictions.npz").exists():
                    predictions[run.id] = folder / "artifacts" / "predictions.npz"
                    break
        plots = request.query.get("plots", "1") != "0"
        made = await asyncio.to_thread(
            write_report_files, Path(out), best, curves, predictions, plots
        )
        return _json({"out": out, "files": made})

    @routes.post(f"{API}/sql")
    async def sql(request: web.Request) -> web.Response:
        """Read-only SQL over the documented views; anything else is refused."""
        try:
            body = msgspec.json.decode(await request.read(), type=dict[str, str])
            columns, rows = await db.call(store.read_only_query, body["sql"])
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
            return _error(400, f"bad request: {exc}")
        except StoreError as exc:
            return _error(400, str(exc))
        return _json({"columns": columns, "rows": rows})

    @routes.post(API + "/runs/{ref}/reproduce")
    async def reproduce(request: web.Request) -> web.Response:
        run = await find(request)
        body = await request.json() if request.can_read_body else {}
        try:
            return _json(await sup.reproduce(run, body.get("secrets")), 201)
        except Refused as exc:
            return _error(400, str(exc))

    @routes.get(f"{API}/queue")
    async def queue(_: web.Request) -> web.Response:
        """Queued runs, in the order the planner takes them, each with where it would start now
        and why, or why it waits."""
        why = sup.explain()
        runs = sorted((sup.runs[i] for i in sup.queue), key=lambda r: (-r.priority, r.id))
        return _json(QueueView(entries=[QueueEntry(run=r, reason=why.get(r.id, "")) for r in runs]))

    @routes.post(API + "/runs/{ref}/priority")
    async def priority(request: web.Request) -> web.Response:
        run = await find(request)
        try:
            value = int((await request.json())["priority"])
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f'bad request: expected {{"priority": N}} ({exc})')
        return await _queue_change(run, f"priority set to {value}", priority=value)

    @routes.post(API + "/runs/{ref}/hold")
    async def hold(request: web.Request) -> web.Response:
        return await _queue_change(await find(request), "held by user", held=True)

    @routes.post(API + "/runs/{ref}/release")
    async def release(request: web.Request) -> web.Response:
        return await _queue_change(await find(request), "released by user", held=False)

    async def _queue_change(run, reason: str, **fields) -> web.Response:  # type: ignore[no-untyped-def]
        try:
            return _json(await sup.set_queue_fields(run, reason, **fields))
        except Refused as exc:
            return _error(409, str(exc))

    @routes.post(API + "/sweeps/{sweep}/cancel")
    async def cancel_sweep(request: web.Request) -> web.Response:
        try:
            runs = await sup.cancel_sweep(request.match_info["sweep"])
        except Refused as exc:
            return _error(404, str(exc))
        return _json(RunList(runs=runs))

    @routes.get(API + "/hosts/{name}/check")
    async def host_check(request: web.Request) -> web.Response:
        """Diagnose a host step by step: DNS, TCP, SSH, workdir, Python, setsid, GPU."""
        name = request.match_info["name"]
        executor = sup.hosts.executors.get(name)
        if executor is None:
            return _error(
                404, f"unknown host {name!r}; hosts.toml has {sorted(daemon.config.hosts)}"
            )
        steps = await executor.diagnose()
        return _json({"host": name, "steps": [list(step) for step in steps]})

    @routes.post(API + "/hosts/{name}/{action:enable|disable}")
    async def host_state(request: web.Request) -> web.Response:
        name, enable = request.match_info["name"], request.match_info["action"] == "enable"
        reason = request.query.get("reason") or "disabled by user"
        try:
            sup.set_host_state(name, enable, reason)
        except Refused as exc:
            return _error(409, str(exc))
        state, why = sup.hosts.state[name]
        await db.call(store.upsert_hosts, [sup.hosts.record(name)])
        return _json({"host": name, "state": state, "reason": why})

    @routes.get(f"{API}/util")
    async def util(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "3600"))
            buckets = int(request.query.get("buckets", "12"))
        except ValueError as exc:
            return _error(400, f"bad query: {exc}")
        await daemon.flush_samples()
        return _json(await db.call(store.utilisation, since, max(1, min(buckets, 120))))

    @routes.post(f"{API}/shutdown")
    async def shutdown(_: web.Request) -> web.Response:
        daemon.stopping.set()
        return _json({"stopping": True})

    @routes.get(f"{API}/events")
    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        request.app[STREAMS].add(ws)
        sub = Subscriber()
        daemon.bus.subscribers.add(sub)
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
            daemon.bus.subscribers.discard(sub)
            request.app[STREAMS].discard(ws)
        return ws

    @web.middleware
    async def consistent(request: web.Request, handler):  # type: ignore[no-untyped-def]
        """Every request but the event stream first lets the store catch up with the daemon."""
        if request.path != f"{API}/events":
            await sup.flush()
        return await handler(request)

    async def close_streams(app: web.Application) -> None:
        """On shutdown, end every event stream (clients reconnect to the next daemon), so
        nothing holds the daemon's stop."""
        for ws in list(app[STREAMS]):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon stopping")

    app = web.Application(client_max_size=64 * 2**20, middlewares=[consistent])
    app[STREAMS] = set()
    app.on_shutdown.append(close_streams)
    app.add_routes(routes)
    return app
