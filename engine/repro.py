"""The run manifest: git commit, branch, dirty diff and untracked files, the interpreter and its
packages, host, seed, resolved command, and the environment with secrets masked."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
MASK = "****"
_PROBE = (
    "import sys, json, sysconfig, importlib.metadata as m\n"
    "pk = sorted({f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions()"
    " if d.metadata['Name']}, key=str.lower)\n"
    "print(json.dumps({'executable': sys.executable, 'version': sys.version.split()[0],"
    " 'implementation': sys.implementation.name, 'purelib': sysconfig.get_path('purelib'),"
    " 'packages': pk}))"
)


def mask_env(env: dict[str, str]) -> dict[str, str]:
    """The environment with the values of names containing KEY, TOKEN, SECRET or PASSWORD masked."""
    return {k: (MASK if SECRET_NAME.search(k) else v) for k, v in sorted(env.items())}


def unmask_env(env: dict[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    """A stored (masked) environment made whole again from `secrets`, the environment of
    whoever asks now; a secret they do not have is left out rather than passed on masked."""
    out = {}
    for name, value in env.items():
        if value == MASK and SECRET_NAME.search(name):
            if name in secrets:
                out[name] = secrets[name]
        else:
            out[name] = value
    return out


def secrets_of(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of an environment whose names mark them secret."""
    return {k: v for k, v in env.items() if SECRET_NAME.search(k)}


