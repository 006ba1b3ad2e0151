"""What a researcher learns before a sweep starts, through the real CLI and daemon: files not
committed, how long it should take from earlier runs (checked against what happened), and a
question before anything estimated past `confirm_over`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .conftest import Project

TRAIN = """\
import json, os, time
time.sleep(0.6)
print("@runyard", json.dumps({"step": 0, "score": float(os.environ["RUNYARD_SEED"])}))
"""
EXPERIMENT = """\
name = "slow"
command = "{python} train.py --i {{i}}"
metric = {{ name = "score", mode = "max" }}
[sweep]
method = "grid"
max_concurrent = 2
[sweep.params]
i = [0, 1, 2, 3, 4, 5, 6, 7]
"""


def committed_project(project: Project) -> Path:
    """The project as a user keeps it: trainer and experiment committed, runs/ ignored."""
    (project.folder / "train.py").write_text(TRAIN)
    (project.folder / "experiments").mkdir()
    exp = project.folder / "experiments" / "slow.toml"
    exp.write_text(EXPERIMENT.format(python=sys.executable))
    (project.folder / ".gitignore").write_text("runs/\n*.log\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=project.folder, check=True)
    subprocess.run([*git, "add", "."], cwd=project.folder, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=project.folder, check=True)
    return exp


def test_uncommitted_changes_are_named_when_a_sweep_is_launched(project: Project) -> None:
    exp = committed_project(project)
    clean = project.engine("sweep", str(exp), "--dry-run")
    assert clean.returncode == 0, clean.stderr
    assert "uncommitted" not in clean.stderr
    (project.folder / "train.py").write_text(TRAIN.replace("0.6", "0.5"))
    (project.folder / "notes.txt").write_text("try a smaller lr\n")
    for args in (("--dry-run",), ()):
        launched = project.engine("sweep", str(exp), *args)
        assert launched.returncode == 0, launched.stderr
        warning = next(line for line in launched.stderr.splitlines() if "uncommitted" in line)
        assert "(M train.py, ?? notes.txt)" in warning, warning
        assert "cannot be reproduced from commit " in warning


def test_an_estimate_from_a_first_sweep_is_within_a_factor_2_of_the_second(
    project: Project,
) -> None:
    """8 trials of 0.6 s, 2 at once (the host takes 4): no history before the first sweep; after it, the
    estimate of the second is within a factor 2 of how long the second takes. Past a
    `confirm_over`, launching needs --yes (there is no terminal to ask at)."""
    exp = committed_project(project)
    first = project.engine("sweep", str(exp), "--dry-run")
    assert "estimate: 8 trials on local: no history to estimate from" in first.stderr, first.stderr
    assert project.engine("sweep", str(exp), "--wait", timeout=120).returncode == 0
    dry = project.engine("sweep", str(exp), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    [estimate] = json.loads(dry.stdout)["estimate"]
    assert (estimate["host"], estimate["trials"], estimate["slots"]) == ("local", 8, 2)
    assert estimate["history"] == 8 and not estimate["elsewhere"]
    assert "estimate: 8 trials ≈ " in dry.stderr and " on local with 2 slots (" in dry.stderr
    start = time.perf_counter()
    second = project.engine("sweep", str(exp), "--wait", timeout=120)
    took = time.perf_counter() - start
    assert second.returncode == 0, second.stderr
    assert 0.5 <= estimate["wall_s"] / took <= 2, (estimate, took)
    exp.write_text('confirm_over = "1s"\n' + exp.read_text())
    asked = project.engine("sweep", str(exp))
    assert asked.returncode == 1, asked.stderr
    assert "over confirm_over = 1.0s; pass --yes to launch it" in asked.stderr
    assert len(json.loads(project.engine("sweeps", "--json").stdout)) == 2  # nothing queued
    assert project.engine("sweep", str(exp), "--yes").returncode == 0
    exp.write_text(exp.read_text().replace('"1s"', '"2x"'))
    bad = project.engine("sweep", str(exp), "--yes")
    assert bad.returncode == 2 and "slow.toml:1: confirm_over: expected a duration" in bad.stderr


SMOKE_TRAIN = """\
import json, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
i, epochs = int(args["--i"]), int(args["--epochs"])
if i < 0:
    raise ValueError(f"i must be 0 or more, got {i}")
for epoch in range(epochs):
    print("@runyard", json.dumps({"step": epoch, "score": i + epoch / 100}))
"""
SMOKE_EXPERIMENT = """\
name = "smoky"
metric = {{ name = "score", mode = "max" }}
[[models]]
name = "a"
command = "{python} train.py --i {{i}} --epochs {{epochs}}"
[[models]]
name = "b"
command = "{python} train.py --epochs {{epochs}} --i {{i}}"
[sweep]
method = "grid"
seeds = [0, 1]
[sweep.params]
i = [0, 1, 2]
epochs = [30]
[smoke]
epochs = 1
"""


def test_a_smoke_test_gates_the_sweep(project: Project) -> None:
    """One run per model with the [smoke] values: when one fails (or reports no metric) the
    sweep is not queued and the failure says where, why and what the log said; when all
    pass, the full sweep is queued. Smoke runs are marked and left out of estimates."""
    (project.folder / "train.py").write_text(SMOKE_TRAIN)
    exp = project.folder / "smoky.toml"
    exp.write_text(SMOKE_EXPERIMENT.format(python=sys.executable))

    def sweeps() -> list[dict[str, object]]:
        return json.loads(project.engine("sweeps", "--json").stdout)

    broken = project.engine("sweep", str(exp), "--smoke", "--set", "i=-1", timeout=120)
    assert broken.returncode == 1, broken.stderr
    assert "FAIL smoky-smoke-1-a-000-s0" in broken.stderr
    assert "failed on local: exit code 1" in broken.stderr
    assert "| ValueError: i must be 0 or more, got -1" in broken.stderr
    assert "the full sweep was not queued" in broken.stderr
    [smoke] = sweeps()
    assert smoke["id"] == "smoky-smoke-1" and smoke["smoke"] and smoke["trials"] == 2
    silent = exp.read_text().replace("epochs = 1\n", "epochs = 0\n")
    exp.write_text(silent)
    quiet = project.engine("sweep", str(exp), "--smoke", timeout=120)
    assert quiet.returncode == 1 and "succeeded on local but never reported score" in quiet.stderr
    exp.write_text(SMOKE_EXPERIMENT.format(python=sys.executable))
    good = project.engine("sweep", str(exp), "--smoke", "--wait", timeout=120)
    assert good.returncode == 0, good.stderr
    assert "ok   smoky-smoke-3-a-000-s0" in good.stderr and "score = 0" in good.stderr
    assert "ok   smoky-smoke-3-b-000-s0" in good.stderr
    assert "sweep smoky-1 queued: 12 trials" in good.stderr
    runs = json.loads(project.engine("runs", "--json", "--limit", "100").stdout)
    smoke_runs = [r for r in runs if "smoke" in r["tags"]]
    assert len(smoke_runs) == 6 and all(r["sweep"].startswith("smoky-smoke-") for r in smoke_runs)
    # The smoke runs' params are the [smoke] values, the rest the first of each.
    passed = [r for r in smoke_runs if r["sweep"] == "smoky-smoke-3"]
    assert {json.dumps(r["params"], sort_keys=True) for r in passed} == {'{"epochs": 1, "i": 0}'}
    dry = project.engine("sweep", str(exp), "--dry-run")
    assert "from 12 earlier runs" in dry.stderr, dry.stderr  # the full sweep's, not smoke's
