"""Screens over the dashboard, one per module: a run's detail, the sweep launcher, the compare view, the
GPU processes, a prompt and a confirmation. Like the widgets they are given data by the app and ask it for more by messages;
none talks to the daemon."""

from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.gpu_processes import GpuProcessesScreen
from tui.screens.launcher import LauncherScreen
from tui.screens.prompt import PromptScreen
from tui.screens.run_detail import LOG_MAX_LINES, RunDetailScreen, facts

__all__ = [
    "LOG_MAX_LINES",
    "CompareScreen",
    "ConfirmScreen",
    "GpuProcessesScreen",
    "LauncherScreen",
    "PromptScreen",
    "RunDetailScreen",
    "facts",
]
