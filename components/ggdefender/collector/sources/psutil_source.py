"""Fallback source for systems without /proc/net (macOS, BSD): psutil, one pass per sample.

Same rules as the procfs source (see its docstring); interface names come from one interface map per
sample, never one lookup per socket.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, Iterable, Optional, Tuple

from ggdefender.collector.sources.data import (
    GROUPS, Connection, InterfaceFilter, InterfaceMap, Listener, Sample, host_interfaces,
)
from ggdefender.collector.sources.declaration import Declaration


def _available() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def _display(ip: str) -> Tuple[str, bool]:
    ip = ip.split("%")[0]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, ip in ("0.0.0.0", "::")


class PsutilSource:
    name = "psutil"

    def __init__(self, interfaces: Optional[InterfaceMap] = None,
                 interface_filter: Optional[InterfaceFilter] = None, **_ignored: Any):
        self._interfaces = interfaces
        self.interface_filter = interface_filter or InterfaceFilter()

    def sample(self, groups: Iterable[str] = GROUPS) -> Sample:
        import psutil

        groups = set(groups)
        out = Sample()
        ifmap = self._interfaces or host_interfaces()
        default_if = ifmap.default_interface()

        def iface(ip: str, wildcard: bool) -> Optional[str]:
            return default_if if wildcard else ifmap.for_address(ip)

        if groups & {"listening_tcp_ports", "listening_udp_ports", "tcp_connections"}:
            try:
                tcp_l: Dict[Tuple[int, Optional[str]], None] = {}
                udp_l: Dict[Tuple[int, Optional[str]], None] = {}
                conns = []
                for c in psutil.net_connections("inet"):
                    if not c.laddr:
                        continue
                    ip, wild = _display(c.laddr.ip)
                    if c.type == socket.SOCK_STREAM:
                        if c.status == psutil.CONN_LISTEN:
                            tcp_l[(c.laddr.port, iface(ip, wild))] = None
                        elif c.status == psutil.CONN_ESTABLISHED and c.raddr:
                            rip, _ = _display(c.raddr.ip)
                            conns.append(Connection(rip, c.raddr.port, c.laddr.port, iface(ip, wild)))
                    elif c.type == socket.SOCK_DGRAM and not c.raddr and c.laddr.port:
                        udp_l[(c.laddr.port, iface(ip, wild))] = None
                if "listening_tcp_ports" in groups:
                    out.tcp_listeners = [Listener(p, i) for p, i in tcp_l]
                if "listening_udp_ports" in groups:
                    out.udp_listeners = [Listener(p, i) for p, i in udp_l]
                if "tcp_connections" in groups:
                    out.connections = conns
            except (psutil.Error, OSError) as exc:
                out.errors.append(f"connections: {exc}")
        if "network_stats" in groups:
            try:
                per = psutil.net_io_counters(pernic=True) or {}
                out.counters = {
                    name: (c.bytes_recv, c.bytes_sent, c.packets_recv, c.packets_sent)
                    for name, c in per.items() if self.interface_filter(name)
                }
            except (psutil.Error, OSError) as exc:
                out.errors.append(f"network_stats: {exc}")
        return out


DECLARATION = Declaration("psutil", PsutilSource, _available, summary="other systems", preference=2)
