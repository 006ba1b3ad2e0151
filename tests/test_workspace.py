"""A research project as users have them, through the real daemon: data that git ignores,
checkpoints written relative to the working directory, each attempt in a directory of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.client import Client
from engine.model import RunStatus

from .conftest import Project

TRAIN = """\
import json, os, sys
run_id, i, literal = sys.argv[1], int(sys.argv[2]), sys.argv[3]
corpus = open("data/corpus/train.txt").read()  # ignored by git: linked into the run
base = open("weights/base.pt", "rb").read()
os.makedirs("out", exist_ok=True)  # relative to the working directory, as trainers do
with open("out/model.bin", "w") as f:
    f.write(f"run {run_id} i {i} corpus {len(corpus)} base {len(base)}")
print("@runyard", json.dumps({"step": 0, "score": i}))
print("LITERAL", literal, "CWD", os.getcwd())
"""
EXPERIMENT = """\
name = "lm"
command = "{python} train.py {{run_id}} {{i}} {{{{literal}}}}"
metric = {{ name = "score", mode = "max" }}
data = ["data/corpus/", "weights/base.pt"]
{top}
[sweep]
method = "grid"
[sweep.params]
i = [0, 1, 2]
"""


def research_project(folder: Path, python: str = sys.executable, top: str = "") -> Path:
    """A git project that keeps its data and weights out of git, as research code does."""
    (folder / "train.py").write_text(TRAIN)
    (folder / ".gitignore").write_text("runs/\ndata/\n*.pt\ncache/\n")
    (folder / "data" / "corpus").mkdir(parents=True)
    (folder / "data" / "corpus" / "train.txt").write_text("the cat sat\n" * 100)
    (folder / "weights").mkdir()
    (folder / "weights" / "base.pt").write_bytes(b"\x00" * 4096)
    (folder / "cache").mkdir()
    (folder / "cache" / "features.npy").write_bytes(b"\x01" * 2048)  # ignored, not in `data`
    exp = folder / "lm.toml"
    exp.write_text(EXPERIMENT.format(python=python, top=top))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    return exp


def snapshot_files(project: Project) -> dict[str, bytes]:
    [snapshot] = (project.state_dir / "snapshots").iterdir()
    return {
        str(p.relative_to(snapshot)): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()
    }


async def test_each_trial_writes_its_own_files_and_sees_the_ignored_data(
    client: Client, daemon: Project
) -> None:
    exp = research_project(daemon.folder)
    result = await client.sweep(exp, cwd=str(daemon.folder))
    ended = [await client.wait(r.id, 60) for r in result.runs]
    logs = [(await client.log(r.id))[0].decode() for r in ended]
    assert [r.status for r in ended] == [RunStatus.SUCCEEDED] * 3, logs
    before = snapshot_files(daemon)
    assert "train.py" in before and not any(
        k.startswith(("out", "data", "weights")) for k in before
    )
    models = {}
    for run in ended:
        work = Path(run.run_dir) / "attempt-1" / "work"
        models[run.id] = (work / "out" / "model.bin").read_text()
        assert models[run.id].startswith(f"run {run.id} i {run.params['i']} corpus 1200 base 4096")
    assert len(set(models.values())) == 3  # every run's file is its own
    assert all("LITERAL {literal} CWD " in log for log in logs)  # {{ }} are literal braces
    # the snapshot is read-only and unchanged
    [folder] = (daemon.state_dir / "snapshots").iterdir()
    assert not (folder / "train.py").stat().st_mode & 0o222
    # reproducing a run gives it its own file and leaves the original's intact
    first = ended[0]
    again = await client.wait((await client.reproduce(str(first.id))).id, 60)
    assert again.status is RunStatus.SUCCEEDED
    repro_model = Path(again.run_dir) / "attempt-1" / "work" / "out" / "model.bin"
    assert repro_model.read_text().startswith(f"run {again.id} i 0 ")
    original = Path(first.run_dir) / "attempt-1" / "work" / "out" / "model.bin"
    assert original.read_text() == models[first.id]
    assert snapshot_files(daemon) == before


def test_a_dry_run_says_what_runs_see_and_warns_of_ignored_files(project: Project) -> None:
    exp = research_project(project.folder)
    done = project.engine("sweep", str(exp), "--dry-run")
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
    assert out.splitlines()[0].endswith("train.py '{run_id}' 0 '{literal}'"), out  # as run
    assert "each run starts in its own copy of the code snapshot: 4 files" in out, out
    assert f"data data/corpus → {project.folder}/data/corpus (folder, 1.2 KB;" in out, out
    assert f"data weights/base.pt → {project.folder}/weights/base.pt (file, 4.1 KB;" in out
    assert "runs will not see: cache/ (2.0 KB)" in err, err
    assert "runs/" not in err.split("runs will not see:")[1]  # the engine's own state


def test_missing_data_is_refused_at_submission_naming_it(project: Project) -> None:
    exp = research_project(project.folder)
    exp.write_text(exp.read_text().replace('"weights/base.pt"', '"weights/large.pt"'))
    done = project.engine("sweep", str(exp))
    assert done.returncode == 1
    assert f"data 'weights/large.pt': no such file or folder ({project.folder}" in done.stderr


async def test_engine_run_with_data_runs_in_its_own_directory(
    client: Client, daemon: Project
) -> None:
    research_project(daemon.folder)
    done = daemon.engine(
        "run", "--data", "data/corpus", "--data", "weights/base.pt", "--wait", "--",
        sys.executable, "train.py", "7", "1", "x",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = (await client.runs())[0]
    model = Path(run.run_dir) / "attempt-1" / "work" / "out" / "model.bin"
    assert model.read_text().startswith("run 7 i 1 corpus 1200")
    assert not (daemon.folder / "out").exists()  # the project itself was not written to
