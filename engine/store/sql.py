"""Read-only SQL for `engine sql`: only the documented views, checked on DuckDB's own parse tree."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from engine.store.base import StoreBase, StoreError

SQL_VIEWS = ("runs_v", "metrics_v", "params_v")  # all that `engine sql` may read


class ReadOnlySql(StoreBase):
    """Queries over the views, refused if they touch anything else."""

    def read_only_query(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        """Run one SELECT over the store (the views runs_v, metrics_v, params_v are made for
        it); anything that could write, or more than one statement, is refused."""
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise StoreError(f"cannot parse: {exc}") from None
        if len(statements) != 1:
            raise StoreError("give exactly one statement")
        if statements[0].type != duckdb.StatementType.SELECT:
            raise StoreError(f"only SELECT is allowed here, not {statements[0].type.name}")
        self._check_views_only(sql)
        try:
            self.con.execute("BEGIN TRANSACTION")
            try:
                result = self.con.execute(sql)
                columns = [d[0] for d in result.description or []]
                rows = [list(r) for r in result.fetchall()]
            finally:
                self.con.execute("ROLLBACK")
        except duckdb.Error as exc:
            raise StoreError(str(exc).splitlines()[0]) from None
        return columns, rows

    def _check_views_only(self, sql: str) -> None:
        """Refuse a query that reads anything but the documented views: other tables (the
        runs table holds launch environments), files, or table functions such as read_csv."""
        tree = json.loads(self._one("SELECT json_serialize_sql(?)", [sql])[0])
        if tree.get("error"):
            raise StoreError(f"cannot parse: {tree.get('error_message')}")
        tables = {
            r[0].lower()
            for r in self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        tables |= {
            r[0].lower()
            for r in self.con.execute("SELECT view_name FROM duckdb_views()").fetchall()
        }
        defined: set[str] = set()
        found: list[dict[str, Any]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("cte_map"), dict):
                    defined.update(e["key"].lower() for e in node["cte_map"].get("map", []))
                if node.get("type") in ("BASE_TABLE", "TABLE_FUNCTION"):
                    found.append(node)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(tree)
        if shadowing := defined & tables:
            raise StoreError(f"a WITH name may not be a table's name: {sorted(shadowing)[0]}")
        for ref in found:
            name = (ref.get("table_name") or "").lower()
            schema = (ref.get("schema_name") or ref.get("catalog_name") or "").lower()
            if ref["type"] == "TABLE_FUNCTION":
                raise StoreError("table functions (read_csv, …) are not allowed; query the views")
            if name in defined and not schema:
                continue
            if name not in SQL_VIEWS or schema not in ("", "main"):
                raise StoreError(
                    f"{ref.get('table_name')!r} is not one of the views {', '.join(SQL_VIEWS)}"
                )
