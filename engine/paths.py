"""Where a project and its daemon live: the project's config file name, its state directory
(private), the lock that makes one daemon its only one, and its Unix socket (in the state
directory, or in a folder only this user can enter). Shared by the daemon and its clients, so it imports nothing heavy."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import DaemonError

if TYPE_CHECKING:
    from engine.config import Config

CONFIG_NAME = "hosts.toml"  # a project's hosts and engine settings, found as git finds .git
CONFIG_ENV = "RUNYARD_CONFIG"  # names the file instead

SOCKET_NAME = "engine.sock"
LOCK_NAME = "daemon.lock"
MAX_SOCKET_PATH = 100  # sun_path is 104-108 bytes; leave room


def socket_path(state_dir: Path) -> Path:
    """The daemon's socket: in the state directory, or, where that path is too long for a Unix
    socket, in a folder only this user can enter (see `private_folder`), under a name hashed
    from the state directory."""
    path = state_dir / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    return private_folder() / f"{digest}.sock"


def private_folder() -> Path:
    """A folder for this user's sockets that no other user can enter or have made first:
    `$XDG_RUNTIME_DIR` where it is this user's and private, else `runyard-UID` in the temp
    dir, made 0700 and checked (owner, mode, not a link) before each use."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _private_to(Path(runtime), uid) is None:
        base = Path(runtime)
    else:
        base = Path(tempfile.gettempdir())
    folder = base / f"runyard-{uid}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    if (problem := _private_to(folder, uid)) is not None:
        raise DaemonError(
            f"{folder} is not a private folder of yours ({problem}): another user may have "
            "made it to receive what clients send; refusing to use it. Remove it, or give "
            "`engine.state_dir` a shorter path"
        )
    return folder


def _private_to(folder: Path, uid: int) -> str | None:
    """Why `folder` is not a real folder owned by `uid` that no one else can enter, or None."""
    try:
        found = os.lstat(folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        return "not a folder"
    if found.st_uid != uid:
        return f"owned by uid {found.st_uid}"
    if found.st_mode & 0o077:
        return f"mode {stat.S_IMODE(found.st_mode):o}"
    return None


def prepare_state_dir(config: Config) -> None:
    """Make the state directory, private (0700); a ConfigError naming the setting where it
    cannot be made."""
    from engine.config import setting_error  # (config imports this module)

    state_dir = config.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as exc:
        raise setting_error(
            config.path, "engine.state_dir", f"cannot make {state_dir}: {exc.strerror or exc}"
        ) from None


class StateLock:
    """An exclusive lock on the state directory, held for the daemon's life; it holds the pid."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise DaemonError(
                f"another engine daemon (pid {other}) already serves {state_dir}; "
                "stop it with `engine stop` or use it"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has exited; another user's process runs too)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except ProcessLookupError:
        return False
    except OSError:
        return True  # not ours to signal, or no /proc (macOS): the kill(0) above is the test


def lock_holder(state_dir: Path) -> int | None:
    """The pid of the daemon holding the state directory's lock (answering or not), or None."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
