"""Real OpenSSH test hosts on loopback addresses (../shared/ssh-test-hosts.md): one sshd per
host, each on its own 127.0.0.x address and a free port, with host-key checking on."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

SSHD = "/usr/sbin/sshd"


def require_sshd() -> None:
    """Skip where no sshd is installed, except under CI, where that is a failure."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {SSHD} and ssh-keygen (.ci/run installs openssh-server)")
        pytest.skip(f"no {SSHD}: install openssh-server to run the SSH host tests")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    path.chmod(0o600)
    return path


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class SshHost:
    """One sshd on `address`, accepting `client_key`; known to `known_hosts`."""

    def __init__(self, folder: Path, address: str, client_key: Path) -> None:
        self.folder = folder
        self.address = address
        folder.mkdir(parents=True)
        self.hostkey = keygen(folder / "hostkey")
        self.port = free_port(address)
        authorized = folder / "authorized_keys"
        authorized.write_text(client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        self.pidfile = folder / "sshd.pid"
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress {address}\nHostKey {self.hostkey}\n"
            f"PidFile {self.pidfile}\nAuthorizedKeysFile {authorized}\n"
            "AuthenticationMethods publickey\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
            "StrictModes no\nSubsystem sftp internal-sftp\n"
        )
        key = " ".join(self.hostkey.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts_line = f"[{address}]:{self.port} {key}\n"
        self.workdir = folder / "work"
        self.start()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        subprocess.run(
            [SSHD, "-f", str(self.config), "-E", str(self.folder / "sshd.log")], check=True
        )
        deadline = time.monotonic() + 10
        while not (self.pidfile.exists() and self.pidfile.read_text().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd on {self.address} did not start")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def sessions(self) -> list[psutil.Process]:
        """The per-connection sshd children of the listener."""
        with contextlib.suppress(psutil.Error, FileNotFoundError, ValueError):
            return psutil.Process(self.pid).children()
        return []

    def hang(self) -> list[psutil.Process]:
        """Freeze every open connection (the link hangs; the listener still answers)."""
        stopped = self.sessions()
        for child in stopped:
            child.send_signal(signal.SIGSTOP)
        return stopped

    def kill(self) -> None:
        """The host goes away: the listener and every connection die, and are gone (or
        zombies) on return, so none writes its log after the test has moved on."""
        listener = None
        with contextlib.suppress(psutil.Error, FileNotFoundError, ValueError):
            listener = psutil.Process(self.pid)
            listener.suspend()  # no new connection between listing the sessions and the kill
        dying = [p for p in (listener, *self.sessions()) if p is not None]
        for process in dying:
            with contextlib.suppress(psutil.Error):
                process.kill()
        deadline = time.monotonic() + 10
        while any(_running(p) for p in dying) and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self.kill()

    def toml(self, name: str, client_key: Path, known_hosts: Path, **extra: object) -> str:
        fields = {
            "kind": "ssh",
            "address": self.address,
            "port": self.port,
            "user": getpass.getuser(),
            "identity": str(client_key),
            "known_hosts": str(known_hosts),
            "workdir": str(self.workdir),
            "keepalive_s": 0.5,
            "max_jobs": 2,
            **extra,
        }
        body = "\n".join(f"{k} = {_toml(v)}" for k, v in fields.items())
        return f"[hosts.{name}]\n{body}\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class SshLab:
    """Several SSH hosts sharing one client key and one known_hosts file."""

    def __init__(self, folder: Path, count: int) -> None:
        require_sshd()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.client_key = keygen(folder / "client")
        self.known_hosts = folder / "known_hosts"
        self.hosts = [
            SshHost(folder / f"host{i}", f"127.0.0.{i + 2}", self.client_key) for i in range(count)
        ]
        self.known_hosts.write_text("".join(h.known_hosts_line for h in self.hosts))

    def toml(self, index: int, name: str, **extra: object) -> str:
        return self.hosts[index].toml(name, self.client_key, self.known_hosts, **extra)

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
