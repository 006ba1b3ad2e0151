"""The NVML paths on a real NVIDIA GPU: the daemon samples it, packs a PyTorch job onto it, shows
who holds it in the host pane, and classes CUDA running out of memory as `oom`. Skipped where
NVML finds no GPU (CI has none); run on a GPU machine with `pytest tests/test_gpu.py`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from engine.client import Client
from engine.model import Resources, RetryPolicy, RunStatus
from engine.telemetry import Nvml
from tui.app import RunyardApp
from tui.widgets import HostPane

from .conftest import Project, wait_until
from .test_daemon import job

ROOT = Path(__file__).resolve().parent.parent
GPUS = Nvml().read()
pytestmark = pytest.mark.skipif(not GPUS, reason="NVML finds no NVIDIA GPU here")

# Holds 3 GiB and multiplies matrices until told to stop by a file, printing a metric as it goes.
BUSY = """
import os, pathlib, sys, torch
held = torch.empty(3 * 2**30, dtype=torch.uint8, device="cuda")
a = torch.randn(4096, 4096, device="cuda")
step = 0
while not pathlib.Path(sys.argv[1]).exists():
    for _ in range(20):
        a = torch.tanh(a @ a)
    torch.cuda.synchronize()
    step += 1
    print(f'@runyard {{"step": {step}, "norm": {float(a.norm()):.4f}}}', flush=True)
print("CUDA_VISIBLE_DEVICES=" + os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
"""


def nvidia_smi_total_mib() -> float:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def probe_sample(block_nvml: bool) -> dict:
    """The first sample the SSH hosts' probe prints here, with or without pynvml."""
    start = "import sys; sys.modules['pynvml'] = None; " if block_nvml else "import sys; "
    probe = repr(str(ROOT / "engine" / "probe.py"))
    code = (
        start
        + f"import runpy; sys.argv = ['probe', '0.2']; runpy.run_path({probe}, {{}}, '__main__')"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as p:
        try:
            return json.loads(p.stdout.readline())  # type: ignore[union-attr]
        finally:
            p.kill()


@pytest.mark.parametrize("block_nvml", [False, True], ids=["nvml", "nvidia-smi"])
def test_the_ssh_probe_reads_the_gpu_through_nvml_or_nvidia_smi(block_nvml: bool) -> None:
    sample = probe_sample(block_nvml)
    [first, *_] = sample["gpus"]
    assert sample["gpu_error"] is None and len(sample["gpus"]) == len(GPUS)
    assert first["name"] == GPUS[0].name
    assert first["mem_total_mb"] == pytest.approx(nvidia_smi_total_mib(), rel=0.001)
    assert first["temperature_c"] is not None and first["power_w"] is not None


async def gpu0(client: Client):  # type: ignore[no-untyped-def]
    local = next(h for h in (await client.hosts()).hosts if h.name == "local")
    if local.sample is None or not local.sample.gpus:
        return None
    return local, local.sample.gpus[0]


async def test_a_torch_job_on_a_real_gpu_is_placed_sampled_and_shown(
    client: Client, daemon: Project
) -> None:
    _, before = await wait_until(lambda: gpu0(client), what="a GPU sample")  # type: ignore[misc]
    assert before.mem_total_mb == pytest.approx(nvidia_smi_total_mib(), rel=0.001)
    stop = daemon.folder / "stop"
    [run] = await client.submit(
        [
            job(
                daemon,
                [sys.executable, "-c", BUSY, str(stop)],
                name="gpu-busy",
                resources=Resources(gpus=1, gpu_mem_gb=4),
            )
        ]
    )
    app = RunyardApp(str(daemon.config_path))
    try:
        await wait_until(
            lambda: client.metrics(run.id, key="norm"), timeout=120, what="the job's metrics"
        )

        async def busy_and_held():  # type: ignore[no-untyped-def]
            local, gpu = await gpu0(client)
            held = local.gpus[0]
            return (
                gpu.mem_used_mb >= before.mem_used_mb + 3 * 1024
                and gpu.util_percent > 0
                and held.runs == (run.id,)
                and held.reserved_mb == 4 * 1024
            )

        await wait_until(busy_and_held, timeout=60, what="the GPU busy, held by the run")
        run_pid = (await client.run(run.id)).run.pid
        async with app.run_test(size=(160, 48)) as pilot:
            [pane] = await wait_until(lambda: app.dash.query(HostPane), what="the host pane")  # type: ignore[misc]

            def shown() -> str:
                return pane.detail_text().plain

            await wait_until(
                lambda: f"runs {run.id}" in shown() and "°C" in shown() and "GiB" in shown(),
                what="the GPU line with its run",
            )
            line = next(x for x in shown().splitlines() if x.startswith("gpu0 "))
            assert before.name.removeprefix("NVIDIA ")[:16] in line
            print("host pane:", pane.title_text().plain, shown(), sep="\n")  # for the note
            # NVML names the run's Python (the child of its wrapper) with the 3 GiB it holds
            processes = pane.sample.gpus[0].processes  # type: ignore[union-attr]
            print("NVML processes:", processes, "run pid:", run_pid)
            tree = {run_pid, *(c.pid for c in psutil.Process(run_pid).children(recursive=True))}
            assert any(mb >= 3 * 1024 and pid in tree for pid, mb in processes), processes
            await pilot.press("q")
        stop.touch()
        done = await client.wait(run.id, 60)
        assert done.status is RunStatus.SUCCEEDED and done.gpus == (0,)
        output, _, _ = await client.log(run.id)
        assert output.rstrip().endswith(b"CUDA_VISIBLE_DEVICES=0")
    finally:
        stop.touch()


async def test_cuda_out_of_memory_is_classed_oom_and_retried(
    client: Client, daemon: Project
) -> None:
    too_much = "import torch; torch.empty(2**50, dtype=torch.uint8, device='cuda')"
    [run] = await client.submit(
        [
            job(
                daemon,
                [sys.executable, "-c", too_much],
                resources=Resources(gpus=1),
                retry=RetryPolicy(attempts=2, backoff_s=0.1),
            )
        ]
    )

    async def both_attempts_ended():  # type: ignore[no-untyped-def]
        detail = await client.run(run.id)
        attempts = detail.details["attempts"]
        return detail.run.status.terminal and len(attempts) == 2 and detail

    detail = await wait_until(both_attempts_ended, timeout=120, what="two attempts")
    assert detail.run.status is RunStatus.FAILED and detail.run.failure_class == "oom"  # type: ignore[union-attr]
    classes = [a["failure_class"] for a in detail.details["attempts"]]  # type: ignore[union-attr]
    assert classes == ["oom", "oom"]
