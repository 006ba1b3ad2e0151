"""The one client of the engine daemon, used by the CLI, the TUI and users' scripts.

async with await connect() as engine:          # finds hosts.toml, starts the daemon if needed
    [run] = await engine.submit([JobSpec(argv=("python", "train.py"), cwd=os.getcwd())])
    run = await engine.wait(run.id)
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from engine.config import Config, ConfigError, find_config, load_config
from engine.errors import DaemonError, DaemonGone, EngineError
from engine.model import JobSpec, Run, RunStatus, Sweep
from engine.paths import lock_holder, pid_alive, prepare_state_dir, socket_path
from engine.protocol import (
    API,
    ENCODER,
    PROTOCOL_VERSION,
    DaemonStatus,
    ErrorBody,
    Event,
    HostList,
    QueueView,
    RunDetail,
    RunList,
    RunPage,
    SmokeReport,
    SmokeRun,
    SubmitRequest,
    Subscribe,
    SweepList,
    SweepPlan,
    SweepRequest,
)
from engine.repro import secrets_of

# The longest wait for a daemon whose process lives but does not answer yet (a large
# hosts.toml or a long reconcile); one that exits is reported at once.
START_TIMEOUT_S = 300.0

__all__ = [
    "Client",
    "ConfigError",
    "DaemonError",
    "DaemonGone",
    "EngineError",
    "connect",
    "load_project",
    "probe",
]


def load_project(config: str | os.PathLike[str] | None = None) -> Config:
    """This project's configuration, found as git finds .git (raises ConfigError)."""
    return load_config(find_config(config))


class OwnDaemonConnector(aiohttp.UnixConnector):
    """Connects only to a daemon of this user: the peer's uid (SO_PEERCRED, where the system
    has it) is checked before a byte is sent, since a request carries the caller's
    environment and with it their tokens."""

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        proto = await super()._create_connection(*args, **kwargs)
        transport = proto.transport
        peer = _peer_uid(transport.get_extra_info("socket")) if transport else None
        if peer is not None and peer != os.getuid():
            transport.close()
            raise DaemonError(
                f"{self._path} is served by uid {peer}, not by you (uid {os.getuid()}); "
                "refusing to send anything to it"
            )
        return proto


def _peer_uid(sock: Any) -> int | None:
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def check_socket_owner(sock: Path) -> None:
    """Refuse a socket file that another user made (DaemonError)."""
    try:
        owner = os.lstat(sock).st_uid
    except FileNotFoundError:
        return
    if owner != os.getuid():
        raise DaemonError(
            f"{sock} belongs to uid {owner}, not to you (uid {os.getuid()}): another user may "
            "have made it to receive what clients send; refusing to use it"
        )


