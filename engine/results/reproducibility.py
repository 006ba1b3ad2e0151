"""What a sweep's results were made with, from the runs' manifests: code (commit, uncommitted
changes, snapshot), seeds, interpreter and the versions of the packages a result depends on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The packages whose versions change results, shown when a run's interpreter has them.
KEY_PACKAGES = (
    "torch",
    "jax",
    "tensorflow",
    "numpy",
    "scipy",
    "scikit-learn",
    "xgboost",
    "lightgbm",
    "catboost",
    "pandas",
    "transformers",
)


def key_packages(packages_file: str | None) -> dict[str, str]:
    """The versions of KEY_PACKAGES in an interpreter's package list (name==version lines)."""
    if not packages_file:
        return {}
    try:
        lines = Path(packages_file).read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, _, version = line.partition("==")
        if name.lower() in KEY_PACKAGES:
            found[name.lower()] = version
    return {name: found[name] for name in KEY_PACKAGES if name in found}


def provenance(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs grouped by what made them: one row per distinct commit, dirty flag, snapshot,
    interpreter and key package versions, with its runs and their seeds."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    packages: dict[str | None, dict[str, str]] = {}  # by packages file, read once each
    for run in runs:
        manifest = run.get("manifest") or {}
        git = manifest.get("git") or {}
        interpreter = manifest.get("interpreter") or {}
        listed = interpreter.get("packages_file")
        if listed not in packages:
            packages[listed] = key_packages(listed)
        row = {
            "commit": git.get("commit"),
            "dirty": bool(git.get("dirty")),
            "snapshot": manifest.get("snapshot"),
            "python": interpreter.get("version"),
            "packages": packages[listed],
        }
        key = (
            row["commit"],
            row["dirty"],
            row["snapshot"],
            row["python"],
            tuple(row["packages"].items()),
        )
        entry = groups.setdefault(key, row | {"runs": [], "seeds": []})
        entry["runs"].append(run["id"])
        if run["seed"] not in entry["seeds"]:
            entry["seeds"].append(run["seed"])
    return list(groups.values())
