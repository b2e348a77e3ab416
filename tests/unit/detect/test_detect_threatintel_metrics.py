import os

import pytest

from ggdefender.detect import metrics as M
from ggdefender.detect.threatintel import CidrSet, parse_cidr, parse_list_text, parse_threat_lists, refresh
from ggdefender.settings import ConfigError

from detect_helpers import report


def test_plain_list_format():
    text = "# a feed\n\n203.0.113.7\n198.51.100.0/24 ; listed 2026-01-01\n2001:db8::/32 # v6\n"
    nets = parse_list_text(text, "feed.txt")
    assert [str(n) for n in nets] == ["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32"]


def test_list_errors_name_source_and_line():
    with pytest.raises(ConfigError, match=r"feed.txt:3: not an IP address or CIDR: 'evil.example'"):
        parse_list_text("1.2.3.4\n# x\nevil.example\n", "feed.txt")
    with pytest.raises(ConfigError, match="more than 2 entries"):
        parse_list_text("1.1.1.1\n2.2.2.2\n3.3.3.3\n", "f", max_entries=2)


def test_cidr_set_membership():
    s = CidrSet([parse_cidr(x) for x in ("10.0.0.0/8", "192.0.2.5", "2001:db8::/32", "10.1.0.0/16")])
    assert "10.200.1.1" in s and "192.0.2.5" in s and "2001:db8:1::9" in s
    assert "192.0.2.6" not in s and "11.0.0.1" not in s and "2001:db9::1" not in s and "junk" not in s
    assert "::ffff:10.0.0.1" not in s  # other family


def test_threat_list_config():
    (inline, commas) = parse_threat_lists([{"Name": "a", "Cidrs": ["192.0.2.0/24"]},
                                           {"Name": "b", "Cidrs": "192.0.2.1, 192.0.2.2"}])
    assert len(inline.cidrs) == 1 and len(commas.cidrs) == 2
    with pytest.raises(ConfigError, match=r"ThreatLists\[0\]: give exactly one of Cidrs or File"):
        parse_threat_lists([{"Name": "a"}])
    with pytest.raises(ConfigError, match=r"ThreatLists\[1\].Name: duplicate"):
        parse_threat_lists([{"Name": "a", "Cidrs": []}, {"Name": "a", "Cidrs": []}])
    with pytest.raises(ConfigError, match=r"ThreatLists\[0\].Cidrs\[1\]"):
        parse_threat_lists([{"Name": "a", "Cidrs": ["1.1.1.1", "x"]}])
    with pytest.raises(ConfigError, match="cannot read threat list"):
        parse_threat_lists([{"Name": "a", "File": "/nonexistent/list.txt"}])


def test_file_list_refresh_keeps_its_own_max_entries(tmp_path):
    path = tmp_path / "feed.txt"
    path.write_text("192.0.2.1\n192.0.2.2\n")
    (tl,) = parse_threat_lists([{"Name": "feed", "File": str(path), "MaxEntries": 2}])
    path.write_text("198.51.100.1\n198.51.100.2\n198.51.100.3\n")  # one entry over the list's bound
    os.utime(path, (tl.mtime + 10, tl.mtime + 10))
    assert refresh([tl]) is False
    assert tl.cidrs.contains("192.0.2.1") and not tl.cidrs.contains("198.51.100.1")
    path.write_text("198.51.100.1\n198.51.100.2\n")
    os.utime(path, (tl.mtime + 20, tl.mtime + 20))
    assert refresh([tl]) is True
    assert tl.cidrs.contains("198.51.100.1") and not tl.cidrs.contains("192.0.2.1")


@pytest.mark.parametrize("addr,ip", [("192.0.2.1:443", "192.0.2.1"), ("[2001:db8::1]:8883", "2001:db8::1"),
                                     ("2001:db8::1", "2001:db8::1"), ("bogus:1", None), (None, None)])
def test_remote_ip(addr, ip):
    assert M.remote_ip(addr) == ip


def test_extract_all_device_metrics():
    rep = report(ports=[22, 22, 8888], udp=[53], remotes=["192.0.2.1:443", "192.0.2.1:80", "[2001:db8::1]:1"],
                 packets_out=12, bytes_out=3400,
                 custom={"cpu": [{"number": 12.5}], "users": [{"string_list": ["a", "b", "a"]}],
                         "peers": [{"ip_list": ["10.0.0.1", "nope"]}], "codes": [{"number_list": [3, 1]}]})
    rep["metrics"]["network_stats"].update(bytes_in=10, packets_in=2)
    out = M.extract(rep, {"cpu": "number"})
    assert out == {
        "aws:all-bytes-in": 10, "aws:all-bytes-out": 3400, "aws:all-packets-in": 2, "aws:all-packets-out": 12,
        "aws:listening-tcp-ports": (22, 8888), "aws:num-listening-tcp-ports": 3,
        "aws:listening-udp-ports": (53,), "aws:num-listening-udp-ports": 1,
        "aws:num-established-tcp-connections": 3,
        "aws:destination-ip-addresses": ("192.0.2.1", "2001:db8::1"),
        "cpu": 12.5, "users": ("a", "b"), "peers": ("10.0.0.1",), "codes": (1.0, 3.0),
    }


def test_extract_missing_metrics_are_absent_not_zero():
    assert M.extract({"header": {"report_id": 1, "version": "1.0"}, "metrics": {}}) == {}
    total_only = {"metrics": {"listening_tcp_ports": {"total": 0}}}
    assert M.extract(total_only) == {"aws:listening-tcp-ports": (), "aws:num-listening-tcp-ports": 0}
    # a declared type reads only its own key
    assert M.extract({"custom_metrics": {"cpu": [{"string_list": ["x"]}]}}, {"cpu": "number"}) == {}
