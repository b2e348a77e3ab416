"""Linux fast path: read /proc/net/{tcp,tcp6,udp,udp6,dev} once per sample and parse them directly.

Speed matters (10,000 sockets must cost about what `ss -tan` costs), so the parser splits lines with
`str.split`, decodes hex with `int(x, 16)` and caches the textual form of each hex address it has seen
(bounded); it never maps sockets to processes (no walk of /proc/*/fd, unlike psutil).

Rules (docs/metrics.md):
- listening TCP = state 0A; established = state 01; UDP listener = a socket with no remote address.
- IPv6 addresses are shown bare here and bracketed in `remote_addr`; IPv4-mapped IPv6 (::ffff:a.b.c.d) is
  shown as IPv4.
- a listener bound to a wildcard address (0.0.0.0 / ::) reports the first interface that is up and not
  loopback (kernel order), never the address itself.
- listeners are de-duplicated on (port, interface): a dual-stack daemon on 0.0.0.0:22 and [::]:22 is one
  listening port.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from ggdefender.collector.sources.data import (
    GROUPS, Connection, Counters, InterfaceFilter, InterfaceMap, Listener, Sample, host_interfaces,
)
from ggdefender.collector.sources.declaration import Declaration

_LISTEN = "0A"
_ESTABLISHED = "01"
_CACHE_LIMIT = 65536  # distinct hex addresses remembered between samples
_MISS = object()
_READ_SIZE = 1 << 18
_SHORT_CHUNK = 4096 - 512  # below a page minus more than one record (tcp6 rows are ~180 bytes)


def _available() -> bool:
    return sys.platform.startswith("linux") and os.path.exists("/proc/net/tcp")


class ProcfsSource:
    """Samples from a proc tree (`proc_root`, default /proc; tests point it at fixture trees)."""

    name = "procfs"

    def __init__(
        self,
        proc_root: str = "/proc",
        interfaces: Union[InterfaceMap, Callable[[], InterfaceMap], None] = None,
        interface_filter: Optional[InterfaceFilter] = None,
        byteorder: str = sys.byteorder,
    ):
        self.proc_root = proc_root
        if interfaces is None:
            interfaces = host_interfaces if proc_root == "/proc" else InterfaceMap()
        self._interfaces = interfaces
        self.interface_filter = interface_filter or InterfaceFilter()
        # /proc prints each 32-bit word of an address in host byte order; fixtures carry their own
        self._little = byteorder == "little"
        self._addr_cache: Dict[str, Tuple[str, bool]] = {}

    # -- public ----------------------------------------------------------------------------------
    def sample(self, groups: Iterable[str] = GROUPS) -> Sample:
        groups = set(groups)
        out = Sample()
        ifmap = InterfaceMap()
        inuse: Dict[str, int] = {}
        if groups & {"listening_tcp_ports", "listening_udp_ports", "tcp_connections"}:
            ifmap = self._interfaces() if callable(self._interfaces) else self._interfaces
            inuse = self._sockets_in_use()  # not needed when only network_stats are collected
        if len(self._addr_cache) > _CACHE_LIMIT:
            self._addr_cache.clear()
        want_listen = "listening_tcp_ports" in groups
        want_conn = "tcp_connections" in groups
        if want_listen or want_conn:
            try:
                listeners: Dict[Tuple[int, Optional[str]], None] = {}
                conns: List[Connection] = []
                for name in ("tcp", "tcp6"):
                    if inuse.get(name.upper()) == 0:
                        continue  # no socket of this family: skip the kernel's walk of the whole hash
                    self._parse_tcp(proc_lines(os.path.join(self.proc_root, "net", name)), ifmap,
                                    listeners if want_listen else None, conns if want_conn else None)
                if want_listen:
                    out.tcp_listeners = [Listener(p, i) for p, i in listeners]
                if want_conn:
                    out.connections = conns
            except OSError as exc:
                out.errors.append(f"tcp: {exc}")
        if "listening_udp_ports" in groups:
            try:
                listeners = {}
                for name in ("udp", "udp6"):
                    if inuse.get(name.upper()) == 0:
                        continue
                    self._parse_udp(self._read(name), ifmap, listeners)
                out.udp_listeners = [Listener(p, i) for p, i in listeners]
            except OSError as exc:
                out.errors.append(f"udp: {exc}")
        if "network_stats" in groups:
            try:
                out.counters = parse_net_dev(self._read("dev"), self.interface_filter)
            except (OSError, ValueError) as exc:
                out.errors.append(f"network_stats: {exc}")
        return out

    # -- parsing ---------------------------------------------------------------------------------
    def _sockets_in_use(self) -> Dict[str, int]:
        """{"TCP": n, "TCP6": n, "UDP": n, "UDP6": n} from /proc/net/sockstat{,6} (cheap counters, no walk).

        A family with 0 sockets in use has no listener and no connection, so its table need not be read;
        a missing or odd sockstat file just means every table is read.
        """
        out: Dict[str, int] = {}
        for name in ("sockstat", "sockstat6"):
            try:
                with open(os.path.join(self.proc_root, "net", name), "r", encoding="ascii") as f:
                    for line in f:
                        key, _, rest = line.partition(":")
                        if key in ("TCP", "TCP6", "UDP", "UDP6"):
                            fields = rest.split()
                            if len(fields) >= 2 and fields[0] == "inuse":
                                out[key] = int(fields[1])
            except (OSError, ValueError):
                continue
        return out

    def _read(self, name: str) -> str:
        path = os.path.join(self.proc_root, "net", name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if name.endswith("6"):
                return ""  # IPv6 disabled on this host: no sockets, not an error
            raise
        try:
            return read_proc_file(fd).decode("ascii", "replace")
        finally:
            os.close(fd)

    def _parse_tcp(self, chunks: Iterable[List[str]], ifmap: InterfaceMap, listeners: Optional[dict],
                   conns: Optional[List[Connection]]) -> None:
        # the hot loop of a busy host: locals only, one split per line, caches for repeated addresses
        cache = self._addr_cache
        cache_get = cache.get
        decode = self._decode
        default_if = ifmap.default_interface()
        local_if: Dict[str, Optional[str]] = {}  # local hex address -> interface, this sample
        local_if_get = local_if.get
        append = conns.append if conns is not None else None
        miss = _MISS
        for line in itertools.chain.from_iterable(chunks):  # the header's "st" column matches no state
            parts = line.split(None, 4)
            if len(parts) < 4:
                continue
            st = parts[3]
            if st == _ESTABLISHED:
                if append is None:
                    continue
                lhex, lport = parts[1].split(":")
                rhex, rport = parts[2].split(":")
                li = local_if_get(lhex, miss)
                if li is miss:
                    li = local_if[lhex] = ifmap.for_address(decode(lhex)[0])
                remote = cache_get(rhex)
                if remote is None:
                    remote = decode(rhex)
                # a plain tuple in Connection's field order: a NamedTuple per row costs more than the parse
                append((remote[0], int(rport, 16), int(lport, 16), li))  # type: ignore[arg-type]  # see above
            elif st == _LISTEN:
                if listeners is None:
                    continue
                lhex, lport = parts[1].split(":")
                ip, wildcard = decode(lhex)
                iface = default_if if wildcard else ifmap.for_address(ip)
                listeners[(int(lport, 16), iface)] = None

    def _parse_udp(self, text: str, ifmap: InterfaceMap, listeners: dict) -> None:
        decode = self._decode
        default_if = ifmap.default_interface()
        for line in text.split("\n")[1:]:
            parts = line.split(None, 4)
            if len(parts) < 4:
                continue
            # unconnected = remote address all zeros and port 0 ("00000000:0000" strips to ":")
            if parts[2].strip("0") != ":":
                continue
            lhex, _, lport = parts[1].partition(":")
            port = int(lport, 16)
            if port == 0:
                continue
            ip, wildcard = decode(lhex)
            iface = default_if if wildcard else ifmap.for_address(ip)
            listeners[(port, iface)] = None

    def _decode(self, hexaddr: str) -> Tuple[str, bool]:
        """Hex address from /proc -> (display IP, is-wildcard), cached."""
        hit = self._addr_cache.get(hexaddr)
        if hit is None:
            hit = self._addr_cache[hexaddr] = decode_address(hexaddr, self._little)
        return hit


def read_proc_file(fd: int) -> bytes:
    """Read a /proc seq_file to its end with as few read() calls as possible.

    Every read() of /proc/net/tcp* walks the kernel's whole established hash (262,144 buckets on a
    24 GiB host: ~2 ms), including the final read that only confirms EOF. A seq_file read stops early
    only when its page-sized buffer is full (so within one record of a page) or at EOF, so a chunk
    much shorter than a page is the end: no extra walk to learn it.
    """
    chunks = []
    while True:
        chunk = os.read(fd, _READ_SIZE)
        if chunk:
            chunks.append(chunk)
        if len(chunk) < _SHORT_CHUNK:
            return b"".join(chunks)


def iter_proc_lines(fd: int) -> Iterator[List[str]]:
    """read_proc_file's reads handed out as lists of text lines, one chunk at a time, so a 10,000-socket
    table (1.5 MB) is never held whole: the running component's peak RSS stays flat (docs/performance.md)."""
    tail = ""
    while True:
        chunk = os.read(fd, _READ_SIZE)
        lines = (tail + chunk.decode("ascii", "replace")).split("\n")
        tail = lines.pop()  # a line cut by the chunk boundary waits for the rest
        if lines:
            yield lines
        if len(chunk) < _SHORT_CHUNK:
            if tail:
                yield [tail]
            return


