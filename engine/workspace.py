"""What a run's work directory holds: a copy of the code snapshot, the data its experiment
names (which git rightly leaves out of the snapshot), and a word about the ignored files that
no data entry brings along."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from engine import repro
from engine.config import data_place
from engine.model import DataLink

# Ignored files that are the tools' own, not data a run could need.
_TOOL_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".egg-info/")
MAX_COUNTED_FILES = 200_000  # a size is reported as "at least" past this many files


class DataError(ValueError):
    """A data entry that cannot be linked into runs; the message names it."""


def resolve_data(
    entries: Sequence[tuple[str, str]], project: Path, origin: str
) -> tuple[DataLink, ...]:
    """Data entries (place, source) as links: each source made absolute (relative ones are
    project-relative) and checked to exist; an empty place is where the source sits in the
    project."""
    links: dict[str, DataLink] = {}
    for place, source in entries:
        path = Path(os.path.expanduser(source))
        path = Path(os.path.abspath(path if path.is_absolute() else project / path))
        if not path.exists():
            raise DataError(f"{origin}: data {source!r}: no such file or folder ({path})")
        if not place:
            rel = os.path.relpath(path, os.path.abspath(project))
            if rel == ".." or rel.startswith("../"):
                raise DataError(
                    f"{origin}: data {source!r} lies outside the project {project}; give it a "
                    f'place in the runs\' directory: data = {{ "{path.name}" = "{source}" }}'
                )
            try:
                place = data_place(rel)
            except ValueError:
                raise DataError(f"{origin}: data {source!r} is the whole project") from None
        if place in links:
            raise DataError(f"{origin}: data place {place!r} is given twice")
        links[place] = DataLink(place=place, source=str(path))
    return tuple(links.values())


def size_of(path: Path) -> tuple[int, bool]:
    """The bytes under a file or folder (symlinks not followed), and whether that is complete
    (False past MAX_COUNTED_FILES files)."""
    if not path.is_dir():
        return (path.lstat().st_size if path.exists() else 0), True
    total = count = 0
    for folder, _, names in os.walk(path):
        for name in names:
            count += 1
            if count > MAX_COUNTED_FILES:
                return total, False
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total, True


def ignored_uncovered(
    project: Path, links: Sequence[DataLink], exclude: Sequence[Path]
) -> list[tuple[str, int]]:
    """Files and folders git ignores in the project that no data entry covers (outside the
    engine's own state and tool caches), largest first, with their sizes: what runs will not
    see."""
    found = subprocess.run(
        ["git", "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"],
        cwd=project,
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        return []
    places = [PurePosixPath(link.place) for link in links]
    skipped = [p.resolve() for p in exclude]
    out: list[tuple[str, int]] = []

    def visit(rel: str) -> None:
        parts = Path(rel).parts
        path = project / rel
        if any(p in repro.SKIP_DIRS for p in parts) or rel.endswith(_TOOL_SUFFIXES):
            return
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skipped):
            return
        here = PurePosixPath(rel)
        if any(here.is_relative_to(place) for place in places):
            return
        if path.is_dir() and any(place.is_relative_to(here) for place in places):
            for child in sorted(os.listdir(path)):
                visit(f"{here}/{child}")
            return
        out.append((f"{here}/" if path.is_dir() else str(here), size_of(path)[0]))

    for rel in found.stdout.decode(errors="replace").split("\0"):
        if rel:
            visit(rel)
    return sorted(out, key=lambda item: -item[1])


_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # a file's stat → its content hash


def content_digest(path: Path) -> str:
    """A short hash of a data file's or folder's contents (relative names and bytes), so each
    host gets one upload per distinct content; files unchanged since last time are not read
    again."""
    digest = hashlib.sha256()
    if path.is_dir():
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, path)
                digest.update(f"{rel}\0{_file_digest(full)}\n".encode())
    else:
        digest.update(_file_digest(str(path)).encode())
    return digest.hexdigest()[:16]


def _file_digest(path: str) -> str:
    info = os.stat(path)
    key = (path, info.st_size, info.st_mtime_ns, info.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def what_runs_see(
    project: Path, cwd: Path, links: Sequence[DataLink], exclude: Sequence[Path]
) -> tuple[list[str], list[str]]:
    """For a dry run: lines saying what each run's work directory holds, and warnings about
    ignored files it will lack."""
    files = repro.project_files(project, tuple(exclude))
    total = 0
    for rel in files:
        try:
            total += os.lstat(project / rel).st_size
        except OSError:
            continue
    where = cwd.relative_to(project).as_posix() if cwd.is_relative_to(project) else "."
    lines = [
        f"each run starts in its own copy of the code snapshot: {len(files):,} files, "
        f"{human_bytes(total)} (git-tracked and untracked files git does not ignore), "
        f"in {where if where != '.' else 'its top folder'}"
    ]
    for link in links:
        size, complete = size_of(Path(link.source))
        kind = "folder" if Path(link.source).is_dir() else "file"
        lines.append(
            f"data {link.place} → {link.source} ({kind}, {'' if complete else '≥ '}"
            f"{human_bytes(size)}; linked here; on SSH hosts uploaded once per content hash, or mapped)"
        )
    warnings = []
    missing = ignored_uncovered(project, links, exclude)
    if missing:
        shown = ", ".join(f"{rel} ({human_bytes(size)})" for rel, size in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        warnings.append(
            f"ignored by git and not in the experiment's `data`, so runs will not see: "
            f"{shown}{more}"
        )
    return lines, warnings


def human_bytes(n: float) -> str:
    """A size in decimal units: `812 B`, `4.2 MB`, `1.3 GB`."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"
