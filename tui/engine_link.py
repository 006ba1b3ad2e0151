"""The app's link to the engine: connect (starting a daemon if none answers), subscribe, and
post what happens as messages: connected, a batch of events, disconnected. When the daemon
goes away (a crash, `engine stop`) the link connects again; runs go on without it.

Each message is handled before the link reads on, as when the events were applied in line:
the stream is paced by the app, and a daemon's slow client loses events there (the daemon
says how many), never memory here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from textual.app import App
from textual.message import Message

from engine.client import Client, ConfigError, DaemonError, EngineError, connect
from engine.protocol import DaemonStatus, Event

RECONNECT_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # between tries to reach a daemon again


class LinkMessage(Message):
    """A message the link waits on until the app has handled it."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = asyncio.Event()
        self.error: Exception | None = None  # the daemon failed the app while it handled this


class Connected(LinkMessage):
    """Subscribed to a daemon's events (before its state is read: no change is missed)."""

    def __init__(self, client: Client, status: DaemonStatus) -> None:
        super().__init__()
        self.client = client
        self.status = status


class EngineEvents(LinkMessage):
    """A batch of the daemon's events, in order."""

    def __init__(self, batch: list[Event]) -> None:
        super().__init__()
        self.batch = batch


class Disconnected(Message):
    """No daemon now: `error` says why; `never_connected` when none was ever reached (the
    link then stops: the app should say why and end)."""

    def __init__(self, error: str, never_connected: bool, first_try: bool) -> None:
        super().__init__()
        self.error = error
        self.never_connected = never_connected
        self.first_try = first_try  # the first failure since the link was last up


class Incompatible(Message):
    """The daemon sent what this version cannot read (another Runyard version's daemon)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class EngineLink:
    """Keeps an app linked to the daemon of one configuration, for as long as it runs."""

    def __init__(self, app: App[object], config_path: str | None) -> None:
        self.app = app
        self.config_path = config_path

    async def run(self) -> None:
        tries = 0
        connected = False
        while True:
            client: Client | None = None
            stream: AsyncIterator[list[Event]] | None = None
            try:
                client = await connect(self.config_path)
                status = await client.status()
                stream = client.events()
                await anext(stream)  # subscribed: every event from now on follows
                await self._deliver(Connected(client, status))
                connected, tries = True, 0
                async for batch in stream:
                    await self._deliver(EngineEvents(batch))
            except msgspec.ValidationError as exc:
                self.app.post_message(Incompatible(str(exc)))
                return
            except (ConfigError, DaemonError, EngineError, OSError) as exc:
                self.app.post_message(Disconnected(str(exc), not connected, tries == 0))
                if not connected:
                    return
                await asyncio.sleep(RECONNECT_DELAYS_S[min(tries, len(RECONNECT_DELAYS_S) - 1)])
                tries += 1
            finally:  # also when the app exits and cancels the link
                if stream is not None:
                    await stream.aclose()
                if client is not None:
                    await client.close()

    async def _deliver(self, message: LinkMessage) -> None:
        """Post a message and wait until it is handled; an error of the daemon's met while
        handling it ends this connection (and the link connects again)."""
        self.app.post_message(message)
        await message.handled.wait()
        if message.error is not None:
            raise message.error
