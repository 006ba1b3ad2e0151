"""The CLI as scripts and people use it, through the real daemon: --json on every verb that
prints, --version, shell completion sourced in bash, progress on a terminal only, tables that
fit the terminal, and `compare --only-diff`."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from .conftest import Project

ENGINE = str(Path(sys.executable).parent / "engine")  # the installed console script


def _toy_sweep(project: Project, name: str, prints: str, sweep: str, first: str = "") -> None:
    """`t.py`, a trainer that prints `prints` (Python, of its params `p`) after `first`, and
    `s.toml`, sweep `name` of it by `auc` with `sweep`'s sections."""
    (project.folder / "t.py").write_text(
        f"import json, os, time\np = json.loads(os.environ['RUNYARD_PARAMS'])\n{first}"
        f"print('@runyard', json.dumps({prints}))\n"
    )
    (project.folder / "s.toml").write_text(
        f'name = "{name}"\ncommand = "{sys.executable} t.py"\nmetric = {{ name = "auc" }}\n' + sweep
    )


def _json(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_verb_that_prints_has_json(daemon: Project) -> None:
    e = daemon.engine
    run = _json(e("run", "--json", "--", "sh", "-c", "echo one; echo two"))
    assert run["status"] == "queued" and run["argv"] == ["sh", "-c", "echo one; echo two"]
    done = _json(e("run", "--wait", "--json", "--", "sh", "-c", "echo three"))
    assert done["status"] == "succeeded" and done["exit_code"] == 0
    logs = _json(e("logs", str(done["id"]), "--json"))
    assert logs == {"run": str(done["id"]), "start": 0, "end": 6, "ended": True, "text": "three\n"}
    again = _json(e("reproduce", str(done["id"]), "--wait", "--json"))
    assert again["status"] == "succeeded" and again["argv"] == done["argv"]
    assert again["seed"] == done["seed"]
    failed = json.loads(e("run", "--wait", "--json", "--", "sh", "-c", "exit 3").stdout)
    retried = _json(e("retry", str(failed["id"]), "--json"))
    assert retried["id"] == failed["id"] and retried["status"] == "queued"
    held = _json(e("run", "--json", "--wait-for-host", "--requires", "tpu", "--", "true"))
    assert _json(e("priority", str(held["id"]), "5", "--json"))["priority"] == 5
    assert _json(e("hold", str(held["id"]), "--json"))["held"] is True
    assert _json(e("release", str(held["id"]), "--json"))["held"] is False
    [cancelled] = _json(e("cancel", str(held["id"]), "--json"))  # type: ignore[misc]
    assert cancelled["id"] == held["id"]
    assert _json(e("host", "disable", "local", "--reason", "x", "--json")) == {
        "host": "local",
        "state": "disabled",
        "reason": "x",
    }
    assert _json(e("host", "enable", "local", "--json"))["state"] == "up"  # type: ignore[index]
    steps = _json(e("host", "check", "local", "--json"))
    assert steps and all(set(s) == {"step", "ok", "detail"} for s in steps)  # type: ignore[union-attr]
    # A sweep's exports and report.
    _toy_sweep(
        daemon, "s", "{'auc': p['x'] / 10}", "[sweep]\nseeds = [0, 1]\n[sweep.params]\nx = [1, 2]\n"
    )
    assert e("sweep", "s.toml", "--wait").returncode == 0
    rows = _json(e("export", "s-1", "--json"))
    assert [(r["param_x"], r["auc_mean"]) for r in rows] == [(2, 0.2), (1, 0.1)]  # type: ignore[union-attr]
    written = _json(e("export", "s-1", "--format", "latex", "--out", "t.tex", "--json"))
    assert written == {"out": "t.tex", "format": "latex", "rows": 2}
    report = _json(e("report", "s-1", "--out", "r", "--json"))
    assert "index.md" in report["files"] and Path(report["out"]) == daemon.folder / "r"  # type: ignore[index]
    stopped = _json(e("stop", "--json"))
    assert stopped == {"pid": daemon.daemon.pid, "stopped": True}  # type: ignore[union-attr]
    assert _json(e("stop", "--json")) == {"pid": None, "stopped": False}


def test_serve_and_init_say_what_they_did_as_json(short_tmp: Path) -> None:
    made = subprocess.run(
        [ENGINE, "init", "--json"], cwd=short_tmp, capture_output=True, text=True, check=True
    )
    assert json.loads(made.stdout) == {
        "config": str(short_tmp / "hosts.toml"),
        "experiments": str(short_tmp / "experiments"),
        "gitignore": str(short_tmp / ".gitignore"),
    }
    env = os.environ | {"RUNYARD_CONFIG": str(short_tmp / "hosts.toml")}
    serve = subprocess.Popen(
        [ENGINE, "serve", "--json"],
        cwd=short_tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert serve.stdout is not None
        ready = json.loads(serve.stdout.readline())  # once it serves
        assert ready["pid"] == serve.pid and ready["state_dir"] == str(short_tmp / "runs")
        assert Path(ready["socket"]).exists()
        stop = subprocess.run(
            [ENGINE, "stop", "--json"], cwd=short_tmp, env=env, capture_output=True, text=True
        )
        assert json.loads(stop.stdout) == {"pid": serve.pid, "stopped": True}
    finally:
        if serve.poll() is None:
            serve.kill()
        serve.wait(10)


def test_version_comes_from_the_package() -> None:
    shown = subprocess.run([ENGINE, "--version"], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == f"engine (runyard) {version('runyard')}"


def _complete(project: Project, line: str) -> list[str]:
    """What bash's completion of `line` offers, by argcomplete's own protocol."""
    out = project.folder / "completions"
    env = project.env() | {
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }
    subprocess.run([ENGINE], cwd=project.folder, env=env, check=True, timeout=30)
    return out.read_text().split("\v")


def test_completion_scripts_source_and_complete_what_the_project_has(daemon: Project) -> None:
    script = subprocess.run(
        ["bash", "-c", f'eval "$({ENGINE} completion bash)" && complete -p engine'],
        capture_output=True,
        text=True,
        env=daemon.env(),
    )
    assert script.returncode == 0, script.stderr
    assert "_python_argcomplete" in script.stdout and script.stdout.strip().endswith(" engine")
    for shell in ("zsh", "fish"):
        text = subprocess.run([ENGINE, "completion", shell], capture_output=True, text=True)
        assert text.returncode == 0 and "engine" in text.stdout
    run = _json(daemon.engine("run", "--wait", "--json", "--name", "named-run", "--", "true"))
    assert daemon.engine("alias", "set", "champion", str(run["id"])).returncode == 0  # type: ignore[index]
    (daemon.folder / "experiments").mkdir()
    (daemon.folder / "experiments" / "mlp.toml").write_text("")
    assert [w.strip() for w in _complete(daemon, "engine sh")] == ["show"]
    offered = [w.strip() for w in _complete(daemon, "engine show ")]
    assert {"@champion", str(run["id"]), "named-run"} <= set(offered)  # type: ignore[index]
    assert [w.strip() for w in _complete(daemon, "engine logs @ch")] == ["@champion"]
    assert "local" in [w.strip() for w in _complete(daemon, "engine host check ")]
    assert [w.strip() for w in _complete(daemon, "engine sweep experiments/m")] == [
        "experiments/mlp.toml"
    ]


def _on_a_terminal(project: Project, *args: str, columns: int = 100) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal `columns` wide; its exit
    status and everything it wrote there."""
    main, child = pty.openpty()
    env = project.env() | {"COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        [ENGINE, *args], cwd=project.folder, stdout=child, stderr=child, env=env
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(60), b"".join(chunks).decode("utf-8", "replace")


def test_a_wait_shows_progress_on_a_terminal_and_nothing_when_piped(daemon: Project) -> None:
    _toy_sweep(
        daemon, "p", "{'auc': p['x'] / 10}", "[sweep.params]\nx = [1, 2, 3]\n", "time.sleep(1.5)\n"
    )
    code, shown = _on_a_terminal(daemon, "sweep", "s.toml", "--wait")
    assert code == 0, shown
    assert "sweep p-1" in shown and "3/3" in shown and "0:00:0" in shown  # done of total, time
    assert "best auc 0.3 (run 3)" in shown
    piped = daemon.engine("sweep", "s.toml", "--wait")
    assert piped.returncode == 0
    assert "0:00:0" not in piped.stderr and "/3" not in piped.stderr  # no progress when piped
    code, shown = _on_a_terminal(daemon, "run", "--wait", "--", "sleep", "1.2")
    assert code == 0 and "run 7 sleep" in shown and "succeeded" in shown


def test_compare_fits_the_terminal_and_shows_only_what_differs(daemon: Project) -> None:
    _toy_sweep(
        daemon,
        "c",
        "{'auc': p['x'] / 10, 'same': 1.0}",
        '[sweep.params]\nx = [1, 2, 3, 4, 5, 6, 7, 8]\nlabel = ["a long value to widen it"]\n',
    )
    assert daemon.engine("sweep", "s.toml", "--wait").returncode == 0
    code, shown = _on_a_terminal(daemon, "compare", "--sweep", "c-1", columns=100)
    assert code == 0, shown
    lines = shown.splitlines()
    assert max(len(line.rstrip()) for line in lines if "\x1b" not in line) <= 100
    assert "runs 1-4 of 8" in shown and "runs 5-8 of 8" in shown  # in blocks that fit
    piped = daemon.engine("compare", "--sweep", "c-1").stdout
    assert "runs 1-" not in piped and len(piped.splitlines()[0]) > 100  # piped: one table
    assert "same last" in piped and "auc last" in piped
    only = daemon.engine("compare", "--sweep", "c-1", "--only-diff").stdout
    assert "same last" not in only and "auc last" in only and "≠ x" in only
    assert "label" not in only  # one value for all: not a difference


def test_tables_print_cells_as_text_not_markup() -> None:
    from engine.cli.output import table

    shown = table([["[red]failed", "a [b]c"]], ["[bold]NAME", "REASON"])
    assert shown.splitlines() == ["[bold]NAME   REASON", "[red]failed  a [b]c"]
