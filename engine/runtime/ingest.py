"""Reading a followed attempt's output.log on from where it was stored: its metric points and
the new offset go into the store in one transaction per chunk, its lines to the subscribers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from engine.core.capture import Points
from engine.protocol import LogLines, MetricsAdded
from engine.runtime.bus import EventBus
from engine.runtime.live import Active
from engine.store import LogPosition, MetricBatch, StoreThread

READ_CHUNK = 8 * 2**20  # the most output read and ingested in one batch
EVENT_POINTS = 500  # the most metric points one event carries
# The most output one log event carries, its last whole lines: as much as a client shows of a
# tail, so a client following a run that prints 10,000 lines a second needs no re-reads.
EVENT_LOG_BYTES = 64 * 2**10
EVENT_LOG_LINES = 5000

Judge = Callable[[Active, Points], Awaitable[None]]


class Ingest:
    """Ingests attempts' output; `judge` sees each chunk's points of a running attempt (the
    sweep's pruner)."""

    def __init__(self, db: StoreThread, bus: EventBus, judge: Judge) -> None:
        self.db = db
        self.bus = bus
        self.judge = judge

    async def read_on(self, active: Active, final: bool) -> None:
        """Ingest what the attempt has printed since the last call; `final` once it has ended
        (a last line without a newline counts then). Parsing a chunk overlaps with storing the
        one before it; chunks are stored in order."""
        storing: asyncio.Task[None] | None = None
        try:
            while (chunk := await _read_chunk(active, final)) is not None:
                block, carriage_returns = chunk
                pos = active.position
                lines = block.split(b"\n")
                if block.endswith(b"\n"):
                    lines.pop()
                points = Points()
                bad = await asyncio.to_thread(
                    active.parser.parse, lines, pos.lines, points, carriage_returns
                )
                batch = MetricBatch(
                    run_id=active.run.id,
                    attempt=active.number,
                    keys=points.keys,
                    steps=points.steps,
                    values=points.values,
                    wall_times=[time.time()] * len(points),
                    lines=points.lines,
                    byte_offset=pos.byte_offset + len(block),
                    line_count=pos.lines + len(lines),
                    bad_markers=pos.bad_markers + bad,
                    first=pos.byte_offset == 0,
                )
                active.position = LogPosition(
                    batch.byte_offset, batch.line_count, batch.bad_markers
                )
                if len(points) and not final:  # an attempt that has ended is not judged
                    await self.judge(active, points)
                if storing is not None:
                    await storing
                storing = asyncio.create_task(
                    self._store(active, batch, lines, points, pos.byte_offset)
                )
        finally:
            if storing is not None:
                await storing

    async def _store(
        self, active: Active, batch: MetricBatch, lines: list[bytes], points: Points, start: int
    ) -> None:
        await self.db.call(self.db.store.ingest, batch)
        self._publish(active, lines, points, start, batch.byte_offset)

    def _publish(
        self, active: Active, lines: list[bytes], points: Points, start: int, end: int
    ) -> None:
        if len(points):
            tail = slice(-EVENT_POINTS, None)
            self.bus.publish(
                MetricsAdded(
                    run_id=active.run.id,
                    count=len(points),
                    points=list(
                        zip(
                            points.keys[tail],
                            points.steps[tail],
                            points.values[tail],
                            points.lines[tail],
                            strict=True,
                        )
                    ),
                )
            )
        if lines and self.bus.wants_log(active.run.id):
            shown = _last_lines(lines, EVENT_LOG_BYTES, EVENT_LOG_LINES)
            self.bus.publish_log(
                LogLines(
                    run_id=active.run.id,
                    attempt=active.number,
                    start=start,
                    end=end,
                    lines=[b.decode("utf-8", "replace") for b in shown],
                    skipped=len(lines) - len(shown),
                )
            )


async def _read_chunk(active: Active, final: bool) -> tuple[bytes, bool] | None:
    """The next whole lines of output (and whether they hold a carriage return), or None."""
    executor, attempt, offset = active.executor, active.attempt, active.position.byte_offset
    if await executor.output_size(attempt) <= offset:
        return None
    data = await executor.read_output(attempt, offset, READ_CHUNK)
    if not data:
        return None
    end = data.rfind(b"\n") + 1
    if final and len(data) < READ_CHUNK:
        end = len(data)  # the run has ended: a last line without newline counts too
    elif end == 0:
        if len(data) < READ_CHUNK:
            return None  # half a line: wait for the rest
        end = len(data)  # one enormous line: take it in pieces rather than stall
    block = data[:end]
    return block, b"\r" in block


def _last_lines(lines: list[bytes], max_bytes: int, max_lines: int) -> list[bytes]:
    """The last of `lines` that fit in `max_bytes` (a newline each) and `max_lines`; at least
    the last line, however long."""
    size, keep = 0, 0
    for line in reversed(lines[-max_lines:]):
        size += len(line) + 1
        if size > max_bytes and keep:
            break
        keep += 1
    return lines[len(lines) - keep :]
