"""The /proc parser against recorded fixture trees (tests/data/proc, made by make_fixtures.py)."""

import pytest

from ggdefender.collector.sources.procfs import decode_address, parse_net_dev
from ggdefender.collector.sources.data import Connection, InterfaceMap, Listener


def test_tcp_listeners_ipv4_ipv6_wildcards_and_dedup(source):
    s = source("basic").sample()
    assert sorted(s.tcp_listeners, key=lambda x: (x.port, x.interface)) == [
        Listener(22, "eth0"),     # 0.0.0.0:22 and [::]:22 are one listening port on the default interface
        Listener(53, "lo"),       # 127.0.0.53 is in lo's 127/8
        Listener(631, "lo"),
        Listener(8080, "eth0"),   # bound to eth0's address
        Listener(8080, "lo"),     # [::1]:8080
    ]
    assert all(x.interface not in ("0.0.0.0", "::") for x in s.tcp_listeners)


def test_established_only_with_brackets_and_mapped_ipv4(source):
    s = source("basic").sample()
    assert sorted(s.connections, key=lambda c: c[1]) == [
        Connection("93.184.216.34", 443, 40000, "eth0"),
        Connection("10.0.0.5", 51234, 22, "eth0"),
        Connection("2001:db8::99", 55000, 443, "eth0"),
        Connection("10.0.0.9", 60000, 8080, "eth0"),   # ::ffff:10.0.0.9 shown as IPv4
    ]  # the TIME_WAIT row is not established
    addrs = {Connection(*c).remote_addr for c in s.connections}
    assert "[2001:db8::99]:55000" in addrs and "10.0.0.9:60000" in addrs


def test_udp_listeners_are_unconnected_sockets(source):
    s = source("basic").sample()
    assert sorted(s.udp_listeners, key=lambda x: x.port) == [
        Listener(53, "lo"), Listener(68, "eth0"), Listener(5353, "eth0")]  # the connected :45000 is not


def test_network_counters_filtered(source):
    s = source("basic").sample()
    assert s.counters == {"eth0": (1_000_000, 200_000, 900, 700), "wlan0": (0, 0, 0, 0)}
    s = source("basic", include=("eth*",), exclude=()).sample()
    assert s.counters == {"eth0": (1_000_000, 200_000, 900, 700)}


def test_groups_can_be_left_out(source):
    s = source("basic").sample(["network_stats"])
    assert s.tcp_listeners is None and s.udp_listeners is None and s.connections is None
    assert s.counters is not None


def test_missing_ipv6_files_mean_no_ipv6_sockets(source):
    s = source("wrap-before").sample()
    assert s.tcp_listeners == [] and s.connections == [] and s.udp_listeners == [] and not s.errors


def test_missing_ipv4_file_is_an_error_for_that_group_only(tmp_path, source):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "dev").write_text(open(source("basic").proc_root + "/net/dev").read())
    from ggdefender.collector.sources.procfs import ProcfsSource
    s = ProcfsSource(proc_root=str(tmp_path)).sample()
    assert s.tcp_listeners is None and s.udp_listeners is None
    assert s.counters is not None
    assert any(e.startswith("tcp:") for e in s.errors) and any(e.startswith("udp:") for e in s.errors)


def test_many_connections_all_counted(source):
    s = source("many").sample()
    assert len(s.connections) == 3000
    assert len(s.tcp_listeners) == 40
    assert len({c[0] for c in s.connections}) == 600


@pytest.mark.parametrize("hexaddr,little,expected", [
    ("0100007F", True, ("127.0.0.1", False)),
    ("7F000001", False, ("127.0.0.1", False)),
    ("00000000", True, ("0.0.0.0", True)),
    ("00000000000000000000000001000000", True, ("::1", False)),
    ("00000000000000000000000000000000", True, ("::", True)),
    ("0000000000000000FFFF00000100007F", True, ("127.0.0.1", False)),
    ("0000000000000000FFFF000000000000", True, ("0.0.0.0", True)),
    ("B80D0120000000000000000001000000", True, ("2001:db8::1", False)),
    ("20010DB8000000000000000000000001", False, ("2001:db8::1", False)),
])
def test_decode_address(hexaddr, little, expected):
    assert decode_address(hexaddr, little) == expected


def test_decode_address_rejects_odd_lengths():
    with pytest.raises(ValueError):
        decode_address("0100007F01", True)


def test_parse_net_dev_rejects_short_lines():
    with pytest.raises(ValueError, match="short line"):
        parse_net_dev("h1\nh2\n  eth0: 1 2 3\n")


def test_default_interface_rule():
    m = InterfaceMap(order=("lo", "wlan0", "eth0", "eth1"), up=frozenset({"lo", "eth0", "eth1"}),
                     loopback=frozenset({"lo"}))
    assert m.default_interface() == "eth0"   # first up, non-loopback, in kernel order
    only_lo = InterfaceMap(order=("lo", "wlan0"), up=frozenset({"lo"}), loopback=frozenset({"lo"}))
    assert only_lo.default_interface() == "lo"
    assert InterfaceMap().default_interface() is None


def test_unknown_local_address_leaves_interface_out():
    m = InterfaceMap(order=("lo", "eth0"), up=frozenset({"lo", "eth0"}), loopback=frozenset({"lo"}),
                     by_address={"192.168.1.10": "eth0"})
    assert m.for_address("172.16.0.1") is None
    assert m.for_address("127.9.9.9") == "lo"


def test_families_without_sockets_are_not_read(source, tmp_path):
    import shutil
    from ggdefender.collector.sources.procfs import ProcfsSource

    tree = tmp_path / "proc"
    shutil.copytree(source("basic").proc_root, tree)
    (tree / "net" / "sockstat").write_text("sockets: used 9\nTCP: inuse 4 orphan 0 tw 1 alloc 5 mem 1\n"
                                           "UDP: inuse 3 mem 0\n")
    (tree / "net" / "sockstat6").write_text("TCP6: inuse 0\nUDP6: inuse 0\n")
    s = ProcfsSource(proc_root=str(tree), interfaces=source("basic")._interfaces).sample()
    # the tcp6/udp6 tables still hold rows, but sockstat6 says the family is unused: they are not read
    assert all(":" not in c[0] for c in s.connections) and len(s.connections) == 2
    assert sorted(x.port for x in s.udp_listeners) == [53, 68]


def test_read_proc_file_reads_files_larger_than_one_read(tmp_path):
    import os
    from ggdefender.collector.sources.procfs import _READ_SIZE, read_proc_file

    data = b"x" * (_READ_SIZE * 2 + 17)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert read_proc_file(fd) == data
    finally:
        os.close(fd)
