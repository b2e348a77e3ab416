"""Typed reading of component configuration values, shared by every part.

Greengrass hands numbers over as floats and users often write them as strings ("300"), so every reader
accepts both and names the offending key in its error. A part validates its whole section into an
immutable settings object first and only then swaps it in: a bad value keeps the last good configuration.

One policy for every section (docs/configuration.md, "How configuration is checked"): `Problems` collects
every bad value so the error lists them all, and every unknown key is named with the closest known one.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from typing import Any, Callable, Iterable, Iterator, List, Optional

# The component's top-level configuration sections; anything else at the top level is most likely a typo.
SECTIONS = ("Collector", "Plugins", "Detect", "Remediation", "Supervisor", "Install")
# Top-level keys that are not ours but legitimately sit beside the sections (Greengrass's own policy key).
OTHER_TOP_LEVEL_KEYS = ("accessControl",)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and what is wrong."""


def closest(name: Any, known: Iterable[str]) -> Optional[str]:
    """The known key an operator most likely meant: the same word in another case, else difflib's best match."""
    known = [str(k) for k in known]
    text = str(name)
    for k in known:
        if k.lower() == text.lower():
            return k
    match = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_keys(section: dict, known: Iterable[str]) -> List[tuple]:
    """(key, closest known key or None) for each key of `section` not in `known`, in sorted order."""
    known = tuple(known)
    return [(key, closest(key, known)) for key in sorted((k for k in section if k not in known), key=str)]


def _hint(close: Optional[str]) -> str:
    return f" (did you mean {close}?)" if close else ""


def unknown_sections(whole: Any) -> List[str]:
    """A warning for each top-level key that is not a section of ours (`Pluginz:` would else be ignored)."""
    if not isinstance(whole, dict):
        return []
    return [f"{key}: unknown top-level configuration section ignored{_hint(close)}; sections: {', '.join(SECTIONS)}"
            for key, close in unknown_keys(whole, SECTIONS + OTHER_TOP_LEVEL_KEYS)]


def reject_unknown(section: dict, known: Iterable[str], where: str) -> None:
    """ConfigError naming each unknown key of `section` with the closest known one (for a nested object of a
    section where unknown keys are errors)."""
    problems = Problems()
    problems.keys(section, known, where, strict=True)
    problems.raise_if_any()


class Problems:
    """Every problem of one section, so a rejection lists them all rather than only the first.

    Read each value through `value()` or inside `with problems.check():`; a ConfigError is recorded and the
    reading goes on. `raise_if_any()` then rejects the whole section (the caller keeps its last good one).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix  # e.g. "Collector." for messages that name only the key
        self.errors: List[str] = []
        self.warnings: List[str] = []

    def value(self, fn: Callable[..., Any], *args: Any, default: Any = None, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), or `default` with the error recorded."""
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            self.errors.append(f"{self.prefix}{exc}")
            return default

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as exc:
            self.errors.append(f"{self.prefix}{exc}")

    def keys(self, section: dict, known: Iterable[str], where: str, *, strict: bool) -> None:
        """Unknown keys of `section`: errors where a typo could weaken a rule (`strict`), else warnings.
        Both name the closest known key."""
        items = unknown_keys(section, known)
        if items and strict:
            self.errors.append(f"{where}: unknown key(s) {', '.join(f'{k}{_hint(c)}' for k, c in items)}")
        elif items:
            self.warnings.extend(f"{where}.{k}: unknown key ignored{_hint(c)}" for k, c in items)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError("; ".join(self.errors))


_MISSING = object()


def get(section: dict, key: str, default: Any = _MISSING) -> Any:
    """section[key] with a clear error when a required key is missing."""
    if not isinstance(section, dict):
        raise ConfigError(f"expected an object, got {type(section).__name__}")
    if key in section and section[key] is not None:
        return section[key]
    if default is _MISSING:
        raise ConfigError(f"{key}: required")
    return default


def as_int(value: Any, key: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got boolean {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text) if any(c in text for c in ".eE") else int(text, 10)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: {value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key}: {value} is above the maximum {maximum}")
    return value


def as_float(value: Any, key: str, minimum: Optional[float] = None, maximum: Optional[float] = None) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got boolean {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: {value:g} is below the minimum {minimum:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key}: {value:g} is above the maximum {maximum:g}")
    return value


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def as_choice(value: Any, key: str, choices: Iterable[str], *, case_insensitive: bool = True) -> str:
    options = list(choices)
    if isinstance(value, str):
        for option in options:
            if value == option or (case_insensitive and value.strip().lower() == option.lower()):
                return option
    raise ConfigError(f"{key}: expected one of {', '.join(options)}, got {value!r}")


def as_str(value: Any, key: str, *, max_length: int = 1024, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
    if not allow_empty and not value:
        raise ConfigError(f"{key}: must not be empty")
    if len(value) > max_length:
        raise ConfigError(f"{key}: longer than {max_length} characters")
    return value


def as_str_list(value: Any, key: str, *, max_items: int = 1000) -> list:
    """A list of strings; a single comma-separated string is accepted too."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list of strings, got {type(value).__name__}")
    if len(value) > max_items:
        raise ConfigError(f"{key}: more than {max_items} items")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{key}[{i}]: expected a non-empty string, got {item!r}")
        out.append(item)
    return out


def as_section(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected an object, got {type(value).__name__}")
    return value
