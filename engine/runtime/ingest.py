"""Reading followed attempts' output.log on from where it was stored: one reader per host reads,
in rounds, every attempt that printed (woken by inotify on this machine, polling a remote host),
and stores all their points and new offsets in one transaction; lines go to the subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.core.capture import lines_of
from engine.core.points import Points
from engine.executors import Executor, HostUnreachable
from engine.protocol import LogLines, MetricsAdded
from engine.runtime.bus import EventBus
from engine.runtime.live import Active
from engine.store import LogPosition, MetricBatch, StoreThread

READ_CHUNK = 8 * 2**20  # the most output read and ingested at once, shared by a round's runs
LEAST_CHUNK = 256 * 2**10  # the least read of one run in a round, however many printed
# The least time between two rounds of one host, unless the last left output unread or read
# LEAST_CHUNK of one run: what printed meanwhile is batched, so 200 chatty runs cost a few
# transactions a second, not 20,000 (and many short quiet runs' files a few rounds), while a
# run printing megabytes a second is read as fast as it prints (its rounds are large anyway).
ROUND_S = 0.2
POLL_S = 0.1  # how often a host is asked for its outputs' sizes where nothing wakes the reader
EVENT_POINTS = 500  # the most metric points one event carries
# The most output one log event carries, its last whole lines: as much as a client shows of a
# tail, so a client following a run that prints 10,000 lines a second needs no re-reads.
EVENT_LOG_BYTES = 64 * 2**10
EVENT_LOG_LINES = 5000

Judge = Callable[[Active, Points, bool], Awaitable[None]]
OnError = Callable[[Active, BaseException], None]


@dataclass
class _Read:
    """One chunk of one attempt's output, parsed: the batch to store and what to publish."""

    active: Active
    batch: MetricBatch
    block: bytes  # the whole lines read
    points: Points
    start: int

    def advance(self) -> None:
        """Move the attempt's position past this chunk (it is to be stored next)."""
        batch = self.batch
        self.active.position = LogPosition(batch.byte_offset, batch.line_count, batch.bad_markers)
        if self.block:
            self.active.printed_at = batch.wall_time  # what the watchdog's silence counts from


class Ingest:
    """Ingests attempts' output; `judge` sees each chunk's points of a running attempt (the
    sweep's pruner), `on_error` hears of an attempt whose output could not be ingested."""

    def __init__(self, db: StoreThread, bus: EventBus, judge: Judge, on_error: OnError) -> None:
        self.db = db
        self.bus = bus
        self.judge = judge
        self.on_error = on_error
        self.readers: dict[int, _HostReader] = {}  # by id of the executor

    def follow(self, active: Active) -> None:
        """Read the attempt's output as it prints, until `finish` or `unfollow`."""
        key = id(active.executor)
        if key not in self.readers:
            self.readers[key] = _HostReader(self, active.executor)
        self.readers[key].add(active)

    def unfollow(self, active: Active) -> None:
        """Stop reading the attempt (its host is away, or it is no longer followed)."""
        if (reader := self.readers.get(id(active.executor))) is not None:
            reader.discard(active)

    async def finish(self, active: Active) -> None:
        """The attempt has ended: read and store the rest of its output (a last line without a
        newline counts now), after whatever its host's reader has read of it."""
        reader = self.readers.get(id(active.executor))
        if reader is None:
            await self._read_rest(active)
            return
        reader.discard(active)
        async with reader.lock:
            await reader.stored()
            await self._read_rest(active)

    async def close(self) -> None:
        """Stop every reader, once what each has read is stored."""
        for reader in self.readers.values():
            await reader.close()
        self.readers.clear()

    async def _read_rest(self, active: Active) -> None:
        """Read an ended attempt to its end, chunk by chunk: parsing a chunk overlaps with
        storing the one before it, and chunks are stored in order."""
        storing: asyncio.Task[None] | None = None
        try:
            while True:
                offset = active.position.byte_offset
                if await active.executor.output_size(active.attempt) <= offset:
                    break
                data = await active.executor.read_output(active.attempt, offset, READ_CHUNK)
                block = _whole_lines(data, READ_CHUNK, final=True)
                if not block:
                    break
                read = await asyncio.to_thread(_parse, active, block)
                read.advance()
                if storing is not None:
                    await storing
                storing = asyncio.create_task(self.store([read]))
                if len(read.points):
                    try:
                        await self.judge(active, read.points, True)
                    except Exception:  # judging an ended attempt changes nothing of its end
                        traceback.print_exc(file=sys.stderr)
        finally:
            if storing is not None:
                await storing

    async def store(self, reads: list[_Read]) -> None:
        """Store the reads in one transaction and publish them; when that fails, each alone,
        so that only an attempt whose own points cannot be stored is failed."""
        try:
            await self.db.call(self.db.store.ingest, *(r.batch for r in reads))
            stored = reads
        except Exception:
            if len(reads) == 1:
                raise
            stored = []
            for read in reads:
                try:
                    await self.db.call(self.db.store.ingest, read.batch)
                    stored.append(read)
                except Exception as exc:
                    self.on_error(read.active, exc)
        for read in stored:
            self._publish(read)

    def _publish(self, read: _Read) -> None:
        active, points = read.active, read.points
        if len(points):
            self.bus.publish(
                MetricsAdded(
                    run_id=active.run.id, count=len(points), points=points.tail(EVENT_POINTS)
                )
            )
        if read.block and self.bus.wants_log(active.run.id):
            lines = lines_of(read.block)
            shown = _last_lines(lines, EVENT_LOG_BYTES, EVENT_LOG_LINES)
            self.bus.publish_log(
                LogLines(
                    run_id=active.run.id,
                    attempt=active.number,
                    start=read.start,
                    end=read.batch.byte_offset,
                    lines=[b.decode("utf-8", "replace") for b in shown],
                    skipped=len(lines) - len(shown),
                )
            )


