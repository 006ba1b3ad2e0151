"""What can go wrong reading a project's files or talking to its daemon, as the client, the CLI
and the TUI catch it. Kept apart, so that catching them costs no import of the parsers or
aiohttp."""


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and what was expected."""


class DaemonError(Exception):
    """The daemon cannot start or be reached; the message says why and what to do."""


class EngineError(Exception):
    """The daemon refused a request; the message is its reason."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class DaemonGone(EngineError):
    """The daemon did not answer: it stopped or crashed, or this client was closed."""
