"""fleet/records.py: input lines (the topic rule's output, ggdefender local's rules sink) -> reports."""

import base64
import json

import pytest

from ggdefender.collector.report import encode
from ggdefender.fleet.records import MAX_LINE_BYTES, RecordError, parse_line

RID = 1_764_000_000_000
REPORT = {"header": {"report_id": RID, "version": "1.0"},
          "metrics": {"network_stats": {"bytes_in": 10, "bytes_out": 20, "packets_in": 1, "packets_out": 2},
                      "listening_tcp_ports": {"ports": [{"port": 22}, {"port": 8888}], "total": 2}},
          "custom_metrics": {"cpu": [{"number": 0.5}]}}


def test_a_topic_rule_line_gives_thing_event_time_metrics_and_the_derived_cloud_metrics():
    line = json.dumps(dict(REPORT, thingName="gw-1", receivedAt=RID + 1500))
    r = parse_line(line, {"cpu": "number"})
    assert (r.thing, r.at_ms, r.report_id) == ("gw-1", RID + 1500, RID)
    assert r.metrics["aws:all-bytes-out"] == 20 and r.metrics["aws:listening-tcp-ports"] == (22, 8888)
    assert r.metrics["cpu"] == 0.5
    assert r.metrics["aws:num-messages-sent"] == 1
    assert r.size == len(encode(REPORT, "json")) == r.metrics["aws:message-byte-size"]


def test_without_received_at_the_report_id_is_the_event_time():
    assert parse_line(json.dumps(dict(REPORT, thingName="gw-1"))).at_ms == RID


@pytest.mark.parametrize("fmt", ["json", "cbor"])
def test_a_local_rules_sink_line_takes_the_thing_from_the_topic_and_seconds_as_received_at(fmt):
    payload = encode(REPORT, fmt)
    line = {"receivedAt": RID / 1000 + 2.25, "topic": f"$aws/rules/ggdefender_fleet/things/gw-7/defender/metrics/{fmt}",
            "payloadBase64": base64.b64encode(payload).decode()}
    r = parse_line(json.dumps(line))
    assert (r.thing, r.at_ms, r.size) == ("gw-7", RID + 2250, len(payload))
    assert r.metrics["aws:num-listening-tcp-ports"] == 2


def test_a_cbor_rule_line_decodes_the_base64_report():
    payload = encode(REPORT, "cbor")
    r = parse_line(json.dumps({"thingName": "gw-2", "report": base64.b64encode(payload).decode()}))
    assert (r.thing, r.report_id, r.size) == ("gw-2", RID, len(payload))


@pytest.mark.parametrize("line, reason", [
    ("not json", "not-json"),
    ("[1]", "not-json"),
    (json.dumps(dict(REPORT, thingName="bad/thing")), "bad-thing"),
    (json.dumps(dict(REPORT, receivedAt=RID)), "bad-thing"),
    (json.dumps({"thingName": "gw", "metrics": {}}), "no-report-id"),
    (json.dumps(dict(REPORT, thingName="gw", receivedAt=RID / 1000)), "bad-time"),  # seconds where ms are due
    (json.dumps(dict(REPORT, thingName="gw", receivedAt="now")), "bad-time"),
    (json.dumps({"receivedAt": 1.0, "topic": "$aws/things/gw/defender/metrics/json", "payloadBase64": ""}),
     "bad-topic"),
    (json.dumps({"receivedAt": RID / 1000, "topic": "$aws/rules/r/things/gw/defender/metrics/cbor",
                 "payloadBase64": "!!"}), "bad-payload"),
    (json.dumps({"receivedAt": RID / 1000, "topic": "$aws/rules/r/things/gw/defender/metrics/cbor",
                 "payloadBase64": base64.b64encode(b"\xff\x00").decode()}), "bad-payload"),
])
def test_a_bad_line_names_its_problem(line, reason):
    with pytest.raises(RecordError) as exc:
        parse_line(line)
    assert exc.value.reason == reason and str(exc.value).startswith(reason + ": ")


def test_a_line_over_the_size_limit_is_refused_before_parsing():
    with pytest.raises(RecordError, match="too-large"):
        parse_line("x" * (MAX_LINE_BYTES + 1))
