"""A Slurm cluster reached over SSH to its login node: the Slurm executor over the SSH
executor's link, SFTP reads and uploads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.executors.base import Launch
from engine.executors.slurm import COMMAND_TIMEOUT_S, SlurmControl
from engine.executors.ssh import SshExecutor, _text, diagnose
from engine.model import HostSample, HostSpec

LOGIN_STEPS = ("resolve", "tcp", "ssh")  # of an SSH host's check: the login node's own


class SlurmOverSsh(SlurmControl, SshExecutor):
    """Commands run on the login node, files are read over SFTP, code snapshots and data are
    uploaded to the shared file system once per content hash."""

    def __init__(
        self,
        host: HostSpec,
        state_dir: Path,
        on_change: Callable[[], None],
        on_sample: Callable[[HostSample], None],
    ) -> None:
        SshExecutor.__init__(self, host, fetched=state_dir, on_change=on_change)
        self._init_slurm(state_dir, on_sample)

    def connect(self) -> None:
        SshExecutor.connect(self)
        self._start_polling()

    async def close(self) -> None:
        await self._stop_polling()
        await SshExecutor.close(self)

    def _changed(self) -> None:
        self.on_change()  # no telemetry probe on a login node: the poller samples the partition

    async def diagnose(self) -> list[tuple[str, bool, str]]:
        """The login node as for an SSH host (name, TCP, SSH with its host key), then Slurm's
        steps there."""
        steps = [step for step in await diagnose(self.host) if step[0] in LOGIN_STEPS]
        if not any(name == "ssh" and ok for name, ok, _ in steps):
            return steps  # (a name that does not resolve may still be an ssh alias)
        return steps + await SlurmControl.diagnose(self)

    async def _shell(
        self, script: str, timeout: float | None = COMMAND_TIMEOUT_S, stdin: str | None = None
    ) -> tuple[int, str, str]:
        result = await self._exec(script, timeout, stdin)
        return result.exit_status or 0, _text(result.stdout), _text(result.stderr)

    async def _put_text(self, path: str, text: str) -> None:
        await self.write_file(path, text.encode())

    async def _tools(self) -> str:
        return str(await self._prepare())

    async def _snapshot_path(self, snapshot: str) -> str:
        local = Path(snapshot)
        return await self._upload(local, "snapshots", local.name)

    async def _data_path(self, launch: Launch) -> list[tuple[str, str]]:
        return [(await self._data_on_host(link), link.place) for link in launch.data]
