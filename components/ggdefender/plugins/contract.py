"""The custom-metrics plugin contract: value types, Device Defender's limits, and the in-process interface.

Everything that enters a report's `custom_metrics` block passes `validate_value` first, whether it came from
a built-in plugin, a pip-installed plugin or an out-of-process component, so one set of rules applies.

Limits come from the Device Defender custom-metric rules: metric names `[a-zA-Z0-9:_-]{1,128}` not starting with `aws:`;
numbers with at most 15 significant digits; strings of `A-Z a-z : _ - / .` (digits too: the AWS list omits
them, almost certainly by oversight); valid IPv4/IPv6 addresses. AWS documents no list or string length
limits, so ours (MAX_LIST_ITEMS, MAX_STRING_LENGTH) are a policy that keeps a report well under 128 KiB.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from typing import Any, ClassVar, Dict, Mapping

MAX_LIST_ITEMS = 100
# keys the host reads from every plugin's section itself, so no plugin may declare them as options
HOST_KEYS = frozenset({"Enabled", "IntervalSeconds"})
MAX_STRING_LENGTH = 128
SIGNIFICANT_DIGITS = 15

_NAME_RE = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_STRING_RE = re.compile(r"[A-Za-z0-9:_/.-]+")


class SampleError(ValueError):
    """A sample does not satisfy its declared type or Device Defender's limits; the message says why."""


class ValueType(str, enum.Enum):
    """The four custom-metric types. The enum value is the key used inside the report."""

    NUMBER = "number"
    NUMBER_LIST = "number_list"
    STRING_LIST = "string_list"
    IP_LIST = "ip_list"

    @property
    def report_key(self) -> str:
        return self.value

    @property
    def metric_type(self) -> str:
        """The `--metric-type` of `aws iot create-custom-metric` for this type."""
        return _API_NAMES[self]

    @classmethod
    def parse(cls, text: Any) -> "ValueType":
        """Accept the report key (`number_list`) or the AWS API name (`number-list`, `ip-address-list`)."""
        if isinstance(text, ValueType):
            return text
        if isinstance(text, str):
            key = text.strip().lower()
            for member in cls:
                if key in (member.value, _API_NAMES[member]):
                    return member
        choices = ", ".join(m.value for m in cls)
        raise SampleError(f"unknown value type {text!r} (expected one of {choices})")


_API_NAMES = {
    ValueType.NUMBER: "number",
    ValueType.NUMBER_LIST: "number-list",
    ValueType.STRING_LIST: "string-list",
    ValueType.IP_LIST: "ip-address-list",
}


def check_metric_name(name: Any) -> str:
    """The name itself when Device Defender accepts it as a custom metric name, else SampleError."""
    if not isinstance(name, str):
        raise SampleError(f"metric name must be a string, got {type(name).__name__}")
    if not _NAME_RE.fullmatch(name):
        raise SampleError(f"metric name {name[:140]!r} must be 1-128 characters of A-Z a-z 0-9 : _ -")
    if name.lower().startswith("aws:"):
        raise SampleError(f"metric name {name!r} must not begin with 'aws:' (reserved by AWS)")
    return name


def _number(value: Any, where: str) -> float | int:
    # bool is an int subclass but never a meaningful metric value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SampleError(f"{where}: expected a number, got {type(value).__name__} {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SampleError(f"{where}: {value!r} is not a finite number")
    if isinstance(value, int):
        if abs(value) < 10**SIGNIFICANT_DIGITS:
            return value
        value = float(value)
    # Device Defender keeps at most 15 significant digits; round instead of sending digits it drops
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _items(value: Any, where: str) -> list:
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)  # deterministic report content
    if not isinstance(value, (list, tuple)):
        raise SampleError(f"{where}: expected a list, got {type(value).__name__} {_short(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise SampleError(f"{where}: {len(value)} items, more than the limit of {MAX_LIST_ITEMS}")
    return list(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SampleError(f"{where}: expected a string, got {type(value).__name__} {_short(value)}")
    if len(value) > MAX_STRING_LENGTH:
        raise SampleError(f"{where}: string of {len(value)} characters, longer than {MAX_STRING_LENGTH}")
    if not _STRING_RE.fullmatch(value):
        raise SampleError(f"{where}: {_short(value)} is empty or has characters other than A-Z a-z 0-9 : _ - / .")
    return value


def _ip(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SampleError(f"{where}: expected an IP address string, got {type(value).__name__} {_short(value)}")
    if "%" in value:  # scoped IPv6 (fe80::1%eth0) is not an address Device Defender can match to a CIDR
        raise SampleError(f"{where}: {_short(value)} carries an IPv6 scope; send the address without %zone")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise SampleError(f"{where}: {_short(value)} is not a valid IPv4 or IPv6 address") from None


def validate_value(value_type: ValueType, value: Any) -> Any:
    """The value normalised for a report (rounded numbers, canonical IPs), or SampleError saying why not."""
    value_type = ValueType.parse(value_type)
    if value_type is ValueType.NUMBER:
        return _number(value, "value")
    items = _items(value, "value")
    check = {ValueType.NUMBER_LIST: _number, ValueType.STRING_LIST: _string, ValueType.IP_LIST: _ip}[value_type]
    return [check(item, f"value[{i}]") for i, item in enumerate(items)]


def report_entry(value_type: ValueType, value: Any) -> list:
    """Device Defender's shape for one custom metric: an array holding one object keyed by the type."""
    return [{ValueType.parse(value_type).report_key: validate_value(value_type, value)}]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Plugin:
    """An in-process custom-metrics plugin.

    Subclass it, set the class attributes and implement `sample()`. The host runs `sample()` in a worker
    thread with a timeout, so it may block briefly (e.g. read a file), but it must not rely on being called
    at a precise time. Raise any exception to say "no value this time": the host logs it with the name.

    A plugin that yields several metrics (e.g. one per mount) overrides `metrics()` and `collect()`.
    """

    name: ClassVar[str] = ""
    value_type: ClassVar[ValueType] = ValueType.NUMBER
    unit: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # seconds between samples; 0 samples for every report. The last good sample is reused in between.
    default_interval: ClassVar[float] = 0.0
    # plugin-specific configuration keys (PascalCase) and their defaults; any other key is a config error
    options: ClassVar[Mapping[str, Any]] = {}

    def configure(self, options: Dict[str, Any]) -> None:
        """Validate and apply the plugin-specific options (defaults filled in); raise settings.ConfigError.

        Called once, before the first sample, on the host's configuration thread: keep it quick.
        """

    def metrics(self) -> Dict[str, ValueType]:
        """The metrics this plugin produces, by name."""
        return {self.name: self.value_type}

    def sample(self) -> Any:
        raise NotImplementedError(f"plugin {self.name!r} does not implement sample()")

    def collect(self) -> Dict[str, Any]:
        """Raw values by metric name; the host validates each against `metrics()`."""
        return {self.name: self.sample()}

    def close(self) -> None:
        """Release resources; called when the plugin is disabled, reconfigured or the host closes."""
