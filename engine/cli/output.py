"""What every verb prints with: exit codes, JSON, plain tables and cells, times ago."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.config.toml import seconds_of
from engine.model import format_duration

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


def duration_arg(text: str) -> float:
    """A duration argument ("90", "90s", "15m", "1h30m", "2d") in seconds."""
    seconds = seconds_of(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 1h30m)")
    return seconds


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def ago(t: float | None) -> str:
    return "-" if t is None else format_duration(time.time() - t) + " ago"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
