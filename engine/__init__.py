"""Runyard's engine: configuration, store, scheduler, executors, daemon, client and CLI."""

__version__ = "0.1.0"
