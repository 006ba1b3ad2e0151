"""Runyard's telemetry probe, uploaded to SSH hosts and run with their own Python: prints one
JSON host sample per interval (CPU per core, memory, each GPU with its processes). Standard
library only; uses psutil and NVML when the host has them, else /proc and nvidia-smi, else
what macOS's own tools say. usage: python3 probe.py [INTERVAL_S]"""

import json
import os
import shutil
import subprocess
import sys
import time


def cpu_times():
    """Per-core (busy, total) jiffies from /proc/stat."""
    cores = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                cores.append((sum(values) - idle, sum(values)))
    return cores


class Cpu:
    """CPU use per core since the last call."""

    def __init__(self):
        try:
            import psutil

            self.psutil = psutil
            psutil.cpu_percent(percpu=True)
        except ImportError:
            self.psutil = None
        self.last = cpu_times() if self.psutil is None and os.path.exists("/proc/stat") else None

    def per_core(self):
        if self.psutil is not None:
            return self.psutil.cpu_percent(percpu=True)
        if self.last is None:  # no psutil and no /proc (macOS): load average per core
            count = os.cpu_count() or 1
            load = os.getloadavg()[0]
            return [min(100.0, 100.0 * load / count)] * count
        now = cpu_times()
        out = [
            100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
            for (b0, t0), (b1, t1) in zip(self.last, now)  # noqa: B905 - runs on old Pythons too
        ]
        self.last = now
        return out


def memory_mb():
    """(used, total) MB."""
    try:
        import psutil

        mem = psutil.virtual_memory()
        return (mem.total - mem.available) / 2**20, mem.total / 2**20
    except ImportError:
        pass
    if os.path.exists("/proc/meminfo"):
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) / 1024
        total = info.get("MemTotal", 0.0)
        return total - info.get("MemAvailable", info.get("MemFree", 0.0)), total
    total = int(_run(["sysctl", "-n", "hw.memsize"]) or 0) / 2**20
    return 0.0, total


def _run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def gpus_nvml():
    import pynvml

    pynvml.nvmlInit()
    return read_nvml(pynvml)


def read_nvml(nv):
    """Each GPU as a sample dict, from an initialised NVML module (pynvml, or a stand-in in
    tests); temperature, power and processes are left out where a device does not report
    them. The engine's own sampler reads this machine's GPUs with it too."""
    out = []
    for index in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(index)
        name = nv.nvmlDeviceGetName(h)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        util = nv.nvmlDeviceGetUtilizationRates(h)
        try:
            temp = float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        except Exception:  # NVML raises one error class per cause
            temp = None
        try:
            power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
        except Exception:
            power = None
        try:
            procs = [
                [p.pid, (p.usedGpuMemory or 0) / 2**20, _group(p.pid)]
                for p in nv.nvmlDeviceGetComputeRunningProcesses(h)
            ]
        except Exception:  # not every driver or device reports them
            procs = []
        out.append(
            {
                "index": index,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "mem_used_mb": mem.used / 2**20,
                "mem_total_mb": mem.total / 2**20,
                "util_percent": float(util.gpu),
                "temperature_c": temp,
                "power_w": power,
                "processes": procs,
            }
        )
    return out


def gpus_smi():
    fields = "index,name,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw,uuid"
    text = _run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"])
    if text is None:
        raise OSError("nvidia-smi failed")
    apps = _run(
        [
            "nvidia-smi",
            "--query-compute-apps=gpu_uuid,pid,used_memory",
            "--format=csv,noheader,nounits",
        ]
    )
    per_gpu = {}
    for line in (apps or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit():
            pid = int(parts[1])
            per_gpu.setdefault(parts[0], []).append([pid, _number(parts[2]) or 0.0, _group(pid)])
    out = []
    for line in text.splitlines():
        p = [x.strip() for x in line.split(",")]
        if len(p) < 8:
            continue
        out.append(
            {
                "index": int(p[0]),
                "name": p[1],
                "mem_used_mb": _number(p[2]) or 0.0,
                "mem_total_mb": _number(p[3]) or 0.0,
                "util_percent": _number(p[4]) or 0.0,
                "temperature_c": _number(p[5]),
                "power_w": _number(p[6]),
                "processes": per_gpu.get(p[7], []),
            }
        )
    return out


def _group(pid):
    """A process's group: a run's process group is its wrapper's pid (None where gone)."""
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def gpus():
    """(GPUs, why there are none)."""
    try:
        return gpus_nvml(), None
    except Exception as exc:  # no pynvml, no driver: try nvidia-smi
        nvml_error = exc
    if shutil.which("nvidia-smi"):
        try:
            return gpus_smi(), None
        except Exception as exc:
            return [], f"no NVIDIA GPU (nvidia-smi: {exc})"
    return [], f"no NVIDIA GPU ({type(nvml_error).__name__})"


def main():
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    cpu = Cpu()
    while True:
        time.sleep(interval)
        cores = cpu.per_core()
        used, total = memory_mb()
        found, error = gpus()
        sample = {
            "host": "",
            "time": time.time(),
            "cpu_percent": sum(cores) / len(cores) if cores else 0.0,
            "cpu_per_core": cores,
            "mem_used_mb": used,
            "mem_total_mb": total,
            "load_avg": list(os.getloadavg()),
            "gpus": found,
            "gpu_error": error if not found else None,
        }
        sys.stdout.write(json.dumps(sample) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
