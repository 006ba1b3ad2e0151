"""Shells kept open on a real sshd (engine/executors/shells.py): every command gets exactly
its own output, errors, status and input, and the shells are reused, so a login's start-up
files are read once per shell, not once per command."""

from __future__ import annotations

import asyncio
import getpass
import shlex
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from engine.executors.shells import Shells

from .sshd import SshLab


@pytest.fixture
def lab(short_tmp: Path) -> Iterator[SshLab]:
    lab = SshLab(short_tmp / "lab", 1)
    yield lab
    lab.stop()


async def connect(lab: SshLab) -> asyncssh.SSHClientConnection:
    host = lab.hosts[0]
    return await asyncssh.connect(
        host.address,
        port=host.port,
        username=getpass.getuser(),
        client_keys=[str(lab.client_key)],
        known_hosts=str(lab.known_hosts),
    )


@pytest.fixture
async def conn(lab: SshLab) -> AsyncIterator[asyncssh.SSHClientConnection]:
    conn = await connect(lab)
    yield conn
    conn.close()


async def test_a_command_gets_exactly_its_output_errors_status_and_input(
    conn: asyncssh.SSHClientConnection,
) -> None:
    shells = Shells(2)
    hostile = 'it\'s $(echo no) `no` "quoted" \\ ;'
    result = await shells.run(
        conn, f"printf %s {shlex.quote(hostile)}; printf 'e\\n' >&2; exit 3", 10
    )
    assert result == (3, hostile.encode(), b"e\n")
    # Input lines as they are, even one that looks like the end of a here-document.
    lines = "a b\n'c'\n$HOME\n@@runyard-0\n\n"
    assert (await shells.run(conn, "cat", 10, lines)).stdout == lines.encode()
    assert (await shells.run(conn, "cat", 10, "")).stdout == b""
    assert (await shells.run(conn, "cat", 10)).stdout == b""  # no input: not the shell's
    # Megabytes on both streams at once: neither blocks the other.
    big = await shells.run(conn, "head -c 3000000 /dev/zero; head -c 2000000 /dev/zero >&2", 30)
    assert (len(big.stdout), len(big.stderr), big.exit_status) == (3_000_000, 2_000_000, 0)
    # A command's `exit`, `cd` and variables stay its own.
    await shells.run(conn, "cd /tmp; x=1; exit 0", 10)
    after = await shells.run(conn, 'pwd; echo "x=$x"', 10)
    assert after.stdout.decode().splitlines() == [str(Path.home()), "x="]
    with pytest.raises(ValueError, match="lines"):
        await shells.run(conn, "cat", 10, "no newline")


async def test_shells_are_kept_and_reused_up_to_their_number(
    conn: asyncssh.SSHClientConnection,
) -> None:
    shells = Shells(3)
    # `$$` in a subshell is its shell's pid: one shell for commands one after another.
    pids = {(await shells.run(conn, "echo $$", 10)).stdout for _ in range(5)}
    assert len(pids) == 1
    # Twelve at once wait their turn on at most three shells.
    many = await asyncio.gather(*(shells.run(conn, "sleep 0.2; echo $$", 10) for _ in range(12)))
    assert all(r.exit_status == 0 for r in many)
    assert 1 < len({r.stdout for r in many}) <= 3


async def test_a_command_past_its_timeout_takes_its_shell_with_it(
    conn: asyncssh.SSHClientConnection, lab: SshLab
) -> None:
    shells = Shells(1)
    first = (await shells.run(conn, "echo $$", 10)).stdout
    with pytest.raises(TimeoutError):
        await shells.run(conn, "sleep 5", 0.5)
    second = (await shells.run(conn, "echo $$", 10)).stdout
    assert second and second != first  # a fresh shell: the old one may still be sleeping
    # A new connection gets shells of its own.
    other = await connect(lab)
    try:
        third = (await shells.run(other, "echo $$", 10)).stdout
        assert third not in (first, second)
    finally:
        other.close()
