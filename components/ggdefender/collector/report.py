"""Build Device Defender metrics reports from a `Sample` (pure: no I/O, no clock).

- Long names for JSON, short names for CBOR (one alias table for both directions).
- `network_stats` are deltas since the previous sample: none on the first report, and none on a report
  where any kept counter went backwards (reset or wrap), so a value is never negative.
- Size cap: lists are put in a priority order and cut to a common length until the encoded report fits
  (docs/metrics.md "When a report is too big"); `total` always stays the true count. Custom metrics are
  kept whole; only when they alone exceed the cap are the largest of them left out.
"""

from __future__ import annotations

import json
import operator
import socket
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ggdefender import topics
from ggdefender.collector.sources.data import Connection, Counters, Listener, Sample
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD

VERSION = "1.0"
DEFAULT_MAX_LIST = 1000
MQTT_LIMIT = IOT_CORE_MAX_PAYLOAD  # a report must stay below this
DEFAULT_MAX_BYTES = 128_000  # a little under the 128 KiB IoT Core payload limit

# long -> short; the same table serves every level (names never clash across levels)
LONG_TO_SHORT = {
    "header": "hed", "report_id": "rid", "version": "v",
    "metrics": "met", "custom_metrics": "cmet",
    "tcp_connections": "tc", "established_connections": "ec", "connections": "cs",
    "remote_addr": "rad", "local_port": "lp", "local_interface": "li",
    "listening_tcp_ports": "tp", "listening_udp_ports": "up", "ports": "pts", "port": "pt", "interface": "if",
    "network_stats": "ns", "bytes_in": "bi", "bytes_out": "bo", "packets_in": "pi", "packets_out": "po",
    "total": "t",
}
SHORT_TO_LONG = {v: k for k, v in LONG_TO_SHORT.items()}


class ReportTooLarge(ValueError):
    """Even with every list emptied the report does not fit (custom metrics too big)."""


# -- network stats -----------------------------------------------------------------------------------
def network_delta(previous: Optional[Mapping[str, Counters]],
                  current: Optional[Mapping[str, Counters]]) -> Optional[dict]:
    """Traffic since the previous sample summed over the kept interfaces, or None when it cannot be known.

    None on the first sample and when any counter of an interface seen both times went backwards
    (interface reset or 32-bit wrap): sending nothing beats sending a wrong or negative value. An
    interface that appeared since the previous sample starts its baseline now and adds 0.
    """
    if previous is None or current is None:
        return None
    bi = bo = pi = po = 0
    for name, cur in current.items():
        prev = previous.get(name)
        if prev is None:
            continue
        d0, d1, d2, d3 = cur[0] - prev[0], cur[1] - prev[1], cur[2] - prev[2], cur[3] - prev[3]
        if d0 < 0 or d1 < 0 or d2 < 0 or d3 < 0:
            return None
        bi += d0
        bo += d1
        pi += d2
        po += d3
    return {"bytes_in": bi, "bytes_out": bo, "packets_in": pi, "packets_out": po}


# -- deterministic priority orders (what survives a cut) -----------------------------------------
def _ip_key(ip: str) -> Tuple[int, bytes]:
    try:
        if ":" in ip:
            return (6, socket.inet_pton(socket.AF_INET6, ip))
        return (4, socket.inet_pton(socket.AF_INET, ip))
    except OSError:
        return (9, ip.encode())


def _round_robin(groups: List[List]) -> List:
    out: List = []
    depth = max((len(g) for g in groups), default=0)
    for i in range(depth):
        for g in groups:
            if i < len(g):
                out.append(g[i])
    return out


def order_listeners(listeners: Iterable[Listener]) -> List[Listener]:
    """Distinct ports first (ascending), then the port's further interfaces in name order."""
    by_port: Dict[int, List[Listener]] = {}
    for item in listeners:
        by_port.setdefault(item.port, []).append(item)
    groups = [sorted(by_port[p], key=lambda x: x.interface or "") for p in sorted(by_port)]
    if all(len(g) == 1 for g in groups):
        return [g[0] for g in groups]
    return _round_robin(groups)


def order_connections(connections: Iterable[Connection]) -> List[Connection]:
    """Round-robin over distinct remote IPs (ascending), within one IP by remote port then local port,
    so a cut list still names as many distinct destinations as possible."""
    # indexes, not attribute names: the procfs source hands plain tuples in Connection's field order
    by_ip: Dict[str, List[Connection]] = {}
    for c in connections:
        lst = by_ip.get(c[0])
        if lst is None:
            by_ip[c[0]] = [c]
        else:
            lst.append(c)
    groups = []
    by_ports = operator.itemgetter(1, 2)
    for ip in sorted(by_ip, key=_ip_key):
        g = by_ip[ip]
        if len(g) > 1:
            g.sort(key=by_ports)  # stable: equal ports keep the source's order
        groups.append(g)
    if len(groups) == 1:
        return groups[0]
    return _round_robin(groups)


