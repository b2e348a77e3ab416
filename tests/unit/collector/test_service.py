"""The collector loop with a fake IPC (the real protocol is covered by the integration tests)."""

import json
import logging
import threading

import pytest

from fake_ipc import FakeIpc  # the shared fake; test_service_close and test_service_health import it from here
from ggdefender.collector.report import decode
from ggdefender.collector.schema import validate_report
from ggdefender.collector.service import COMMANDS_TOPIC, EVENTS_TOPIC, CollectorService
from ggdefender.collector.process import CollectorProcess


CONF = {"Collector": {"DevelopmentSampleIntervalSeconds": 1, "StartJitterPercent": 0},
        "Plugins": {"Enabled": False}}


def make_process(tmp_path, source, config=None, case="basic"):
    """Process B's host (collector, plugins, detect) configured from the fake's configuration."""
    ipc = FakeIpc(json.loads(json.dumps(config or CONF)))
    proc = CollectorProcess(ipc, "thing1", str(tmp_path), source=source(case))
    proc.configure(ipc.config)
    return ipc, proc


def make(tmp_path, source, config=None, case="basic"):
    ipc, proc = make_process(tmp_path, source, config, case)
    proc.collector.test_process = proc  # run_loop runs the whole process's host
    return ipc, proc.collector


def test_one_report_published_valid_on_the_right_topic(tmp_path, source):
    ipc, svc = make(tmp_path, source)
    built = svc.collect_and_publish()
    (topic, payload, qos), = ipc.iot
    assert topic == "$aws/things/thing1/defender/metrics/json" and qos == 1
    assert validate_report(payload, "json") == []
    assert decode(payload)["header"]["report_id"] == built.report_id


def test_cbor_and_qos_from_config(tmp_path, source):
    ipc, svc = make(tmp_path, source, {"Collector": {"ReportFormat": "cbor", "PublishQos": "0"}})
    svc.collect_and_publish()
    (topic, payload, qos), = ipc.iot
    assert topic.endswith("/metrics/cbor") and qos == 0 and validate_report(payload, "cbor") == []


def test_bad_config_keeps_the_last_good_one(tmp_path, source, caplog):
    ipc, proc = make_process(tmp_path, source, {"Collector": {"ReportFormat": "cbor"}})
    proc.configure({"Collector": {"ReportFormat": "xml", "SampleIntervalSeconds": 600}})
    svc = proc.collector
    assert svc.settings.report_format == "cbor" and svc.settings.interval == 300
    assert "Collector.ReportFormat" in caplog.text and "keeping the last good one" in caplog.text


def test_replies_are_logged_rejections_loudly(tmp_path, source, caplog):
    ipc, svc = make(tmp_path, source)
    svc._subscribe()
    caplog.set_level(logging.INFO, "ggdefender.collector")
    ipc.deliver("iot", "$aws/things/thing1/defender/metrics/json/rejected", json.dumps(
        {"thingName": "thing1", "status": "REJECTED", "reportId": 42,
         "statusDetails": {"ErrorCode": "InvalidPayload", "ErrorMessage": "Malformed metrics report"}}).encode())
    rec = [r for r in caplog.records if "REJECTED" in r.getMessage()]
    assert rec and rec[0].levelno == logging.WARNING
    assert "42" in rec[0].getMessage() and "InvalidPayload: Malformed metrics report" in rec[0].getMessage()
    import cbor2
    ipc.deliver("iot", "$aws/things/thing1/defender/metrics/cbor/accepted",
                cbor2.dumps({"reportId": 43, "status": "ACCEPTED"}))
    assert "report 43 accepted" in caplog.text