class Client:
    """Talks HTTP+JSON to the daemon over its Unix socket."""

    def __init__(self, sock: Path, config: Config | None = None) -> None:
        self.socket = sock
        self.config = config
        self._session = aiohttp.ClientSession(
            connector=OwnDaemonConnector(path=str(sock)),
            base_url="http://runyard",
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._logs: list[int] = []  # the runs whose log lines the event stream carries

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _send(self, method: str, path: str, **kwargs: Any) -> tuple[bytes, Any]:
        """One request: the body and headers of a success; EngineError with the daemon's
        reason for a refusal; DaemonGone when the daemon does not answer, whatever broke."""
        if self._session.closed:
            raise DaemonGone("this client is closed")
        try:
            async with self._session.request(method, API + path, **kwargs) as response:
                body = await response.read()
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise DaemonGone(f"the daemon did not answer: {exc or type(exc).__name__}") from exc
        if response.status >= 400:
            try:
                message = msgspec.json.decode(body, type=ErrorBody).error
            except (msgspec.DecodeError, msgspec.ValidationError):
                message = body.decode(errors="replace") or response.reason or "error"
            raise EngineError(message, response.status)
        return body, response.headers

    async def _request(self, method: str, path: str, kind: Any = None, **kwargs: Any) -> Any:
        body, _ = await self._send(method, path, **kwargs)
        return (
            msgspec.json.decode(body, type=kind) if kind is not None else msgspec.json.decode(body)
        )

    async def status(self) -> DaemonStatus:
        return await self._request("GET", "/status", DaemonStatus)

    async def submit(self, jobs: Sequence[JobSpec]) -> list[Run]:
        """Queue jobs; a job without an environment of its own gets this process's."""
        here = dict(os.environ)
        checked = list(jobs)
        if jobs and any(job.env is None for job in jobs):
            checked.append(msgspec.structs.replace(jobs[0], env=here))  # the shared one, once
        try:
            body = ENCODER.encode(SubmitRequest(jobs=list(jobs), env=here))
        except UnicodeEncodeError:
            body = b""  # some text is not UTF-8: the job and place are found below
        for job in checked:  # what the daemon would refuse, said before anything is sent
            if problems := job.problems():
                field, what = problems[0]
                raise EngineError(f"job {field}: {what}", 400)
            if not body and (unsent := _not_utf8(job)):
                raise EngineError(f"job {unsent}: not valid UTF-8 text", 400)
        result = await self._request(
            "POST", "/runs", RunList, data=body, headers={"Content-Type": "application/json"}
        )
        return result.runs

    async def runs(
        self,
        statuses: Sequence[RunStatus | str] = (),
        limit: int | None = None,
        sweep: str | None = None,
    ) -> list[Run]:
        params: dict[str, str] = {"sweep": sweep} if sweep else {}
        if statuses:
            params["status"] = ",".join(str(s) for s in statuses)
        if limit is not None:
            params["limit"] = str(limit)
        return (await self._request("GET", "/runs", RunList, params=params)).runs

    async def run(self, ref: int | str) -> RunDetail:
        return await self._request("GET", f"/runs/{ref}", RunDetail)

    async def wait(self, ref: int | str, timeout: float | None = None) -> Run:
        """Wait until the run has ended and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 300.0 if deadline is None else max(0.0, deadline - time.monotonic())
            run = await self._request(
                "GET", f"/runs/{ref}/wait", Run, params={"timeout": str(min(left, 300.0))}
            )
            if run.status.terminal or (deadline is not None and time.monotonic() >= deadline):
                return run

    async def cancel(self, ref: int | str) -> Run:
        return await self._request("POST", f"/runs/{ref}/cancel", Run)

    async def retry(self, ref: int | str) -> Run:
        """Queue a failed or lost run again, as its next attempt."""
        return await self._request("POST", f"/runs/{ref}/retry", Run)

    async def metrics(
        self,
        ref: int | str,
        key: str | None = None,
        max_points: int | None = None,
        attempt: int | None = None,
    ) -> list[dict[str, Any]]:
        """A run's metric points in log order, of its final attempt unless `attempt` is given;
        with `max_points`, each key thinned to about that many (the extremes of each stretch
        kept), enough to draw it."""
        params = {"key": key} if key else {}
        if max_points is not None:
            params["max_points"] = str(max_points)
        if attempt is not None:
            params["attempt"] = str(attempt)
        return await self._request("GET", f"/runs/{ref}/metrics", params=params)

    async def log(
        self,
        ref: int | str,
        offset: int = 0,
        attempt: int | None = None,
        max_bytes: int | None = None,
    ) -> tuple[bytes, int, bool]:
        """Bytes of a run's output from `offset` (negative: that many from the end); returns the
        bytes, the offset to read on from, and whether the run has ended."""
        params = {"offset": str(offset)}
        if attempt is not None:
            params["attempt"] = str(attempt)
        if max_bytes is not None:
            params["max_bytes"] = str(max_bytes)
        body, headers = await self._send("GET", f"/runs/{ref}/log", params=params)
        return body, int(headers["X-Next-Offset"]), headers["X-Run-Ended"] == "1"

    async def sweep(
        self,
        file: str | os.PathLike[str],
        overrides: dict[str, str] | None = None,
        dry_run: bool = False,
        cwd: str | None = None,
        smoke: bool = False,
        wait_for_host: bool = False,
    ) -> SweepPlan:
        """Launch a sweep of an experiment file (or preview it with `dry_run`; with `smoke`,
        only its smoke test: see `smoke_test`). A trial no host could ever run refuses the
        sweep, unless `wait_for_host`."""
        request = SweepRequest(
            file=str(Path(file).resolve()),
            cwd=cwd or os.getcwd(),
            overrides=overrides or {},
            env=dict(os.environ),
            dry_run=dry_run,
            smoke=smoke,
            wait_for_host=wait_for_host,
        )
        return await self._request(
            "POST",
            "/sweeps",
            SweepPlan,
            data=ENCODER.encode(request),
            headers={"Content-Type": "application/json"},
        )

    async def smoke_test(
        self,
        file: str | os.PathLike[str],
        overrides: dict[str, str] | None = None,
        cwd: str | None = None,
        tail_bytes: int = 2000,
    ) -> SmokeReport:
        """Run an experiment's smoke test (one trial per model with its `[smoke]` values, on
        the host its trials would go to, then its evaluation steps), wait for it, and queue
        the full sweep only if every run succeeded and each trained one reported the
        experiment's metric."""
        smoke = await self.sweep(file, overrides, cwd=cwd, smoke=True)
        assert smoke.sweep is not None
        await self.wait_sweep(smoke.sweep)
        judged = []
        for run in sorted(await self.runs(sweep=smoke.sweep), key=lambda r: r.id):
            detail = await self.run(run.id)
            ended, reported = detail.run, {m["key"]: m for m in detail.details["metrics"]}
            where = f"on {ended.host}" if ended.host else "before it started"
            if ended.status is not RunStatus.SUCCEEDED:
                why = f"{ended.status.value} {where}: {ended.reason or 'no reason given'}"
            elif run.parent is None and smoke.metric is not None and smoke.metric not in reported:
                why = f"succeeded {where} but never reported {smoke.metric}"
            else:
                shown = smoke.metric if run.parent is None else next(iter(reported), None)
                value = f": {shown} = {reported[shown]['last']:.6g}" if shown else ""
                judged.append(SmokeRun(ended, True, f"succeeded {where}{value}"))
                continue
            text, _, _ = await self.log(run.id, offset=-tail_bytes)
            judged.append(SmokeRun(ended, False, why, text.decode("utf-8", "replace")))
        report = SmokeReport(smoke.sweep, judged)
        if not report.passed:
            return report
        full = await self.sweep(file, overrides, cwd=cwd)
        return msgspec.structs.replace(report, full=full)

    async def sweeps(self) -> list[Sweep]:
        return (await self._request("GET", "/sweeps", SweepList)).sweeps

    async def sweep_status(self, sweep: str) -> Sweep:
        return await self._request("GET", f"/sweeps/{sweep}", Sweep)

    async def runs_page(
        self,
        query: str = "",
        sort: str = "id",
        descending: bool = True,
        offset: int = 0,
        limit: int = 100,
    ) -> RunPage:
        """A window of the runs table, filtered and sorted by the daemon (see README: filters)."""
        params = {
            "q": query,
            "sort": sort,
            "desc": "1" if descending else "0",
            "offset": str(offset),
            "limit": str(limit),
        }
        return await self._request("GET", "/runs/page", RunPage, params=params)

    async def report(
        self, sweep: str, out: str | os.PathLike[str], plots: bool = True, pdf: bool = False
    ) -> dict[str, Any]:
        """Have the daemon write a sweep's report into `out` (exports only, without `plots`;
        with `pdf`, all of it in one report.pdf too); says which files it made."""
        params = {
            "out": str(Path(out).resolve()),
            "plots": "1" if plots else "0",
            "pdf": "1" if pdf else "0",
        }
        return await self._request("POST", f"/sweeps/{sweep}/report", params=params)

    async def sql(self, query: str) -> dict[str, Any]:
        """A read-only SELECT over the store's views: {"columns": [...], "rows": [[...]]}."""
        return await self._request("POST", "/sql", json={"sql": query})

    async def wait_sweep(self, sweep: str) -> Sweep:
        """Wait until every run of the sweep has ended and it has nothing left to sample."""
        while True:
            found = await self._request(
                "GET", f"/sweeps/{sweep}/wait", Sweep, params={"timeout": "300"}
            )
            if not found.going:
                return found

    async def best(
        self,
        sweep: str,
        by: str | None = None,
        mode: str | None = None,
        runs: bool = False,
        baseline: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A sweep's configurations, best first by its metric (mean over seeds, with spread, a
        95% interval, and a Welch t-test of the best against the runner-up); `runs` adds each
        configuration's runs, seeds and values. Each is compared with the sweep's baseline,
        or with `baseline`: the one configuration that has these params."""
        params = {k: v for k, v in (("by", by), ("mode", mode)) if v}
        if runs:
            params["runs"] = "1"
        if baseline:
            params["baseline"] = msgspec.json.encode(baseline).decode()
        return await self._request("GET", f"/sweeps/{sweep}/best", params=params)

    async def notify_test(self) -> dict[str, Any]:
        """Have the daemon send its notifier a sample event: the command, its exit code, the
        end of its stderr, how long it took, and the error if it failed or timed out."""
        return await self._request("POST", "/notify/test")

    async def aliases(self) -> list[dict[str, Any]]:
        """Every alias, by name: its run's id, name, status and folder, and its note."""
        return await self._request("GET", "/aliases")

    async def alias(self, name: str) -> dict[str, Any]:
        return await self._request("GET", f"/aliases/{name}")

    async def set_alias(
        self, name: str, run: int | str, note: str | None = None, force: bool = False
    ) -> dict[str, Any]:
        """Point alias `name` at a run (an id, `@another` or a name); a run that has not
        succeeded is refused unless `force`. Says where it pointed before."""
        body = {"run": str(run), "note": note, "force": force}
        return await self._request("PUT", f"/aliases/{name}", json=body)

    async def remove_alias(self, name: str) -> dict[str, Any]:
        return await self._request("DELETE", f"/aliases/{name}")

    async def alias_history(self, name: str) -> list[dict[str, Any]]:
        """Every move of an alias, oldest first (`to` None: removed)."""
        return await self._request("GET", f"/aliases/{name}/history")

    async def reproduce(self, ref: int | str) -> Run:
        """Queue a run again as it was; secrets (never stored in clear) come from this
        process's environment."""
        body = msgspec.json.encode({"secrets": secrets_of(os.environ)})
        return await self._request(
            "POST",
            f"/runs/{ref}/reproduce",
            Run,
            data=body,
            headers={"Content-Type": "application/json"},
        )

    async def queue(self, limit: int | None = None) -> QueueView:
        """Queued runs in planning order (the first `limit`), and how many are queued."""
        params = {} if limit is None else {"limit": str(limit)}
        return await self._request("GET", "/queue", QueueView, params=params)

    async def set_priority(self, ref: int | str, priority: int) -> Run:
        return await self._request(
            "POST", f"/runs/{ref}/priority", Run, json={"priority": priority}
        )

    async def hold(self, ref: int | str) -> Run:
        return await self._request("POST", f"/runs/{ref}/hold", Run)

    async def release(self, ref: int | str) -> Run:
        return await self._request("POST", f"/runs/{ref}/release", Run)

    async def cancel_sweep(self, sweep: str) -> list[Run]:
        return (await self._request("POST", f"/sweeps/{sweep}/cancel", RunList)).runs

    async def check_host(self, name: str) -> list[tuple[str, bool, str]]:
        """Diagnose a host step by step: each step's name, whether it passed, and what was seen."""
        found = await self._request("GET", f"/hosts/{name}/check")
        return [(step, ok, detail) for step, ok, detail in found["steps"]]

    async def set_host(self, name: str, enabled: bool, reason: str | None = None) -> dict[str, Any]:
        action = "enable" if enabled else "disable"
        params = {"reason": reason} if reason else {}
        return await self._request("POST", f"/hosts/{name}/{action}", params=params)

    async def util(self, since_s: float = 3600, buckets: int = 12) -> list[dict[str, Any]]:
        """Each host's and GPU's utilisation over the last `since_s` seconds, in buckets."""
        params = {"since": str(since_s), "buckets": str(buckets)}
        return await self._request("GET", "/util", params=params)

    async def hosts(self) -> HostList:
        return await self._request("GET", "/hosts", HostList)

    async def shutdown(self) -> None:
        await self._request("POST", "/shutdown")

    async def events(self, logs: Sequence[int] | None = None) -> AsyncIterator[list[Event]]:
        """The daemon's event stream, in batches; `logs` names runs whose log lines to include
        (else those follow_logs named). The first batch is empty: the daemon's word that the
        subscription is live, so state read after it misses no event. Raises DaemonGone when
        the daemon goes away."""
        if self._session.closed:
            raise DaemonGone("this client is closed")
        if logs is not None:
            self._logs = list(logs)
        try:
            async with self._session.ws_connect(f"{API}/events") as ws:
                self._ws = ws
                await ws.send_bytes(ENCODER.encode(Subscribe(logs=self._logs)))
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        yield msgspec.json.decode(msg.data, type=list[Event])
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
        except (aiohttp.ClientConnectionError, ConnectionResetError) as exc:
            raise DaemonGone(f"the daemon's event stream broke: {exc}") from exc
        finally:
            self._ws = None
        raise DaemonGone("the daemon closed its event stream")

    async def follow_logs(self, run_ids: Sequence[int]) -> None:
        """Change which runs' log lines the event stream carries (from now, or from when it
        opens)."""
        self._logs = list(run_ids)
        if self._ws is not None and not self._ws.closed:
            try:
                await self._ws.send_bytes(ENCODER.encode(Subscribe(logs=self._logs)))
            except (aiohttp.ClientConnectionError, ConnectionResetError) as exc:
                raise DaemonGone(f"the daemon's event stream broke: {exc}") from exc


