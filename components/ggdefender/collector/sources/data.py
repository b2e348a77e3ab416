"""The plain data a metric source returns (`Sample` of listeners, connections, interface counters) and the
interface view and filter every source applies. A source turns the host's state into a `Sample` (no report
shapes, no deltas); the registry that picks one is this package's __init__.py.
"""

from __future__ import annotations

import fnmatch
import socket
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

# the metric groups a source can collect (long report names)
GROUPS = ("listening_tcp_ports", "listening_udp_ports", "tcp_connections", "network_stats")

# (bytes_in, bytes_out, packets_in, packets_out) per interface, cumulative since the interface appeared
Counters = Tuple[int, int, int, int]


# NamedTuples, not frozen dataclasses: 10,000 of them are built per sample on a busy host
class Listener(NamedTuple):
    port: int
    interface: Optional[str]


class Connection(NamedTuple):
    remote_ip: str  # display form: dotted IPv4 or bare IPv6 (no brackets)
    remote_port: int
    local_port: int
    local_interface: Optional[str]

    @property
    def remote_addr(self) -> str:
        if ":" in self.remote_ip:
            return f"[{self.remote_ip}]:{self.remote_port}"
        return f"{self.remote_ip}:{self.remote_port}"


@dataclass
class Sample:
    """One look at the host. A group left as None was not collected (disabled or failed)."""

    tcp_listeners: Optional[List[Listener]] = None
    udp_listeners: Optional[List[Listener]] = None
    # Connection, or a plain tuple in its field order (the procfs hot path skips the NamedTuple)
    connections: Optional[List[Connection]] = None
    counters: Optional[Dict[str, Counters]] = None  # per interface, already filtered
    errors: List[str] = field(default_factory=list)  # per-group failures, for the log


@dataclass(frozen=True)
class InterfaceMap:
    """What is known about the host's interfaces, built once per sample.

    `order` is the kernel's order (ifindex); `by_address` maps a textual IP to its interface name.
    """

    order: Tuple[str, ...] = ()
    up: frozenset = frozenset()
    loopback: frozenset = frozenset()
    by_address: Mapping[str, str] = field(default_factory=dict)

    def default_interface(self) -> Optional[str]:
        """Name reported for wildcard listeners: the first interface that is up and not loopback,
        else the first loopback interface, else None (the field is then left out)."""
        for name in self.order:
            if name in self.up and name not in self.loopback:
                return name
        for name in self.order:
            if name in self.loopback:
                return name
        return None

    def for_address(self, ip: str) -> Optional[str]:
        name = self.by_address.get(ip)
        if name is None and (ip.startswith("127.") or ip == "::1"):
            # the whole 127/8 block belongs to the loopback interface, not just 127.0.0.1
            for lo in self.order:
                if lo in self.loopback:
                    return lo
        return name

    @classmethod
    def from_dict(cls, data: Mapping) -> "InterfaceMap":
        """From fixture data: {"interfaces": [{"name", "up", "loopback", "addresses": [...]}, ...]}."""
        order, up, loop, by_addr = [], set(), set(), {}
        for item in data["interfaces"]:
            name = item["name"]
            order.append(name)
            if item.get("up", True):
                up.add(name)
            if item.get("loopback", False):
                loop.add(name)
            for addr in item.get("addresses", ()):
                by_addr.setdefault(addr, name)
        return cls(tuple(order), frozenset(up), frozenset(loop), by_addr)


def host_interfaces() -> InterfaceMap:
    """The live interface map from psutil (one getifaddrs + one stats pass per call)."""
    import psutil

    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    order = tuple(_kernel_order(addrs.keys()))
    up = frozenset(n for n, s in stats.items() if s.isup)
    loop = frozenset(n for n, lst in addrs.items() if any(
        a.family == socket.AF_INET and a.address.startswith("127.") or
        a.family == socket.AF_INET6 and a.address.split("%")[0] == "::1" for a in lst))
    by_addr: Dict[str, str] = {}
    for name in order:
        for a in addrs.get(name, ()):
            if a.family in (socket.AF_INET, socket.AF_INET6):
                by_addr.setdefault(a.address.split("%")[0], name)
    return InterfaceMap(order, up, loop, by_addr)


def _kernel_order(names: Iterable[str]) -> List[str]:
    try:
        index = {name: i for i, name in socket.if_nameindex()}
    except OSError:
        index = {}
    return sorted(names, key=lambda n: (index.get(n, 1 << 30), n))


class InterfaceFilter:
    """Include/exclude glob patterns on interface names (exclude wins)."""

    def __init__(self, include: Sequence[str] = ("*",), exclude: Sequence[str] = ()):
        self.include = tuple(include)
        self.exclude = tuple(exclude)

    def __call__(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, p) for p in self.exclude):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self.include)
