import json
import os
import shutil

from ggdefender.local.cloud.metrics_service import CloudMetricsService

from detect_helpers import FIXTURES


class FakeCore:
    """The part of ggdefender.local.nucleus.core.Core the service uses, delivering synchronously."""

    thing_name = "localThing"

    def __init__(self):
        self.subs = []
        self.published = []
        self.on_event = None

    def subscribe_iot(self, topic_filter, callback):
        self.subs.append((topic_filter, callback))
        return lambda: self.subs.remove((topic_filter, callback))

    def publish_iot(self, topic, payload, *, source="cloud", qos=1):
        self.published.append((topic, json.loads(payload)))

    def component_publish(self, topic, payload, source="my.Component"):
        from ggdefender.local.nucleus.core import topic_matches
        for f, cb in list(self.subs):
            if topic_matches(f, topic):
                cb(topic, payload, source)


class Clock:
    t = 1_764_000_000.0

    def __call__(self):
        return self.t


def _service(tmp_path, *profiles, dimensions=None, clock=None):
    pdir = tmp_path / "cloud" / "detect" / "profiles"
    pdir.mkdir(parents=True)
    for p in profiles:
        if isinstance(p, str):
            shutil.copy(p, pdir)
        else:
            (pdir / f"{p['securityProfileName']}.json").write_text(json.dumps(p))
    if dimensions:
        (tmp_path / "cloud" / "detect" / "dimensions.json").write_text(json.dumps(dimensions))
    core = FakeCore()
    return core, CloudMetricsService(core, tmp_path, None, tick_seconds=3600, clock=clock or Clock())


def test_messages_under_1500_bytes(tmp_path):
    core, svc = _service(tmp_path, os.path.join(FIXTURES, "message-size.json"))
    try:
        core.component_publish("telemetry/temp", b"x" * 100)
        assert core.published == []
        core.component_publish("$aws/things/localThing/defender/metrics/json", b"y" * 2000)
        ((topic, event),) = core.published
        assert topic == "ggdefender/things/localThing/violations"
        assert (event["violationEventType"], event["metricValue"]) == ("in-alarm", {"count": 2000})
        core.component_publish("telemetry/temp", b"x" * 10)
        assert core.published[-1][1]["violationEventType"] == "alarm-cleared"
        core.component_publish("telemetry/temp", b"x" * 5000, source="cloud")  # cloud -> device: not measured
        assert len(core.published) == 2
        lines = (tmp_path / "cloud" / "detect" / "violations.jsonl").read_text().splitlines()
        assert len(lines) == 2
        assert svc.control_commands()["detect-violations"]({})["active"] == []
    finally:
        svc.close()


def test_dimension_and_authorization_failures_and_device_side_behaviors_skipped(tmp_path):
    prof = {"securityProfileName": "Cloud", "behaviors": [
        {"name": "bigOnTelemetry", "metric": "aws:message-byte-size", "metricDimension": {"dimensionName": "tele"},
         "criteria": {"comparisonOperator": "less-than", "value": {"count": 50}}},
        {"name": "noDenials", "metric": "aws:num-authorization-failures",
         "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}, "durationSeconds": 300}},
        {"name": "ports", "metric": "aws:listening-tcp-ports",
         "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}}]}
    clock = Clock()
    core, svc = _service(tmp_path, prof, dimensions={"tele": ["telemetry/#"]}, clock=clock)
    try:
        assert sorted(svc.evaluator.behaviors) == ["Cloud/bigOnTelemetry", "Cloud/noDenials"]
        core.component_publish("other/topic", b"z" * 500)        # outside the dimension
        assert core.published == []
        core.component_publish("telemetry/a", b"z" * 500)
        assert core.published[-1][1]["behavior"]["name"] == "bigOnTelemetry"
        core.on_event({"kind": "denied", "service": "aws.greengrass.ipc.pubsub", "topic": "x"})  # not IoT Core
        core.on_event({"kind": "denied", "service": "aws.greengrass.ipc.mqttproxy", "topic": "x"})
        svc.tick()
        assert core.published[-1][1]["behavior"]["name"] == "bigOnTelemetry"  # window still open
        clock.t += 600
        svc.tick()  # the window holding one failure has ended
        event = core.published[-1][1]
        assert (event["behavior"]["name"], event["metricValue"]) == ("noDenials", {"count": 1})
        # state persisted by the tick: a new service over the same root keeps the alarm
        assert (tmp_path / "cloud" / "detect" / "state" / "detect-state.json").exists()
    finally:
        svc.close()
    assert core.on_event is None  # the chained hook is restored
