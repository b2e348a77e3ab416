"""Each built-in plugin: its value, its type, and the pure logic behind it (fixture data)."""

import collections
import logging
import os
import socket

import psutil
import pytest

from ggdefender.plugins.builtin import BUILTINS
from ggdefender.plugins.builtin.cpu_times import CpuSampler, busy_percent
from ggdefender.plugins.builtin.cpu_usage import CpuUsage
from ggdefender.plugins.builtin.cpu_usage_per_core import CpuUsagePerCore
from ggdefender.plugins.builtin.disk_usage import DiskUsage
from ggdefender.plugins.builtin.dns_resolvers import DnsResolvers, parse_nameservers
from ggdefender.plugins.builtin.listening_processes import (
    ListeningProcesses, clean_name, listening_inodes, socket_owners,
)
from ggdefender.plugins.builtin.memory_usage import MemoryUsage
from ggdefender.plugins.builtin.process_count import ProcessCount
from ggdefender.plugins.contract import ValueType, validate_value
from ggdefender.plugins.registry import check_plugin_class
from ggdefender.settings import ConfigError

Times = collections.namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def configured(cls, **options):
    plugin = cls()
    plugin.configure({**cls.options, **options})
    return plugin


def test_seven_builtins_with_all_four_types():
    assert list(BUILTINS) == ["cpu_usage", "memory_usage", "disk_usage", "process_count", "cpu_usage_per_core",
                              "listening_processes", "dns_resolvers"]
    assert {cls.value_type for cls in BUILTINS.values()} == set(ValueType)
    for cls in BUILTINS.values():
        assert check_plugin_class(cls) is cls and cls.description and cls.unit


def test_busy_percent_from_fixture_readings():
    before = Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0)
    after = Times(130, 0, 60, 850, 60, 0, 0, 0, 0, 0)  # 40 busy of 100 elapsed
    assert busy_percent(before, after) == 40.0


def test_busy_percent_subtracts_guest_time_already_counted_in_user():
    before = Times(100, 0, 0, 100, 0, 0, 0, 0, 0, 0)
    after = Times(150, 0, 0, 150, 0, 0, 0, 0, 50, 0)  # guest 50 is part of user 50: total elapsed 100
    assert busy_percent(before, after) == 50.0


