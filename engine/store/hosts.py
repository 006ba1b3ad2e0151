"""The hosts table and host telemetry: what each host offers, its samples over time, and utilisation summaries."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa

from engine.model import HostSample
from engine.store.base import StoreBase


class HostRecords(StoreBase):
    """Hosts as last seen, and their telemetry."""

    def upsert_hosts(
        self, hosts: Sequence[tuple[str, str, dict[str, Any], str, str | None]]
    ) -> None:
        """Record hosts as (name, kind, spec, state, reason), in one statement however many."""
        if not hosts:
            return
        names, kinds, specs, states, reasons = zip(*hosts, strict=True)
        table = pa.table(
            {
                "name": pa.array(names, pa.string()),
                "kind": pa.array(kinds, pa.string()),
                "spec": pa.array([json.dumps(s) for s in specs], pa.string()),
                "state": pa.array(states, pa.string()),
                "reason": pa.array(reasons, pa.string()),
                "updated_at": pa.array([time.time()] * len(hosts), pa.float64()),
            }
        )
        self.con.register("_hosts", table)
        try:
            self.con.execute("INSERT OR REPLACE INTO hosts SELECT * FROM _hosts")
        finally:
            self.con.unregister("_hosts")

    def append_host_samples(self, samples: Sequence[HostSample]) -> None:
        if not samples:
            return
        table = pa.table(
            {
                "host": [s.host for s in samples],
                "time": [s.time for s in samples],
                "cpu_percent": [s.cpu_percent for s in samples],
                "cpu_per_core": [list(s.cpu_per_core) for s in samples],
                "mem_used_mb": [s.mem_used_mb for s in samples],
                "mem_total_mb": [s.mem_total_mb for s in samples],
                "gpus": [msgspec.json.encode(s.gpus).decode() for s in samples],
            }
        )
        self._insert_arrow("host_samples", table)

    def utilisation(self, since_s: float, buckets: int) -> list[dict[str, Any]]:
        """Each host's CPU and memory, and each GPU's utilisation and memory, over the last
        `since_s` seconds: mean and peak, and the means of `buckets` equal slices of time."""
        start = time.time() - since_s
        width = since_s / buckets
        rows = self.con.execute(
            "SELECT host, time, cpu_percent, mem_used_mb, mem_total_mb, gpus FROM host_samples"
            " WHERE time >= ? ORDER BY host, time",
            [start],
        ).fetchall()
        series: dict[tuple[str, str, int | None], dict[str, Any]] = {}

        def add(key: tuple[str, str, int | None], t: float, value: float, extra: dict) -> None:
            entry = series.setdefault(
                key,
                {
                    "host": key[0],
                    "what": key[1],
                    "gpu": key[2],
                    "values": [],
                    "slices": [[] for _ in range(buckets)],
                    **extra,
                },
            )
            entry["values"].append(value)
            entry["slices"][min(buckets - 1, int((t - start) / width))].append(value)

        for host, t, cpu, mem_used, mem_total, gpus in rows:
            add((host, "cpu %", None), t, cpu, {})
            add((host, "memory GB", None), t, mem_used / 1024, {"of": mem_total / 1024})
            for g in json.loads(gpus):
                add((host, "gpu util %", g["index"]), t, g["util_percent"], {"name": g["name"]})
                add(
                    (host, "gpu memory GB", g["index"]),
                    t,
                    g["mem_used_mb"] / 1024,
                    {"name": g["name"], "of": g["mem_total_mb"] / 1024},
                )
        out = []
        for entry in series.values():
            values = entry.pop("values")
            entry["mean"] = sum(values) / len(values)
            entry["peak"] = max(values)
            entry["samples"] = len(values)
            entry["buckets"] = [sum(v) / len(v) if v else None for v in entry.pop("slices")]
            out.append(entry)
        return out

    def host_samples_between(self, start: float, end: float) -> list[tuple[Any, ...]]:
        """Every host sample from `start` to `end`: (host, time, cpu %, GPUs as JSON)."""
        return self.con.execute(
            "SELECT host, time, cpu_percent, gpus FROM host_samples"
            " WHERE time BETWEEN ? AND ? ORDER BY host, time",
            [start, end],
        ).fetchall()

    def host_sample_count(self, host: str) -> int:
        return self._one("SELECT count(*) FROM host_samples WHERE host = ?", [host])[0]
