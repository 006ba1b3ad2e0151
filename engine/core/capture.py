"""Turning output lines into metric points: the `@runyard {json}` marker protocol, presets for
scripts that print no markers, and user regexes with named groups."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from engine.core.points import Points  # Arrow: imported where points are made, not here

MARKER = b"@runyard "
_DECODE = msgspec.json.Decoder()
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf|NaN|Inf)"


class CaptureError(ValueError):
    """A capture spec that names no preset and is no usable regex."""


# A line reader takes one decoded line and returns (step, fields) or None when it does not match.
LineReader = Callable[[str], "tuple[int | None, dict[str, object]] | None"]


class Malformed(ValueError):
    """A line in a preset's shape whose values do not parse: counted, never dropped silently."""


_XGB_LINE = re.compile(r"^\[(\d+)\]\t(.+)$")
_XGB_CV_VALUE = re.compile(rf"^({_NUMBER})\+({_NUMBER})$")  # xgb.cv's mean+std


def _xgboost(text: str) -> tuple[int | None, dict[str, object]] | None:
    """`[12]\teval-auc:0.93\ttrain-logloss:0.2` from xgb.train, and xgb.cv's
    `[12]\ttest-auc:0.93+0.01`, whose std is stored as `test-auc_std`."""
    found = _XGB_LINE.match(text.rstrip())
    if not found:
        return None
    fields: dict[str, object] = {}
    for part in found.group(2).split("\t"):
        name, sep, value = part.rpartition(":")
        if not (sep and name):
            raise Malformed(part)
        number = _to_float(value)
        if number is not None:
            fields[name] = number
        elif cv := _XGB_CV_VALUE.match(value):
            fields[name] = float(cv.group(1))
            fields[f"{name}_std"] = float(cv.group(2))
        else:
            raise Malformed(part)
    return int(found.group(1)), fields


_COLON_PAIR = re.compile(rf"([A-Za-z_][\w./-]*)\s*:\s*({_NUMBER})(?=[\s,;|]|$)")
_EQUALS_PAIR = re.compile(rf"([A-Za-z_][\w./-]*)=({_NUMBER})(?=[\s,;|]|$)")


def _pairs(pattern: re.Pattern[str]) -> LineReader:
    def read(text: str) -> tuple[int | None, dict[str, object]] | None:
        fields: dict[str, object] = {k: float(v) for k, v in pattern.findall(text)}
        return _with_step(fields) if fields else None

    return read


def _python_dict(text: str) -> tuple[int | None, dict[str, object]] | None:
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise Malformed(text[:80]) from None
    return _with_step(value) if isinstance(value, dict) else None


def _with_step(fields: dict) -> tuple[int | None, dict[str, object]]:
    step = fields.pop("step", None)
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    return (step if isinstance(step, int) and not isinstance(step, bool) else None), fields


PRESETS: dict[str, LineReader] = {
    "xgboost": _xgboost,
    "colon": _pairs(_COLON_PAIR),
    "equals": _pairs(_EQUALS_PAIR),
    "dict": _python_dict,
}
PRESET_HELP = {
    "xgboost": "XGBoost eval lines: [12]\\teval-auc:0.93\\ttrain-logloss:0.2, and xgb.cv's mean+std",
    "colon": "key: value pairs: loss: 0.41, acc: 0.93",
    "equals": "key=value pairs: step=3 loss=0.41",
    "dict": "Python dict lines: {'loss': 0.41, 'epoch': 1.0}",
}


def _regex_reader(spec: str) -> LineReader:
    """A reader for a user's regex, run by RE2: linear in the line's length whatever the
    pattern, so no regex can stall the daemon (RE2 has no lookaround or backreferences)."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        pattern = re2.compile(spec, options)
    except re2.error as exc:
        why = (
            exc.args[0].decode(errors="replace")
            if exc.args and isinstance(exc.args[0], bytes)
            else exc
        )
        raise CaptureError(
            f"capture regex {spec!r} does not compile: {why} (regexes are RE2: no "
            "lookaround or backreferences)"
        ) from None
    names = set(pattern.groupindex)
    if not names - {"step"}:
        raise CaptureError(
            f"capture regex {spec!r} has no named group for a value; "
            "name groups after metrics, e.g. 'loss=(?P<loss>[0-9.]+)', or use (?P<key>…) and (?P<value>…)"
        )
    keyed = {"key", "value"} <= names

    def read(text: str) -> tuple[int | None, dict[str, object]] | None:
        found = pattern.search(text)
        if not found:
            return None
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        step_text = groups.pop("step", None)
        step = int(float(step_text)) if step_text and _to_float(step_text) is not None else None
        if keyed:
            number = _to_float(groups["value"]) if "value" in groups and "key" in groups else None
            fields: dict[str, object] = {groups["key"]: number} if number is not None else {}
        else:
            fields = {k: n for k, v in groups.items() if (n := _to_float(v)) is not None}
        return (step, fields) if fields else None

    return read


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def readers_for(specs: Sequence[str]) -> list[LineReader]:
    """Line readers for a run's `capture` specs: preset names or regexes with named groups."""
    readers = []
    for spec in specs:
        if spec in PRESETS:
            readers.append(PRESETS[spec])
        elif "(?P<" in spec:
            readers.append(_regex_reader(spec))
        else:
            known = ", ".join(sorted(PRESETS))
            raise CaptureError(
                f"unknown capture preset {spec!r}; expected one of {known}, "
                "or a regex with named groups such as 'loss=(?P<loss>[0-9.]+)'"
            )
    return readers


