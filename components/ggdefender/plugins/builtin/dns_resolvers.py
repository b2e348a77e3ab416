"""Built-in `dns_resolvers` (ip_list): the DNS servers the device actually queries.

A changed resolver is a classic sign of DNS hijacking, and an `ip_list` metric lets a security profile
alarm on any resolver outside an allowed CIDR set. When /etc/resolv.conf names only systemd-resolved's
local stub (127.0.0.53 / 127.0.0.54), the upstream servers in resolved's own resolv.conf are reported
instead, because the stub address says nothing about where queries go.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from ... import settings
from ..contract import MAX_LIST_ITEMS, Plugin, ValueType
from .declaration import Declaration

log = logging.getLogger("ggdefender.plugins")

RESOLVED_STUBS = {"127.0.0.53", "127.0.0.54"}
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"
MAX_FILE_BYTES = 64 * 1024


def parse_nameservers(text: str) -> list:
    """Nameserver addresses in a resolv.conf text, in order, without duplicates or IPv6 zones."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        address = fields[1].split("%", 1)[0]  # fe80::1%eth0: the zone is not part of the address
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            log.warning("plugin 'dns_resolvers': ignoring invalid nameserver %r", fields[1][:64])
            continue
        if address not in found:
            found.append(address)
    return found[:MAX_LIST_ITEMS]


def _absolute(value: Any, key: str) -> str:
    path = settings.as_str(value, key)
    if not os.path.isabs(path):
        raise settings.ConfigError(f"{key}: {path!r} is not an absolute path")
    return path


def _read(path: str) -> str:
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        return handle.read(MAX_FILE_BYTES)


class DnsResolvers(Plugin):
    name = "dns_resolvers"
    value_type = ValueType.IP_LIST
    unit = "addresses"
    description = "DNS servers in use, from `/etc/resolv.conf`, or the upstream ones behind systemd-resolved's stub"
    default_interval = 0.0
    options = {"ResolvConf": "/etc/resolv.conf", "ResolvedResolvConf": RESOLVED_UPSTREAM}

    def __init__(self):
        self.resolv_conf = self.options["ResolvConf"]
        self.resolved_conf = self.options["ResolvedResolvConf"]

    def configure(self, options):
        self.resolv_conf = _absolute(options["ResolvConf"], "ResolvConf")
        self.resolved_conf = _absolute(options["ResolvedResolvConf"], "ResolvedResolvConf")

    def sample(self):
        servers = parse_nameservers(_read(self.resolv_conf))
        if servers and set(servers) <= RESOLVED_STUBS:
            try:
                upstream = parse_nameservers(_read(self.resolved_conf))
            except OSError:
                upstream = []  # resolved not running its upstream file: the stub is all we know
            if upstream:
                return upstream
        return servers


DECLARATION = Declaration(DnsResolvers, report_order=7, sample_config="""\
ResolvConf: /etc/resolv.conf                          # resolver configuration to read
ResolvedResolvConf: /run/systemd/resolve/resolv.conf  # read instead when ResolvConf names only the stub
""", docs="""\
A changed resolver is a classic sign of DNS hijacking, which a `not-in-cidr-set` behavior catches on the
first report. When `/etc/resolv.conf` names only systemd-resolved's local stub (127.0.0.53 / 127.0.0.54), the
upstream servers from `ResolvedResolvConf` are reported instead: the stub says nothing about where queries go.
""")
