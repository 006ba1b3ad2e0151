"""Events fanned out to the clients subscribed to the daemon's stream."""

from __future__ import annotations

import asyncio

from engine.protocol import EventsDropped, LogLines


class Subscriber:
    """One client's event stream: a bounded queue, and the runs whose log lines it wants."""

    def __init__(self, maxsize: int = 2000) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self.logs: set[int] = set()
        self.dropped = 0

    def put(self, event: object) -> None:
        if self.dropped and self.queue.qsize() < self.queue.maxsize - 1:
            self.queue.put_nowait(EventsDropped(count=self.dropped))
            self.dropped = 0
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1


class EventBus:
    """Fans events out to every subscribed client; a slow client loses events, never blocks us."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def publish(self, event: object) -> None:
        for sub in self.subscribers:
            sub.put(event)

    def wants_log(self, run_id: int) -> bool:
        return any(run_id in sub.logs for sub in self.subscribers)

    def publish_log(self, event: LogLines) -> None:
        for sub in self.subscribers:
            if event.run_id in sub.logs:
                sub.put(event)
