"""The example trainers: real data that ships with scikit-learn, determinism, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.client import Client
from engine.config import load_experiment
from engine.sweep import trials

ROOT = Path(__file__).resolve().parent.parent
TRAINERS = ROOT / "experiments" / "trainers"


def train(script: str, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(TRAINERS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return [
        json.loads(line.removeprefix("@runyard "))
        for line in done.stdout.splitlines()
        if line.startswith("@runyard ")
    ]


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("xgb_train.py", ("--rounds", "5", "--seed", "3")),
        ("torch_mlp.py", ("--epochs", "3", "--seed", "3")),
        ("sk_baselines.py", ("--model", "rf", "--n-estimators", "20", "--seed", "3")),
    ],
)
def test_the_same_seed_gives_identical_metrics(script: str, args: tuple[str, ...]) -> None:
    first, again = train(script, *args), train(script, *args)
    assert first == again and first
    assert 0.9 < first[-1]["val_auc"] <= 1.0  # digits are learnable: a real fit, not noise
    other = train(script, *args[:-1], "4")
    assert other != first  # and the seed matters


def test_the_mlp_resumes_from_its_checkpoint_and_saves_predictions(tmp_path: Path) -> None:
    env = {
        "RUNYARD_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "RUNYARD_ARTIFACT_DIR": str(tmp_path / "art"),
    }
    first = train("torch_mlp.py", "--epochs", "2", "--seed", "1", env=env)
    assert [p["step"] for p in first] == [0, 1]
    resumed = train("torch_mlp.py", "--epochs", "4", "--seed", "1", env=env)
    assert [p["step"] for p in resumed] == [2, 3]
    saved = np.load(tmp_path / "art" / "predictions.npz")
    assert saved["y_score"].shape == (len(saved["y_true"]), 10)
    assert abs(saved["y_score"].sum(axis=1) - 1).max() < 1e-4


def test_the_shipped_experiments_are_valid() -> None:
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        exp = load_experiment(path)
        assert trials(exp), path
        for model in exp.models:
            assert (ROOT / model.argv[1]).exists(), f"{path}: {model.argv[1]} is missing"


async def test_a_real_sweep_of_a_trainer_through_the_daemon(client: Client, daemon) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(TRAINERS, daemon.folder / "trainers")  # part of the project, so of its snapshot
    exp = daemon.folder / "glm.toml"
    exp.write_text(
        'name = "glm"\n'
        f'command = "{sys.executable} trainers/sk_baselines.py --model glm --C {{C}} --seed {{seed}}"\n'
        'metric = { name = "val_auc", mode = "max" }\n'
        "[sweep]\nseeds = [0, 1]\n[sweep.params]\nC = [0.001, 1.0]\n"
    )
    result = await client.sweep(exp, cwd=str(daemon.folder))
    ended = [await client.wait(r.id, 120) for r in result.runs]
    assert [r.status for r in ended] == ["succeeded"] * 4, [r.reason for r in ended]
    best = await client.best(result.sweep)
    assert best["configs"][0]["params"] == {"C": 1.0} and best["configs"][0]["n"] == 2
    assert Path(ended[0].run_dir, "artifacts", "predictions.npz").exists()
