"""The offline Device Defender endpoint: validation, replies, kept reports, over the real IPC client too."""

import json
import subprocess
import sys

import cbor2
import pytest

from ggdefender.local.ui.harness import LocalCore

pytestmark = pytest.mark.integration

THING = "testThing"
JSON_TOPIC = f"$aws/things/{THING}/defender/metrics/json"
CBOR_TOPIC = f"$aws/things/{THING}/defender/metrics/cbor"


def _report(rid, **metrics):
    return {"header": {"report_id": rid, "version": "1.0"},
            "metrics": metrics or {"listening_tcp_ports": {"ports": [{"port": 22, "interface": "eth0"}], "total": 1}}}


def _replies(core):
    return core.capture_iot(f"$aws/things/{THING}/defender/metrics/+/+")


def test_json_report_accepted_and_kept(tmp_path):
    with LocalCore(tmp_path / "gg", thing=THING) as core:
        replies = _replies(core)
        core.publish_iot(JSON_TOPIC, json.dumps(_report(1000)).encode(), source="test")
        replies.wait_for(lambda m: m, 30)
        topic, payload, _ = replies[0]
        assert topic == JSON_TOPIC + "/accepted"
        reply = json.loads(payload)
        assert reply["thingName"] == THING and reply["reportId"] == 1000 and reply["status"] == "ACCEPTED"
        assert isinstance(reply["timestamp"], int)
        service = core.service("DefenderService")
        assert [a["reportId"] for a in service.accepted] == [1000]
        lines = (tmp_path / "gg" / "cloud" / "defender" / THING / "reports.jsonl").read_text().splitlines()
        record = json.loads(lines[0])
        assert record["topic"] == JSON_TOPIC and record["report"]["header"]["report_id"] == 1000
        assert isinstance(record["receivedAt"], float)
        assert core.view.counters["accepted"] == 1


def test_cbor_short_names_reply_in_cbor_and_kept_in_long_names(tmp_path):
    short = {"hed": {"rid": 7, "v": "1.0"}, "met": {"tp": {"pts": [{"pt": 443}], "t": 1}}}
    with LocalCore(tmp_path / "gg", thing=THING) as core:
        replies = _replies(core)
        core.publish_iot(CBOR_TOPIC, cbor2.dumps(short), source="test")
        replies.wait_for(lambda m: m, 30)
        assert replies[0][0] == CBOR_TOPIC + "/accepted"
        assert cbor2.loads(replies[0][1])["reportId"] == 7
        kept = core.service("DefenderService").accepted[0]["report"]
        assert kept["header"] == {"report_id": 7, "version": "1.0"}
        assert kept["metrics"]["listening_tcp_ports"]["ports"] == [{"port": 443}]


@pytest.mark.parametrize("payload, fragment", [
    (b"{not json", "not valid JSON"),
    (json.dumps({"header": {"report_id": 1, "version": "1.0"}}).encode(), "metrics"),
    (json.dumps(_report(-5)).encode(), "report_id"),
    (json.dumps(_report(3, listening_tcp_ports={"ports": [{"port": 70000}], "total": 1})).encode(), "70000"),
])
def test_invalid_reports_rejected_with_reason(tmp_path, payload, fragment):
    with LocalCore(tmp_path / "gg", thing=THING) as core:
        replies = _replies(core)
        core.publish_iot(JSON_TOPIC, payload, source="test")
        replies.wait_for(lambda m: m, 30)
        topic, body, _ = replies[0]
        assert topic == JSON_TOPIC + "/rejected"
        reply = json.loads(body)
        assert reply["status"] == "REJECTED" and reply["statusDetails"]["ErrorCode"] == "InvalidPayload"
        assert fragment in reply["statusDetails"]["ErrorMessage"]
        assert not (tmp_path / "gg" / "cloud" / "defender" / THING / "reports.jsonl").exists()


@pytest.mark.parametrize("thing", ["..", "."])
def test_report_for_an_invalid_thing_name_is_rejected_and_never_kept(tmp_path, thing):
    topic = f"$aws/things/{thing}/defender/metrics/json"
    with LocalCore(tmp_path / "gg", thing=THING) as core:
        replies = core.capture_iot(topic + "/+")
        core.publish_iot(topic, json.dumps(_report(1)).encode(), source="test")
        replies.wait_for(lambda m: m, 30)
        assert replies[0][0] == topic + "/rejected"
        assert "thing name" in json.loads(replies[0][1])["statusDetails"]["ErrorMessage"]
    kept = [p.relative_to(tmp_path) for p in (tmp_path / "gg" / "cloud").rglob("reports.jsonl")]
    assert kept == []


def test_duplicate_report_id_rejected_even_after_restart(tmp_path):
    for _ in range(2):
        with LocalCore(tmp_path / "gg", thing=THING) as core:
            replies = _replies(core)
            core.publish_iot(JSON_TOPIC, json.dumps(_report(42)).encode(), source="test")
            replies.wait_for(lambda m: m, 30)
            first = replies[0]
    assert first[0].endswith("/rejected")
    assert "duplicate" in json.loads(first[1])["statusDetails"]["ErrorMessage"]
    assert json.loads(first[1])["reportId"] == 42


CLIENT = r"""
import json, sys, threading
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import QOS
thing = sys.argv[1]
c = GreengrassCoreIPCClientV2()
got = []
done = threading.Event()
def on(event):
    got.append([event.message.topic_name, json.loads(event.message.payload)])
    if len(got) == 2:
        done.set()
base = f"$aws/things/{thing}/defender/metrics/json"
c.subscribe_to_iot_core(topic_name=base + "/+", qos=QOS.AT_LEAST_ONCE, on_stream_event=on)
good = {"header": {"report_id": 5, "version": "1.0"}, "metrics": {"listening_udp_ports": {"ports": [], "total": 0}}}
c.publish_to_iot_core(topic_name=base, qos=QOS.AT_LEAST_ONCE, payload=json.dumps(good).encode())
c.publish_to_iot_core(topic_name=base, qos=QOS.AT_LEAST_ONCE, payload=b"[]")
done.wait(30)
print(json.dumps(got))
"""


def test_component_over_ipc_gets_accepted_and_rejected(tmp_path):
    policy = {"accessControl": {"aws.greengrass.ipc.mqttproxy": {"defender": {
        "operations": ["*"], "resources": ["$aws/things/{iot:thingName}/defender/metrics/json/#"]}}}}
    with LocalCore(tmp_path / "gg", thing=THING) as core:
        env = core.add_component("test.Reporter", policy)
        out = subprocess.run([sys.executable, "-c", CLIENT, THING], env=env, capture_output=True, text=True,
                             timeout=60, cwd=core.work_dir("test.Reporter"))
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
    assert [t.rsplit("/", 1)[1] for t, _ in got] == ["accepted", "rejected"]
    assert got[0][1]["reportId"] == 5
    assert "object" in got[1][1]["statusDetails"]["ErrorMessage"]
