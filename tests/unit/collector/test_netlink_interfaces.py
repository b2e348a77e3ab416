"""The collector's interface map on Linux comes from netlink (collector/sources/netlink.py), not psutil: it
must equal the map built from psutil's view, on this machine and in a network namespace holding the awkward
cases (IPv4 labels, a point-to-point link, IPv6 link-local, an interface that is down, one with no address)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import real_counterparts

from ggdefender.collector.sources import data, netlink

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink is Linux's")


def test_netlink_map_equals_psutil_map_on_this_machine():
    ours = data.host_interfaces()
    assert ours == data.interface_map(*data.psutil_interfaces())
    assert "lo" in ours.loopback and ours.for_address("127.0.0.1") == "lo"


def test_netlink_addresses_equal_psutils():
    names, theirs, up = data.psutil_interfaces()
    assert sorted(netlink.addresses()) == sorted(theirs)
    assert netlink.running(names) == up
    assert netlink.running(["no-such-if0"]) == set()


COMPARE = """
import json
from ggdefender.collector.sources import data, netlink
ours, theirs = data.host_interfaces(), data.interface_map(*data.psutil_interfaces())
print(json.dumps({"equal": ours == theirs, "ours": repr(ours), "theirs": repr(theirs),
                  "addresses": sorted(netlink.addresses())}))
"""
SETUP = """
set -e
ip link set lo up
ip addr add 10.9.9.9/32 dev lo label lo:7
ip link add v0 type veth peer name v1
ip addr add 192.0.2.5/24 dev v0
ip addr add 192.0.2.6/24 dev v0 label v0:web
ip -6 addr add 2001:db8::5/64 dev v0 nodad
ip link set v0 up
ip link set v1 up
ip link add br9 type bridge
ip tuntap add t0 mode tun
ip addr add 10.1.1.1 peer 10.1.1.2 dev t0
ip link set t0 up
ip addr add 192.0.2.5/32 dev v1
i=0; while [ $i -lt 1500 ]; do echo "addr add 10.77.$((i / 250)).$((i % 250 + 1))/32 dev v1"; i=$((i + 1)); done > batch
ip -batch batch
"""


def test_netlink_map_equals_psutil_map_in_a_namespace_with_awkward_interfaces(tmp_path):
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        real_counterparts.unavailable(
            "a network namespace (root, unshare, ip)", "run the tests as root with util-linux and iproute2 installed")
    proc = subprocess.run(["unshare", "-n", "sh", "-c", SETUP + f'exec "{sys.executable}" -c "$0"', COMPARE],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["equal"], result
    addresses = {tuple(a) for a in result["addresses"]}
    assert ("lo:7", socket.AF_INET, "10.9.9.9") in addresses  # a label is a name of its own
    assert ("v0:web", socket.AF_INET, "192.0.2.6") in addresses
    assert ("t0", socket.AF_INET, "10.1.1.1") in addresses  # the local end, not the peer 10.1.1.2
    assert ("v0", socket.AF_INET6, "2001:db8::5") in addresses
    assert "'br9'" in result["ours"]  # down and without an address, still an interface
    assert sum(1 for name, family, _ in addresses if name == "v1" and family == socket.AF_INET) == 1501  # many reads
