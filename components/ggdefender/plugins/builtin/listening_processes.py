"""Built-in `listening_processes` (string_list): names of the processes accepting network traffic.

A security team wants to know when something new starts listening (a backdoor, a debug server left on);
a `not-in-set` behavior on this metric alarms on any process name outside the expected set. TCP sockets
in LISTEN state and UDP sockets bound without a peer count as listening.

The collector normally runs unprivileged and can only see which process owns sockets of its own user;
sockets it cannot attribute are reported once as `unknown` (set `IncludeUnknown: false` to omit them),
so a new listener still changes the set. Run the collector with CAP_SYS_PTRACE or as root for names.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Iterable, Set

from ... import settings
from ...collector.sources.procfs import proc_lines
from ..contract import MAX_LIST_ITEMS, MAX_STRING_LENGTH, Plugin, ValueType
from .declaration import Declaration
from .system import ProcessGone, process_name

UNKNOWN = "unknown"
_DISALLOWED = re.compile(r"[^A-Za-z0-9:_/.-]")


def clean_name(name: str) -> str:
    """A process name in Device Defender's string alphabet (spaces, parentheses etc. become `_`)."""
    cleaned = _DISALLOWED.sub("_", name)[:MAX_STRING_LENGTH]
    return cleaned or UNKNOWN


def listening_inodes(tables: "dict[str, Iterable[str]]", protocols: Iterable[str]) -> "set[int]":
    """Socket inodes of listeners from /proc/net/{tcp,tcp6,udp,udp6} (name -> the table's lines).

    Only the state (TCP) or the peer (UDP) is looked at, so a table with 10,000 established connections
    costs one split per line; psutil.net_connections() decoded every address of every socket and took
    ~0.6 s and ~13 MiB at 10,000 sockets (docs/performance.md).
    """
    inodes = set()
    for name, data in tables.items():
        tcp = name.startswith("tcp")
        if ("tcp" if tcp else "udp") not in protocols:
            continue
        for line in data:
            # sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode ...; the header row
            # matches no state and fails the peer test. Filter on a short split first: most rows go no further.
            f = line.split(None, 4)
            if len(f) < 4:
                continue
            if tcp:
                if f[3] != "0A":  # LISTEN
                    continue
            elif f[2].strip("0") != ":":  # connected UDP socket: has a peer
                continue
            f = line.split(None, 10)
            if len(f) < 10 or not f[9].isdigit():
                continue
            inode = int(f[9])
            if inode:
                inodes.add(inode)
    return inodes


def socket_owners(inodes: "set[int]", proc_root: str = "/proc") -> "tuple[set, bool]":
    """(pids holding any of these socket inodes, whether some inode had no visible owner).

    Reads the fd links of each process we may inspect; a process whose fds we cannot read (another user,
    no CAP_SYS_PTRACE) leaves its sockets unattributed, like psutil.
    """
    pids: Set[int] = set()
    found: Set[int] = set()
    if not inodes:
        return pids, False
    for entry in os.scandir(proc_root):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(os.path.join(entry.path, "fd"))  # an iterator: a process with 10k fds costs no list
        except OSError:  # gone, or not ours to read
            continue
        with fds:
            for fd in fds:
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inode = int(link[8:-1])
                    if inode in inodes:
                        pids.add(int(entry.name))
                        found.add(inode)
    return pids, len(found) < len(inodes)


def _tables(protocols: Iterable[str], proc_root: str = "/proc") -> "dict[str, Iterable[str]]":
    """Lazily read lines of the tables we need, a chunk at a time (flat memory on a busy host)."""
    return {name: itertools.chain.from_iterable(proc_lines(os.path.join(proc_root, "net", name)))
            for proto in sorted(protocols) for name in (proto, proto + "6")}


class ListeningProcesses(Plugin):
    name = "listening_processes"
    value_type = ValueType.STRING_LIST
    unit = "names"
    description = "distinct names of processes listening on TCP or bound to UDP ports"
    options = {"Protocols": ["tcp", "udp"], "IncludeUnknown": True}

    def __init__(self):
        self.protocols = set(self.options["Protocols"])
        self.include_unknown = self.options["IncludeUnknown"]

    def configure(self, options):
        protocols = settings.as_str_list(options["Protocols"], "Protocols", max_items=2)
        for proto in protocols:
            settings.as_choice(proto, "Protocols", ["tcp", "udp"])
        if not protocols:
            raise settings.ConfigError("Protocols: name tcp, udp or both")
        self.protocols = {p.lower() for p in protocols}
        self.include_unknown = settings.as_bool(options["IncludeUnknown"], "IncludeUnknown")

    def sample(self):
        pids, unattributed = socket_owners(listening_inodes(_tables(self.protocols), self.protocols))
        names = set()
        for pid in pids:
            try:
                names.add(clean_name(process_name(pid)))
            except ProcessGone:
                continue  # exited between the socket scan and now
            except PermissionError:
                unattributed = True
        if unattributed and self.include_unknown:
            names.add(UNKNOWN)
        return sorted(names)[:MAX_LIST_ITEMS]


DECLARATION = Declaration(ListeningProcesses, report_order=6, sample_config="""\
Protocols: [tcp, udp]   # which listening sockets count: TCP in LISTEN state, UDP bound without a peer
IncludeUnknown: true    # report sockets whose owner the collector cannot see as `unknown`
""", docs="""\
A new process listening on a port (a backdoor, a forgotten debug server) is a classic sign of compromise
that a `not-in-set` behavior catches on the first report.

Privileges: the collector runs unprivileged, and Linux only tells an unprivileged process which process
owns sockets of its own user. Sockets it cannot attribute are reported once as `unknown` (turn that off with
`IncludeUnknown: false`), so a new listener still changes the set. To see real names for every listener, run
the collector part with `CAP_SYS_PTRACE` or as root (`Supervisor.CollectorUser`).

Process names are reported in Device Defender's string alphabet (`A–Z a–z 0–9 : _ - / .`); other characters
become `_` (for example `(sd-pam)` → `_sd-pam_`).
""")