def run_loop(svc):
    """Process B's loop for the collector `svc` made by make(): its host configures, starts and closes."""
    stop = threading.Event()
    t = threading.Thread(target=svc.test_process.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def stop_loop(svc, stop, t):
    stop.set()
    svc.test_process.wake()
    t.join(30)
    assert not t.is_alive()


def test_loop_survives_publish_failures_and_keeps_reporting(tmp_path, source):
    ipc, svc = make(tmp_path, source)
    ipc.fail_publishes = 2
    stop, t = run_loop(svc)
    try:
        ipc.wait(lambda i: len(i.iot) >= 2)
    finally:
        stop_loop(svc, stop, t)
    assert svc.failures >= 2
    ids = [decode(p)["header"]["report_id"] for _, p, _ in ipc.iot]
    assert ids == sorted(set(ids))  # strictly increasing, none reused after failures


def test_collect_now_command_is_answered(tmp_path, source):
    ipc, svc = make(tmp_path, source, {"Collector": {"StartJitterPercent": 0}, "Plugins": {"Enabled": False}})
    stop, t = run_loop(svc)
    try:
        ipc.wait(lambda i: len(i.iot) >= 1)  # the first scheduled report; the next is 300 s away
        ipc.deliver("local", COMMANDS_TOPIC, {"command": "collect-now", "requestId": "r-1"})
        ipc.deliver("local", COMMANDS_TOPIC, {"command": "reboot", "requestId": "r-2"})
        ipc.wait(lambda i: any(m.get("requestId") == "r-1" for _, m in i.local))
    finally:
        stop_loop(svc, stop, t)
    (topic, event), = [x for x in ipc.local if x[0] == EVENTS_TOPIC]
    assert event["event"] == "report-published" and event["requestId"] == "r-1"
    assert event["topic"] == "$aws/things/thing1/defender/metrics/json"
    assert event["reportId"] == decode(ipc.iot[-1][1])["header"]["report_id"]



def test_collect_now_requests_are_spaced_and_answered_together(tmp_path, source):
    conf = {"Collector": {"StartJitterPercent": 0, "MinCollectNowSeconds": 3600}, "Plugins": {"Enabled": False}}
    ipc, svc = make(tmp_path, source, conf)
    stop, t = run_loop(svc)
    try:
        ipc.wait(lambda i: len(i.iot) >= 1)  # the first scheduled report; the next is 300 s away
        for rid in ("r-1", "r-2", "r-3"):
            ipc.deliver("local", COMMANDS_TOPIC, {"command": "collect-now", "requestId": rid})
        # within MinCollectNowSeconds of the last report: no new report, no answer yet
        with ipc.recorded:
            assert not ipc.recorded.wait_for(lambda: len(ipc.iot) > 1, timeout=1.0)
        assert not [m for _, m in ipc.local]
        ipc.config["Collector"]["MinCollectNowSeconds"] = 0
        ipc.deliver("config", None, ["Collector", "MinCollectNowSeconds"])
        ipc.wait(lambda i: len([m for _, m in i.local if m.get("event") == "report-published"]) == 3)
    finally:
        stop_loop(svc, stop, t)
    assert len(ipc.iot) == 2  # one report answered all three waiting requests
    answered = {m["requestId"]: m["reportId"] for _, m in ipc.local}
    assert set(answered) == {"r-1", "r-2", "r-3"} and len(set(answered.values())) == 1
    assert answered["r-1"] == decode(ipc.iot[-1][1])["header"]["report_id"]

def test_collect_now_failure_is_reported(tmp_path, source):
    ipc, svc = make(tmp_path, source)
    ipc.fail_publishes = 1
    svc._on_command(COMMANDS_TOPIC, {"command": "collect-now", "requestId": "abc"})
    svc._tick(svc._drain_commands())
    (_, event), = ipc.local
    assert event == {"event": "report-failed", "requestId": "abc", "reason": "publish timed out"}


def test_collect_now_from_process_a_is_answered_over_the_private_relay_not_the_bus(tmp_path, source):
    ipc, svc = make(tmp_path, source, {"Collector": {"StartJitterPercent": 0}, "Plugins": {"Enabled": False}})
    stop, t = run_loop(svc)
    try:
        ipc.wait(lambda i: len(i.iot) >= 1)  # the first scheduled report; the next is 300 s away
        ipc.deliver("collect", None, "remediation-1")  # A's typed call (ipc_port.CollectorPort)
        ipc.wait(lambda i: i.on("collect_result"))
    finally:
        stop_loop(svc, stop, t)
    (answer,) = ipc.on("collect_result")
    assert answer == {"event": "report-published", "requestId": "remediation-1",
                      "reportId": decode(ipc.iot[-1][1])["header"]["report_id"],
                      "topic": "$aws/things/thing1/defender/metrics/json"}
    assert ipc.local == []  # nothing on ggdefender/collector/events


def test_a_failed_collect_now_of_process_a_is_answered_with_the_reason(tmp_path, source):
    ipc, svc = make(tmp_path, source)
    ipc.fail_publishes = 1
    svc._on_private_collect("remediation-2")
    svc._tick(svc._drain_commands())
    assert ipc.on("collect_result") == [{"event": "report-failed", "requestId": "remediation-2",
                                         "reason": "publish timed out"}]
    assert ipc.local == []


def test_network_stats_only_from_the_second_report(tmp_path, source):
    ipc, svc = make(tmp_path, source)
    first = svc.collect_and_publish().report
    second = svc.collect_and_publish().report
    assert "network_stats" not in first["metrics"]
    assert second["metrics"]["network_stats"] == {"bytes_in": 0, "bytes_out": 0, "packets_in": 0, "packets_out": 0}


def test_detect_sees_every_report_even_when_publish_fails(tmp_path, source):
    ipc, svc = make(tmp_path, source)

    class Detect:
        seen = []

        def observe(self, report, at):
            self.seen.append(report["header"]["report_id"])

    svc.observers = [Detect()]
    ipc.fail_publishes = 1
    with pytest.raises(RuntimeError):
        svc.collect_and_publish()
    svc.collect_and_publish()
    assert len(Detect.seen) == 2


def test_needs_a_thing_name(tmp_path):
    with pytest.raises(ValueError, match="AWS_IOT_THING_NAME"):
        CollectorService(FakeIpc({}), "", str(tmp_path))



def test_refused_publishes_are_said_once_and_the_recovery_once(tmp_path, source, caplog):
    # a nucleus that cannot reach IoT Core refuses every report (nucleus lite: no queue); the log must not
    # repeat the same error on every tick
    ipc, svc = make(tmp_path, source)
    ipc.fail_publishes = 4
    caplog.set_level(logging.INFO, logger="ggdefender.collector")
    stop, t = run_loop(svc)
    try:
        ipc.wait(lambda i: len(i.iot) >= 1, timeout=60)
    finally:
        stop_loop(svc, stop, t)
    assert svc.failures == 4
    said = [r for r in caplog.records if "reports not published" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and "publish timed out" in said[0].getMessage()
    assert not any(r.exc_info for r in said)
    recovered = [r.getMessage() for r in caplog.records if "reports reach IoT Core again" in r.getMessage()]
    assert len(recovered) == 1 and "after 4 failure(s)" in recovered[0]


def test_reports_are_cut_to_what_the_nucleus_takes(tmp_path, source, caplog):
    # nucleus lite: IoT Core messages over IPC at most ~7,000 bytes (ipc.LITE_MAX_IOT_PAYLOAD)
    ipc, _ = make(tmp_path, source)
    ipc.max_iot_payload = lambda: 2048
    caplog.set_level(logging.INFO, logger="ggdefender.collector")
    proc = CollectorProcess(ipc, "thing1", str(tmp_path), source=source("basic"))
    proc.configure(ipc.config)
    proc.configure(ipc.config)
    svc = proc.collector
    assert svc.settings.max_report_bytes == 2048
    said = [r for r in caplog.records if "reports are kept at or under 2048 bytes" in r.getMessage()]
    assert len(said) == 1
