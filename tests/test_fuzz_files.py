"""Property-based tests: malformed hosts.toml and experiment files (wrong types, unknown keys,
NaN and infinities, huge and negative numbers, NUL bytes, deep nesting, binary and UTF-16
content) each give exit code 2 and one line naming the file, never a traceback or a hang."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import cli

EXAMPLES = int(os.environ.get("RUNYARD_FUZZ_EXAMPLES", "1000"))  # per file kind; CI runs 2,000

GOOD_HOSTS: dict[str, Any] = {
    "engine": {"state_dir": "runs", "sample_interval_s": 1.0, "cancel_grace_s": 5.0},
    "hosts": {
        "local": {
            "kind": "local",
            "max_jobs": 2,
            "tags": ["cpu"],
            "cpus": 2.0,
            "mem_gb": 4.0,
            "gpus": [{"memory_gb": 8.0, "name": "fake"}],
        },
        "box": {
            "kind": "ssh",
            "address": "127.0.0.2",
            "user": "me",
            "port": 2222,
            "workdir": "/tmp/runyard-work",
            "identity": "/tmp/id_ed25519",
            "known_hosts": "/tmp/known_hosts",
            "keepalive_s": 1.0,
            "lost_after_s": 60.0,
            "python": "python3",
            "setup": "true",
            "data": {"data/corpus": "/srv/corpus"},
        },
    },
    "routes": [
        {
            "match": {"model_type": "XGBoost", "tags": ["gpu"]},
            "prefer": ["box"],
            "fallback": ["local"],
            "fallback_after_s": 30.0,
        }
    ],
}

GOOD_EXPERIMENT: dict[str, Any] = {
    "name": "fuzzed",
    "command": "python train.py --lr {lr} --depth {depth} --seed {seed}",
    "model_type": "XGBoost",
    "priority": 1,
    "resources": {"cpus": 1.0, "mem_gb": 1.0, "gpus": 0, "gpu_mem_gb": 0.0},
    "metric": {"name": "val_auc", "mode": "max", "summary": "last", "bounds": [0.0, 1.0]},
    "capture": ["colon", "(?P<loss>[0-9.]+) loss"],
    "retry": {"attempts": 2, "backoff_s": 1.0, "factor": 2.0, "on": ["oom"]},
    "sweep": {
        "method": "grid",
        "seeds": [0, 1],
        "max_concurrent": 2,
        "sampler_seed": 7,
        "params": {"lr": {"low": 0.1, "high": 0.3, "step": 0.1}, "depth": [3, 5]},
        "early_stop": {"method": "none"},
    },
}

# Tables whose keys are the user's own names (a new key there is not unknown).
OPEN_TABLES = {"hosts", "hosts.box.data", "sweep.params"}

ALWAYS_BAD = [math.nan, math.inf, -math.inf, "nul\0byte", 2**70]
MAYBE_BAD = [-1, 0, -(10**18), 10**18, 1e308, 1e-300, -0.5, "", " ", "~", "../..", [], [1, "a"]]


def leaves(doc: Any, path: tuple = ()) -> list[tuple]:
    """Every scalar's place in a document, as a path of keys and list indexes."""
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in leaves(v, (*path, k))]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in leaves(v, (*path, i))] or [path]
    return [path]


def tables(doc: Any, path: tuple = ()) -> list[tuple]:
    """Every table's place in a document, except those whose keys are names (OPEN_TABLES)."""
    out = [] if ".".join(map(str, path)) in OPEN_TABLES else [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(v, dict):
                out += tables(v, (*path, k))
            elif isinstance(v, list):
                out += [
                    p
                    for i, x in enumerate(v)
                    if isinstance(x, dict)
                    for p in tables(x, (*path, k, i))
                ]
    return out


def put(doc: Any, path: tuple, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


def get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def swapped(value: Any) -> Any:
    """A value of another TOML type than `value`."""
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, int | float):
        return "seven"
    if isinstance(value, str):
        return 7
    return {"a": 1}


def toml(doc: dict[str, Any]) -> str:
    """A document as TOML: top-level scalars, then each table inline under its key."""
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in doc.items())


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\0", "\\u0000")
    return f'"{escaped}"'