def proc_lines(path: str) -> Iterator[List[str]]:
    """iter_proc_lines of a /proc/net table by path; a missing IPv6 table (IPv6 disabled) has no lines."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if path.endswith("6"):
            return
        raise
    try:
        yield from iter_proc_lines(fd)
    finally:
        os.close(fd)


def decode_address(hexaddr: str, little_endian: bool = sys.byteorder == "little") -> Tuple[str, bool]:
    """Decode one /proc/net address; returns (text, wildcard). IPv4-mapped IPv6 comes back as IPv4."""
    raw = bytes.fromhex(hexaddr)
    if little_endian:
        # each 32-bit word is printed in host order
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw), raw == b"\0\0\0\0"
    if len(raw) != 16:
        raise ValueError(f"bad address {hexaddr!r}")
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:]), raw[12:] == b"\0\0\0\0"
    return socket.inet_ntop(socket.AF_INET6, raw), raw == b"\0" * 16


def parse_net_dev(text: str, keep: Callable[[str], bool] = lambda name: True) -> Dict[str, Counters]:
    """/proc/net/dev -> {interface: (bytes_in, bytes_out, packets_in, packets_out)} for kept interfaces."""
    out: Dict[str, Counters] = {}
    for line in text.split("\n")[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if not keep(name):
            continue
        f = rest.split()
        if len(f) < 10:
            raise ValueError(f"/proc/net/dev: short line for {name!r}")
        out[name] = (int(f[0]), int(f[8]), int(f[1]), int(f[9]))
    return out


DECLARATION = Declaration("procfs", ProcfsSource, _available, summary="Linux: parses `/proc/net` directly",
                          preference=1)