def _not_utf8(job: JobSpec) -> str | None:
    """The first of a job's argv words or environment entries that is not UTF-8 text (a
    file name or value read from bytes that are not); None when all are."""
    texts = [(f"argv[{i}]", w) for i, w in enumerate(job.argv)] + [("cwd", job.cwd)]
    texts += [
        (f"env.{k.encode(errors='replace').decode()}", k + v) for k, v in (job.env or {}).items()
    ]
    for place, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return place
    return None


async def probe(sock: Path) -> DaemonStatus | None:
    """The daemon's status if one answers on `sock`, else None (DaemonError for a socket of
    another user's)."""
    if not sock.exists():
        return None
    check_socket_owner(sock)
    client = Client(sock)
    try:
        async with asyncio.timeout(5):
            return await client.status()
    except (aiohttp.ClientError, OSError, TimeoutError, EngineError):
        return None
    finally:
        await client.close()


async def connect(
    config: str | os.PathLike[str] | Config | None = None, *, start: bool = True
) -> Client:
    """A client of the daemon for this project's hosts.toml, starting the daemon in the
    background when none answers (unless `start` is false)."""
    if not isinstance(config, Config):
        config = load_project(config)
    sock = socket_path(config.state_dir)
    status = await probe(sock)
    if status is None:
        if not start:
            raise DaemonError(f"no engine daemon serves {config.state_dir}")
        await _start_daemon(config, sock)
        status = await probe(sock)
        if status is None:
            raise DaemonError(f"the engine daemon for {config.state_dir} does not answer")
    if status.protocol != PROTOCOL_VERSION:
        raise DaemonError(
            f"the daemon (pid {status.pid}) speaks protocol {status.protocol}, this client "
            f"{PROTOCOL_VERSION}; stop it with `engine stop` and try again"
        )
    return Client(sock, config)


async def _start_daemon(config: Config, sock: Path) -> None:
    prepare_state_dir(config)
    log_path = config.state_dir / "daemon.log"
    with open(log_path, "ab") as log:
        start_at = log.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--config", str(config.path), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=config.project_dir,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    delay = 0.01
    why = "did not start"
    while True:
        if await probe(sock) is not None:
            return
        # Ours, or, when ours exited, the one that won the race to start and holds the lock.
        starting = proc.pid if proc.poll() is None else lock_holder(config.state_dir)
        if starting is None or not pid_alive(starting):
            if await probe(sock) is not None:
                return
            break
        if time.monotonic() > deadline:
            why = f"(pid {starting}) did not answer within {START_TIMEOUT_S:g}s"
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
    with open(log_path, "rb") as log:
        log.seek(start_at)
        tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
    detail = "\n  ".join(tail) or "(nothing in its log)"
    raise DaemonError(f"the engine daemon {why}; {log_path} says:\n  {detail}")
