"""No other local user can pose as the daemon: a socket folder or socket another user made
first is refused before a byte is sent, and so is a peer of another uid (SO_PEERCRED)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.client import connect, probe
from engine.errors import DaemonError
from engine.paths import socket_path

from .conftest import HOSTS, Project, wait_until

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a second user")

# Another user's server: listens on a Unix socket and counts the bytes it is sent.
SQUATTER = """
import os, socket, sys
path, count = sys.argv[1], sys.argv[2]
if not os.path.isdir(os.path.dirname(path)):
    os.mkdir(os.path.dirname(path))
    os.chmod(os.path.dirname(path), 0o777)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chmod(path, 0o777)
server.listen()
open(count, "w").write("0")
got = 0
while True:
    conn, _ = server.accept()
    while data := conn.recv(65536):
        got += len(data)
        open(count, "w").write(str(got))
    conn.close()
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may write in, like /tmp."""
    folder = Path(tempfile.mkdtemp(prefix="ry-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def squat(path: Path, count: Path) -> subprocess.Popen[bytes]:
    """Start the other user's server on `path`; it is listening when this returns."""
    proc = subprocess.Popen(
        ["/usr/bin/python3", "-c", SQUATTER, str(path), str(count)],
        user=NOBODY,
        group=NOBODY,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not (path.exists() and count.exists()):
        assert proc.poll() is None, "the other user's server did not start"
        assert time.monotonic() < deadline, "the other user's server is not listening"
        time.sleep(0.01)  # polling the condition above
    return proc


async def test_a_folder_another_user_made_for_long_path_sockets_is_refused(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state dir's path is too long for a socket, so the socket goes to a per-user folder
    in the temp dir; another user made that folder first and listens in it."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    project = Project(Path(tempfile.mkdtemp(prefix="ry-")), HOSTS.format(max_jobs=1))
    deep = "d" * 60 + "/" + "e" * 60
    project.config_path.write_text(HOSTS.format(max_jobs=1).replace('"runs"', f'"{deep}"'))
    where = shared / f"runyard-{os.getuid()}"
    count = shared / "received"
    digest_sock = where / "placeholder.sock"
    proc = squat(digest_sock, count)
    try:
        with pytest.raises(
            DaemonError, match=r"not a private folder of yours \(owned by uid 65534"
        ):
            socket_path(project.config.state_dir)
        with pytest.raises(DaemonError, match="refusing to use it"):
            await connect(project.config)
        assert count.read_text() == "0"
        assert not (project.folder / deep).exists() or not any((project.folder / deep).iterdir())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(project.folder, ignore_errors=True)


async def test_a_socket_served_by_another_user_gets_nothing(shared: Path) -> None:
    """Another user's server on the very socket path (a state dir others can write in): the
    client sees a socket of another owner, or a peer of another uid, and sends nothing."""
    (shared / "project").mkdir()
    project = Project(shared / "project", HOSTS.format(max_jobs=1))
    runs = project.state_dir
    runs.mkdir(mode=0o777)
    runs.chmod(0o777)
    sock, count = socket_path(project.config.state_dir), shared / "received"
    assert sock.parent == runs
    proc = squat(sock, count)
    try:
        with pytest.raises(DaemonError, match=r"belongs to uid 65534, not to you"):
            await probe(sock)
        os.chown(sock, os.getuid(), os.getgid())  # a socket file of ours, but not our server
        with pytest.raises(DaemonError, match=r"is served by uid 65534, not by you"):
            await probe(sock)
        with pytest.raises(DaemonError, match=r"is served by uid 65534"):
            await connect(project.config, start=False)
        await wait_until(lambda: count.exists(), what="the count")
        assert count.read_text() == "0", "bytes reached the other user's server"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_stop_says_when_the_daemon_does_not_stop(project: Project) -> None:
    """A daemon that neither answers nor ends on SIGTERM (here: stopped by SIGSTOP) is not
    reported stopped; once it can run again the SIGTERM it was sent ends it."""
    proc = await project.start_daemon()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        stopped = project.engine("stop")
        assert stopped.returncode == 1, stopped.stderr
        assert f"daemon {proc.pid} does not answer; sending it SIGTERM" in stopped.stderr
        assert f"daemon {proc.pid} did not stop within 10s" in stopped.stderr
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=30) == 0  # the SIGTERM, delivered: a clean stop
    assert await probe(project.socket) is None