class Parser:
    """Parses one run's output lines into points; markers always, presets and regexes when asked."""

    def __init__(self, specs: Sequence[str] = ()) -> None:
        self.readers = readers_for(specs)
        self._structs: dict[tuple[str, ...], msgspec.json.Decoder] = {}

    def parse_block(self, block: bytes, first_line: int, points: Points) -> tuple[int, int]:
        """Append the points of a block of whole lines as read (each ended by a newline but
        perhaps the last), numbered from `first_line`; returns how many lines it holds and how
        many of them are malformed markers. When every line is a marker, the markers are cut
        from the block in one go and it is never split into lines."""
        if not block:
            return 0, 0
        count = block.count(b"\n") + (not block.endswith(b"\n"))
        if not self.readers and block.startswith(MARKER) and b"\r" not in block:
            payloads = block.replace(b"\n" + MARKER, b"\n")
            cut = (len(block) - len(payloads)) // len(MARKER)  # the markers after the first
            numbers = range(first_line, first_line + count)
            first = block[len(MARKER) : block.find(b"\n") if count > 1 else len(block)]
            if cut == count - 1 and self._decode_uniform(
                numbers, first, memoryview(payloads)[len(MARKER) :], points
            ):
                return count, 0
        return count, self.parse(lines_of(block), first_line, points, b"\r" in block)

    def parse(
        self,
        lines: Sequence[bytes],
        first_line: int,
        points: Points,
        carriage_returns: bool = True,
    ) -> int:
        """Append the points of `lines` (numbered from `first_line`); returns the count of
        malformed marker lines, which stay in the log and yield nothing. A caller that knows no
        line holds a carriage return says so, which spares a scan of every line."""
        bad = 0
        if self.readers or (carriage_returns and any(b"\r" in raw for raw in lines)):
            numbers, payloads, bad = self._scan(lines, first_line, points)
        else:
            found = [i for i, raw in enumerate(lines) if raw.startswith(MARKER)]
            numbers = [first_line + i for i in found]
            payloads = [lines[i][len(MARKER) :] for i in found]
        if not payloads:
            return bad
        if self._decode_uniform(numbers, payloads[0], b"\n".join(payloads), points):
            return bad
        return bad + _decode_each(numbers, payloads, points)

    def _scan(
        self, lines: Sequence[bytes], first_line: int, points: Points
    ) -> tuple[list[int], list[bytes], int]:
        numbers: list[int] = []
        payloads: list[bytes] = []
        bad = 0
        for i, raw in enumerate(lines):
            if b"\r" in raw:  # progress bars redraw with \r; the last segment is what shows
                raw = raw.rsplit(b"\r", 1)[-1]
            if raw.startswith(MARKER):
                numbers.append(first_line + i)
                payloads.append(raw[len(MARKER) :])
            elif self.readers and not self._read_plain(raw, first_line + i, points):
                bad += 1
        return numbers, payloads, bad

    def _read_plain(self, raw: bytes, line: int, points: Points) -> bool:
        """Add a plain line's points; False when it is in a reader's shape but malformed (and
        no other reader takes it)."""
        text = raw.decode("utf-8", "replace")
        malformed = False
        for read in self.readers:
            try:
                found = read(text)
            except Malformed:
                malformed = True
                continue
            if found:
                step, fields = found
                points.add(line, step, fields)
                return True
        return not malformed

    def _decode_uniform(
        self,
        numbers: Sequence[int],
        first_payload: bytes,
        payloads: bytes | memoryview,
        points: Points,
    ) -> bool:
        """The fast path: when each of the markers on lines `numbers` (their `payloads`, a
        line each) has the first one's keys and numeric values, decode them all at once into a
        struct and take whole columns. False when they do not."""
        try:
            first = _DECODE.decode(first_payload)
        except msgspec.DecodeError:
            return False
        if not isinstance(first, dict) or not first:
            return False
        keys = tuple(first)
        decoder = self._structs.get(keys)
        if decoder is None:
            if len(self._structs) > 64:
                self._structs.clear()
            # Fields get positional names: JSON keys need not be Python identifiers.
            fields = [
                (f"f{i}", int | None if k == "step" else int | float | None, None)
                for i, k in enumerate(keys)
            ]
            struct = msgspec.defstruct(
                "Marker",
                fields,
                forbid_unknown_fields=True,
                gc=False,
                rename={f"f{i}": k for i, k in enumerate(keys)},
            )
            decoder = msgspec.json.Decoder(struct)
            self._structs[keys] = decoder
        try:
            rows = decoder.decode_lines(payloads)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        if len(rows) != len(numbers):  # a blank payload, which decode_lines passes over
            return False
        columns = {k: list(map(attrgetter(f"f{i}"), rows)) for i, k in enumerate(keys)}
        steps = columns.pop("step", None)
        points.add_columns(list(columns), list(columns.values()), steps, numbers)
        return True


def lines_of(block: bytes) -> list[bytes]:
    """A block's lines, each ended by a newline but perhaps the last, without their newlines."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    return lines


def _decode_each(numbers: list[int], payloads: list[bytes], points: Points) -> int:
    bad = 0
    for line, payload in zip(numbers, payloads, strict=True):
        fields = _decode_one(payload)
        if not isinstance(fields, dict):
            bad += 1
            continue
        step = fields.pop("step", None)
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            bad += 1
            continue
        points.add(line, step, fields)
    return bad


def _decode_one(payload: bytes) -> object:
    """One marker payload; also accepts the NaN and Infinity that Python's json.dumps writes."""
    try:
        return _DECODE.decode(payload)
    except msgspec.DecodeError:
        pass
    try:
        return json.loads(payload)
    except ValueError:
        return None
