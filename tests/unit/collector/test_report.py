"""Report building: golden reports, deltas, size cap, long/short names, CBOR."""

import json

import cbor2
import pytest

from ggdefender.collector import report as r
from ggdefender.collector.schema import validate_report
from ggdefender.collector.sources.data import Connection, Listener, Sample

from pathlib import Path

PROC = Path(__file__).resolve().parents[2] / "data" / "proc"


def test_first_report_matches_golden_and_has_no_network_stats(source, golden):
    s = source("basic").sample()
    rep = r.build_report(s, 1700000000000, network_stats=r.network_delta(None, s.counters),
                         custom_metrics={"cpu_usage": [{"number": 12.5}]})
    assert rep == golden("basic-first.json")
    assert "network_stats" not in rep["metrics"]
    assert validate_report(rep) == []


def test_second_report_carries_deltas(source, golden):
    s1, s2 = source("basic").sample(), source("basic-later").sample()
    rep = r.build_report(s2, 1700000300000, network_stats=r.network_delta(s1.counters, s2.counters))
    assert rep == golden("basic-second.json")
    # loopback is excluded by default: lo's +4000 bytes are not in bytes_in
    assert rep["metrics"]["network_stats"] == {"bytes_in": 4000, "bytes_out": 1000,
                                               "packets_in": 30, "packets_out": 20}


def test_wrap_or_reset_leaves_network_stats_out(source):
    before, after = source("wrap-before").sample(), source("wrap-after").sample()
    assert r.network_delta(before.counters, after.counters) is None
    # the next look after the reset works again (the new baseline is the post-reset value)
    assert r.network_delta(after.counters, after.counters) == {
        "bytes_in": 0, "bytes_out": 0, "packets_in": 0, "packets_out": 0}


def test_new_interface_starts_its_baseline_and_gone_interface_is_ignored():
    prev = {"eth0": (100, 100, 1, 1), "tun0": (50, 50, 5, 5)}
    cur = {"eth0": (150, 120, 3, 2), "eth1": (10_000, 10_000, 100, 100)}
    assert r.network_delta(prev, cur) == {"bytes_in": 50, "bytes_out": 20, "packets_in": 2, "packets_out": 1}


def test_network_delta_is_never_negative_on_any_counter():
    prev = {"eth0": (100, 100, 10, 10)}
    for i in range(4):
        cur = list(prev["eth0"])
        cur[i] -= 1
        assert r.network_delta(prev, {"eth0": tuple(cur)}) is None


def test_list_cap_keeps_total_true_and_maximizes_distinct_remote_ips(source):
    s = source("many").sample()
    rep = r.build_report(s, 5, max_list=1000)
    ec = rep["metrics"]["tcp_connections"]["established_connections"]
    assert ec["total"] == 3000 and len(ec["connections"]) == 1000
    first = [c["remote_addr"].rsplit(":", 1)[0] for c in ec["connections"][:600]]
    assert len(set(first)) == 600  # one connection per distinct remote IP before any repeats
    assert rep["metrics"]["listening_tcp_ports"]["total"] == 40


def test_size_cap_is_deterministic_and_fits(source):
    s = source("many").sample()
    for fmt in ("json", "cbor"):
        a = r.build_report(s, 7, fmt=fmt, max_bytes=20_000)
        b = r.build_report(source("many").sample(), 7, fmt=fmt, max_bytes=20_000)
        assert a == b
        data = r.encode(a, fmt)
        assert len(data) <= 20_000
        assert validate_report(data, fmt) == []
        ec = a["metrics"]["tcp_connections"]["established_connections"]
        assert ec["total"] == 3000 and 0 < len(ec["connections"]) < 1000
        # a cut list is a prefix of the priority order, and one more entry would not have fit
        full = r.order_connections(s.connections)
        kept = [c["remote_addr"] for c in ec["connections"]]
        assert kept == [Connection(*c).remote_addr for c in full[:len(kept)]]
        bigger = r.build_report(s, 7, fmt=fmt, max_bytes=10**6, max_list=len(kept) + 1)
        assert len(r.encode(bigger, fmt)) > 20_000


def test_default_cap_fits_the_mqtt_limit_on_a_busy_host():
    conns = [Connection(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 40000 + i % 20000, 1024 + i % 60000,
                        "eth0") for i in range(10_000)]
    ports = [Listener(1 + i, "eth0") for i in range(5000)]
    s = Sample(tcp_listeners=ports, udp_listeners=list(ports), connections=conns)
    rep = r.build_report(s, 9)
    data = r.encode(rep, "json")
    assert len(data) <= r.DEFAULT_MAX_BYTES
    m = rep["metrics"]
    assert m["tcp_connections"]["established_connections"]["total"] == 10_000
    assert m["listening_tcp_ports"]["total"] == 5000 and m["listening_udp_ports"]["total"] == 5000


def test_custom_metrics_that_alone_do_not_fit_are_dropped_largest_first_not_the_report():
    # e.g. external plugins publishing many big string lists: the report still goes out, with what fits
    big = {f"names{i}": [{"string_list": ["x" * 100] * 30}] for i in range(5)}  # ~3 KB each
    bigger = {"huge": [{"string_list": ["y" * 100] * 60}]}
    small = {"cpu_usage": [{"number": 3.5}]}
    conns = [Connection("10.0.0.1", 1000 + i, 443, "eth0") for i in range(200)]
    rep = r.build_report(Sample(connections=conns), 1, custom_metrics={**small, **big, **bigger}, max_bytes=10_000)
    assert len(r.encode(rep, "json")) <= 10_000
    kept = rep["custom_metrics"]
    assert "huge" not in kept and "cpu_usage" in kept
    assert sorted(kept) == sorted(["cpu_usage", "names2", "names3", "names4"])  # ties dropped by name order
    assert rep["metrics"]["tcp_connections"]["established_connections"]["total"] == 200
    assert validate_report(rep) == []


