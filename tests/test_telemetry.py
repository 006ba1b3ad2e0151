"""Host samples: the per-window mean that is stored as history."""

from __future__ import annotations

from engine.model import GpuSample, HostSample
from engine.runtime.samples import mean_sample


def sample(t: float, cpu: float, mem: float, util: float) -> HostSample:
    gpu = GpuSample(index=0, name="g", mem_used_mb=mem * 2, mem_total_mb=100.0, util_percent=util)
    return HostSample("h", t, cpu, (cpu, cpu / 2), mem, 64.0, gpus=(gpu,))


def test_a_window_is_stored_as_the_mean_of_its_samples() -> None:
    mean = mean_sample([sample(1.0, 10, 20, 0), sample(2.0, 30, 40, 50), sample(3.0, 50, 60, 100)])
    assert (mean.time, mean.cpu_percent, mean.cpu_per_core) == (3.0, 30.0, (30.0, 15.0))
    assert mean.mem_used_mb == 40.0 and mean.mem_total_mb == 64.0
    assert (mean.gpus[0].util_percent, mean.gpus[0].mem_used_mb) == (50.0, 80.0)
