"""The SSH executor: runs attempts on a machine reached over plain SSH (asyncssh), through the
same detached sh wrapper as local runs, reading their files back over SFTP.

One pooled connection per host, kept alive with keepalives and reconnected with backoff. While
it is down every call raises `HostUnreachable`; the supervisor marks the host's runs
unreachable and re-checks them from their files when the link is back."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import asyncssh
import msgspec

from engine.config import data_place
from engine.executors import layout
from engine.executors.base import (
    Attempt,
    Executor,
    ExitInfo,
    HostUnreachable,
    Launch,
    ProcessState,
    wrapper_args,
)
from engine.executors.local import WRAPPER
from engine.executors.shells import CommandResult, Shells
from engine.model import DataLink, HostSample, HostSpec
from engine.workspace import content_digest

PROBE = Path(__file__).resolve().parent.parent / "probe.py"
CONNECT_TIMEOUT_S = 10.0
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # waits between reconnection tries
COMMANDS_AT_ONCE = 4  # short commands in flight on one connection
# What a remote run is given of the daemon's environment; the rest comes from the host's own
# login environment and the host's `setup`.
PASSED_ENV = ("RUNYARD_", "CUDA_VISIBLE_DEVICES", "PYTHONUNBUFFERED")


class HostLink:
    """One SSH host's connection: opened and kept open in the background, with its state (up,
    or unreachable since when and why) for the host panes and the scheduler."""

    def __init__(self, spec: HostSpec, on_change: Callable[[], None]) -> None:
        self.spec = spec
        self.on_change = on_change
        self.conn: asyncssh.SSHClientConnection | None = None
        self.sftp: asyncssh.SFTPClient | None = None
        self.home: str | None = None
        self.error: str | None = "not connected yet"
        self.since = time.time()
        self.tried = asyncio.Event()  # set after the first connection attempt, however it went
        self.up = asyncio.Event()
        self.lost = asyncio.Event()  # set when an open connection drops
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name=f"ssh-{self.spec.name}")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.conn:
            self.conn.close()

    async def connection(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        if self.conn is None or self.sftp is None:
            raise HostUnreachable(self.error or "not connected")
        return self.conn, self.sftp

    async def _keep_connected(self) -> None:
        failures = 0
        while True:
            try:
                await self._connect()
            except Exception as exc:
                self._down(describe(exc, self.spec))
                self.tried.set()
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            failures = 0
            self.tried.set()
            assert self.conn is not None
            await self.conn.wait_closed()
            self._down("connection lost (no keepalive answer)")

    async def _connect(self) -> None:
        conn = await open_connection(self.spec)
        try:
            sftp = await conn.start_sftp_client()
            home = await sftp.realpath(".")
        except BaseException:
            conn.close()
            raise
        self.conn, self.sftp, self.home = conn, sftp, home
        self.error, self.since = None, time.time()
        self.lost.clear()
        self.up.set()
        self.on_change()

    def _down(self, error: str) -> None:
        was_up = self.conn is not None
        if self.conn is not None:
            self.conn.close()
        self.conn = self.sftp = None
        if was_up or self.error != error:
            if was_up or self.error is None:
                self.since = time.time()
            self.error = error
            self.up.clear()
            self.lost.set()
            self.on_change()


async def open_connection(spec: HostSpec) -> asyncssh.SSHClientConnection:
    """Connect to an SSH host as `ssh` would (its ~/.ssh/config alias, keys and agent), with
    the host key checked against known_hosts, and keepalives so a hung link is noticed."""
    options: dict[str, Any] = {
        "known_hosts": os.path.expanduser(spec.known_hosts or "~/.ssh/known_hosts"),
        "keepalive_interval": spec.keepalive_s,
        "keepalive_count_max": 3,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    if spec.port is not None:
        options["port"] = spec.port
    if spec.user is not None:
        options["username"] = spec.user
    if spec.identity is not None:
        identity = os.path.expanduser(spec.identity)
        if not os.path.isfile(identity):
            raise FileNotFoundError(errno.ENOENT, f"identity file {identity} does not exist")
        options["client_keys"] = [identity]
        options["agent_path"] = None
    return await asyncssh.connect(spec.ssh_address or spec.name, **options)


async def diagnose(spec: HostSpec) -> list[tuple[str, bool, str]]:
    """Check an SSH host step by step, as (step, ok, what was found): name resolution, TCP,
    SSH (host key and authentication), workdir, Python, setsid, GPU. Stops at the first
    step the others depend on."""
    address, port = spec.ssh_address or spec.name, spec.port or 22
    steps: list[tuple[str, bool, str]] = []
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(address, port, type=socket.SOCK_STREAM)
        steps.append(("resolve", True, f"{address} → {found[0][4][0]}"))
    except OSError as exc:
        steps.append(
            (
                "resolve",
                False,
                f"{address}: {exc.strerror or exc} (an ~/.ssh/config alias is tried next)",
            )
        )
    try:
        async with asyncio.timeout(5.0):
            _, writer = await asyncio.open_connection(address, port)
        writer.close()
        steps.append(("tcp", True, f"port {port} open"))
    except (OSError, TimeoutError) as exc:
        steps.append(("tcp", False, describe(exc, spec)))
        if steps[0][1]:
            return steps
    try:
        conn = await open_connection(spec)
    except Exception as exc:
        steps.append(("ssh", False, describe(exc, spec)))
        return steps
    async with conn:
        steps.append(
            ("ssh", True, f"host key verified, logged in as {conn.get_extra_info('username')}")
        )
        workdir = spec.workdir or "~/runyard"
        quoted = workdir if workdir.startswith("~") and " " not in workdir else shlex.quote(workdir)
        checks = [
            ("workdir", f"mkdir -p {quoted} && test -w {quoted} && cd {quoted} && pwd", workdir),
            (
                "python",
                f"{shlex.quote(spec.python)} -c 'import sys; print(sys.version.split()[0])'",
                "",
            ),
            ("setsid", "command -v setsid", ""),
            ("gpu", "nvidia-smi -L", ""),
        ]
        for name, command, _ in checks:
            if spec.setup and name == "python":
                command = f"{spec.setup}\n{command}"
            result = await conn.run(command, check=False)
            out = _text(result.stdout).strip().replace("\n", "; ")
            ok = result.exit_status == 0
            if name == "gpu" and not ok:
                steps.append((name, True, "no NVIDIA GPU (nvidia-smi not found or failed)"))
                continue
            detail = out if ok else (_last(result.stderr) or f"exit status {result.exit_status}")
            steps.append((name, ok, detail))
    return steps


class SshExecutor(Executor):
    """Runs attempts under `workdir` on an SSH host. Code snapshots are uploaded there once
    per content hash; a run's artifacts are copied back to this machine when it ends."""

    def __init__(
        self,
        host: HostSpec,
        fetched: Path,
        on_change: Callable[[], None] = lambda: None,
        on_sample: Callable[[HostSample], None] = lambda _: None,
    ) -> None:
        super().__init__(host, Path(host.workdir or "~/runyard"))
        self.fetched = fetched  # the state directory: artifacts come back into its runs/
        self.link = HostLink(host, self._changed)
        self.on_change = on_change
        self.on_sample = on_sample
        self.note: str | None = None  # a problem that leaves the host usable (no Python)
        self._ready: asyncssh.SSHClientConnection | None = None  # connection prepared
        self._probe: asyncio.Task[None] | None = None
        # Short commands run in shells kept open; sshd allows 10 sessions at once on one
        # connection (MaxSessions), and the SFTP client, the probe and each run's wait hold one.
        self._shells = Shells(COMMANDS_AT_ONCE)

    # --- the link ----------------------------------------------------------------------------

    def connect(self) -> None:
        self.link.start()

    async def first_try(self) -> None:
        await self.link.tried.wait()

    async def until_up(self) -> None:
        await self.link.up.wait()

    async def diagnose(self) -> list[tuple[str, bool, str]]:
        return await diagnose(self.host)

    async def close(self) -> None:
        if self._probe:
            self._probe.cancel()
        await self.link.close()

    @property
    def state(self) -> tuple[str, str | None, float]:
        """("up" | "unreachable", the last error, since when)."""
        if self.link.conn is not None:
            return "up", self.note, self.link.since
        return "unreachable", self.link.error, self.link.since

    def _changed(self) -> None:
        """The link went up or down. Up: a fresh telemetry probe on the new connection, and no
        note left from the last one."""
        if self.link.conn is not None:
            if self._probe is not None and not self._probe.done():
                self._probe.cancel()  # it was reading the connection that dropped
            self.note = None
            self._probe = asyncio.create_task(self._run_probe(), name=f"probe-{self.host.name}")
        self.on_change()

    @property
    def remote_workdir(self) -> PurePosixPath:
        """The workdir as an absolute path on the host (`~` is the login's home)."""
        text = self.host.workdir or "~/runyard"
        if text.startswith("/"):
            return PurePosixPath(text)
        if self.link.home is None:
            raise HostUnreachable(self.link.error or "not connected yet")
        return PurePosixPath(self.link.home) / text.removeprefix("~").lstrip("/")

    @property
    def root(self) -> PurePosixPath:
        return self.remote_workdir

    async def _exec(
        self, command: str, timeout: float | None = 30.0, stdin: str | None = None
    ) -> CommandResult:
        """Run a command on the host (`stdin` its input: lines, each ended by a newline). A
        short one runs in one of the shells kept open; a wait that lasts a run's life
        (`timeout` None) in a session of its own."""
        conn, _ = await self.link.connection()
        try:
            if timeout is not None:
                result = await self._shells.run(conn, command, timeout, stdin)
            else:
                done = await conn.run(command, check=False, input=stdin, encoding=None)
                result = CommandResult(
                    done.exit_status, bytes(done.stdout or b""), bytes(done.stderr or b"")
                )
        except (asyncssh.Error, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise HostUnreachable(describe(exc, self.host)) from exc
        if result.exit_status is None:  # the channel closed under it: the link went down
            raise HostUnreachable(self.link.error or "connection lost during a command")
        return result

    async def _prepare(self) -> PurePosixPath:
        """Create the workdir and upload the wrapper and probe, once per connection."""
        conn, sftp = await self.link.connection()
        tools = self.remote_workdir / ".runyard"
        if self._ready is not conn:
            made = await self._exec(f"mkdir -p {shlex.quote(str(tools))}")
            if made.exit_status != 0:
                raise OSError(
                    f"cannot create workdir {self.remote_workdir} on {self.host.name}: "
                    f"{_text(made.stderr).strip() or 'mkdir failed'}"
                )
            for source in (WRAPPER, PROBE):
                await _upload_if_changed(sftp, source, tools / source.name)
            self._ready = conn
        return tools

    async def write_file(self, path: str, data: bytes) -> None:
        """Write a file on the host (its folder made if missing), whole or not at all."""
        _, sftp = await self.link.connection()
        target = PurePosixPath(path)
        try:
            await sftp.makedirs(str(target.parent), exist_ok=True)
            await _write_atomically(sftp, target, data)
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: BaseException) -> Exception:
        """What a failed remote call means: a file problem on a live link is an OSError (the
        operation failed); anything else is the link going down."""
        lost = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)
        if isinstance(exc, asyncssh.SFTPError) and not isinstance(exc, lost):
            return OSError(f"{self.host.name}: {exc.reason}")
        return HostUnreachable(describe(exc, self.host))

    # --- the executor interface --------------------------------------------------------------

    async def start(self, launch: Launch) -> Attempt:
        tools = await self._prepare()
        folder = PurePosixPath(launch.attempt_dir)
        snapshot = links = None
        if launch.snapshot is not None:
            local = Path(launch.snapshot)
            snapshot = await self._upload(local, "snapshots", local.name)
            links = [(await self._data_on_host(link), link.place) for link in launch.data]
        env = [
            f"{k}={v}" for k, v in launch.env.items() if k.startswith(PASSED_ENV) or k in PASSED_ENV
        ]
        command = list(launch.argv)
        if self.host.setup:  # the host's own set-up (e.g. `source venv/bin/activate`) runs
            # first, in the same bash (`source` is not POSIX sh)
            command = ["bash", "-c", f'{self.host.setup}\nexec "$@"', "bash", *command]
        args = wrapper_args(str(folder), launch.cwd, snapshot, links or ())
        wrapper = ["setsid", "-f", "sh", str(tools / WRAPPER.name), *args, "env", *env, *command]
        dirs = " ".join(
            shlex.quote(str(d))
            for d in (folder, *(folder.parent / name for name in layout.KEPT_ACROSS_ATTEMPTS))
        )
        # A run's folders are the user's alone (0700) and so is its output (0600): a log can
        # hold what a run prints of its environment. The command itself keeps the login's umask.
        script = (
            f"(umask 077 && mkdir -p {dirs} && : >> {shlex.quote(str(folder / layout.OUTPUT))}) && "
            f"cd {shlex.quote(str(folder))} && "
            f"{shlex.join(wrapper)} >/dev/null 2>&1 </dev/null; "
            "i=0; while [ ! -s pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; cat pid"
        )
        result = await self._exec(script)
        try:
            pid = int(_text(result.stdout).strip())
        except ValueError:
            raise OSError(
                f"could not start on {self.host.name}: "
                f"{_text(result.stderr).strip() or 'the wrapper wrote no pid'}"
            ) from None
        return Attempt(attempt_dir=str(folder), pid=pid, start_time=None)

    async def _data_on_host(self, link: DataLink) -> str:
        """Where a run's data is on this host: under a path the host maps its place to
        (`[hosts.X] data`), else this machine's copy, uploaded once per content hash."""
        for place, path in self.host.data.items():
            here = PurePosixPath(link.place)
            if here.is_relative_to(mapped := PurePosixPath(data_place(place))):
                rest = here.relative_to(mapped)
                return str(PurePosixPath(path) / rest) if rest.parts else path
        source = Path(link.source)
        digest = await asyncio.to_thread(content_digest, source)
        return await self._upload(source, "data", digest, source.name)

    async def _upload(self, source: Path, kind: str, digest: str, name: str | None = None) -> str:
        """This machine's `source` on the host as `workdir/KIND/DIGEST` (a folder's contents,
        or with `name` the file or folder itself inside it), uploaded unless a complete copy
        is there already: same digest, same content. Where it is on the host."""
        remote = self.remote_workdir / kind / digest
        _, sftp = await self.link.connection()
        try:
            if not await sftp.exists(str(remote / ".complete")):
                await sftp.makedirs(str(remote.parent), exist_ok=True)
                partial = remote.with_name(f"{digest}.part-{secrets.token_hex(4)}")
                if name is None:
                    await sftp.put(str(source), str(partial), recurse=True)
                else:
                    await sftp.makedirs(str(partial))
                    await sftp.put(str(source), str(partial / name), recurse=True)
                async with sftp.open(str(partial / ".complete"), "w") as f:
                    await f.write(digest)
                # Read-only like this machine's snapshot; a concurrent upload may have won the
                # rename, and either copy is the same.
                quoted, target = shlex.quote(str(partial)), shlex.quote(str(remote))
                await self._exec(
                    f"chmod -R a-w {quoted}; mv -T {quoted} {target} 2>/dev/null"
                    f" || {{ chmod -R u+w {quoted}; rm -rf {quoted}; }}"
                )
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc
        return str(remote / name) if name else str(remote)

    async def probe(self, attempt: Attempt) -> ProcessState:
        folder = shlex.quote(attempt.attempt_dir)
        result = await self._exec(
            f"{_pid(attempt)}; if [ -s {folder}/{layout.EXIT_CODE} ]; then echo exited;"
            ' elif [ -n "$p" ] && kill -0 -- "$p" 2>/dev/null; then echo running; else echo gone; fi'
        )
        return ProcessState(_text(result.stdout).strip() or "gone")

    async def wait(self, attempt: Attempt) -> ExitInfo:
        folder = shlex.quote(attempt.attempt_dir)
        # One channel that returns when the attempt ends: no polling round trips meanwhile.
        # It prints the exit code, then when the file was written.
        code = f"{folder}/{layout.EXIT_CODE}"
        result = await self._exec(
            f'{_pid(attempt)}; while [ ! -s {code} ] && [ -n "$p" ]'
            f' && kill -0 -- "$p" 2>/dev/null; do sleep 0.2; done; cat {code} 2>/dev/null;'
            f" echo; stat -c %.3Y {code} 2>/dev/null || stat -c %Y {code} 2>/dev/null",
            timeout=None,
        )
        text, _, written = _text(result.stdout).strip().partition("\n")
        exit_code = int(text) if text.lstrip("-").isdigit() else None
        try:
            ended_at: float | None = float(written.strip())
        except ValueError:
            ended_at = None
        return ExitInfo(exit_code, ended_at=ended_at)

    async def read_output(self, attempt: Attempt, offset: int, max_bytes: int) -> bytes:
        _, sftp = await self.link.connection()
        try:
            async with sftp.open(f"{attempt.attempt_dir}/{layout.OUTPUT}", "rb") as f:
                return await f.read(max_bytes, offset)
        except asyncssh.SFTPNoSuchFile:
            return b""
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc

    async def output_size(self, attempt: Attempt) -> int:
        _, sftp = await self.link.connection()
        try:
            return (await sftp.stat(f"{attempt.attempt_dir}/{layout.OUTPUT}")).size or 0
        except asyncssh.SFTPNoSuchFile:
            return 0
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc

    async def signal(self, attempt: Attempt, signum: int) -> bool:
        if not attempt.pid:
            return False
        result = await self._exec(f"kill -{int(signum)} -- -{attempt.pid} 2>/dev/null")
        return result.exit_status == 0

    async def reattach(self, attempt: Attempt) -> Attempt:
        """The attempt with the pid its wrapper wrote (for one whose start we did not see)."""
        _, sftp = await self.link.connection()
        try:
            async with sftp.open(f"{attempt.attempt_dir}/{layout.PID}", "r") as f:
                text = await f.read()
        except asyncssh.SFTPNoSuchFile:
            return attempt
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc
        text = _text(text).strip()
        return msgspec.structs.replace(attempt, pid=int(text)) if text.isdigit() else attempt

    async def attempt_exists(self, run_id: int, attempt: int) -> bool:
        _, sftp = await self.link.connection()
        try:
            return await sftp.isdir(self.attempt_dir(run_id, attempt))
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc

    async def existing_attempts(self, wanted: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        """One listing of the host's run folders first: only runs that have one are asked
        about their attempt (a queue of 10,000 never started costs one request, not 10,000)."""
        _, sftp = await self.link.connection()
        try:
            names = set(await sftp.listdir(layout.runs_dir(self.root)))
        except asyncssh.SFTPNoSuchFile:
            return set()
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc
        return await super().existing_attempts([w for w in wanted if str(w[0]) in names])

    async def fetch_artifacts(self, run_id: int) -> Path | None:
        """Copy a run's artifacts folder back to this machine; where it now is, or None."""
        _, sftp = await self.link.connection()
        remote = layout.artifact_dir(self.run_dir(run_id))
        target = Path(layout.run_dir(self.fetched, run_id))
        try:
            if not await sftp.isdir(remote) or not await sftp.listdir(remote):
                return None
            target.mkdir(parents=True, exist_ok=True)
            await sftp.get(remote, str(target), recurse=True, preserve=True)
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc) from exc
        return Path(layout.artifact_dir(str(target)))

    # --- telemetry ---------------------------------------------------------------------------

    async def _run_probe(self) -> None:
        """Run the uploaded probe with the host's Python for as long as the link is up, turning
        each JSON line it prints into a host sample."""
        conn = self.link.conn
        if conn is None:
            return
        note: str | None = None
        try:
            tools = await self._prepare()
            command = shlex.join([self.host.python, str(tools / PROBE.name), "2"])
            async with conn.create_process(command) as process:
                async for line in process.stdout:
                    with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                        sample = msgspec.json.decode(line, type=HostSample)
                        self.note = None
                        self.on_sample(msgspec.structs.replace(sample, host=self.host.name))
                errors = await process.stderr.read()
                status = (await process.wait()).exit_status  # stdout can end before the status
            if status == 127:
                note = f"no Python ({self.host.python}) on the host: no telemetry"
            elif status:
                note = f"telemetry probe exited {status}: {_last(errors)}"
        except (HostUnreachable, asyncssh.Error, OSError) as exc:
            note = f"telemetry probe: {exc}"
        if self.link.conn is conn:  # a probe ended by its link dropping is not the host's note
            self.note = note
            self.on_change()


