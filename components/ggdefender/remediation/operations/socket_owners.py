"""Every process that holds a listening socket on a port, found through socket inodes.

psutil's connection list names one owner per socket, so a socket shared by a parent and its forked workers
showed only one of them. Here the listening sockets come from /proc/net/{tcp,tcp6,udp,udp6} (their inodes)
and their owners from every /proc/<pid>/fd link `socket:[inode]`, so each owner of each socket is found.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Dict, Optional, Set, Tuple

from ggdefender.collector.sources.procfs import decode_address, proc_lines

TABLES = {"tcp": ("/proc/net/tcp", "/proc/net/tcp6"), "udp": ("/proc/net/udp", "/proc/net/udp6")}
_TCP_LISTEN = "0A"


def listening_inodes(port: int, protocol: str, address: Optional[str] = None) -> Set[int]:
    """Inodes of the sockets listening on `port` (TCP LISTEN, or unconnected UDP), IPv4 and IPv6, bound to
    `address` or a wildcard when it is given. Inode 0 (a kernel-owned socket) is included as 0."""
    want = ipaddress.ip_address(address) if address else None
    found: Set[int] = set()
    for path in TABLES[protocol]:
        for lines in proc_lines(path):
            for line in lines:
                parts = line.split()
                if len(parts) < 10 or ":" not in parts[1]:
                    continue
                local_hex, _, port_hex = parts[1].partition(":")
                try:
                    if int(port_hex, 16) != port:
                        continue
                    inode = int(parts[9])
                except ValueError:
                    continue  # the header line
                if protocol == "tcp" and parts[3] != _TCP_LISTEN:
                    continue
                if protocol == "udp" and parts[2].strip("0") != ":":
                    continue  # a connected UDP socket is a client, not a listener
                if want is not None:
                    ip, wildcard = decode_address(local_hex)
                    if not wildcard and ipaddress.ip_address(ip) != want:
                        continue
                found.add(inode)
    return found


def owners(inodes: Set[int]) -> Tuple[Dict[int, Set[int]], Set[int]]:
    """({pid: inodes it holds}, inodes no visible process holds) for the given socket inodes."""
    links = {f"socket:[{inode}]": inode for inode in inodes if inode}
    held: Dict[int, Set[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at (then its sockets stay unowned below)
            continue
        for fd in fds:
            try:
                inode = links.get(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
            if inode is not None:
                held.setdefault(int(name), set()).add(inode)
    seen = set().union(*held.values()) if held else set()
    return held, {inode for inode in inodes if inode not in seen}
