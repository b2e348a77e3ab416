"""Check a document against an AWS API shape from botocore's own service models.

botocore's client-side validation checks types, required members and minimums only; AWS checks the rest on
the server. This walks the model and checks what the service would: unknown members, required members,
enums, `pattern`, min/max length of strings, blobs, lists and maps, min/max of numbers, union structures.
Every problem is reported with its path (`Findings[0].Resources[0].Type: ...`).

Patterns in the models are Java regular expressions matched against the whole value (AWS validates with
Java's `String.matches`). `java_regex` turns the constructs that occur into Python `re` with Java's meaning
(`\\p{...}` classes, ASCII `\\w \\d \\s`, `.` excluding Java's line terminators); any construct it does not
know raises `UnsupportedPattern` rather than being skipped, so a check can never silently pass.
"""

from __future__ import annotations

import datetime
import re
import sys
import unicodedata
from functools import lru_cache
from typing import Any, Optional

import botocore.session
from botocore.model import Shape


class UnsupportedPattern(Exception):
    """A model pattern this module cannot translate faithfully (fail loudly, never skip the check)."""


# -- Java regex -> Python re ---------------------------------------------------------------------------------
# Java's POSIX classes are US-ASCII unless UNICODE_CHARACTER_CLASS is set (AWS does not set it).
_POSIX = {
    "Lower": "a-z", "Upper": "A-Z", "ASCII": "\\x00-\\x7f", "Alpha": "a-zA-Z", "Digit": "0-9",
    "Alnum": "a-zA-Z0-9", "Punct": "!-/:-@\\[-`{-~", "Graph": "!-~", "Print": " -~", "Blank": " \\t",
    "Cntrl": "\\x00-\\x1f\\x7f", "XDigit": "0-9a-fA-F", "Space": " \\t\\n\\x0b\\f\\r",
}
# Java's predefined classes are ASCII by default too (Python's are Unicode for str patterns).
_PREDEFINED = {"d": "0-9", "w": "a-zA-Z_0-9", "s": " \\t\\n\\x0b\\f\\r"}
_JAVA_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"  # Java's `.` stops at every line terminator, not only \n
# escapes that mean the same in both languages
_SAME_ESCAPES = set("\\.^$|?*+()[]{}/-:=@!#&~,'\"<> ") | {"t", "n", "r", "f"}
_SAME_GROUPS = ("(?:", "(?=", "(?!", "(?<=", "(?<!")  # groups that mean the same in both languages


def _complement(body: str) -> str:
    """A class body for every character NOT in the ASCII class `body` (for `\\S` etc. inside [...])."""
    inside = re.compile(f"[{body}]")
    ranges, start = [], None
    for cp in range(0x80):
        hit = not inside.match(chr(cp))
        if hit and start is None:
            start = cp
        elif not hit and start is not None:
            ranges.append(f"\\x{start:02x}-\\x{cp - 1:02x}")
            start = None
    return "".join(ranges) + (f"\\x{start:02x}" if start is not None else "\\x80") + f"-\\U{sys.maxunicode:08x}"


@lru_cache(maxsize=1)
def _categories() -> tuple:
    return tuple(unicodedata.category(chr(cp)) for cp in range(sys.maxunicode + 1))


@lru_cache(maxsize=None)
def _category_ranges(name: str) -> str:
    """A Python class body for a Unicode general category (`L`, `Lu`, `C`, ...), as Java defines it."""
    if not (len(name) == 1 and name in "LMNPSZC") and not (len(name) == 2 and name[0] in "LMNPSZC"):
        raise UnsupportedPattern(f"unknown Unicode class \\p{{{name}}}")
    ranges, start = [], None
    for cp, cat in enumerate(_categories()):
        hit = cat == name or cat[0] == name
        if hit and start is None:
            start = cp
        elif not hit and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, sys.maxunicode))
    if not ranges:
        raise UnsupportedPattern(f"unknown Unicode category \\p{{{name}}}")
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


