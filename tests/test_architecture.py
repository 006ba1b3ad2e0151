"""The shape of the code: which module may import which, and what the clients cost to load."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Layers, lowest first: a module imports (when it is loaded) only from its own layer or
# lower ones. Clients sit beside the daemon's side: they may reach values, configuration and
# paths, never the store, the executors or the runtime.
LAYERS: dict[str, int] = {
    # values and pure functions
    "engine": 0,
    "engine.model": 0,
    "engine.protocol": 0,
    "engine.errors": 0,
    "engine.core": 0,
    "engine.probe": 0,
    "engine.repro": 0,
    "engine.results": 0,
    # configuration, where state lives, planning
    "engine.config": 1,
    "engine.paths": 1,
    "engine.sweep": 1,
    "engine.workspace": 1,
    "engine.telemetry": 1,
    # the store and the executors
    "engine.store": 2,
    "engine.executors": 2,
    # the runtime, its API, the daemon process
    "engine.runtime": 3,
    "engine.api": 4,
    "engine.daemon": 5,
    # clients
    "engine.client": 1,
    "engine.cli": 1,
    "engine.__main__": 1,
    "tui": 1,
}
CLIENTS = ("engine.client", "engine.cli", "engine.__main__", "tui")
TUI_MAY_IMPORT = {
    "engine.client",
    "engine.protocol",
    "engine.model",
    "engine.errors",
    "engine.results.compare",  # pure: the one compare, shared with `engine compare`
}
HEAVY = ("duckdb", "pyarrow", "asyncssh", "optuna", "scipy", "matplotlib")


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("engine", "tui"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported_when_loaded(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a module imports at load time: its top-level imports, those under
    `if`/`try` too, but not those under `if TYPE_CHECKING` or inside functions."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)

    visit(ast.parse(path.read_text()).body)
    return {name for name in found if name in modules}


def _layer(module: str) -> int:
    owner = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[owner]


def test_dependencies_point_one_way() -> None:
    """Each module imports only from its layer or below; a client reaches (through every import
    chain) no store, executor or runtime module; the TUI imports only the client's side of the
    engine; the engine never imports the TUI or Textual."""
    modules = _modules()
    graph = {name: _imported_when_loaded(path, modules) for name, path in modules.items()}
    unplaced = [m for m in modules if not any(m == k or m.startswith(k + ".") for k in LAYERS)]
    assert not unplaced, f"place these modules in a layer: {unplaced}"
    for module, imports in graph.items():
        for imported in imports:
            if module.startswith("tui") and not imported.startswith("tui"):
                assert imported in TUI_MAY_IMPORT, f"{module} imports {imported}"
            if module.startswith("engine"):
                assert not imported.startswith("tui"), f"{module} imports {imported}"
            assert _layer(imported) <= _layer(module), f"{module} imports {imported}, a layer up"
    for client in (m for m in modules if m.startswith(CLIENTS)):
        reached, todo = set(), [client]
        while todo:
            for imported in graph[todo.pop()] - reached:
                reached.add(imported)
                todo.append(imported)
        server_side = sorted(m for m in reached if _layer(m) >= 2)
        assert not server_side, f"{client} loads {server_side}"
    for path in modules.values():  # nor does any engine module import Textual
        text = path.read_text()
        if path.is_relative_to(ROOT / "engine"):
            assert "import textual" not in text and "from textual" not in text, path


def _loaded_by(statement: str, modules: bool = False) -> list[str]:
    """The top-level packages (with `modules`, every module) a fresh interpreter has loaded
    after `statement`."""
    names = "sys.modules" if modules else "{m.split('.')[0] for m in sys.modules}"
    code = f"{statement}; import sys, json; print(json.dumps(sorted({names})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_clients_load_nothing_heavy() -> None:
    """The client, the CLI and the TUI load none of the daemon's heavy libraries; the CLI
    loads not even aiohttp or asyncio until a verb talks to the daemon, so `engine --help`
    and `engine validate` start in tens of milliseconds."""
    for statement in ("import engine.client", "import engine.cli", "import tui.app"):
        loaded = set(_loaded_by(statement))
        assert not loaded & set(HEAVY), f"{statement} loads {sorted(loaded & set(HEAVY))}"
    cli = set(_loaded_by("import engine.cli"))
    assert not cli & {"aiohttp", "asyncio"}, sorted(cli & {"aiohttp", "asyncio"})
    report = set(_loaded_by("import engine.results.report"))
    assert "scipy" not in report  # statistics load SciPy when they are made


def test_the_daemon_loads_only_what_every_daemon_uses() -> None:
    """Started, the daemon has not loaded what only some of its work needs (an idle daemon's
    memory is a goal): Optuna for adaptive sweeps, SciPy and matplotlib for statistics and
    reports, asyncssh for SSH hosts, Arrow's compute functions (8 MB) for large blocks of
    points."""
    loaded = set(_loaded_by("import engine.daemon", modules=True))
    later = {"optuna", "scipy", "matplotlib", "asyncssh", "pyarrow.compute"}
    assert not loaded & later, sorted(loaded & later)
