"""Aliases, a small model registry, through the real CLI and daemon: set, move, promote,
history, `@name` in every verb that takes a run, and the refusals."""

from __future__ import annotations

import json
import sys

from .conftest import Project

TRAIN = """\
import json, os, sys
params = json.loads(os.environ["RUNYARD_PARAMS"])
print("training with", params)
print("@runyard", json.dumps({"step": 1, "auc": params["C"] / 10}))
with open(os.path.join(os.environ["RUNYARD_ARTIFACT_DIR"], "model.txt"), "w") as f:
    f.write(f"C={params['C']}")
sys.exit(3 if params["C"] == 4 else 0)
"""
EXPERIMENT = """\
name = "reg"
command = "{python} train.py"
metric = {{ name = "auc", mode = "max" }}
[sweep]
seeds = [0]
[sweep.params]
C = [1, 2, 4]
"""


def _ids(project: Project) -> dict[float, int]:
    """Run id by C, from `engine runs --json`."""
    runs = json.loads(project.engine("runs", "--sweep", "reg-1", "--json").stdout)
    return {r["params"]["C"]: r["id"] for r in runs}


def test_aliases_name_runs_in_every_verb_and_keep_their_history(project: Project) -> None:
    (project.folder / "train.py").write_text(TRAIN)
    exp = project.folder / "reg.toml"
    exp.write_text(EXPERIMENT.format(python=sys.executable))
    done = project.engine("sweep", str(exp), "--wait", timeout=120)
    assert done.returncode == 1  # C=4 exits 3
    ids = _ids(project)

    # The best succeeded run by the sweep's metric: C=2 (C=4 failed, so it is not a result).
    promoted = project.engine("promote", "reg-1", "--to", "challenger")
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == f"@challenger now names run {ids[2]}"

    assert (
        project.engine("alias", "set", "champion", str(ids[1]), "--note", "first").returncode == 0
    )
    moved = project.engine("alias", "set", "champion", "@challenger", "--note", "better auc")
    assert moved.stdout.strip() == f"@champion now names run {ids[2]} (was run {ids[1]})"

    # Every verb that takes a run takes an alias.
    shown = json.loads(project.engine("show", "@champion", "--json").stdout)
    assert shown["run"]["id"] == ids[2]
    assert shown["details"]["aliases"] == ["challenger", "champion"]
    assert "  aliases    @challenger @champion" in project.engine("show", "@champion").stdout
    assert "training with {'C': 2}" in project.engine("logs", "@champion").stdout
    metrics = json.loads(project.engine("metrics", "@champion", "--json").stdout)
    assert [m["value"] for m in metrics] == [0.2]
    compared = json.loads(project.engine("compare", "@champion", str(ids[1]), "--json").stdout)
    assert [r["id"] for r in compared["runs"]] == [ids[2], ids[1]]
    again = project.engine("reproduce", "@champion")
    assert again.returncode == 0, again.stderr
    copy = json.loads(project.engine("show", again.stdout.strip(), "--json").stdout)["run"]
    assert copy["params"] == {"C": 2} and copy["argv"] == shown["run"]["argv"]

    # A script finds the model without knowing the run's id.
    path = project.engine("alias", "get", "champion", "--path")
    assert path.returncode == 0, path.stderr
    assert (project.folder / path.stdout.strip() / "model.txt").read_text() == "C=2"
    assert project.engine("alias", "get", "champion").stdout.strip() == str(ids[2])

    listed = json.loads(project.engine("alias", "list", "--json").stdout)
    assert [(a["name"], a["run"], a["status"]) for a in listed] == [
        ("challenger", ids[2], "succeeded"),
        ("champion", ids[2], "succeeded"),
    ]
    assert listed[1]["note"] == "better auc"

    # A failed run is no result: refused, unless forced.
    refused = project.engine("alias", "set", "champion", str(ids[4]))
    assert refused.returncode == 1
    assert (
        f"run {ids[4]} is failed, not succeeded" in refused.stderr and "--force" in refused.stderr
    )
    forced = project.engine("alias", "set", "champion", str(ids[4]), "--force")
    assert forced.returncode == 0, forced.stderr
    assert project.engine("alias", "rm", "champion").returncode == 0

    history = json.loads(project.engine("alias", "history", "champion", "--json").stdout)
    assert [(m["from"], m["to"], m["note"]) for m in history] == [
        (None, ids[1], "first"),
        (ids[1], ids[2], "better auc"),
        (ids[2], ids[4], None),
        (ids[4], None, None),
    ]
    table = project.engine("alias", "history", "champion").stdout.splitlines()
    assert table[0].split() == ["WHEN", "FROM", "TO", "NOTE"] and "(removed)" in table[-1]

    # Clear errors: a removed alias, a bad name, an unknown run.
    gone = project.engine("show", "@champion")
    assert gone.returncode == 3 and "no alias 'champion'" in gone.stderr
    bad = project.engine("alias", "set", "2fast", str(ids[1]))
    assert bad.returncode == 1 and "bad alias name '2fast'" in bad.stderr
    unknown = project.engine("alias", "set", "best", "99999")
    assert unknown.returncode == 3 and "no run '99999'" in unknown.stderr


async def test_the_tui_names_the_cursors_run_and_shows_aliases(daemon: Project) -> None:
    from engine.client import connect
    from tui.app import RunyardApp
    from tui.screens import RunDetailScreen
    from tui.widgets import RunsTable

    from .conftest import shown_notifications, wait_until
    from .test_control_center import on_screen
    from .test_daemon import job

    client = await connect(daemon.config, start=False)
    try:
        [first] = await client.submit([job(daemon, ["true"], name="first")])
        [broken] = await client.submit([job(daemon, ["false"], name="broken")])
        [second] = await client.submit([job(daemon, ["true"], name="second")])
        for run in (first, broken, second):
            await client.wait(run.id, 30)
        app = RunyardApp(str(daemon.config_path))
        told = shown_notifications(app)
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.dash.query_one(RunsTable)
            await wait_until(lambda: table.window.cursor_run == second.id, what="the runs")
            await pilot.press("a", *"champion", "enter")
            await wait_until(lambda: "@champion second" in on_screen(table, "second"), what="drawn")
            # Moved from the CLI while the TUI is open: both rows are redrawn.
            moved = daemon.engine("alias", "set", "champion", str(first.id))
            assert moved.returncode == 0, moved.stderr
            await wait_until(lambda: "@champion first" in on_screen(table, "first"), what="moved")
            assert "@champion" not in on_screen(table, "second")
            # A failed run is refused, and the refusal is shown.
            await pilot.press("down")
            await wait_until(lambda: table.window.cursor_run == broken.id)
            await pilot.press("a", *"champion", "enter")
            await wait_until(
                lambda: any("not succeeded" in m for m in told), what="the refusal shown"
            )
            await pilot.press("down", "enter")
            await wait_until(lambda: isinstance(app.screen, RunDetailScreen), what="the detail")
            facts = app.screen.query_one("#facts-text")
            await wait_until(lambda: "@champion" in str(facts.render()), what="aliases in detail")
    finally:
        await client.close()
