"""Progress of a long wait (`--wait`) on stderr, drawn by rich while stderr is a terminal:
runs done, failed and pruned of the total, the time so far and the current best. Piped, a
wait prints nothing extra."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from engine.model import TERMINAL_STATUSES, Run, Sweep, format_value

if TYPE_CHECKING:
    from engine.client import Client

LOOK_S = 1.0  # how often the daemon is asked how far the wait has got

_ENDED = frozenset(s.value for s in TERMINAL_STATUSES)


def shown() -> bool:
    """Whether progress is drawn: only for a person at a terminal."""
    return sys.stderr.isatty()


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=Console(stderr=True),
    )


async def wait_for_sweep(engine: Client, sweep_id: str, total: int) -> Sweep:
    """Wait for a sweep to end; on a terminal, its runs done of `total`, how they ended and
    its best configuration so far, as they change."""
    waiting = asyncio.ensure_future(engine.wait_sweep(sweep_id))
    if not shown():
        return await waiting
    with _progress() as progress:
        task = progress.add_task(f"sweep {sweep_id}", total=total, detail="")
        best, best_at = "", -1  # the best so far, and at how many runs done

        async def show(status: Sweep) -> None:
            nonlocal best, best_at
            done = sum(n for s, n in status.counts.items() if s in _ENDED)
            if done != best_at and status.counts.get("succeeded"):
                best, best_at = await _best(engine, sweep_id), done
            ended = [
                f"{status.counts[s]} {s}" for s in ("failed", "pruned") if status.counts.get(s)
            ]
            runs = max(total, sum(status.counts.values()))  # evaluations join a sweep's runs
            detail = "  ".join(filter(None, [", ".join(ended), best]))
            progress.update(task, completed=done, total=runs, detail=detail)

        while not waiting.done():
            await show(await engine.sweep_status(sweep_id))
            await asyncio.wait({waiting}, timeout=LOOK_S)
        await show(waiting.result())
        return waiting.result()


async def _best(engine: Client, sweep_id: str) -> str:
    """ "best auc 0.934 (run 17)", or nothing where the sweep names no metric."""
    try:
        result = await engine.best(sweep_id)
    except EngineError:
        return ""
    if not result["configs"]:
        return ""
    top = result["configs"][0]
    return f"best {result['metric']} {format_value(top['mean'])} (run {top['best_run']})"


async def wait_for_run(engine: Client, run: Run) -> Run:
    """Wait for a run to end; on a terminal, its status, time and latest metrics meanwhile."""
    waiting = asyncio.ensure_future(engine.wait(run.id))
    if not shown():
        return await waiting
    with _progress() as progress:
        task = progress.add_task(f"run {run.id} {run.name}", total=None, detail="")
        while not waiting.done():
            detail = await engine.run(run.id)
            latest = "  ".join(
                f"{m['key']}={format_value(m['last'])}" for m in detail.details["metrics"][:3]
            )
            progress.update(task, detail=f"{detail.run.status}  {latest}".rstrip())
            await asyncio.wait({waiting}, timeout=LOOK_S)
        ended = waiting.result()
        progress.update(task, total=1, completed=1, detail=str(ended.status))
        return ended
