"""The Detect metric catalogue: names, value types, operators, statistics, and datapoints from reports.

Device-side metrics come from a metrics report (long-name JSON, as the collector builds it); cloud-side
metrics are listed so a profile that uses them type-checks here and can be evaluated by the local core's
cloud side (`ggdefender.local.cloud.metrics_service`). Custom metrics are referred to by their bare name and carry
a declared type (`number`, `number-list`, `string-list`, `ip-address-list`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Iterable, Optional, TypeGuard, Union

# value kinds: which MetricValue field a behavior compares against
COUNT, NUMBER, PORTS, CIDRS, NUMBERS, STRINGS = "count", "number", "ports", "cidrs", "numbers", "strings"

NUMERIC_OPERATORS = ("less-than", "less-than-equals", "greater-than", "greater-than-equals")
OPERATORS_BY_KIND = {
    COUNT: NUMERIC_OPERATORS,
    NUMBER: NUMERIC_OPERATORS,
    PORTS: ("in-port-set", "not-in-port-set"),
    CIDRS: ("in-cidr-set", "not-in-cidr-set"),
    NUMBERS: ("in-set", "not-in-set"),
    STRINGS: ("in-set", "not-in-set"),
}
ALL_OPERATORS = (
    "less-than", "less-than-equals", "greater-than", "greater-than-equals", "in-cidr-set", "not-in-cidr-set",
    "in-port-set", "not-in-port-set", "in-set", "not-in-set",
)
# AWS lists `Average` too (CloudFormation's StatisticalThreshold, the Detect guide); the IoT API model's pattern
# names only the percentiles, so a profile meant for CreateSecurityProfile itself should not use it
STATISTICS = ("Average", "p0", "p0.1", "p0.01", "p1", "p10", "p50", "p90", "p99", "p99.9", "p99.99", "p100")
DURATIONS = (300, 600, 900, 1800, 3600)

# how a window's value is formed when the behavior has durationSeconds
SUM, LAST = "sum", "last"
# whether durationSeconds is required, optional or forbidden
REQUIRED, OPTIONAL, FORBIDDEN = "required", "optional", "forbidden"

CUSTOM_TYPES = {"number": NUMBER, "number-list": NUMBERS, "string-list": STRINGS, "ip-address-list": CIDRS}
CUSTOM_REPORT_KEYS = {"number": "number", "number-list": "number_list", "string-list": "string_list",
                      "ip-address-list": "ip_list"}
KIND_TO_CUSTOM_TYPE = {v: k for k, v in CUSTOM_TYPES.items()}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str                 # COUNT, NUMBER, PORTS, CIDRS, NUMBERS, STRINGS
    side: str                 # "device", "cloud" or "custom"
    aggregation: Optional[str]  # SUM or LAST for windowed numeric metrics; None for lists
    duration: str             # REQUIRED, OPTIONAL or FORBIDDEN
    statistical: bool         # statisticalThreshold allowed
    ml: bool                  # mlDetectionConfig allowed
    dimension: bool = False   # metricDimension (TOPIC_FILTER) allowed
    custom_type: Optional[str] = None

    @property
    def operators(self) -> tuple:
        return OPERATORS_BY_KIND[self.kind]

    @property
    def is_list(self) -> bool:
        return self.kind in (PORTS, CIDRS, NUMBERS, STRINGS)


def _m(name, kind, side, agg, dur, stat, ml, dim=False):
    return MetricSpec(name, kind, side, agg, dur, stat, ml, dim)


CATALOGUE: dict[str, MetricSpec] = {s.name: s for s in (
    # device side
    _m("aws:all-bytes-out", COUNT, "device", SUM, REQUIRED, True, True),
    _m("aws:all-bytes-in", COUNT, "device", SUM, REQUIRED, True, True),
    _m("aws:all-packets-out", COUNT, "device", SUM, REQUIRED, True, True),
    _m("aws:all-packets-in", COUNT, "device", SUM, REQUIRED, True, True),
    _m("aws:num-listening-tcp-ports", COUNT, "device", LAST, REQUIRED, True, True),
    _m("aws:num-listening-udp-ports", COUNT, "device", LAST, REQUIRED, True, True),
    _m("aws:num-established-tcp-connections", COUNT, "device", LAST, OPTIONAL, True, True),
    _m("aws:listening-tcp-ports", PORTS, "device", None, FORBIDDEN, False, False),
    _m("aws:listening-udp-ports", PORTS, "device", None, FORBIDDEN, False, False),
    _m("aws:destination-ip-addresses", CIDRS, "device", None, FORBIDDEN, False, False),
    # cloud side (AWS IoT Core produces them; the local core's cloud side observes what it can)
    _m("aws:message-byte-size", COUNT, "cloud", SUM, OPTIONAL, True, True, True),
    _m("aws:num-messages-sent", COUNT, "cloud", SUM, REQUIRED, True, True, True),
    _m("aws:num-messages-received", COUNT, "cloud", SUM, REQUIRED, True, True, True),
    _m("aws:num-authorization-failures", COUNT, "cloud", SUM, REQUIRED, True, True, True),
    _m("aws:source-ip-address", CIDRS, "cloud", None, FORBIDDEN, False, False, True),
    _m("aws:num-connection-attempts", COUNT, "cloud", SUM, REQUIRED, True, True),
    _m("aws:num-disconnects", COUNT, "cloud", SUM, REQUIRED, True, True),
)}

DEVICE_METRICS = tuple(n for n, s in CATALOGUE.items() if s.side == "device")
CLOUD_METRICS = tuple(n for n, s in CATALOGUE.items() if s.side == "cloud")


def custom_spec(name: str, custom_type: str) -> MetricSpec:
    """The spec of a custom metric of a declared type (ML only for `number`)."""
    kind = CUSTOM_TYPES[custom_type]
    numeric = kind == NUMBER
    return MetricSpec(name, kind, "custom", LAST if numeric else None, OPTIONAL if numeric else FORBIDDEN,
                      numeric, numeric, False, custom_type)


# -- datapoints from a report ------------------------------------------------------------------------


def canonical_ip(host: str) -> Optional[str]:
    """The canonical text of an IPv4/IPv6 address, None if it is not one (inet_pton: strict and fast)."""
    try:
        socket.inet_pton(socket.AF_INET, host)
        return host
    except (OSError, TypeError, ValueError):
        pass
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host))
    except (OSError, TypeError, ValueError):
        return None


def remote_ip(remote_addr: Any) -> Optional[str]:
    """The IP part of `a.b.c.d:port` or `[v6]:port` (a bare address is accepted too); None if malformed."""
    if not isinstance(remote_addr, str) or not remote_addr:
        return None
    text = remote_addr.strip()
    if text.startswith("["):
        end = text.find("]")
        host = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:
        host = text  # bare IPv4, or an unbracketed IPv6 without port (PyPI agent SDK 2.0.0 form)
    return canonical_ip(host)


def _count(block: Any, list_key: str) -> Optional[int]:
    if not isinstance(block, dict):
        return None
    total = block.get("total")
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    items = block.get(list_key)
    return len(items) if isinstance(items, list) else None


def _ports(block: Any) -> Optional[tuple]:
    if not isinstance(block, dict):
        return None
    items = block.get("ports")
    if not isinstance(items, list):
        return () if "total" in block else None
    ports = {p.get("port") for p in items if isinstance(p, dict)}
    return tuple(sorted(p for p in ports if isinstance(p, int) and not isinstance(p, bool) and 0 < p <= 65535))


def _number(v: Any) -> TypeGuard[Union[int, float]]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def extract(report: dict, custom_types: Optional[dict] = None) -> dict:
    """Every device-side and custom metric datapoint a long-name report carries: {metric name: value}.

    Counts are ints, list metrics are tuples of distinct values (counts use `total`
    when present, sets use the distinct listed values). A metric the report does not carry is absent, which
    is "no datapoint" rather than zero. Custom metrics are read by their declared type when one is given,
    else by whichever value key the report uses.
    """
    out: dict = {}
    metrics = report.get("metrics")
    if isinstance(metrics, dict):
        ns = metrics.get("network_stats")
        if isinstance(ns, dict):
            for key, name in (("bytes_in", "aws:all-bytes-in"), ("bytes_out", "aws:all-bytes-out"),
                              ("packets_in", "aws:all-packets-in"), ("packets_out", "aws:all-packets-out")):
                v = ns.get(key)
                if _number(v) and v >= 0:
                    out[name] = v
        tcp = metrics.get("listening_tcp_ports")
        if tcp is not None:
            ports = _ports(tcp)
            if ports is not None:
                out["aws:listening-tcp-ports"] = ports
            n = _count(tcp, "ports")
            if n is not None:
                out["aws:num-listening-tcp-ports"] = n
        udp = metrics.get("listening_udp_ports")
        if udp is not None:
            ports = _ports(udp)
            if ports is not None:
                out["aws:listening-udp-ports"] = ports
            n = _count(udp, "ports")
            if n is not None:
                out["aws:num-listening-udp-ports"] = n
        tc = metrics.get("tcp_connections")
        est = tc.get("established_connections") if isinstance(tc, dict) else None
        if isinstance(est, dict):
            n = _count(est, "connections")
            if n is not None:
                out["aws:num-established-tcp-connections"] = n
            conns = est.get("connections")
            if isinstance(conns, list):
                ips = {remote_ip(c.get("remote_addr")) for c in conns if isinstance(c, dict)}
                ips.discard(None)
                out["aws:destination-ip-addresses"] = tuple(sorted(ips))
            elif "total" in est:
                out["aws:destination-ip-addresses"] = ()
    custom = report.get("custom_metrics")
    if isinstance(custom, dict):
        for name, entry in custom.items():
            value = custom_value(entry, (custom_types or {}).get(name))
            if value is not None:
                out[name] = value
    return out


def custom_value(entry: Any, custom_type: Optional[str]) -> Any:
    """A custom metric's datapoint from its report entry `[{"<key>": value}]`; None when absent or malformed."""
    if isinstance(entry, list) and entry:
        entry = entry[0]
    if not isinstance(entry, dict) or not entry:
        return None
    keys = [CUSTOM_REPORT_KEYS[custom_type]] if custom_type else list(CUSTOM_REPORT_KEYS.values())
    for key in keys:
        if key not in entry:
            continue
        v = entry[key]
        if key == "number":
            return float(v) if _number(v) else None
        if not isinstance(v, list):
            return None
        if key == "number_list":
            return tuple(sorted({float(x) for x in v if _number(x)}))
        if key == "string_list":
            return tuple(sorted({x for x in v if isinstance(x, str)}))
        ips = {canonical_ip(x) for x in v if isinstance(x, str)}  # invalid ones are neither shown nor kept
        ips.discard(None)
        return tuple(sorted(ips))
    return None


def datapoint_size(value: Any) -> int:
    """How many values one datapoint holds (for plots and counters)."""
    return len(value) if isinstance(value, tuple) else 1


def known_metric_names(extra: Iterable[str] = ()) -> list:
    return sorted(set(CATALOGUE) | set(extra))