async def _run(*argv: str, cwd: str | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return 127, b""
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, b""
    return proc.returncode or 0, out


async def git_state(
    cwd: str, save_dir: Path, state_dir: Path | None = None
) -> dict[str, Any] | None:
    """Commit, branch, dirty flag, changed tracked files, untracked files and the diff against
    HEAD (saved as a file, content-addressed), leaving out the engine's own `state_dir`; None
    when `cwd` is not inside a git work tree or git is missing."""
    if shutil.which("git") is None:
        return None
    _, top = await _run("git", "rev-parse", "--show-toplevel", cwd=cwd)
    root = top.decode().strip() or None
    skipped: list[str] = []  # the state dir, relative to the work tree's top
    if root and state_dir is not None:
        rel = os.path.relpath(state_dir.resolve(), Path(root).resolve())
        if rel != "." and not rel.startswith(".."):
            skipped.append(Path(rel).as_posix())
    pathspec = [".", *(f":(exclude,top){p}" for p in skipped)] if skipped else []
    code, out = await _run(
        "git", "status", "--porcelain=v2", "--branch", "--untracked-files=all", "-z",
        "--", *pathspec, cwd=root or cwd,
    )  # fmt: skip
    if code != 0:
        return None
    commit = branch = None
    dirty = False
    untracked: list[str] = []
    changed: list[str] = []  # tracked files that differ from HEAD, as git status names them
    records = out.split(b"\0")
    i = 0
    while i < len(records):
        rec = records[i].decode("utf-8", "replace")
        if rec.startswith("# branch.oid "):
            oid = rec.removeprefix("# branch.oid ")
            commit = None if oid == "(initial)" else oid
        elif rec.startswith("# branch.head "):
            head = rec.removeprefix("# branch.head ")
            branch = None if head == "(detached)" else head
        elif rec.startswith("? "):
            untracked.append(rec[2:])
        elif rec[:2] in ("1 ", "u ", "2 "):
            dirty = True
            # The path follows 8 fields (ordinary), 9 (renamed or copied) or 10 (unmerged).
            changed.append(rec.split(" ", {"1": 8, "2": 9, "u": 10}[rec[0]])[-1])
            if rec[0] == "2":
                i += 1  # a rename record is followed by its original path
        i += 1
    state: dict[str, Any] = {
        "commit": commit,
        "branch": branch,
        "dirty": dirty,
        "changed": changed,
        "untracked": untracked,
        "diff_file": None,
    }
    state["root"] = root
    if dirty and commit:
        code, diff = await _run("git", "diff", "HEAD", "--binary", "--", *pathspec, cwd=root or cwd)
        if code == 0 and diff:
            digest = hashlib.sha256(diff).hexdigest()[:16]
            save_dir.mkdir(parents=True, exist_ok=True)
            path = save_dir / f"{digest}.patch"
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(diff)
                tmp.replace(path)
            state["diff_file"] = str(path)
    return state


class InterpreterCache:
    """Interpreter version and installed packages, cached per interpreter until its
    site-packages folder changes (a pip install touches it), in memory and on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._memory: dict[str, dict[str, Any]] = {}

    async def describe(self, executable: str) -> dict[str, Any] | None:
        real = os.path.realpath(executable)
        key = hashlib.sha256(executable.encode()).hexdigest()[:16]
        cached = self._memory.get(key) or self._load(key)
        if cached and _mtime(cached.get("purelib")) == cached.get("purelib_mtime"):
            self._memory[key] = cached
            return cached["summary"]
        code, out = await _run(executable, "-c", _PROBE, timeout=60)
        if code != 0:
            return None
        try:
            info = json.loads(out)
        except ValueError:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        packages_file = self.folder / f"packages-{key}.txt"
        packages_file.write_text("\n".join(info["packages"]) + "\n")
        summary = {
            "path": executable,
            "realpath": real,
            "version": info["version"],
            "implementation": info["implementation"],
            "packages_file": str(packages_file),
            "package_count": len(info["packages"]),
        }
        entry = {
            "summary": summary,
            "purelib": info["purelib"],
            "purelib_mtime": _mtime(info["purelib"]),
        }
        self._memory[key] = entry
        (self.folder / f"interpreter-{key}.json").write_text(json.dumps(entry))
        return summary

    def _load(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / f"interpreter-{key}.json").read_text())
        except (OSError, ValueError):
            return None


def _mtime(path: str | None) -> float | None:
    try:
        return os.stat(path).st_mtime if path else None
    except OSError:
        return None


def interpreter_for(argv: tuple[str, ...], env: dict[str, str]) -> str | None:
    """The Python that will run the job: the command itself when it is a python, else the
    `python3` its PATH finds."""
    first = os.path.basename(argv[0]) if argv else ""
    name = argv[0] if re.fullmatch(r"python[0-9.]*", first) else "python3"
    return shutil.which(name, path=env.get("PATH"))


async def submission_manifest(
    cwd: str,
    argv: tuple[str, ...],
    env: dict[str, str],
    state_dir: Path,
    interpreters: InterpreterCache,
) -> dict[str, Any]:
    """What is shared by every run of one submission: code state, interpreter, host, environment."""
    executable = interpreter_for(argv, env)
    git, interpreter = await asyncio.gather(
        git_state(cwd, state_dir / "diffs", state_dir),
        interpreters.describe(executable) if executable else _none(),
    )
    return {
        "git": git,
        "interpreter": interpreter,
        "hostname": socket.gethostname(),
        "cwd": cwd,
        "env": mask_env(env),
    }


async def _none() -> None:
    return None


def run_manifest(shared: dict[str, Any], argv: tuple[str, ...], seed: int) -> dict[str, Any]:
    """One run's manifest: the submission's plus its seed and resolved command."""
    return {**shared, "seed": seed, "command": _command_line(argv), "argv": list(argv)}


@functools.lru_cache(maxsize=256)
def _command_line(argv: tuple[str, ...]) -> str:
    """`argv` as one shell-quoted line (a sweep's runs share a few commands: quoted once)."""
    return shlex.join(argv)


# --- code snapshots ----------------------------------------------------------------------

SKIP_DIRS = frozenset(
    {
        ".git",
        ".venv",
        "venv",
        "__pycache__",
        "node_modules",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
    }
)
MAX_SNAPSHOT_BYTES = 1 << 30


class SnapshotError(Exception):
    """The project cannot be snapshotted; the message says why."""


def take_snapshot(
    project: Path, store: Path, exclude: tuple[Path, ...] = ()
) -> tuple[str, Path, int]:
    """Copy the project's code (git-tracked files plus untracked ones git does not ignore, or
    every file outside caches and virtual environments where there is no git) into
    `store/<hash>`, named by the hash of its contents; return the hash, the folder and the file
    count. A snapshot that exists already is reused."""
    files = project_files(project, exclude)
    digest = hashlib.sha256()
    entries = []
    total = 0
    for rel in sorted(files):
        path = project / rel
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_SNAPSHOT_BYTES:
            raise SnapshotError(
                f"{project}: the code to snapshot is over {MAX_SNAPSHOT_BYTES >> 30} GiB; "
                "keep data out of git (or in .gitignore) so snapshots stay code"
            )
        mode = path.stat().st_mode & 0o777
        digest.update(f"{rel}\0{hashlib.sha256(data).hexdigest()}\0{mode:o}\n".encode())
        entries.append((rel, data, mode))
    name = digest.hexdigest()[:16]
    target = store / name
    if not target.exists():
        tmp = store / f".{name}.{os.getpid()}.tmp"
        for rel, data, mode in entries:
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            os.chmod(out, mode)
        tmp.mkdir(parents=True, exist_ok=True)
        _read_only(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another submission made the same snapshot first
            remove_tree(tmp)
    return name, target, len(entries)


def in_snapshot(cwd: str, store: Path) -> tuple[str, str] | None:
    """For a working directory inside a code snapshot under `store`: the snapshot's folder and
    the directory relative to it ("." for its top); None for any other directory."""
    top = f"{store}/"
    if not cwd.startswith(top) or cwd == top:
        return None
    name, _, rest = cwd[len(top) :].partition("/")
    return f"{top}{name}", rest.rstrip("/") or "."


def remove_tree(folder: Path) -> None:
    """Remove a folder, read-only snapshot or not."""
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, 0o700)
    if folder.exists():
        os.chmod(folder, 0o700)
    shutil.rmtree(folder, ignore_errors=True)


def _read_only(folder: Path) -> None:
    """Take the write bits off a snapshot, so a run that writes into it by mistake is refused
    (runs work in copies of it)."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        if not path.is_symlink():
            os.chmod(path, path.stat().st_mode & ~0o222)
    os.chmod(folder, folder.stat().st_mode & ~0o222)


def project_files(project: Path, exclude: tuple[Path, ...]) -> list[str]:
    """The project-relative paths a snapshot of `project` holds (before links and folders are
    left out)."""
    skipped = [p.resolve() for p in exclude]

    def kept(rel: str) -> bool:
        path = (project / rel).resolve()
        return not any(path == s or s in path.parents for s in skipped)

    if shutil.which("git"):
        import subprocess

        found = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=project,
            capture_output=True,
            check=False,
        )
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=project, capture_output=True, check=False
        )
        if (
            found.returncode == 0
            and Path(top.stdout.decode().strip()).resolve() == project.resolve()
        ):
            return [f for f in found.stdout.decode().split("\0") if f and kept(f)]
    files = []
    for folder, dirs, names in os.walk(project):
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIP_DIRS and kept(os.path.relpath(os.path.join(folder, d), project))
        ]
        files += [os.path.relpath(os.path.join(folder, n), project) for n in names]
    return [f for f in files if kept(f)]
