"""The psutil fallback follows the procfs source's rules (compared on this host's real sockets)."""

import socket

from ggdefender.collector import sources
from ggdefender.collector.sources.psutil_source import PsutilSource, _display
from ggdefender.collector.sources.data import InterfaceFilter, Listener


def test_display_rules():
    assert _display("::ffff:10.0.0.9") == ("10.0.0.9", False)
    assert _display("0.0.0.0") == ("0.0.0.0", True)
    assert _display("::") == ("::", True)
    assert _display("fe80::1%eth0") == ("fe80::1", False)


def test_same_view_as_procfs_for_loopback_sockets():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    cport = cli.getsockname()[1]
    srv, _ = lst.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    uport = udp.getsockname()[1]
    try:
        ps = PsutilSource(interface_filter=InterfaceFilter(exclude=["lo"])).sample()
        pf = sources.create("procfs", interface_filter=InterfaceFilter(exclude=["lo"])).sample()
    finally:
        for s in (cli, srv, lst, udp):
            s.close()
    for s in (ps, pf):
        assert Listener(port, "lo") in s.tcp_listeners
        assert Listener(uport, "lo") in s.udp_listeners
        conns = {tuple(c) for c in s.connections}
        assert ("127.0.0.1", port, cport, "lo") in conns       # client side
        assert ("127.0.0.1", cport, port, "lo") in conns       # server side
        assert "lo" not in s.counters
    assert set(ps.counters) == set(pf.counters)
