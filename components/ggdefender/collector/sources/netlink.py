"""The host's interfaces and their addresses on Linux, from the kernel itself: one rtnetlink address dump
(what glibc's getifaddrs reads, and so psutil.net_if_addrs) and each interface's flags (SIOCGIFFLAGS, what
psutil.net_if_stats reads). Standard library only, so the collector needs no psutil on Linux.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import Dict, Iterable, List, Optional, Set, Tuple

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
SIOCGIFFLAGS = 0x8913
IFF_RUNNING = 0x40
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
MAX_DUMP_BYTES = 8 * 1024 * 1024  # ~100,000 addresses; beyond that something is wrong, not a bigger host
TIMEOUT_SECONDS = 5.0

# (interface name, socket.AF_INET or AF_INET6, textual address without an IPv6 zone)
Address = Tuple[str, int, str]


def _align(n: int) -> int:
    return (n + 3) & ~3


def addresses() -> List[Address]:
    """Every IPv4 and IPv6 address of the host, named as getifaddrs names them: an IPv4 address with a label
    (`ip addr add ... label eth0:1`) under its label, else under its interface; the local address of a
    point-to-point link, not its peer. Raises OSError."""
    names = {index: name for index, name in socket.if_nameindex()}
    found: List[Address] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(TIMEOUT_SECONDS)
        sock.bind((0, 0))
        seq = 1
        request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(request), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                  + request)
        total = 0
        while True:
            data = sock.recv(65536)
            total += len(data)
            if not data or total > MAX_DUMP_BYTES:
                raise OSError(f"netlink address dump {'ended early' if not data else 'over ' + str(MAX_DUMP_BYTES)}")
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size or offset + length > len(data):
                    raise OSError(f"netlink: malformed message (length {length})")
                body = data[offset + _NLMSGHDR.size:offset + length]
                offset += _align(length)
                if msg_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    error = -struct.unpack_from("=i", body)[0]
                    if error:
                        raise OSError(error, f"netlink address dump: {os.strerror(error)}")
                    continue
                if kind == RTM_NEWADDR:
                    entry = _address(body, names)
                    if entry is not None:
                        found.append(entry)


def _address(body: bytes, names: dict) -> Optional[Address]:
    family, _, _, _, index = _IFADDRMSG.unpack_from(body)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs: Dict[int, bytes] = {}
    offset = _IFADDRMSG.size
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            break
        attrs[kind] = body[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)  # on a point-to-point link IFA_ADDRESS is the peer
    if raw is None:
        return None
    label = attrs.get(IFA_LABEL, b"").split(b"\0", 1)[0].decode(errors="replace") if family == socket.AF_INET else ""
    name = label or names.get(index)
    if not name:
        return None  # its interface went away during the dump
    return name, family, socket.inet_ntop(family, raw)


def running(names: Iterable[str]) -> Set[str]:
    """The interfaces among `names` that are up with a link (IFF_RUNNING), as psutil.net_if_stats().isup."""
    up = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            try:
                result = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", name.encode()[:15], 0))
            except OSError:  # gone meanwhile (ENODEV)
                continue
            if struct.unpack_from("16sH", result)[1] & IFF_RUNNING:
                up.add(name)
    return up
