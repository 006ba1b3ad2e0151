"""Executors start, watch, read and stop runs on one host, behind one interface."""

from engine.executors.base import Attempt, Executor, ExitInfo, Launch, ProcessState
from engine.executors.local import LocalExecutor

__all__ = ["Attempt", "Executor", "ExitInfo", "Launch", "LocalExecutor", "ProcessState"]
