"""The collector's configuration verdicts and last report in the health document; the last good Collector
section survives a restart (a new process B host on the same state folder, as after a process restart)."""

import json

import pytest

from ggdefender.collector.process import CollectorProcess

from test_service import FakeIpc  # the same fake IPC as the loop tests

GOOD = {"Collector": {"ReportFormat": "cbor", "DevelopmentSampleIntervalSeconds": 20, "StartJitterPercent": 0},
        "Plugins": {"Enabled": False}, "Detect": {"Enabled": False}}


def start(tmp_path, source, config):
    ipc = FakeIpc(json.loads(json.dumps(config)))
    proc = CollectorProcess(ipc, "thing1", str(tmp_path), source=source("basic"))
    proc.configure(ipc.config)
    return ipc, proc


def test_a_rejected_collector_section_keeps_cbor_and_20s_across_a_restart(tmp_path, source, doc):
    ipc, svc = start(tmp_path, source, GOOD)
    assert (svc.collector.settings.report_format, svc.collector.settings.interval) == ("cbor", 20)
    assert doc.get("configuration.Collector")["accepted"] is True
    bad = json.loads(json.dumps(GOOD))
    bad["Collector"]["DevelopmentSampleIntervalSeconds"] = -5  # a deployment MERGE of an invalid value
    svc.configure(bad)
    assert (svc.collector.settings.report_format, svc.collector.settings.interval) == ("cbor", 20)
    svc.close()

    ipc, restarted = start(tmp_path, source, bad)  # restart with the invalid section still configured
    assert (restarted.collector.settings.report_format, restarted.collector.settings.interval) == ("cbor", 20)
    verdict = doc.get("configuration.Collector")
    assert verdict["accepted"] is False and verdict["usingLastGood"] is True
    assert "DevelopmentSampleIntervalSeconds" in verdict["reason"]
    built = restarted.collector.collect_and_publish()
    assert built.fmt == "cbor" and ipc.iot[-1][0].endswith("/defender/metrics/cbor")
    restarted.close()


def test_plugins_and_detect_verdicts_are_reported(tmp_path, source, doc):
    conf = json.loads(json.dumps(GOOD))
    conf["Plugins"] = {"Enabled": True, "TimeoutSeconds": "x"}
    conf["Detect"] = {"Enabled": True, "Profile": []}
    _, svc = start(tmp_path, source, conf)
    assert doc.get("configuration.Plugins")["accepted"] is False
    assert "TimeoutSeconds" in doc.get("configuration.Plugins")["reason"]
    assert doc.get("configuration.Detect")["accepted"] is False
    assert "Profile" in doc.get("configuration.Detect")["reason"]
    svc.configure(GOOD)
    assert doc.get("configuration.Plugins")["accepted"] is True
    assert doc.get("configuration.Detect")["accepted"] is True
    svc.close()


def test_last_report_follows_device_defender_replies_and_publish_failures(tmp_path, source, doc):
    ipc, svc = start(tmp_path, source, GOOD)
    svc.collector._subscribe()
    ipc.deliver("iot", "$aws/things/thing1/defender/metrics/json/rejected",
                json.dumps({"reportId": 7, "statusDetails": {"ErrorCode": "InvalidPayload",
                                                             "ErrorMessage": "bad"}}).encode())
    last = doc.get("lastReport")
    assert last["status"] == "REJECTED" and last["reportId"] == 7 and "InvalidPayload" in last["reason"]
    assert doc.document()["status"] == "degraded"
    ipc.deliver("iot", "$aws/things/thing1/defender/metrics/json/accepted", json.dumps({"reportId": 8}).encode())
    assert doc.get("lastReport")["status"] == "ACCEPTED" and doc.document()["status"] == "ok"
    ipc.fail_publishes = 1
    with pytest.raises(RuntimeError):
        svc.collector.collect_and_publish()
    assert doc.get("lastReport")["status"] == "PUBLISH_FAILED"
    assert "publish timed out" in doc.get("lastReport")["reason"]
    svc.close()