def _listener_obj(item: Listener) -> dict:
    if item.interface is None:
        return {"port": item.port}
    return {"port": item.port, "interface": item.interface}


def _connection_obj(c: Connection) -> dict:
    ip, rport, lport, iface = c
    obj = {"remote_addr": f"[{ip}]:{rport}" if ":" in ip else f"{ip}:{rport}", "local_port": lport}
    if iface is not None:
        obj["local_interface"] = iface
    return obj


# -- build ---------------------------------------------------------------------------------------------
def build_report(
    sample: Sample,
    report_id: int,
    *,
    network_stats: Optional[dict] = None,
    custom_metrics: Optional[Mapping[str, list]] = None,
    fmt: str = "json",
    max_list: int = DEFAULT_MAX_LIST,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict:
    """The report in long-name form, cut so that `encode(report, fmt)` is at most max_bytes."""
    tcp = order_listeners(sample.tcp_listeners) if sample.tcp_listeners is not None else None
    udp = order_listeners(sample.udp_listeners) if sample.udp_listeners is not None else None
    conns = order_connections(sample.connections) if sample.connections is not None else None

    def assemble(cap: int) -> dict:
        metrics: dict = {}
        if tcp is not None:
            metrics["listening_tcp_ports"] = {"ports": [_listener_obj(x) for x in tcp[:cap]], "total": len(tcp)}
        if udp is not None:
            metrics["listening_udp_ports"] = {"ports": [_listener_obj(x) for x in udp[:cap]], "total": len(udp)}
        if conns is not None:
            metrics["tcp_connections"] = {"established_connections": {
                "connections": [_connection_obj(c) for c in conns[:cap]], "total": len(conns)}}
        if network_stats is not None:
            metrics["network_stats"] = dict(network_stats)
        report = {"header": {"report_id": int(report_id), "version": VERSION}, "metrics": metrics}
        if custom:
            report["custom_metrics"] = dict(custom)
        return report

    custom = dict(custom_metrics or {})
    longest = max((len(x) for x in (tcp, udp, conns) if x is not None), default=0)
    cap = min(max_list, longest)
    report = assemble(cap)
    if len(encode(report, fmt)) <= max_bytes:
        return report
    if len(encode(assemble(0), fmt)) > max_bytes:
        # Custom metrics alone do not fit (e.g. many large external string lists): drop the largest ones
        # (ties by name) until they do, rather than lose the whole report; the caller logs what was dropped.
        by_size = sorted(custom, key=lambda n: (-len(encode({n: custom[n]}, "json")), n))
        for name in by_size:
            del custom[name]
            if len(encode(assemble(0), fmt)) <= max_bytes:
                break
        if len(encode(assemble(0), fmt)) > max_bytes:
            raise ReportTooLarge(f"report exceeds {max_bytes} bytes even with no lists and no custom metrics")
    # largest common cap that fits: the encoded size grows with cap, so bisect
    lo, hi = 0, cap - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(assemble(mid), fmt)) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return assemble(lo)


# -- names and encoding -------------------------------------------------------------------------------
def _rename(obj: Any, table: Mapping[str, str], custom_key: str) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            nk = table.get(k, k)
            # custom metric names and their value keys have no short forms: copy them as they are
            out[nk] = v if nk == custom_key or k == custom_key else _rename(v, table, custom_key)
        return out
    if isinstance(obj, list):
        return [_rename(v, table, custom_key) for v in obj]
    return obj


def to_short(report: dict) -> dict:
    return _rename(report, LONG_TO_SHORT, "cmet")


def to_long(report: dict) -> dict:
    """Expand short (or mixed) keys to long ones; custom metric contents are left alone."""
    return _rename(report, SHORT_TO_LONG, "custom_metrics")


def encode(report: dict, fmt: str = "json") -> bytes:
    """Wire bytes: compact JSON with long names, or CBOR (cbor2, definite lengths) with short names."""
    if fmt == "json":
        return json.dumps(report, separators=(",", ":")).encode()
    if fmt == "cbor":
        import cbor2

        return cbor2.dumps(to_short(report))
    raise ValueError(f"unknown report format {fmt!r} (json or cbor)")


def decode(payload: bytes, fmt: str = "json") -> dict:
    """Wire bytes back to a long-name report."""
    if fmt == "json":
        return to_long(json.loads(payload))
    if fmt == "cbor":
        import cbor2

        return to_long(cbor2.loads(payload))
    raise ValueError(f"unknown report format {fmt!r} (json or cbor)")


topic = topics.metrics
