"""Command templates: each word of an experiment's command may hold `{param}` and `{seed}`,
filled in when the sweep is expanded, and the run's own `{run_id}`, `{attempt}`, `{run_dir}`,
`{artifact_dir}`, `{checkpoint_dir}` and `{project}`, filled in as each attempt starts; `{{`
and `}}` are literal braces. Values become words of an argv, never shell text."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

# Known only when an attempt starts (and different on every attempt or host).
RUNTIME_FIELDS = ("run_id", "attempt", "run_dir", "artifact_dir", "checkpoint_dir", "project")

_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A command word that is not a valid template; the message says why."""


def fields(word: str) -> list[tuple[str, str]]:
    """The (name, format spec) of each placeholder in one word; raises TemplateError for an
    unbalanced brace or a placeholder that is not a plain name."""
    try:
        parsed = list(_FORMATTER.parse(word))
    except ValueError as exc:
        raise TemplateError(f"{exc} in {word!r} (write {{{{ or }}}} for a literal brace)") from None
    out = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or conversion:
            raise TemplateError(
                f"{{{name}{'!' + conversion if conversion else ''}}} in {word!r} is not a "
                "placeholder: use {name} (or {name:spec}), and {{ }} for literal braces"
            )
        out.append((name, spec or ""))
    return out


def render_params(word: str, values: Mapping[str, Any]) -> str:
    """Fill in a sweep's parameters and seed; runtime placeholders and literal braces stay in
    template form for `render_runtime`."""
    out = []
    for literal, name, spec, _ in _FORMATTER.parse(word):
        out.append(_escape(literal))
        if name is None:
            continue
        if name in values:
            out.append(_escape(text(values[name], spec or "")))
        else:
            out.append("{" + name + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def render_runtime(word: str, values: Mapping[str, Any]) -> str:
    """Fill in the attempt's own placeholders, and turn `{{` `}}` into braces."""
    out = []
    for literal, name, spec, _ in _FORMATTER.parse(word):
        out.append(literal)
        if name is not None:
            out.append(text(values[name], spec or ""))
    return "".join(out)


def text(value: Any, spec: str = "") -> str:
    """How a value is written into a command: booleans as `true`/`false`, floats in full
    (`0.001`, `1e-05`), lists and tables as JSON, anything else as str()."""
    if spec:
        return format(value, spec)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def shown(argv: tuple[str, ...] | list[str], templated: bool) -> tuple[str, ...]:
    """A command as people read it: literal braces as braces, the run's own fields still
    named (`{run_id}`), where they are filled in only as each attempt starts."""
    if not templated:
        return tuple(argv)
    named = {f: "{" + f + "}" for f in RUNTIME_FIELDS}
    return tuple(render_runtime(word, named) for word in argv)
