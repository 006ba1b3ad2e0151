"""A Slurm cluster whose login node the daemon runs on: the Slurm executor over this
machine's shell and files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from engine.executors.base import Launch
from engine.executors.local import WRAPPER, LocalExecutor
from engine.executors.slurm import COMMAND_TIMEOUT_S, SlurmControl
from engine.model import HostSample, HostSpec


class SlurmHere(SlurmControl, LocalExecutor):
    """A cluster whose login node the daemon runs on: commands run here, files are read here
    (the workdir is on the shared file system, as the nodes see it)."""

    def __init__(
        self,
        host: HostSpec,
        workdir: Path,
        state_dir: Path,
        on_sample: Callable[[HostSample], None],
    ) -> None:
        LocalExecutor.__init__(self, host, workdir)
        self._init_slurm(state_dir, on_sample)

    def connect(self) -> None:
        self._start_polling()

    async def close(self) -> None:
        await self._stop_polling()

    async def _shell(
        self, script: str, timeout: float | None = COMMAND_TIMEOUT_S, stdin: str | None = None
    ) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate((stdin or "").encode())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise OSError(f"{self.host.name}: a Slurm command took over {timeout:g}s") from None
        return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def _put_text(self, path: str, text: str) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.part")
        partial.write_text(text)
        partial.replace(target)

    async def _tools(self) -> str:
        tools = self.workdir / ".runyard"
        wrapper = tools / WRAPPER.name
        if not wrapper.exists() or wrapper.read_bytes() != WRAPPER.read_bytes():
            await self._put_text(str(wrapper), WRAPPER.read_text())
        return str(tools)

    async def _snapshot_path(self, snapshot: str) -> str:
        """The snapshot copied under the workdir once per content hash: the nodes may not see
        the daemon's state directory."""
        source = Path(snapshot)
        target = self.workdir / "snapshots" / source.name
        if not (target / ".complete").exists():
            partial = target.with_name(f"{source.name}.part-{os.getpid()}")
            await asyncio.to_thread(
                shutil.copytree, source, partial, symlinks=True, dirs_exist_ok=True
            )
            (partial / ".complete").write_text(source.name)
            with contextlib.suppress(OSError):
                partial.rename(target)
            if partial.exists():
                await asyncio.to_thread(shutil.rmtree, partial, True)
        return str(target)

    async def _data_path(self, launch: Launch) -> list[tuple[str, str]]:
        return [(link.source, link.place) for link in launch.data]