async def _upload_if_changed(
    sftp: asyncssh.SFTPClient, source: Path, target: PurePosixPath
) -> None:
    data = source.read_bytes()
    with contextlib.suppress(asyncssh.SFTPNoSuchFile):
        async with sftp.open(str(target), "rb") as f:
            if hashlib.sha256(await f.read()).digest() == hashlib.sha256(data).digest():
                return
    await _write_atomically(sftp, target, data)


async def _write_atomically(sftp: asyncssh.SFTPClient, target: PurePosixPath, data: bytes) -> None:
    """`data` as the file `target`, whole or not at all (written aside, then renamed)."""
    partial = f"{target}.part-{secrets.token_hex(4)}"
    async with sftp.open(partial, "wb") as f:
        await f.write(data)
    await sftp.posix_rename(partial, str(target))


def _recorded_keys(spec: HostSpec) -> bool:
    """Whether known_hosts records a key for this host (so a key it rejects has changed)."""
    path = os.path.expanduser(spec.known_hosts or "~/.ssh/known_hosts")
    try:
        known = asyncssh.read_known_hosts(path)
        trusted, *_ = known.match(spec.ssh_address or spec.name, "", spec.port or 22)
    except (OSError, ValueError, asyncssh.Error):
        return False
    return bool(trusted)


