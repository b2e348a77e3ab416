"""`ggdefender collect --once` against real sockets on loopback (a real process reading the real /proc)."""

import json
import socket
import subprocess
import sys

import cbor2
import pytest

from ggdefender.collector.schema import validate_report

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net"),
]


def collect(*args):
    out = subprocess.run([sys.executable, "-m", "ggdefender", "collect", "--once", "--no-custom-metrics", *args],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    return out


@pytest.fixture
def sockets():
    """A TCP listener with one established connection and an unconnected UDP socket, all on 127.0.0.1."""
    opened = []
    try:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        opened.append(lst)
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        cli = socket.create_connection(lst.getsockname())
        opened.append(cli)
        srv, _ = lst.accept()
        opened.append(srv)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        opened.append(udp)
        udp.bind(("127.0.0.1", 0))
        yield {"tcp": lst.getsockname()[1], "client": cli.getsockname()[1], "udp": udp.getsockname()[1]}
    finally:
        for s in opened:
            s.close()


def test_listener_and_connection_show_up(sockets):
    report = json.loads(collect().stdout)
    assert validate_report(report) == []
    m = report["metrics"]
    assert {"port": sockets["tcp"], "interface": "lo"} in m["listening_tcp_ports"]["ports"]
    assert {"port": sockets["udp"], "interface": "lo"} in m["listening_udp_ports"]["ports"]
    established = m["tcp_connections"]["established_connections"]
    conns = established["connections"]
    assert established["total"] >= 2
    if len(conns) < established["total"]:
        # another process on this host holds so many connections that the size cap cut the list
        pytest.skip(f"list capped at {len(conns)} of {established['total']} connections: ours may be cut")
    # both ends are local: the client's view (remote = the listener) and the server's (remote = client)
    assert {"remote_addr": f"127.0.0.1:{sockets['tcp']}", "local_port": sockets["client"],
            "local_interface": "lo"} in conns
    assert {"remote_addr": f"127.0.0.1:{sockets['client']}", "local_port": sockets["tcp"],
            "local_interface": "lo"} in conns
    assert "network_stats" not in m  # first report of a run


def test_ipv6_listener_in_brackets():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    try:
        lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        lst.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    port = lst.getsockname()[1]
    try:
        lst.listen(1)
        cli = socket.create_connection(("::1", port))
        srv, _ = lst.accept()
        try:
            report = json.loads(collect().stdout)
        finally:
            cli.close()
            srv.close()
    finally:
        lst.close()
    conns = report["metrics"]["tcp_connections"]["established_connections"]["connections"]
    assert f"[::1]:{port}" in {c["remote_addr"] for c in conns}
    assert {"port": port, "interface": "lo"} in report["metrics"]["listening_tcp_ports"]["ports"]


def test_cbor_to_file_with_network_stats(sockets, tmp_path):
    out = tmp_path / "report.cbor"
    collect("--format", "cbor", "--output", str(out), "--network-window", "0.2",
            "--state-dir", str(tmp_path))
    data = out.read_bytes()
    assert validate_report(data, "cbor") == []
    raw = cbor2.loads(data)
    assert {"pt": sockets["tcp"], "if": "lo"} in raw["met"]["tp"]["pts"]
    assert set(raw["met"]["ns"]) == {"bi", "bo", "pi", "po"}
    assert (tmp_path / "collector-report-id").read_text() == str(raw["hed"]["rid"])