def _property(name: str) -> str:
    name = name[2:] if name.startswith("Is") and name[2:] in _POSIX else name
    if name in _POSIX:
        return _POSIX[name]
    return _category_ranges(name[2:] if name.startswith("Is") else name)


def java_regex(pattern: str) -> str:
    """The Python `re` source with the meaning `pattern` has in Java; UnsupportedPattern for anything else."""
    out, i, in_class, n = [], 0, False, len(pattern)
    expanded = False  # the last thing in a class was a class (\p{..}, \w): a `-` after it is no range

    def fail(what: str):
        raise UnsupportedPattern(f"pattern {pattern!r}: {what} at offset {i} is not supported")

    while i < n:
        c = pattern[i]
        if expanded and c == "-" and not pattern.startswith("-]", i):
            fail("a range starting at a class like \\p{..}")  # Python would read a range from its last char
        expanded = False
        if c == "\\":
            if i + 1 >= n:
                fail("a trailing backslash")
            e = pattern[i + 1]
            if e in "pP":
                m = re.match(r"\{(\w+)\}", pattern[i + 2:])
                if not m:
                    fail("a one-letter \\p class")
                body = _property(m.group(1))
                if e == "P" and in_class:
                    fail("a negated \\P class inside [...]")
                out.append(body if in_class else (f"[^{body}]" if e == "P" else f"[{body}]"))
                expanded = in_class
                i += 2 + m.end()
                continue
            if e in "dws":
                out.append(_PREDEFINED[e] if in_class else f"[{_PREDEFINED[e]}]")
                expanded = in_class
            elif e in "DWS":
                out.append(_complement(_PREDEFINED[e.lower()]) if in_class else f"[^{_PREDEFINED[e.lower()]}]")
                expanded = in_class
            elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", pattern[i + 2:i + 6]):
                out.append(pattern[i:i + 6])
                i += 6
                continue
            elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", pattern[i + 2:i + 4]):
                out.append(pattern[i:i + 4])
                i += 4
                continue
            elif e in _SAME_ESCAPES and not (e in "bB" and in_class):
                out.append("\\" + e)
            else:
                fail(f"the escape \\{e}")
            i += 2
            continue
        if in_class:
            if c == "[":
                fail("a nested class (Java union)")
            if pattern.startswith("&&", i):
                fail("a class intersection &&")
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                fail("a ] first in a class")
            continue
        if c == ".":
            out.append(_JAVA_DOT)
        elif c == "(" and pattern.startswith("(?", i) and not pattern.startswith(_SAME_GROUPS, i):
            fail("a special group")
        else:
            out.append(c)
        i += 1
    if in_class:
        fail("an unclosed [")
    return "".join(out)


@lru_cache(maxsize=None)
def compiled(pattern: str) -> "re.Pattern":
    try:
        return re.compile(java_regex(pattern))
    except re.error as exc:
        raise UnsupportedPattern(f"pattern {pattern!r} does not compile: {exc}") from exc


