"""Our own firewall table for block-ip / unblock-ip: nftables preferred, iptables as the fallback.

Everything lives in a table (nft `inet <FirewallTable>`) or chain (iptables `<FIREWALLTABLE>`) that this
component owns, so unblocking or removing the component never disturbs the host's own rules. Commands are
argv lists; the only variable part is an address already parsed by `ipaddress`.
"""

from __future__ import annotations

import ipaddress
import shutil

from typing import List, Optional, Union

from ..bounded_process import SAFE_PATH, ProcessResult, run_argv
from .base import Context, Failed, Rejected

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

MIN_PREFIX = {4: 8, 6: 32}  # anything broader would cut the device off; refuse it

# the arguments of block-ip and unblock-ip (their JSON Schema; parse_target checks the meaning)
IP_TARGET = {
    "type": "object", "additionalProperties": False, "required": ["address"],
    "properties": {"address": {"type": "string", "maxLength": 64, "pattern": "^[0-9A-Fa-f:./]+$"}},
}


def parse_target(text: str) -> Network:
    """An IPv4/IPv6 address or network that may be blocked; ValueError names the problem."""
    if not isinstance(text, str) or not text or len(text) > 64:
        raise ValueError("address must be an IPv4/IPv6 address or CIDR of at most 64 characters")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"address {text!r} is not a valid IP address or network: {exc}") from None
    if net.prefixlen < MIN_PREFIX[net.version]:
        raise ValueError(f"address {text!r} is too broad (prefix shorter than /{MIN_PREFIX[net.version]})")
    for bad, label in ((net.is_loopback, "loopback"), (net.is_unspecified, "unspecified"),
                       (net.is_multicast, "multicast"), (net.is_link_local and net.version == 6, "link-local")):
        if bad:
            raise ValueError(f"address {text!r} is {label}; blocking it would break the device itself")
    return net


def backend() -> str:
    for tool in ("nft", "iptables"):
        if shutil.which(tool, path=SAFE_PATH):
            return tool
    raise Rejected("neither nft (nftables) nor iptables is installed; block-ip/unblock-ip cannot work here")


class Firewall:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.table = ctx.settings.firewall_table
        self.tool = backend()

    # -- helpers ---------------------------------------------------------------------------------
    def _run(self, argv: List[str], stdin: Optional[bytes] = None, check: bool = True) -> ProcessResult:
        exe = shutil.which(argv[0], path=SAFE_PATH)
        if exe is None:  # removed since backend() found it
            raise Failed(f"{argv[0]} is not installed (searched {SAFE_PATH})")
        res = run_argv([exe] + list(argv[1:]), timeout=max(1.0, min(10.0, self.ctx.remaining())),
                       max_bytes=1024, stdin_data=stdin)
        if res.timed_out:
            raise Failed(f"{argv[0]} timed out")
        if check and res.returncode != 0:
            msg = (res.stderr or res.stdout).strip()[-300:]
            if "Operation not permitted" in msg or "Permission denied" in msg:
                raise Rejected(f"{argv[0]} needs root (CAP_NET_ADMIN): {msg}")
            raise Failed(f"{' '.join(argv[:4])} failed: {msg}")
        return res

    def _set(self, net: Network) -> str:
        return "blocked4" if net.version == 4 else "blocked6"

    @staticmethod
    def _element(net: Network) -> str:
        # nft stores a host as a plain address; `get element` does not find "a.b.c.d/32"
        return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)

    # -- nftables --------------------------------------------------------------------------------
    def _nft_ensure(self) -> None:
        if self._run(["nft", "list", "table", "inet", self.table], check=False).returncode == 0:
            return
        t = self.table
        script = (
            f"table inet {t} {{\n"
            "  set blocked4 { type ipv4_addr; flags interval; }\n"
            "  set blocked6 { type ipv6_addr; flags interval; }\n"
            "  chain input { type filter hook input priority -10; policy accept;\n"
            "    ip saddr @blocked4 drop\n    ip6 saddr @blocked6 drop\n  }\n"
            "  chain output { type filter hook output priority -10; policy accept;\n"
            "    ip daddr @blocked4 drop\n    ip6 daddr @blocked6 drop\n  }\n"
            "}\n")
        self._run(["nft", "-f", "-"], stdin=script.encode())

    def _nft_present(self, net: Network) -> bool:
        res = self._run(["nft", "get", "element", "inet", self.table, self._set(net), "{", self._element(net), "}"],
                        check=False)
        return res.returncode == 0

    # -- iptables --------------------------------------------------------------------------------
    def _ipt(self, net: Network) -> str:
        return "iptables" if net.version == 4 else "ip6tables"

    @property
    def chain(self) -> str:
        return self.table.upper()[:28]

    def _ipt_ensure(self, net: Network) -> None:
        tool = self._ipt(net)
        if not shutil.which(tool, path=SAFE_PATH):
            raise Rejected(f"{tool} is not installed; cannot block IPv{net.version} addresses")
        self._run([tool, "-w", "-N", self.chain], check=False)  # exists already: fine
        for hook in ("INPUT", "OUTPUT"):
            if self._run([tool, "-w", "-C", hook, "-j", self.chain], check=False).returncode != 0:
                self._run([tool, "-w", "-I", hook, "1", "-j", self.chain])

    def _ipt_rules(self, net: Network) -> list:
        return [["-s", str(net), "-j", "DROP"], ["-d", str(net), "-j", "DROP"]]

    # -- public ------------------------------------------------------------------------------------
    def is_blocked(self, net: Network) -> bool:
        if self.tool == "nft":
            return self._nft_present(net)
        tool = self._ipt(net)
        return all(self._run([tool, "-w", "-C", self.chain] + r, check=False).returncode == 0
                   for r in self._ipt_rules(net))

    def block(self, net: Network) -> None:
        if self.tool == "nft":
            self._nft_ensure()
            self._run(["nft", "add", "element", "inet", self.table, self._set(net), "{", self._element(net), "}"])
            return
        self._ipt_ensure(net)
        tool = self._ipt(net)
        for rule in self._ipt_rules(net):
            if self._run([tool, "-w", "-C", self.chain] + rule, check=False).returncode != 0:
                self._run([tool, "-w", "-A", self.chain] + rule)

    def unblock(self, net: Network) -> None:
        if self.tool == "nft":
            if self._run(["nft", "list", "table", "inet", self.table], check=False).returncode != 0:
                return  # our table does not exist: nothing is blocked
            if self._nft_present(net):
                self._run(["nft", "delete", "element", "inet", self.table, self._set(net), "{", self._element(net), "}"])
            return
        tool = self._ipt(net)
        for rule in self._ipt_rules(net):
            for _ in range(16):  # bounded: duplicates are never added by us, but be tolerant
                if self._run([tool, "-w", "-C", self.chain] + rule, check=False).returncode != 0:
                    break
                self._run([tool, "-w", "-D", self.chain] + rule)
