"""Aliases: names such as `champion` that point at one run each (a small model registry), and
every move of each, kept for `engine alias history`."""

from __future__ import annotations

import re
import time
from typing import Any

from engine.model import RunStatus
from engine.store.base import StoreBase, StoreError

ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


class AliasError(StoreError):
    """An alias that cannot be set, moved or removed as asked; the message says why."""


def check_alias_name(name: str) -> str:
    """The name, or AliasError saying what an alias name is."""
    if not ALIAS_NAME.match(name):
        raise AliasError(
            f"bad alias name {name!r}: expected a letter, then letters, digits, '_', '.' or '-'"
            " (at most 63 characters), e.g. champion"
        )
    return name


class AliasRecords(StoreBase):
    """Aliases and their moves; a move and its record are one transaction."""

    def set_alias(self, name: str, run_id: int, note: str | None, force: bool) -> dict[str, Any]:
        """Point `name` at a run (made or moved), recording the move. A run that has not
        succeeded is refused unless `force`."""
        check_alias_name(name)
        row = self._one("SELECT status FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise AliasError(f"no run {run_id}")
        if row[0] != RunStatus.SUCCEEDED.value and not force:
            raise AliasError(
                f"run {run_id} is {row[0]}, not succeeded: an alias names a result; "
                "give --force to point it there anyway"
            )
        now = time.time()
        with self._transaction():
            old = self._one("SELECT run_id FROM aliases WHERE name = ?", [name])
            self.con.execute(
                "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)", [name, run_id, note, now]
            )
            self.con.execute(
                "INSERT INTO alias_moves VALUES (?, ?, ?, ?, ?)",
                [name, old[0] if old else None, run_id, note, now],
            )
        return {"name": name, "run": run_id, "previous": old[0] if old else None, "note": note}

    def remove_alias(self, name: str) -> dict[str, Any]:
        """Remove an alias, recording it as a move to no run."""
        with self._transaction():
            old = self._one("SELECT run_id FROM aliases WHERE name = ?", [name])
            if old is None:
                raise AliasError(f"no alias {name!r}")
            self.con.execute("DELETE FROM aliases WHERE name = ?", [name])
            self.con.execute(
                "INSERT INTO alias_moves VALUES (?, ?, NULL, NULL, ?)", [name, old[0], time.time()]
            )
        return {"name": name, "run": None, "previous": old[0], "note": None}

    def aliases(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every alias (or the one named), by name, with its run's name and status."""
        rows = self.con.execute(
            "SELECT a.name, a.run_id, a.note, a.set_at, r.name, r.status, r.sweep, r.run_dir"
            " FROM aliases a LEFT JOIN runs r ON r.id = a.run_id"
            + (" WHERE a.name = ?" if name is not None else "")
            + " ORDER BY a.name",
            [name] if name is not None else [],
        ).fetchall()
        return [
            {
                "name": n,
                "run": run,
                "note": note,
                "set_at": at,
                "run_name": run_name,
                "status": status,
                "sweep": sweep,
                "run_dir": run_dir,
            }
            for n, run, note, at, run_name, status, sweep, run_dir in rows
        ]

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        """Every move of an alias, oldest first: from which run to which (None: removed)."""
        rows = self.con.execute(
            "SELECT from_run, to_run, note, time FROM alias_moves WHERE name = ?"
            " ORDER BY time, rowid",
            [name],
        ).fetchall()
        return [{"from": f, "to": t, "note": note, "time": at} for f, t, note, at in rows]

    def aliases_of(self, run_ids: list[int]) -> dict[int, list[str]]:
        """The aliases naming each of these runs."""
        rows = self.con.execute(
            "SELECT run_id, list(name ORDER BY name) FROM aliases WHERE run_id = ANY(?)"
            " GROUP BY run_id",
            [run_ids],
        ).fetchall()
        return dict(rows)
