"""Validate a Device Defender metrics report: every problem, not just the first.

Used by the collector before it publishes and by the local core's offline cloud side to accept or reject
reports, so it follows the spec's rules and the product policy:
long and short keys are both accepted (also mixed; one key given in both forms is an error), unknown keys
are ignored, at least one of metrics/custom_metrics, report_id a positive integer, version "N.N", ports
1-65535, remote_addr `a.b.c.d:port` or `[v6]:port`, deltas and totals >= 0, custom metrics shaped
`name: [{"number"|"number_list"|"string_list"|"ip_list": value}]`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any, Dict, List, Union

import jsonschema

from ggdefender import topics
from ggdefender.collector.report import MQTT_LIMIT, SHORT_TO_LONG
from ggdefender.plugins.contract import SampleError, check_metric_name

_COUNT = {"type": "integer", "minimum": 0}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_PORT_LIST = {
    "type": "object",
    "properties": {
        "ports": {"type": "array", "items": {
            "type": "object", "properties": {"port": _PORT, "interface": {"type": "string"}}}},
        "total": _COUNT,
    },
}

# the structure, long names (keys are normalized first); extra rules are checked in code below
REPORT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["header"],
    "anyOf": [{"required": ["metrics"]}, {"required": ["custom_metrics"]}],
    "properties": {
        "header": {
            "type": "object",
            "required": ["report_id", "version"],
            "properties": {
                "report_id": {"type": "integer", "minimum": 1},
                "version": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+$"},
            },
        },
        "metrics": {
            "type": "object",
            "properties": {
                "listening_tcp_ports": _PORT_LIST,
                "listening_udp_ports": _PORT_LIST,
                "tcp_connections": {"type": "object", "properties": {
                    "established_connections": {"type": "object", "properties": {
                        "connections": {"type": "array", "items": {
                            "type": "object",
                            "required": ["remote_addr"],
                            "properties": {
                                "remote_addr": {"type": "string"},
                                "local_port": {"type": "integer", "minimum": 0, "maximum": 65535},
                                "local_interface": {"type": "string"},
                            }}},
                        "total": _COUNT,
                    }}}},
                "network_stats": {"type": "object", "properties": {
                    k: _COUNT for k in ("bytes_in", "bytes_out", "packets_in", "packets_out")}},
            },
        },
        "custom_metrics": {
            "type": "object",
            "additionalProperties": {
                "type": "array", "minItems": 1, "maxItems": 1,
                "items": {
                    "type": "object", "minProperties": 1, "maxProperties": 1,
                    "properties": {
                        "number": {"type": "number"},
                        "number_list": {"type": "array", "items": {"type": "number"}},
                        "string_list": {"type": "array", "items": {"type": "string"}},
                        "ip_list": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": False,
                },
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft7Validator(REPORT_SCHEMA)
_IPV4_ADDR = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$")
_IPV6_ADDR = re.compile(r"^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$")


def _normalize(obj: Any, path: str, problems: List[str], in_custom: bool = False) -> Any:
    """Long-key copy of obj; reports keys given in both forms. Custom metric contents stay as they are."""
    if isinstance(obj, dict):
        out: Dict[str, Any] = {}
        origin: Dict[str, str] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                problems.append(f"{path or '/'}: key {k!r} is not a string")
                continue
            long_key = k if in_custom else SHORT_TO_LONG.get(k, k)
            if long_key in out:
                problems.append(f"{path}/{long_key}: given twice (as {origin[long_key]!r} and {k!r})")
                continue
            origin[long_key] = k
            custom = long_key == "custom_metrics" and not in_custom and path == ""
            out[long_key] = v if custom else _normalize(v, f"{path}/{long_key}", problems, in_custom)
        return out
    if isinstance(obj, list):
        return [_normalize(v, f"{path}/{i}", problems, in_custom) for i, v in enumerate(obj)]
    return obj


def _where(error: jsonschema.ValidationError) -> str:
    return "/" + "/".join(str(p) for p in error.absolute_path)


def _check_remote_addr(value: str) -> str:
    m = _IPV4_ADDR.match(value)
    if m:
        ip, port = m.group(1), m.group(2)
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            return f"{value!r} has an invalid IPv4 address"
    else:
        m = _IPV6_ADDR.match(value)
        if not m:
            return f"{value!r} is not ip:port (IPv4 a.b.c.d:port or IPv6 [addr]:port)"
        ip, port = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(ip)
        except ValueError:
            return f"{value!r} has an invalid IPv6 address"
    if not 0 <= int(port) <= 65535:
        return f"{value!r} has a port outside 0-65535"
    return ""


def _extra_rules(report: dict, problems: List[str]) -> None:
    metrics = report.get("metrics")
    if isinstance(metrics, dict):
        tc = metrics.get("tcp_connections")
        ec = tc.get("established_connections") if isinstance(tc, dict) else None
        conns = ec.get("connections") if isinstance(ec, dict) else None
        if isinstance(conns, list):
            for i, c in enumerate(conns):
                addr = c.get("remote_addr") if isinstance(c, dict) else None
                if isinstance(addr, str):
                    why = _check_remote_addr(addr)
                    if why:
                        problems.append(f"/metrics/tcp_connections/established_connections/connections/{i}"
                                        f"/remote_addr: {why}")
    custom = report.get("custom_metrics")
    if isinstance(custom, dict):
        for name, value in custom.items():
            try:
                check_metric_name(name)  # the same rule plugins are held to
            except SampleError as exc:
                problems.append(f"/custom_metrics/{name[:140]}: {exc}")
            if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)):
                continue  # the schema already said what is wrong
            for kind, v in value[0].items():
                where = f"/custom_metrics/{name}/0/{kind}"
                items = [v] if kind == "number" else v if isinstance(v, list) else []
                for j, item in enumerate(items):
                    at = where if kind == "number" else f"{where}/{j}"
                    if kind in ("number", "number_list"):
                        if isinstance(item, float) and not math.isfinite(item):
                            problems.append(f"{at}: must be a finite number")
                    elif kind == "ip_list" and isinstance(item, str):
                        try:
                            ipaddress.ip_address(item)
                        except ValueError:
                            problems.append(f"{at}: {item!r} is not an IPv4 or IPv6 address")


def validate_report(obj: Union[dict, bytes, bytearray, str], fmt: str = "json") -> List[str]:
    """All problems with a report (an object, or its wire bytes in `fmt`); an empty list means valid."""
    problems: List[str] = []
    if fmt not in topics.REPORT_FORMATS:
        return [f"unknown report format {fmt!r} (json or cbor)"]
    if isinstance(obj, (bytes, bytearray, str)):
        data = obj.encode() if isinstance(obj, str) else bytes(obj)
        if len(data) >= MQTT_LIMIT:  # a nucleus refuses payloads of 128 KiB or more
            problems.append(f"payload is {len(data)} bytes; the MQTT limit allows at most {MQTT_LIMIT - 1}")
        try:
            if fmt == "json":
                obj = json.loads(data)
            else:
                import cbor2

                obj = cbor2.loads(data)
        except Exception as exc:  # json, cbor2 and unicode errors all mean "not a report"
            return problems + [f"payload is not valid {fmt.upper()}: {exc}"]
    if not isinstance(obj, dict):
        return problems + [f"report must be an object, got {type(obj).__name__}"]
    report = _normalize(obj, "", problems)
    for error in sorted(_VALIDATOR.iter_errors(report), key=lambda e: list(map(str, e.absolute_path))):
        if error.validator == "anyOf" and not error.absolute_path:
            problems.append("/: at least one of metrics or custom_metrics is required")
        else:
            problems.append(f"{_where(error)}: {error.message}")
    _extra_rules(report, problems)
    return problems