def describe(exc: BaseException, spec: HostSpec) -> str:
    """One line saying why a host cannot be used, and what to do about it where we know."""
    where = f"{spec.ssh_address or spec.name}" + (f":{spec.port}" if spec.port else "")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        known = spec.known_hosts or "~/.ssh/known_hosts"
        port = f"-p {spec.port} " if spec.port else ""
        if _recorded_keys(spec):
            entry = f"[{spec.ssh_address}]:{spec.port}" if spec.port else spec.ssh_address
            return (
                f"WARNING: host key of {where} has CHANGED from the one {known} records: the "
                "host may have been reinstalled, or someone may be intercepting the connection. "
                "Do not accept it blindly: confirm the new fingerprint with the host's owner, "
                f"then remove the old one with `ssh-keygen -R '{entry}' -f {known}`"
            )
        return (
            f"host key of {where} is not trusted ({exc.reason}); check its fingerprint and accept "
            f"it with `ssh {port}{spec.ssh_address}` once (or add it to {known}); never trusted silently"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        key = f" with key {spec.identity}" if spec.identity else ""
        return f"authentication to {where} failed{key}: {exc.reason}"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{where} disconnected: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return f"{where}: timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return f"{where}: the connection closed during a command"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (is sshd running?)"
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def _last(data: str | bytes | None) -> str:
    lines = [line for line in _text(data).splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _pid(attempt: Attempt) -> str:
    """Shell that sets $p to the attempt's pid: the one we know, else its `pid` file."""
    if attempt.pid:
        return f"p={int(attempt.pid)}"
    return f"p=$(cat {shlex.quote(attempt.attempt_dir)}/{layout.PID} 2>/dev/null)"
