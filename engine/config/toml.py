"""Reading TOML files the way every configuration file here is read, and the errors they get:
each names the file, the line, the key and what was expected."""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from engine.errors import ConfigError
from engine.model import HostSpec, seconds_of

T = TypeVar("T")

MAX_FILE_BYTES = 10 * 2**20
MAX_DEPTH = 16  # tables and lists inside each other; no file of ours needs more than 5
MAX_INT = 2**63 - 1  # what the store's columns hold


def read_toml(path: str | os.PathLike[str]) -> tuple[Path, str, dict[str, Any]]:
    """A TOML file's resolved path, text and contents; unreadable or invalid ones are a
    ConfigError naming the file (and the line and column). Values no setting takes (NaN or
    infinite numbers, integers past 64 bits, NUL bytes, deep nesting) are refused here, once
    for every file."""
    try:
        path = Path(path).resolve()
        data = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if data is None:
        raise ConfigError(f"{path}: over {MAX_FILE_BYTES // 2**20} MB; not a configuration file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_syntax_message(path, str(exc), text)) from None
    except RecursionError:
        raise ConfigError(f"{path}: tables or lists nested too deeply") from None
    _check_values(Locator(path, text), raw, "")
    return path, text, raw


def setting_error(path: Path, key: str, expected: str) -> ConfigError:
    """An error about a setting found wrong after its file was read (a folder that cannot be
    made, say), naming the file and the setting's line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        text = ""
    return Locator(path, text).error(key, expected)


def _check_values(where: Locator, value: Any, key: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise where.error(key, f"nested more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        for k, v in value.items():
            if "\0" in k:
                raise where.error(key, "a key holds a NUL byte")
            _check_values(where, v, f"{key}.{k}" if key else k, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(where, v, f"{key}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise where.error(key, f"expected a finite number, got {value}")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise where.error(key, f"expected an integer of at most 64 bits, got {value}")
    elif isinstance(value, str) and "\0" in value:
        raise where.error(key, "holds a NUL byte, which no command line, path or name can carry")


def _toml_syntax_message(path: Path, message: str, text: str = "") -> str:
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    at_end = re.search(r"\s*\(at end of document\)", message)
    if found:
        place = f"{path}:{found.group(1)}:{found.group(2)}"
    elif at_end:
        place = f"{path}:{max(1, len(text.splitlines()))}"
        found = at_end
    else:
        place = str(path)
    text = message[: found.start()] if found else message
    twice = re.match(r"Cannot declare \((.*)\) twice", text)
    if twice:
        table = ".".join(p.strip().strip("'") for p in twice.group(1).split(","))
        return f"{place}: duplicate table [{table}]; each host and table is declared once"
    return f"{place}: not valid TOML: {text}"


def convert(where: Locator, key: str, value: Any, kind: type[T], **extra: Any) -> T:
    if not isinstance(value, dict):
        raise where.error(key, f"expected a table, got {toml_type(value)}")
    try:
        return msgspec.convert({**value, **extra}, kind)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        sub = at.rstrip("`")
        unknown = re.search(r"unknown field `([^`]+)`", message)
        missing = re.search(r"missing required field `([^`]+)`", message)
        if unknown:
            allowed = ", ".join(_fields_at(kind, sub))
            raise where.error(
                f"{key}{sub}.{unknown.group(1)}", f"unknown key; expected one of: {allowed}"
            ) from None
        if missing:
            raise where.error(key + sub, f"missing required key `{missing.group(1)}`") from None
        if message.startswith("Invalid enum value"):
            choices = _choices_at(kind, sub)
            got = message.removeprefix("Invalid enum value ")
            raise where.error(key + sub, f"expected one of {choices}, got {got}") from None
        raise where.error(key + sub, _friendly(message)) from None


def _type_at(kind: Any, sub: str) -> Any:
    """The type found by walking a dotted path of field names through (optional) structs."""
    for name in [p for p in sub.split(".") if p and not p.startswith("[")]:
        kind = _struct_in(kind)
        if kind is None:
            return None
        field = next((f for f in msgspec.structs.fields(kind) if f.name == name), None)
        if field is None:
            return None
        kind = field.type
    return kind


def _struct_in(kind: Any) -> Any:
    """`kind` if it is a struct type, else the struct type inside an `X | None`."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind
    return next(
        (a for a in typing.get_args(kind) if isinstance(a, type) and issubclass(a, msgspec.Struct)),
        None,
    )


def _fields_at(kind: type, sub: str) -> list[str]:
    """The keys a (possibly nested) table accepts, for "expected one of" messages."""
    struct = _struct_in(_type_at(kind, sub))
    if struct is None:
        return []
    return [
        f.name
        for f in msgspec.structs.fields(struct)
        if not (struct is HostSpec and f.name == "name")
    ]


def _choices_at(kind: type, sub: str) -> str:
    return ", ".join(repr(v) for v in typing.get_args(_type_at(kind, sub)))


_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "bool": "a boolean",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
}


