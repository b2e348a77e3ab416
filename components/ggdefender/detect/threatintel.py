"""IP/CIDR sets: fast membership for cidr-set operators, and threat lists checked as a behavior.

A threat list is inline (`Cidrs`) or a plain file: one IP or CIDR per line, `#` starts a comment, blank
lines ignored (the format of most public block lists). Each list becomes a synthetic behavior on
`aws:destination-ip-addresses` with `not-in-cidr-set`, so a device talking to a listed address raises an
ordinary violation, finding and (if configured) mitigation.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Tuple

from ggdefender.settings import ConfigError, as_int, as_section, as_str, get

MAX_ENTRIES_DEFAULT = 100_000
MAX_FILE_BYTES = 16 * 1024 * 1024
THREAT_PROFILE = "ggdefender-threat-intel"


class CidrSet:
    """A set of IPv4/IPv6 networks; membership costs one set lookup per distinct prefix length.

    An address matches only networks of its own family.
    """

    __slots__ = ("_by_prefix", "networks")

    def __init__(self, networks: Iterable):
        self.networks = tuple(networks)
        by_prefix: dict = {}
        for net in self.networks:
            key = (net.version, net.prefixlen)
            by_prefix.setdefault(key, set()).add(int(net.network_address))
        # longest prefixes first: exact host entries (the common case in threat feeds) are tried first
        self._by_prefix = tuple(
            (version, (1 << (32 if version == 4 else 128)) - (1 << ((32 if version == 4 else 128) - plen)), nets)
            for (version, plen), nets in sorted(by_prefix.items(), key=lambda kv: -kv[0][1]))

    def __len__(self) -> int:
        return len(self.networks)

    def contains(self, ip: str) -> bool:
        parsed = _ip_int(ip)
        if parsed is None:
            return False
        version, value = parsed
        for v, mask, nets in self._by_prefix:
            if v == version and (value & mask) in nets:
                return True
        return False

    __contains__ = contains


@functools.lru_cache(maxsize=65536)
def _ip_int(ip: str) -> Optional[Tuple[int, int]]:
    """(version, integer) of an address; cached because the same peers show up report after report."""
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return version, int.from_bytes(socket.inet_pton(family, ip), "big")
        except (OSError, TypeError, ValueError):
            continue
    return None


def parse_cidr(text: str) -> ipaddress._BaseNetwork:
    """An IP or CIDR string as a network (host bits are tolerated, as AWS does for `cidrs`)."""
    return ipaddress.ip_network(text.strip(), strict=False)


def parse_list_text(text: str, source: str, max_entries: int = MAX_ENTRIES_DEFAULT) -> list:
    """Networks from a plain list; errors name the source and line."""
    nets = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        token = line.split()[0]  # some feeds append fields after the address
        try:
            nets.append(parse_cidr(token))
        except ValueError:
            raise ConfigError(f"{source}:{lineno}: not an IP address or CIDR: {token!r}") from None
        if len(nets) > max_entries:
            raise ConfigError(f"{source}: more than {max_entries} entries")
    return nets


def read_list_file(path: str, max_entries: int = MAX_ENTRIES_DEFAULT) -> list:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: file larger than {MAX_FILE_BYTES} bytes")
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read threat list: {exc.strerror or exc}") from None
    return parse_list_text(text, path, max_entries)


@dataclass
class ThreatList:
    name: str
    source: str              # "inline" or the file path
    cidrs: CidrSet
    mtime: Optional[float] = None  # file lists are re-read when the file changes
    max_entries: int = MAX_ENTRIES_DEFAULT  # the list's own bound, applied again on every re-read

    def behavior_json(self) -> dict:
        """The synthetic behavior, in CreateSecurityProfile shape (value kept short: lists can be large)."""
        return {
            "name": f"threat-list-{self.name}",
            "metric": "aws:destination-ip-addresses",
            "criteria": {"comparisonOperator": "not-in-cidr-set", "value": {"cidrs": []}},
        }


_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-")


def parse_threat_lists(value: Any, max_entries: int = MAX_ENTRIES_DEFAULT) -> list:
    """`ThreatLists` config: [{"Name": ..., "Cidrs": [...]} | {"Name": ..., "File": path}]."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError("ThreatLists: expected a list of {Name, Cidrs | File}")
    lists, names = [], set()
    for i, item in enumerate(value):
        key = f"ThreatLists[{i}]"
        item = as_section(item, key)
        name = as_str(get(item, "Name"), f"{key}.Name", max_length=100)
        if not set(name) <= _NAME_OK:
            raise ConfigError(f"{key}.Name: only letters, digits, ':', '_' and '-' are allowed, got {name!r}")
        if name in names:
            raise ConfigError(f"{key}.Name: duplicate list name {name!r}")
        names.add(name)
        limit = as_int(item.get("MaxEntries", max_entries), f"{key}.MaxEntries", 1, 10_000_000)
        has_cidrs, has_file = item.get("Cidrs") is not None, item.get("File") is not None
        if has_cidrs == has_file:
            raise ConfigError(f"{key}: give exactly one of Cidrs or File")
        if has_cidrs:
            cidrs = item["Cidrs"]
            if isinstance(cidrs, str):
                cidrs = cidrs.replace(",", "\n")
                nets = parse_list_text(cidrs, f"{key}.Cidrs", limit)
            elif isinstance(cidrs, list):
                if len(cidrs) > limit:
                    raise ConfigError(f"{key}.Cidrs: more than {limit} entries")
                nets = []
                for j, c in enumerate(cidrs):
                    try:
                        nets.append(parse_cidr(str(c)))
                    except ValueError:
                        raise ConfigError(f"{key}.Cidrs[{j}]: not an IP address or CIDR: {c!r}") from None
            else:
                raise ConfigError(f"{key}.Cidrs: expected a list of IP/CIDR strings")
            lists.append(ThreatList(name, "inline", CidrSet(nets), max_entries=limit))
        else:
            path = as_str(item["File"], f"{key}.File", max_length=4096)
            nets = read_list_file(path, limit)
            lists.append(ThreatList(name, path, CidrSet(nets), _mtime(path), limit))
    return lists


def _mtime(path: str) -> Optional[float]:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def refresh(lists: Iterable[Any]) -> bool:
    """Re-read file lists whose file changed; a list that fails to parse keeps its last good content."""
    changed = False
    for tl in lists:
        if tl.source == "inline":
            continue
        mtime = _mtime(tl.source)
        if mtime is None or mtime == tl.mtime:
            continue
        try:
            tl.cidrs = CidrSet(read_list_file(tl.source, tl.max_entries))
            changed = True
        except ConfigError:
            pass  # keep the last good list; the next change is tried again
        tl.mtime = mtime
    return changed
