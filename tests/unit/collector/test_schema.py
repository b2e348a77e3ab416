"""validate_report: every problem, per the spec and the product POLICY."""

import json

import cbor2
import pytest

from ggdefender.collector.report import encode, to_short
from ggdefender.collector.schema import validate_report


def test_golden_reports_are_valid_in_both_encodings(golden):
    for name in ("basic-first.json", "basic-second.json"):
        rep = golden(name)
        assert validate_report(rep) == []
        assert validate_report(encode(rep, "json"), "json") == []
        assert validate_report(encode(rep, "cbor"), "cbor") == []
        assert validate_report(to_short(rep)) == []  # short names are valid in JSON too


def test_mixed_key_styles_are_accepted():
    assert validate_report({"hed": {"report_id": 5, "v": "1.0"}, "metrics": {"tp": {"ports": [], "t": 0}}}) == []


def test_unknown_keys_are_ignored():
    assert validate_report({"header": {"report_id": 5, "version": "1.0"}, "metrics": {}, "extra": 1}) == []


def _base(**metrics):
    return {"header": {"report_id": 1, "version": "1.0"}, "metrics": metrics}


@pytest.mark.parametrize("report,needle", [
    ({"metrics": {}}, "'header' is a required property"),
    ({"header": {"report_id": 1, "version": "1.0"}}, "at least one of metrics or custom_metrics"),
    ({"header": {"version": "1.0"}, "metrics": {}}, "'report_id' is a required property"),
    ({"header": {"report_id": 0, "version": "1.0"}, "metrics": {}}, "/header/report_id"),
    ({"header": {"report_id": "12", "version": "1.0"}, "metrics": {}}, "not of type 'integer'"),
    ({"header": {"report_id": True, "version": "1.0"}, "metrics": {}}, "not of type 'integer'"),
    ({"header": {"report_id": 1.5, "version": "1.0"}, "metrics": {}}, "not of type 'integer'"),
    ({"header": {"report_id": 1, "version": "1"}, "metrics": {}}, "/header/version"),
    ({"header": {"report_id": 1, "version": 1.0}, "metrics": {}}, "not of type 'string'"),
    (_base(listening_tcp_ports={"ports": [{"port": 0}]}), "/metrics/listening_tcp_ports/ports/0/port"),
    (_base(listening_udp_ports={"ports": [{"port": 70000}]}), "/metrics/listening_udp_ports/ports/0/port"),
    (_base(listening_tcp_ports={"ports": [], "total": -1}), "/metrics/listening_tcp_ports/total"),
    (_base(tcp_connections={"established_connections": {"connections": [{"local_port": 1}]}}),
     "'remote_addr' is a required property"),
    (_base(tcp_connections={"established_connections": {"connections": [{"remote_addr": "::1:80"}]}}),
     "is not ip:port"),
    (_base(tcp_connections={"established_connections": {"connections": [{"remote_addr": "10.0.0.300:80"}]}}),
     "invalid IPv4"),
    (_base(tcp_connections={"established_connections": {"connections": [{"remote_addr": "[::zz]:80"}]}}),
     "not ip:port"),
    (_base(tcp_connections={"established_connections": {"connections": [{"remote_addr": "1.2.3.4:70000"}]}}),
     "port outside"),
    (_base(network_stats={"bytes_in": -5}), "/metrics/network_stats/bytes_in"),
    ({"hed": {"rid": 1, "v": "1.0"}, "header": {"report_id": 1, "version": "1.0"}, "met": {}}, "given twice"),
])
def test_bad_reports_are_reported_with_where(report, needle):
    problems = validate_report(report)
    assert problems, report
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("custom,needle", [
    ({"cpu": {"number": 1}}, "not of type 'array'"),             # the documented InvalidPayload example
    ({"cpu": []}, "should be non-empty"),
    ({"cpu": [{"number": 1}, {"number": 2}]}, "is too long"),
    ({"cpu": [{"number": "1"}]}, "not of type 'number'"),
    ({"cpu": [{"number": True}]}, "not of type 'number'"),
    ({"cpu": [{"number": 1, "number_list": [1]}]}, "has too many properties"),
    ({"cpu": [{"value": 1}]}, "Additional properties"),
    ({"n": [{"number_list": [1, "2"]}]}, "not of type 'number'"),
    ({"s": [{"string_list": ["a", 3]}]}, "not of type 'string'"),
    ({"i": [{"ip_list": ["10.0.0.1", "nope"]}]}, "not an IPv4 or IPv6 address"),
    ({"aws:cpu": [{"number": 1}]}, "must not begin with 'aws:'"),
    ({"AWS:cpu": [{"number": 1}]}, "must not begin with 'aws:'"),  # the plugins' rule: any case
    ({"bad name": [{"number": 1}]}, "must be 1-128 characters of A-Z a-z 0-9 : _ -"),
    ({"x" * 129: [{"number": 1}]}, "must be 1-128 characters of A-Z a-z 0-9 : _ -"),
    ({"f": [{"number": float("nan")}]}, "finite"),
])
def test_custom_metric_shapes(custom, needle):
    problems = validate_report({"header": {"report_id": 1, "version": "1.0"}, "custom_metrics": custom})
    assert any(needle in p for p in problems), problems


def test_valid_custom_metrics_of_each_type():
    custom = {"cpu_usage": [{"number": 12.5}], "ports": [{"number_list": [1, 2.5]}],
              "procs": [{"string_list": ["sshd"]}], "dns": [{"ip_list": ["10.0.0.2", "2001:db8::1"]}]}
    assert validate_report({"header": {"report_id": 1, "version": "1.0"}, "cmet": custom}) == []


def test_every_problem_is_listed_not_just_the_first():
    rep = {"header": {"report_id": -1, "version": "x"}, "metrics": {"network_stats": {"bytes_in": -1}}}
    assert len(validate_report(rep)) == 3


def test_wire_payload_problems():
    assert "not valid JSON" in validate_report(b"{nope", "json")[0]
    assert "not valid CBOR" in validate_report(b"\xff\xff", "cbor")[0]
    assert "must be an object" in validate_report(json.dumps([1]).encode(), "json")[0]
    big = {"header": {"report_id": 1, "version": "1.0"}, "custom_metrics": {"s": [{"string_list": ["x" * 140_000]}]}}
    assert any("MQTT limit" in p for p in validate_report(json.dumps(big).encode(), "json"))
    assert validate_report(cbor2.dumps({"hed": {"rid": 1, "v": "1.0"}, "met": {}}), "cbor") == []
    assert "unknown report format" in validate_report({}, "xml")[0]
