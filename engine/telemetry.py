"""Host samples for this machine: per-core CPU and memory from psutil, each GPU from NVML."""

from __future__ import annotations

import os
import time
from types import ModuleType
from typing import Any

import msgspec
import psutil

from engine.model import GpuSample, HostSample
from engine.probe import read_nvml

NO_GPU = "no NVIDIA GPU"


class Nvml:
    """NVML, opened once; `error` says why no GPU can be read (no driver, no device)."""

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        self.error: str | None = None
        self.nv = module
        try:
            if self.nv is None:
                import pynvml

                self.nv = pynvml
            self.nv.nvmlInit()
            if self.nv.nvmlDeviceGetCount() == 0:
                self.error = NO_GPU
        except Exception as exc:  # NVML raises its own error classes, one per cause
            self.error = f"{NO_GPU} ({type(exc).__name__}: {exc})" if str(exc) else NO_GPU

    def read(self) -> tuple[GpuSample, ...]:
        """Each GPU now, read as the remote probe reads its host's (one reader for both)."""
        if self.error:
            return ()
        return tuple(msgspec.convert(g, GpuSample) for g in read_nvml(self.nv))


class LocalSampler:
    """Takes samples of this machine. CPU percentages are since the previous sample."""

    def __init__(self, host: str, nvml: Nvml | None = None) -> None:
        self.host = host
        self.nvml = nvml or Nvml()
        psutil.cpu_percent(percpu=True)  # prime: the first reading is since this call

    def sample(self) -> HostSample:
        per_core = tuple(psutil.cpu_percent(percpu=True))
        memory = psutil.virtual_memory()
        gpus: tuple[GpuSample, ...] = ()
        gpu_error = self.nvml.error
        if not gpu_error:
            try:
                gpus = self.nvml.read()
            except Exception as exc:
                gpu_error = f"NVML read failed: {exc}"
        return HostSample(
            host=self.host,
            time=time.time(),
            cpu_percent=sum(per_core) / max(1, len(per_core)),
            cpu_per_core=per_core,
            mem_used_mb=(memory.total - memory.available) / 2**20,
            mem_total_mb=memory.total / 2**20,
            load_avg=os.getloadavg() if hasattr(os, "getloadavg") else None,
            gpus=gpus,
            gpu_error=gpu_error,
        )
