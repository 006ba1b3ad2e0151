"""The runs filter, a small language parsed by lark: terms (`failed`, `status:running,queued`,
`host:gpu-box`, `sweep:S`, `model:T`, `val_auc>0.9`, a word or a "quoted phrase" searched for
in names, commands and reasons), joined by juxtaposition or `and`, `or`, `not` and
parentheses. A filter of terms only becomes the store's fast query fields; any other is
compiled to a SQL condition whose every value is a parameter, never the user's text."""

from __future__ import annotations

import functools
from typing import Any

from engine.model import RunStatus

GRAMMAR = r"""
?start: or_expr?
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND? not_expr)*
?not_expr: _NOT not_expr -> negated
         | "(" or_expr ")"
         | term
term: COMPARISON -> comparison
    | FIELD -> field
    | PHRASE -> phrase
    | WORD -> word
_OR.2: /or(?![^\s()])/i
_AND.2: /and(?![^\s()])/i
_NOT.2: /not(?![^\s()])/i
COMPARISON.1: /[A-Za-z_][\w.\/-]*(>=|<=|>|<|=)[^\s()"]+/
FIELD.1: /(status|host|sweep|model):[^\s()"]+/
PHRASE: /"[^"]*"/
WORD: /[^\s()"]+/
%ignore /\s+/
"""

FIELDS = {"host": "host", "sweep": "sweep", "model": "model_type"}
OPERATORS = (">=", "<=", ">", "<", "=")  # longest first: `>=` is not `>` then `=`
STATUSES = frozenset(s.value for s in RunStatus)


class FilterError(ValueError):
    """A filter that does not parse, or a term that says something impossible."""


@functools.cache
def _parser() -> Any:
    from lark import Lark

    return Lark(GRAMMAR, parser="lalr")


def parse_filter(text: str) -> dict[str, Any]:
    """RunQuery fields for a filter: `statuses`, `equals`, `metric_filters` and `text` where it
    is terms joined by `and`; otherwise `where`, a SQL condition on the runs (`r`), and its
    `where_args`. Raises FilterError saying where and what."""
    from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput

    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as exc:
        raise FilterError(
            f"cannot read {text[exc.column - 1 :][:20]!r} (at {exc.column})"
        ) from None
    except UnexpectedInput as exc:
        where = f" at {exc.column}" if getattr(exc, "column", -1) > 0 else ""
        raise FilterError(f"incomplete or misplaced term{where}: {text!r}") from None
    except LarkError as exc:  # anything else lark says: still only a bad filter
        raise FilterError(str(exc).splitlines()[0]) from None
    except RecursionError:
        raise FilterError("too deeply nested") from None
    terms = _conjunction(tree)
    if terms is not None:
        return _fields(terms)
    args: list[Any] = []
    return {"where": _sql(tree, args), "where_args": tuple(args)}


def _conjunction(tree: Any) -> list[tuple[str, Any]] | None:
    """The terms of a filter that only ANDs terms together (None for `or`, `not`, groups)."""
    from lark import Tree

    if tree is None or (isinstance(tree, Tree) and tree.data == "start"):
        return []
    if isinstance(tree, Tree) and tree.data == "and_expr":
        parts = [_conjunction(child) for child in tree.children]
        if any(p is None for p in parts):
            return None
        return [t for p in parts for t in p or []]
    if isinstance(tree, Tree) and tree.data in ("comparison", "field", "phrase", "word"):
        return [_term(tree)]
    return None


def _term(tree: Any) -> tuple[str, Any]:
    """One term as (kind, what): ("status", [..]), ("equals", (column, value)), ("metric",
    (key, op, number)) or ("text", words)."""
    kind, token = tree.data, str(tree.children[0])
    if kind == "comparison":
        at = min(i for op in OPERATORS if (i := token.find(op)) > 0)
        op = next(o for o in OPERATORS if token.startswith(o, at))
        key, value = token[:at], token[at + len(op) :]
        try:
            number = float(value)
        except ValueError:
            raise FilterError(f"{token!r}: {value!r} is not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise FilterError(f"{token!r}: compare with a finite number")
        return "metric", (key, op, number)
    if kind == "field":
        name, _, value = token.partition(":")
        if name == "status":
            statuses = value.split(",")
            for status in statuses:
                if status not in STATUSES:
                    known = ", ".join(sorted(STATUSES))
                    raise FilterError(f"unknown status {status!r}; one of {known}")
            return "status", statuses
        return "equals", (FIELDS[name], value)
    if kind == "phrase":
        phrase = token[1:-1]  # as typed: the language has no escapes
        if not phrase.strip():
            raise FilterError('an empty phrase ""')
        return "text", phrase
    if token in STATUSES:
        return "status", [token]
    return "text", token


def _fields(terms: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, list[Any]] = {"statuses": [], "equals": [], "metric_filters": [], "text": []}
    for kind, what in terms:
        if kind == "status":
            out["statuses"] += what
        elif kind == "equals":
            out["equals"].append(what)
        elif kind == "metric":
            out["metric_filters"].append(what)
        else:
            out["text"].append(what)
    return {k: tuple(v) for k, v in out.items()}


def _sql(tree: Any, args: list[Any]) -> str:
    """A condition on the runs row `r` for a parsed filter; values go to `args`."""
    from lark import Tree

    if isinstance(tree, Tree) and tree.data == "or_expr":
        return "(" + " OR ".join(_sql(child, args) for child in tree.children) + ")"
    if isinstance(tree, Tree) and tree.data == "and_expr":
        return "(" + " AND ".join(_sql(child, args) for child in tree.children) + ")"
    if isinstance(tree, Tree) and tree.data == "negated":
        return f"(NOT coalesce({_sql(tree.children[0], args)}, false))"
    kind, what = _term(tree)
    if kind == "status":
        args += what
        return f"r.status IN ({', '.join('?' for _ in what)})"
    if kind == "equals":
        column, value = what
        args.append(value)
        return f"coalesce(r.{column} = ?, false)"  # FIELDS' columns, never the user's text
    if kind == "metric":
        key, op, number = what
        args += [key, number]
        return (
            "EXISTS (SELECT 1 FROM run_metrics m WHERE m.run_id = r.id AND m.key = ?"
            f" AND m.last {op} ?)"  # one of OPERATORS, never the user's text
        )
    args += [what, what]
    return "(contains(r.words, lower(?)) OR contains(lower(coalesce(r.reason, '')), lower(?)))"
