"""Executors start, watch, read and stop runs on one host, behind one interface; this package
alone knows which kind of executor a host gets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.config import Config
from engine.executors.base import (
    Attempt,
    Executor,
    ExitInfo,
    HostUnreachable,
    Launch,
    ProcessState,
)
from engine.executors.local import LocalExecutor
from engine.model import HostSample

__all__ = [
    "Attempt",
    "Executor",
    "ExitInfo",
    "HostUnreachable",
    "Launch",
    "LocalExecutor",
    "ProcessState",
    "executor_for",
]


def executor_for(
    config: Config,
    name: str,
    on_change: Callable[[], None],
    on_sample: Callable[[HostSample], None],
) -> Executor:
    """The executor of one host of `config`: this machine's runs under the host's workdir (by
    default the state directory); an SSH host's under its remote workdir, with their
    artifacts copied back into the state directory; a Slurm cluster's under its workdir on
    the shared file system. `on_change` hears of the host going up or
    down, `on_sample` gets the host's telemetry."""
    host = config.hosts[name]
    if host.kind == "slurm" and host.login is None:
        from engine.executors.slurm_here import SlurmHere

        workdir = Path(host.workdir or "~/runyard").expanduser()
        return SlurmHere(host, workdir, config.state_dir, on_sample)
    if host.kind == "slurm":
        from engine.executors.slurm_ssh import SlurmOverSsh  # asyncssh, where it is used

        return SlurmOverSsh(host, config.state_dir, on_change, on_sample)
    if host.kind == "local":
        workdir = Path(host.workdir).expanduser() if host.workdir else config.state_dir
        if not workdir.is_absolute():
            workdir = config.project_dir / workdir
        return LocalExecutor(host, workdir)
    from engine.executors.ssh import SshExecutor  # asyncssh, for daemons with SSH hosts

    return SshExecutor(host, fetched=config.state_dir, on_change=on_change, on_sample=on_sample)