def test_report_too_large_only_when_nothing_can_be_left_out():
    with pytest.raises(r.ReportTooLarge):
        r.build_report(Sample(connections=[]), 1, max_bytes=10)


def test_cbor_uses_short_names_and_round_trips(source):
    s1, s2 = source("basic").sample(), source("basic-later").sample()
    rep = r.build_report(s2, 2**40, network_stats=r.network_delta(s1.counters, s2.counters),
                         custom_metrics={"cpu_usage": [{"number": 1.5}], "ips": [{"ip_list": ["10.0.0.1"]}]})
    data = r.encode(rep, "cbor")
    raw = cbor2.loads(data)
    assert set(raw) == {"hed", "met", "cmet"}
    assert set(raw["met"]) == {"tp", "up", "tc", "ns"}
    assert raw["met"]["tp"]["pts"][0] == {"pt": 22, "if": "eth0"}
    assert raw["cmet"] == {"cpu_usage": [{"number": 1.5}], "ips": [{"ip_list": ["10.0.0.1"]}]}
    assert r.decode(data, "cbor") == rep  # round trip to exactly the long-name report
    assert data[0] >> 5 == 5  # a definite-length map
    # report_id is an unsigned integer (major type 0, here its 8-byte form), version a text string (type 3)
    assert b"\x63rid\x1b" + (2**40).to_bytes(8, "big") in data
    assert b"\x61v\x631.0" in data


def test_json_uses_long_names_compactly(golden):
    rep = golden("basic-first.json")
    data = r.encode(rep, "json")
    assert b" " not in data
    assert json.loads(data) == rep and b'"header"' in data and b'"hed"' not in data


def test_short_long_tables_are_inverse_and_complete():
    assert set(r.SHORT_TO_LONG) == set("hed rid v met tc ec cs rad lp li tp up pts pt if ns bi bo pi po t cmet".split())
    assert all(r.LONG_TO_SHORT[r.SHORT_TO_LONG[k]] == k for k in r.SHORT_TO_LONG)


def test_custom_metric_names_are_never_shortened():
    rep = {"header": {"report_id": 1, "version": "1.0"}, "metrics": {},
           "custom_metrics": {"total": [{"number": 1}], "port": [{"number": 2}]}}
    assert r.to_short(rep)["cmet"] == rep["custom_metrics"]
    assert r.to_long(r.to_short(rep)) == rep


def test_empty_sample_gives_a_valid_report():
    rep = r.build_report(Sample(), 3)
    assert rep == {"header": {"report_id": 3, "version": "1.0"}, "metrics": {}}
    assert validate_report(rep) == []


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="xml"):
        r.encode({}, "xml")


def test_topic_is_lower_case():
    assert r.topic("thing-1", "cbor") == "$aws/things/thing-1/defender/metrics/cbor"


def test_pipeline_logs_custom_metrics_left_out_for_size(source, tmp_path, caplog):
    import logging

    from ggdefender.collector.config import CollectorSettings
    from ggdefender.collector.pipeline import Pipeline
    from ggdefender.collector.report_id import ReportIds

    pipe = Pipeline(CollectorSettings(max_report_bytes=4096), ReportIds(), source=source("basic"))
    custom = {"cpu_usage": [{"number": 1.0}], "names": [{"string_list": ["n" * 100] * 60}]}
    with caplog.at_level(logging.WARNING, logger="ggdefender.collector"):
        built = pipe.build(custom)
    assert list(built.report["custom_metrics"]) == ["cpu_usage"]
    assert "left out of report" in caplog.text and "names" in caplog.text


def test_network_stats_switched_off_and_on_restarts_the_baseline(source):
    import dataclasses

    from ggdefender.collector.config import CollectorSettings
    from ggdefender.collector.pipeline import Pipeline
    from ggdefender.collector.report_id import ReportIds

    all_groups = CollectorSettings()
    pipe = Pipeline(all_groups, ReportIds(), source=source("basic"))
    assert "network_stats" not in pipe.build().report["metrics"]  # first report
    assert "network_stats" in pipe.build().report["metrics"]
    pipe.reconfigure(dataclasses.replace(all_groups, metrics=("listening_tcp_ports",)))
    pipe.build()
    pipe.reconfigure(all_groups)
    # the delta would otherwise cover the reports sent without network_stats too
    assert "network_stats" not in pipe.build().report["metrics"]
    assert "network_stats" in pipe.build().report["metrics"]


def test_traffic_of_an_undelivered_report_is_carried_into_the_next(source, tmp_path):
    import shutil

    from ggdefender.collector.config import CollectorSettings
    from ggdefender.collector.pipeline import Pipeline
    from ggdefender.collector.report_id import ReportIds

    tree = tmp_path / "proc"
    shutil.copytree(PROC / "basic", tree)
    src = source("basic")
    src.proc_root = str(tree)
    pipe = Pipeline(CollectorSettings(), ReportIds(), source=src)
    pipe.build()  # baseline: eth0 1,000,000 bytes in
    dev = (PROC / "basic-later" / "net" / "dev").read_text()
    (tree / "net" / "dev").write_text(dev.replace("1004000", "1002000"))
    assert pipe.build().report["metrics"]["network_stats"]["bytes_in"] == 2000
    pipe.not_delivered()  # that report never reached IoT Core
    (tree / "net" / "dev").write_text(dev)
    # 4,000 bytes since the last delivered report, not the 2,000 since the lost one
    assert pipe.build().report["metrics"]["network_stats"]["bytes_in"] == 4000
    assert pipe.build().report["metrics"]["network_stats"]["bytes_in"] == 0
