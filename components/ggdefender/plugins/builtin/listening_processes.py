"""Built-in `listening_processes` (string_list): names of the processes accepting network traffic.

A security team wants to know when something new starts listening (a backdoor, a debug server left on);
a `not-in-set` behavior on this metric alarms on any process name outside the expected set. TCP sockets
in LISTEN state and UDP sockets bound without a peer count as listening.

The collector normally runs unprivileged and can only see which process owns sockets of its own user;
sockets it cannot attribute are reported once as `unknown` (set `IncludeUnknown: false` to omit them),
so a new listener still changes the set. Run the collector with CAP_SYS_PTRACE or as root for names.
"""

from __future__ import annotations

import re
import socket

import psutil

from ... import settings
from ..contract import MAX_LIST_ITEMS, MAX_STRING_LENGTH, Plugin, ValueType

UNKNOWN = "unknown"
_DISALLOWED = re.compile(r"[^A-Za-z0-9:_/.-]")


def clean_name(name: str) -> str:
    """A process name in Device Defender's string alphabet (spaces, parentheses etc. become `_`)."""
    cleaned = _DISALLOWED.sub("_", name)[:MAX_STRING_LENGTH]
    return cleaned or UNKNOWN


def listening_pids(connections, protocols) -> "tuple[set, bool]":
    """(pids owning listening sockets, whether any listening socket had no visible owner)."""
    pids, unattributed = set(), False
    for conn in connections:
        if conn.type == socket.SOCK_STREAM:
            if "tcp" not in protocols or conn.status != psutil.CONN_LISTEN:
                continue
        elif conn.type == socket.SOCK_DGRAM:
            if "udp" not in protocols or conn.raddr:
                continue
        else:
            continue
        if conn.pid is None:
            unattributed = True
        else:
            pids.add(conn.pid)
    return pids, unattributed


class ListeningProcesses(Plugin):
    name = "listening_processes"
    value_type = ValueType.STRING_LIST
    unit = "names"
    description = "distinct names of processes listening on TCP or bound to UDP ports"
    options = {"Protocols": ["tcp", "udp"], "IncludeUnknown": True}

    def __init__(self):
        self.protocols = {"tcp", "udp"}
        self.include_unknown = True

    def configure(self, options):
        protocols = settings.as_str_list(options["Protocols"], "Protocols", max_items=2)
        for proto in protocols:
            settings.as_choice(proto, "Protocols", ["tcp", "udp"])
        if not protocols:
            raise settings.ConfigError("Protocols: name tcp, udp or both")
        self.protocols = {p.lower() for p in protocols}
        self.include_unknown = settings.as_bool(options["IncludeUnknown"], "IncludeUnknown")

    def sample(self):
        pids, unattributed = listening_pids(psutil.net_connections(kind="inet"), self.protocols)
        names = set()
        for pid in pids:
            try:
                names.add(clean_name(psutil.Process(pid).name()))
            except psutil.NoSuchProcess:
                continue  # exited between the socket scan and now
            except psutil.AccessDenied:
                unattributed = True
        if unattributed and self.include_unknown:
            names.add(UNKNOWN)
        return sorted(names)[:MAX_LIST_ITEMS]