def _friendly(message: str) -> str:
    found = re.match(r"Expected `([^`]+)`, got `([^`]+)`(.*)", message)
    if not found:
        return message.replace("`", "")
    want, got, rest = found.groups()
    want = " or ".join(_TYPE_WORDS.get(w.strip(), w.strip()) for w in want.split("|"))
    return f"expected {want}, got {_TYPE_WORDS.get(got, got)}{rest.replace('`', '')}"


def duration_s(where: Locator, key: str, value: Any) -> float:
    """A duration setting (see `seconds_of`); raises the file:line:key error for a bad one."""
    seconds = seconds_of(value)
    if seconds is None:
        raise where.error(key, f'expected a duration such as "2h", "90m" or "45s", got {value!r}')
    return seconds


def toml_type(value: Any) -> str:
    words = {list: "a list", str: "a string", int: "an integer", float: "a number"}
    return "a boolean" if isinstance(value, bool) else words.get(type(value), type(value).__name__)


class Locator:
    """Finds the line a dotted key was written on, so messages can say file:line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        # Each table header's line and dotted key, quotes taken off (`[hosts."gpu-box"]`).
        self.headers: list[tuple[int, str]] = []
        for n, line in enumerate(self.lines):
            found = re.match(r"^\s*\[\[?(.+?)\]\]?\s*(#.*)?$", line)
            if found:
                parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^.\s]+)', found.group(1))
                self.headers.append((n, ".".join(a or b or c for a, b, c in parts)))

    def error(self, key: str, expected: str) -> ConfigError:
        key = key.lstrip(".")  # a top-level table's keys come with an empty prefix
        line = self.line_of(key)
        place = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{place}: {key}: {expected}")

    def line_of(self, key: str) -> int | None:
        parts = [p for p in re.split(r"\.(?![^\[]*\])", re.sub(r"\[\d+\]", "", key)) if p]
        index = re.findall(r"\[(\d+)\]", key)
        # Search for the deepest table header that is a prefix of the key, then the leaf below it.
        for cut in range(len(parts), 0, -1):
            header = ".".join(parts[:cut])
            hits = [n for n, found in self.headers if found == header]
            if hits and index and re.match(r"^\w+\[\d+\]", key):
                i = int(index[0])
                hits = hits[i : i + 1]
            if not hits:
                continue
            start = hits[0]
            if cut == len(parts):
                return start + 1
            leaf = parts[cut]
            for n in range(start + 1, len(self.lines)):
                text = self.lines[n]
                if re.match(r"^\s*\[", text):
                    break
                if re.match(rf"^\s*[\"']?{re.escape(leaf)}[\"']?\s*[.=]", text):
                    return n + 1
            return start + 1
        for n, text in enumerate(self.lines):
            if re.match(rf"^\s*{re.escape(parts[0])}\s*=", text) if parts else False:
                return n + 1
        return None