@st.composite
def malformed(draw: st.DrawFn, good: dict[str, Any]) -> tuple[bytes, bool]:
    """A file made from a good document by one fault, and whether that fault is always wrong
    (else it may be a value some setting accepts)."""
    kind = draw(st.sampled_from(["bad", "bad", "swap", "unknown", "maybe", "maybe", "raw"]))
    if kind in ("bad", "maybe", "swap"):
        path = draw(st.sampled_from(leaves(good)))
        if kind == "swap":
            value: Any = swapped(get(good, path))
        else:
            value = draw(st.sampled_from(ALWAYS_BAD if kind == "bad" else MAYBE_BAD))
        # a parameter's values may be of any type: another type there is no fault
        free = kind == "swap" and path[:2] == ("sweep", "params")
        return toml(put(good, path, value)).encode(), kind != "maybe" and not free
    if kind == "unknown":
        path = draw(st.sampled_from(tables(good)))
        table = get(good, path) if path else good
        doc = put(good, (*path, "bogus_key"), 1) if path else {**good, "bogus_key": 1}
        assert isinstance(table, dict)
        return toml(doc).encode(), True
    text = toml(good)
    fault = draw(st.sampled_from(["binary", "utf16", "deep", "nul", "cut", "deep-table"]))
    if fault == "binary":
        return draw(st.binary(min_size=1, max_size=200)) + b"\xff", True
    if fault == "utf16":
        return text.encode("utf-16"), True
    if fault == "deep":
        depth = draw(st.integers(20, 5000))
        return f"{text}deep = {'[' * depth}1{']' * depth}\n".encode(), True
    if fault == "deep-table":
        depth = draw(st.integers(20, 400))
        return f"{text}deep = {'{ a = ' * depth}1{' }' * depth}\n".encode(), True
    at = draw(st.integers(0, len(text)))
    if fault == "nul":
        return (text[:at] + "\0" + text[at:]).encode(), True
    return text[:at].encode(), False  # a cut file may still be valid TOML and a valid file


def outcome(argv: list[str], path: Path) -> tuple[int, list[str]]:
    """Run the CLI in this process; its exit code and stderr lines."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue().splitlines()


def assert_clean(code: int, lines: list[str], path: Path, always_bad: bool) -> None:
    text = "\n".join(lines)
    assert "Traceback" not in text, text
    if always_bad:
        assert code == 2, f"accepted: {path.read_bytes()[:300]!r}\n{text}"
    assert code in (0, 2), text
    if code == 2:
        errors = [line for line in lines if line.startswith("engine: ")]
        assert len(errors) == 1 and errors[0].startswith(f"engine: {path}"), text


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5000,  # a case that stalls fails, named
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(case=malformed(GOOD_HOSTS))
def test_every_malformed_hosts_toml_gives_one_clean_line(
    folder: Path, case: tuple[bytes, bool]
) -> None:
    content, always_bad = case
    path = folder / "hosts.toml"
    path.write_bytes(content)
    code, lines = outcome(["--config", str(path), "validate"], path)
    assert_clean(code, lines, path, always_bad)


@FUZZ
@given(case=malformed(GOOD_EXPERIMENT))
def test_every_malformed_experiment_gives_one_clean_line(
    folder: Path, case: tuple[bytes, bool]
) -> None:
    content, always_bad = case
    hosts = folder / "hosts.toml"
    hosts.write_text(toml(GOOD_HOSTS))
    path = folder / "experiment.toml"
    path.write_bytes(content)
    code, lines = outcome(["--config", str(hosts), "validate", str(path)], path)
    assert_clean(code, lines, path, always_bad)


def test_the_good_files_are_good(folder: Path) -> None:
    """The fuzzed documents start valid, so each fault is what makes a file bad."""
    hosts = folder / "hosts.toml"
    hosts.write_text(toml(GOOD_HOSTS))
    experiment = folder / "experiment.toml"
    experiment.write_text(toml(GOOD_EXPERIMENT))
    code, lines = outcome(["--config", str(hosts), "validate", str(experiment)], experiment)
    assert code == 0, lines
    assert lines[-1] == f"{experiment}: 12 runs (grid)"