# -- the walk ----------------------------------------------------------------------------------------------
_NUMBERS = {"integer": int, "long": int, "short": int, "byte": int, "float": (int, float), "double": (int, float)}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _walk(shape: Shape, value: Any, path: str, problems: list) -> None:
    meta, kind = shape.metadata, shape.type_name
    where = path or "(document)"
    if kind == "structure" and meta.get("document"):
        return  # a free-form JSON document: any value
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object ({shape.name}), got {_type_name(value)}")
            return
        for key in value:
            if key not in shape.members:
                problems.append(f"{where}: unknown member {key!r} (not in {shape.name})")
        for key in shape.required_members:
            # an idempotency token is filled in by botocore (and the CLI) when the caller leaves it out
            if key not in value and not shape.members[key].metadata.get("idempotencyToken"):
                problems.append(f"{where}: required member {key!r} is missing")
        if meta.get("union") and len(value) != 1:
            problems.append(f"{where}: a union ({shape.name}) takes exactly one member, got {len(value)}")
        for key, member in shape.members.items():
            if key in value:
                _walk(member, value[key], f"{path}.{key}" if path else key, problems)
        return
    if kind == "list":
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list ({shape.name}), got {_type_name(value)}")
            return
        _length(meta, len(value), "items", where, problems)
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}[{i}]", problems)
        return
    if kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a map ({shape.name}), got {_type_name(value)}")
            return
        _length(meta, len(value), "entries", where, problems)
        for k, v in value.items():
            _walk(shape.key, k, f"{path}<key {k!r}>", problems)
            _walk(shape.value, v, f"{path}[{k!r}]", problems)
        return
    if kind == "string":
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string ({shape.name}), got {_type_name(value)}")
            return
        _length(meta, len(value), "characters", where, problems)  # AWS counts code points, as len() does
        if "enum" in meta and value not in meta["enum"]:
            problems.append(f"{where}: {value!r} is not one of {', '.join(meta['enum'])}")
        if "pattern" in meta and not compiled(meta["pattern"]).fullmatch(value):
            problems.append(f"{where}: {_short(value)} does not match the pattern {meta['pattern']!r}")
        return
    if kind == "blob":
        if not isinstance(value, (bytes, bytearray, str)):
            problems.append(f"{where}: expected bytes ({shape.name}), got {_type_name(value)}")
            return
        _length(meta, len(value.encode() if isinstance(value, str) else value), "bytes", where, problems)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{where}: expected a boolean ({shape.name}), got {_type_name(value)}")
        return
    if kind in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, _NUMBERS[kind]):
            problems.append(f"{where}: expected {kind} ({shape.name}), got {_type_name(value)}")
            return
        if "min" in meta and value < meta["min"]:
            problems.append(f"{where}: {value} is below the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{where}: {value} is above the maximum {meta['max']}")
        return
    if kind == "timestamp":
        if not _is_timestamp(value):
            problems.append(f"{where}: expected a timestamp (datetime, epoch seconds or ISO 8601), got "
                            f"{_short(value)}")
        return
    raise NotImplementedError(f"{where}: shape type {kind!r} ({shape.name}) is not handled")


def _is_timestamp(value: Any) -> bool:
    if isinstance(value, datetime.datetime):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value >= 0
    if isinstance(value, str):
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return True
        except ValueError:
            return False
    return False


def _length(meta: dict, length: int, unit: str, where: str, problems: list) -> None:
    if "min" in meta and length < meta["min"]:
        problems.append(f"{where}: {length} {unit}, fewer than the minimum {meta['min']}")
    if "max" in meta and length > meta["max"]:
        problems.append(f"{where}: {length} {unit}, more than the maximum {meta['max']}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- entry points -------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def service_model(name: str):
    return botocore.session.get_session().get_service_model(name)


def input_shape(service: str, operation: str, member: Optional[str] = None, output: bool = False) -> Shape:
    """The input shape of `service` `operation` (its output shape with `output`), or of one member of it:
    `Findings[]` is a list's item, `a.b` a nested member."""
    model = service_model(service).operation_model(operation)
    shape = model.output_shape if output else model.input_shape
    for part in (member.split(".") if member else []):
        name, items = (part[:-2], True) if part.endswith("[]") else (part, False)
        if shape.type_name != "structure" or name not in shape.members:
            raise KeyError(f"{service} {operation}: no member {member!r}")
        shape = shape.members[name]
        if items:
            if shape.type_name != "list":
                raise KeyError(f"{service} {operation}: {name} is not a list")
            shape = shape.member
    return shape


def problems(document: Any, service: str, operation: str, member: Optional[str] = None,
             path: str = "", output: bool = False) -> list:
    """Every way `document` breaks the model (empty when it is valid), each with its path."""
    found: list = []
    _walk(input_shape(service, operation, member, output), document, path, found)
    return found


def check(document: Any, service: str, operation: str, member: Optional[str] = None, path: str = "",
          output: bool = False) -> None:
    """AssertionError listing every problem (for tests)."""
    found = problems(document, service, operation, member, path, output)
    if found:
        raise AssertionError(f"not a valid {service} {operation}{' output' if output else ''}"
                             f"{' ' + member if member else ''}:\n  " + "\n  ".join(found))
