"""Short commands on an SSH host through a few shells kept open, one command at a time each.
Run as a session of its own, every command starts a login shell that reads the user's start-up
files first (pyenv, conda and module systems take a tenth of a second or more); a shell kept
open reads them once. Each command runs in a subshell of it, with its own input, and ends with
a line carrying a random token and its exit status, on stdout and on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shlex
from typing import NamedTuple

import asyncssh

# The kept shell is the login's own shell reading commands from its input (a shell session:
# what an interactive login reads first is read, and what it defines stays defined).
HELLO_TIMEOUT_S = 30.0


class CommandResult(NamedTuple):
    """What a command left: its exit status (None when the shell went away under it), its
    output and its errors."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes


class Shell:
    """One shell kept open on a connection."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection) -> Shell:
        """A shell session on `conn`, past whatever its start-up files print."""
        process = await conn.create_process(encoding=None)
        shell = cls(process)
        async with asyncio.timeout(HELLO_TIMEOUT_S):
            await shell.run(":", None)
        return shell

    async def run(self, command: str, stdin: str | None) -> CommandResult:
        """Run `command` (shell text) with `stdin` as its input (lines, each ended by a
        newline; none when None)."""
        token = f"@@runyard-{secrets.token_hex(8)}"
        if stdin is None:
            request = f"( eval {shlex.quote(command)} ) </dev/null\n"
        elif stdin and not stdin.endswith("\n"):
            raise ValueError("a command's input is lines, each ended by a newline")
        else:  # a here-document: its lines are read as they are
            request = f"( eval {shlex.quote(command)} ) <<'{token}'\n{stdin}{token}\n"
        request += f"printf '\\n{token}\\n%s\\n' \"$?\"; printf '\\n{token}\\n' >&2\n"
        self.process.stdin.write(request.encode())
        end = re.escape(f"\n{token}\n".encode())
        (out, status), (err, _) = await asyncio.gather(
            _until(self.process.stdout, re.compile(end + rb"(\d+)\n")),
            _until(self.process.stderr, re.compile(end)),
        )
        return CommandResult(int(status) if status else None, out, err)

    def close(self) -> None:
        self.process.close()


async def _until(stream: asyncssh.SSHReader[bytes], end: re.Pattern[bytes]) -> tuple[bytes, bytes]:
    """What `stream` gives before `end`, and `end`'s first group (if any). Nothing follows
    `end` until the next command is written, so nothing read is left over."""
    data = bytearray()
    while True:
        chunk = await stream.read(1 << 16)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(data), None)
        start = max(0, len(data) - 64)  # the end may straddle two reads
        data += chunk
        found = end.search(data, start)
        if found:
            return bytes(data[: found.start()]), found.group(1) if end.groups else b""


class Shells:
    """Up to `size` shells on one connection, each running one command at a time; a shell
    whose command failed or timed out is closed, not reused."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.conn: asyncssh.SSHClientConnection | None = None
        self.idle: list[Shell] = []
        self.opened = 0
        self.freed = asyncio.Condition()

    async def run(
        self,
        conn: asyncssh.SSHClientConnection,
        command: str,
        timeout: float,
        stdin: str | None = None,
    ) -> CommandResult:
        """Run `command` in a kept shell on `conn` within `timeout` seconds (TimeoutError
        past it); asyncssh's and the stream's errors pass through."""
        async with asyncio.timeout(timeout):
            shell = await self._take(conn)
        good = False
        try:
            async with asyncio.timeout(timeout):
                result = await shell.run(command, stdin)
            good = result.exit_status is not None
            return result
        finally:
            await self._give_back(shell, conn, good)

    async def _take(self, conn: asyncssh.SSHClientConnection) -> Shell:
        async with self.freed:
            if conn is not self.conn:  # a new connection: the old one's shells went with it
                self.conn, self.idle, self.opened = conn, [], 0
            while not self.idle and self.opened >= self.size:
                await self.freed.wait()
                if conn is not self.conn:
                    raise asyncssh.ConnectionLost("the connection was replaced")
            if self.idle:
                return self.idle.pop()
            self.opened += 1
        try:
            return await Shell.open(conn)
        except BaseException:
            async with self.freed:
                if conn is self.conn:
                    self.opened -= 1
                self.freed.notify()
            raise

    async def _give_back(
        self, shell: Shell, conn: asyncssh.SSHClientConnection, good: bool
    ) -> None:
        async with self.freed:
            if conn is self.conn:
                if good:
                    self.idle.append(shell)
                else:
                    self.opened -= 1
            self.freed.notify()
        if not good or conn is not self.conn:
            with contextlib.suppress(Exception):
                shell.close()
