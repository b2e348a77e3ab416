"""block-ip/unblock-ip command construction (argv only, our own table/chain) without touching any firewall."""

import ipaddress
import types

import pytest

from ggdefender.remediation import config
from ggdefender.remediation.operations import base, firewall
from ggdefender.remediation.safety import SafetyPolicy


def ctx():
    settings = config.parse({})
    return base.Context(settings=settings, safety=SafetyPolicy(settings), timeout=30)


def test_rejected_clearly_when_no_firewall_tool(monkeypatch):
    monkeypatch.setattr(firewall.shutil, "which", lambda tool, path=None: None)
    with pytest.raises(base.Rejected, match="neither nft"):
        firewall.Firewall(ctx())


def test_iptables_fallback_uses_its_own_chain_and_argv(monkeypatch):
    monkeypatch.setattr(firewall.shutil, "which",
                        lambda tool, path=None: None if tool == "nft" else f"/usr/sbin/{tool}")
    calls = []

    def fake_run(argv, **kw):
        calls.append(list(argv))
        # "-C" checks fail (rule absent) so the rules get added; everything else succeeds
        return types.SimpleNamespace(returncode=1 if "-C" in argv else 0, timed_out=False, stdout="", stderr="")

    monkeypatch.setattr(firewall, "run_argv", fake_run)
    fw = firewall.Firewall(ctx())
    assert fw.tool == "iptables"
    fw.block(ipaddress.ip_network("198.51.100.23"))
    assert ["/usr/sbin/iptables", "-w", "-N", "GGDEFENDER"] in calls
    assert ["/usr/sbin/iptables", "-w", "-I", "INPUT", "1", "-j", "GGDEFENDER"] in calls
    assert ["/usr/sbin/iptables", "-w", "-A", "GGDEFENDER", "-s", "198.51.100.23/32", "-j", "DROP"] in calls
    assert ["/usr/sbin/iptables", "-w", "-A", "GGDEFENDER", "-d", "198.51.100.23/32", "-j", "DROP"] in calls
    assert all(isinstance(a, str) for call in calls for a in call)
    calls.clear()
    fw.block(ipaddress.ip_network("2001:db8::/48"))
    assert calls[0][0] == "/usr/sbin/ip6tables"


@pytest.mark.parametrize("text", ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/16", "127.0.0.1", "::1",
                                  "224.0.0.1", "fe80::1", "0.0.0.0", "1.2.3.4/24", "not-an-ip", "1.2.3.4 5.6.7.8"])
def test_addresses_that_would_break_the_device_or_are_malformed(text):
    with pytest.raises(ValueError):
        firewall.parse_target(text)


def test_acceptable_targets():
    assert str(firewall.parse_target("203.0.113.7")) == "203.0.113.7/32"
    assert str(firewall.parse_target("198.51.100.0/24")) == "198.51.100.0/24"
    assert firewall.parse_target("2001:db8::1").version == 6