def test_busy_percent_edge_cases():
    same = Times(1, 0, 1, 1, 0, 0, 0, 0, 0, 0)
    assert busy_percent(same, same) == 0.0
    backwards = Times(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert busy_percent(same, backwards) == 0.0


def test_first_cpu_sample_waits_for_a_real_interval():
    now = [10.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    sampler = CpuSampler(percpu=False, min_interval=1.0, clock=lambda: now[0], sleep=sleep)
    now[0] += 0.25
    value = sampler.measure()
    assert slept == [0.75] and 0.0 <= value <= 100.0
    now[0] += 300  # the next report, minutes later: no extra wait
    sampler.measure()
    assert slept == [0.75]


def test_cpu_usage_real_value_and_type():
    plugin = configured(CpuUsage, MinIntervalSeconds=0.2)
    value = plugin.sample()
    assert validate_value(ValueType.NUMBER, value) == value and 0.0 <= value <= 100.0


def test_cpu_usage_per_core_one_value_per_cpu():
    plugin = configured(CpuUsagePerCore, MinIntervalSeconds=0.2)
    values = plugin.sample()
    assert len(values) == psutil.cpu_count()
    assert validate_value(ValueType.NUMBER_LIST, values) == values
    assert all(0.0 <= v <= 100.0 for v in values)


@pytest.mark.parametrize("bad", [0.01, 11, "x"])
def test_cpu_min_interval_bounds(bad):
    with pytest.raises(ConfigError, match="MinIntervalSeconds"):
        configured(CpuUsage, MinIntervalSeconds=bad)


def test_memory_usage_is_a_percentage():
    value = MemoryUsage().sample()
    assert validate_value(ValueType.NUMBER, value) == value and 0.0 < value <= 100.0


def test_process_count_counts_processes_including_ours():
    value = ProcessCount().sample()
    assert isinstance(value, int) and value >= 1
    assert os.getpid() in psutil.pids()


def test_disk_usage_default_mount_and_value():
    plugin = configured(DiskUsage)
    assert plugin.metrics() == {"disk_usage": ValueType.NUMBER}
    values = plugin.collect()
    assert set(values) == {"disk_usage"} and 0.0 <= values["disk_usage"] <= 100.0
    assert abs(values["disk_usage"] - psutil.disk_usage("/").percent) < 5


def test_disk_usage_one_metric_per_mount_missing_mount_skipped(tmp_path, caplog):
    plugin = configured(DiskUsage, Mounts={"disk_usage": "/", "disk_usage_gone": str(tmp_path / "gone")})
    assert set(plugin.metrics()) == {"disk_usage", "disk_usage_gone"}
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        values = plugin.collect()
    assert set(values) == {"disk_usage"}
    assert "plugin 'disk_usage': metric 'disk_usage_gone'" in caplog.text


@pytest.mark.parametrize("mounts, why", [
    ({}, "at least one mount"),
    ({"disk usage": "/"}, "Mounts: metric name"),
    ({"disk_usage": "relative/path"}, "not an absolute path"),
    ({"disk_usage": 5}, "expected a string"),
    ("/", "expected an object"),
])
def test_disk_usage_bad_mounts(mounts, why):
    with pytest.raises(ConfigError, match=why):
        configured(DiskUsage, Mounts=mounts)


RESOLV_CONF = """\
# generated by NetworkManager
search example.com
nameserver 192.0.2.53
nameserver 2001:DB8::53
nameserver fe80::1%eth0
nameserver not-an-ip
nameserver 192.0.2.53
options edns0
"""


def test_parse_nameservers_fixture():
    assert parse_nameservers(RESOLV_CONF) == ["192.0.2.53", "2001:db8::53", "fe80::1"]


def _resolver(tmp_path, resolv, upstream=None):
    (tmp_path / "resolv.conf").write_text(resolv)
    if upstream is not None:
        (tmp_path / "upstream.conf").write_text(upstream)
    return configured(DnsResolvers, ResolvConf=str(tmp_path / "resolv.conf"),
                      ResolvedResolvConf=str(tmp_path / "upstream.conf"))


def test_dns_resolvers_plain_resolv_conf(tmp_path):
    value = _resolver(tmp_path, RESOLV_CONF).sample()
    assert validate_value(ValueType.IP_LIST, value) == ["192.0.2.53", "2001:db8::53", "fe80::1"]


def test_dns_resolvers_behind_systemd_resolved_stub(tmp_path):
    stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\n"
    assert _resolver(tmp_path, stub, "nameserver 198.51.100.1\nnameserver 198.51.100.2\n").sample() == [
        "198.51.100.1", "198.51.100.2"]
    (tmp_path / "upstream.conf").unlink()
    assert _resolver(tmp_path, stub).sample() == ["127.0.0.53"]  # no upstream file: the stub is all we know


def test_dns_resolvers_paths_must_be_absolute():
    with pytest.raises(ConfigError, match="ResolvConf: 'resolv.conf' is not an absolute path"):
        configured(DnsResolvers, ResolvConf="resolv.conf")


def test_dns_resolvers_missing_file_raises(tmp_path):
    plugin = configured(DnsResolvers, ResolvConf=str(tmp_path / "none"))
    with pytest.raises(OSError):
        plugin.sample()


TCP_TABLE = (
    b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    b"   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0\n"
    b"   1: 0200000A:0016 0900000A:15B3 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 20 4 30 10 -1\n"
)
UDP6_TABLE = (
    b"  sl  local_address                         remote_address                        st tx_queue rx_queue "
    b"tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
    b"  0: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 "
    b"00:00000000 00000000   100        0 2001 2 0 0\n"
    b"  1: 0000000000000000FFFF00000200000A:9C40 0000000000000000FFFF0000350200C0:0035 01 00000000:00000000 "
    b"00:00000000 00000000   100        0 2002 2 0 0\n"
)


def test_listening_inodes_from_fixture_tables():
    tables = {"tcp": TCP_TABLE.decode().splitlines(), "udp6": UDP6_TABLE.decode().splitlines()}
    assert listening_inodes(tables, {"tcp", "udp"}) == {1001, 2001}  # LISTEN tcp, unconnected udp
    assert listening_inodes(tables, {"udp"}) == {2001}


def test_socket_owners_from_a_fixture_proc_tree(tmp_path):
    def proc(pid, links):
        fd_dir = tmp_path / str(pid) / "fd"
        fd_dir.mkdir(parents=True)
        for i, target in enumerate(links):
            os.symlink(target, fd_dir / str(i))

    proc(100, ["/dev/null", "socket:[1001]"])
    proc(101, ["socket:[1002]"])
    (tmp_path / "net").mkdir()  # non-pid entries are skipped
    assert socket_owners({1001}, str(tmp_path)) == ({100}, False)
    assert socket_owners({1001, 3003}, str(tmp_path)) == ({100}, True)  # 3003: no visible owner
    assert socket_owners(set(), str(tmp_path)) == (set(), False)


def test_clean_name_keeps_device_defender_alphabet():
    assert clean_name("(sd-pam)") == "_sd-pam_"
    assert clean_name("python3.11") == "python3.11"
    assert clean_name("") == "unknown"


def test_listening_processes_sees_our_own_listener():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        value = configured(ListeningProcesses).sample()
    assert validate_value(ValueType.STRING_LIST, value) == value
    assert clean_name(psutil.Process().name()) in value


def test_listening_processes_bad_protocols():
    with pytest.raises(ConfigError, match="Protocols"):
        configured(ListeningProcesses, Protocols=["sctp"])
