"""collect-now end to end under `ggdefender local`: a remediation job's collect-now step reaches the collector
(process B) as a typed call over the private relay, so nothing crosses the Greengrass bus; the local topics
stay the door for other components, with the same answers."""

import json

import pytest

from ggdefender import topics
from test_remediation_local import COMPONENT, OURS, THING, Component, _config

pytestmark = pytest.mark.integration
from ggdefender.local.ui import harness


@pytest.fixture
def core(tmp_path):
    with harness.LocalCore(tmp_path / "core", thing=THING) as c:
        yield c


def _report_ids(cap) -> set:
    return {json.loads(payload)["header"]["report_id"] for _topic, payload, *_ in list(cap)}


def test_a_collect_now_job_asks_over_the_relay_and_other_components_still_use_the_topic(core, tmp_path):
    commands = core.capture_local(topics.COLLECTOR_COMMANDS)
    events = core.capture_local(topics.COLLECTOR_EVENTS)
    reports = core.capture_iot(topics.metrics(THING, "json"))
    Component(core, tmp_path, _config()).start()
    jobs = core.service("JobsService")
    jobs.create_job({"schema": OURS, "steps": [{"operation": "collect-now"}]}, "now")
    done = jobs.wait_for("now", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
    assert done["status"] == "SUCCEEDED", done["statusDetails"]
    report_id = int(done["statusDetails"]["reportId"])
    reports.wait_for(lambda _msgs: report_id in _report_ids(reports), timeout=30)
    assert list(commands) == [] and list(events) == []  # the job's request and answer never used the bus

    # another component asks on the public topic and is answered there, as before
    core.publish_local(topics.COLLECTOR_COMMANDS, {"command": "collect-now", "requestId": "other-1"},
                       source="example.Observer")
    events.wait_for(lambda msgs: any(isinstance(m, dict) and m.get("requestId") == "other-1"
                                     for _t, m, *_ in msgs), timeout=60)
    (answer,) = [m for _t, m, *_ in list(events) if m.get("requestId") == "other-1"]
    assert answer["event"] == "report-published" and answer["topic"] == topics.metrics(THING, "json")
    core.wait_for_log(COMPONENT, "AUDIT", '"operation": "collect-now"')
