"""The plain data a metric source returns (`Sample` of listeners, connections, interface counters) and the
interface view and filter every source applies. A source turns the host's state into a `Sample` (no report
shapes, no deltas); the registry that picks one is this package's __init__.py.
"""

from __future__ import annotations

import fnmatch
import socket
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

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
        order: List[str] = []
        up: Set[str] = set()
        loop: Set[str] = set()
        by_addr: Dict[str, str] = {}
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
    """The live interface map (one address dump + one flags pass per call): from the kernel on Linux
    (netlink.py, no psutil needed), from psutil elsewhere; both give the same view."""
    if sys.platform.startswith("linux"):
        from . import netlink

        names = [name for _, name in socket.if_nameindex()]
        return interface_map(names, netlink.addresses(), netlink.running(names))
    return interface_map(*psutil_interfaces())


def psutil_interfaces() -> "tuple[list, list, set]":
    """(interface names, (name, family, address) of each IP address, names up with a link) from psutil."""
    import psutil

    addrs = psutil.net_if_addrs()
    found = [(name, a.family, a.address.split("%")[0]) for name, lst in addrs.items() for a in lst
             if a.family in (socket.AF_INET, socket.AF_INET6)]
    return list(addrs), found, {n for n, s in psutil.net_if_stats().items() if s.isup}


def interface_map(names: Iterable[str], addresses: Iterable[Tuple[str, int, str]], up: Iterable[str]) -> InterfaceMap:
    """The map from the interface names, their (name, family, address) IP addresses (an IPv4 label such as
    `eth0:1` is a name of its own, as getifaddrs has it) and the names that are up."""
    addresses = list(addresses)
    order = tuple(_kernel_order(set(names) | {name for name, _, _ in addresses}))
    loop = frozenset(name for name, family, address in addresses if
                     family == socket.AF_INET and address.startswith("127.") or
                     family == socket.AF_INET6 and address == "::1")
    rank = {name: i for i, name in enumerate(order)}
    by_addr: Dict[str, str] = {}
    for name, _, address in sorted(addresses, key=lambda a: rank[a[0]]):  # an address on two: the first in order
        by_addr.setdefault(address, name)
    return InterfaceMap(order, frozenset(up), loop, by_addr)


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