class _HostReader:
    """Reads the output of every attempt followed on one host, in rounds: the attempts that
    printed since the last round are read, parsed and stored together."""

    def __init__(self, ingest: Ingest, executor: Executor) -> None:
        self.ingest = ingest
        self.executor = executor
        self.followed: dict[int, Active] = {}
        self.dirty: set[int] = set()  # printed (or may have) since they were last read
        self.polled: set[int] = set()  # followed without a watch: their sizes are asked for
        self.lock = asyncio.Lock()  # held by a round, and by a final read
        self._woken = asyncio.Event()
        self._storing: asyncio.Task[None] | None = None
        self._watch = executor.output_watch(self._woken.set)
        self._task = asyncio.create_task(self._run(), name=f"output-{executor.host.name}")

    def add(self, active: Active) -> None:
        run_id = active.run.id
        self.followed[run_id] = active
        if self._watch is None or not self._watch.add(active.attempt.attempt_dir):
            self.polled.add(run_id)
        self.dirty.add(run_id)  # it may have printed before it was followed
        self._woken.set()

    def discard(self, active: Active) -> None:
        run_id = active.run.id
        if self.followed.get(run_id) is not active:
            return
        del self.followed[run_id]
        self.dirty.discard(run_id)
        if run_id not in self.polled and self._watch is not None:
            self._watch.remove(active.attempt.attempt_dir)
        self.polled.discard(run_id)

    async def stored(self) -> None:
        """Return once what the rounds so far read is stored."""
        if self._storing is not None:
            with contextlib.suppress(Exception):  # already told to on_error
                await asyncio.shield(self._storing)  # a waiter cancelled leaves it storing

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.stored()
        if self._watch is not None:
            self._watch.close()

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            pause = True
            try:
                await self._until_printed()
                async with self.lock:
                    pause = await self._round() < LEAST_CHUNK
            except HostUnreachable:
                await self.executor.until_up()  # its attempts' followers ride the absence out
            except Exception:  # a bug here must not stop every run's output being read
                print(f"reading output on {self.executor.host.name}:", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                await asyncio.sleep(POLL_S)
            if pause and not self.dirty:
                await asyncio.sleep(max(0.0, ROUND_S - (time.monotonic() - began)))

    async def _until_printed(self) -> None:
        """Wait until some followed attempt has printed (or may have)."""
        while not self.dirty:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S if self.polled else None):
                    await self._woken.wait()
            self._woken.clear()
            if self._watch is not None:
                changed = self._watch.take()
                for run_id, active in self.followed.items():
                    if changed is None or active.attempt.attempt_dir in changed:
                        self.dirty.add(run_id)
            if self.polled:
                polled = [self.followed[i] for i in self.polled]
                sizes = await self.executor.output_sizes([a.attempt for a in polled])
                for active, size in zip(polled, sizes, strict=True):
                    if size > active.position.byte_offset:
                        self.dirty.add(active.run.id)

    async def _round(self) -> int:
        """Read, parse and start storing what the dirty attempts printed; returns the most
        bytes read of one attempt."""
        actives = [self.followed[i] for i in self.dirty if i in self.followed]
        self.dirty.clear()
        if not actives:
            return 0
        if self._watch is not None:  # watched again before being read: no write goes unseen
            for active in actives:
                if active.run.id not in self.polled:
                    self._watch.add(active.attempt.attempt_dir)
        share = max(LEAST_CHUNK, READ_CHUNK // len(actives))
        datas = await self.executor.read_outputs(
            [(a.attempt, a.position.byte_offset, share) for a in actives]
        )
        blocks = []
        for active, data in zip(actives, datas, strict=True):
            if len(data) == share:
                self.dirty.add(active.run.id)  # more than its share: the rest next round
            if block := _whole_lines(data, share, final=False):
                blocks.append((active, block))
        most = max(map(len, datas), default=0)
        if not blocks:
            return most
        parsed = await asyncio.to_thread(_parse_each, blocks)
        reads = []
        for (active, _), read in zip(blocks, parsed, strict=True):
            if self.followed.get(active.run.id) is not active:
                continue  # no longer followed (it ended, or its host left) while being parsed
            if isinstance(read, BaseException):
                self.discard(active)
                self.ingest.on_error(active, read)
                continue
            read.advance()
            reads.append(read)
        if not reads:
            return most
        await self.stored()
        self._storing = asyncio.create_task(self._store(reads))  # before judging: it may fail
        for read in reads:
            if len(read.points):
                try:
                    await self.ingest.judge(read.active, read.points, False)
                except HostUnreachable:
                    pass  # a stop that could not be sent is sent again when the host is back
                except Exception as exc:
                    self.ingest.on_error(read.active, exc)
        return most

    async def _store(self, reads: list[_Read]) -> None:
        try:
            await self.ingest.store(reads)
        except Exception as exc:
            for read in reads:
                self.ingest.on_error(read.active, exc)


def _whole_lines(data: bytes, asked: int, final: bool) -> bytes:
    """The whole lines at the start of `data` (read asking for `asked` bytes): all of it once
    the attempt has ended (a last line without a newline counts then), and all of a line too
    long to end within `asked` rather than stall on it."""
    if final and len(data) < asked:
        return data
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) == asked:
        return data  # one enormous line: take it in pieces
    return data[:end]


def _parse_each(blocks: list[tuple[Active, bytes]]) -> list[_Read | BaseException]:
    """`_parse` for each attempt's block (in a worker thread); an error is that attempt's."""
    parsed: list[_Read | BaseException] = []
    for active, block in blocks:
        try:
            parsed.append(_parse(active, block))
        except Exception as exc:
            parsed.append(exc)
    return parsed


def _parse(active: Active, block: bytes) -> _Read:
    """A block of whole lines read from the attempt's stored position, as a batch to store."""
    pos = active.position
    points = Points()
    count, bad = active.parser.parse_block(block, pos.lines, points)
    batch = MetricBatch(
        run_id=active.run.id,
        attempt=active.number,
        points=points,
        wall_time=time.time(),
        byte_offset=pos.byte_offset + len(block),
        line_count=pos.lines + count,
        bad_markers=pos.bad_markers + bad,
        first=pos.byte_offset == 0,
    )
    return _Read(active, batch, block, points, pos.byte_offset)


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
